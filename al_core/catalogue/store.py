"""The store: one DuckDB catalogue plus vector shard files beside it.

Layout (see docs/architecture.md):

- ``<db>``: the DuckDB catalogue (default ``data/warehouse.duckdb``). Every table
  lives here; ``schema_info`` carries the schema version from the first table.
  Every multi-row write happens inside one transaction (``Store.transaction``).
- ``<vectors_dir>/<config_id>/shard=<hh>/part-<uuid>.parquet``: embedding vectors.
  A shard is the first ``SHARD_HEX_DIGITS`` hex digits of the image id (its
  sha256), so an image's shard never changes when images are added. A part file
  is written to a temporary name, renamed, and only then committed to the
  catalogue (``embedding_parts`` + ``embedding_index``) by the single DuckDB
  writer. A part that is not in the catalogue is invisible (``gc_orphan_parts``
  deletes it).
- SQL sees one ``embeddings`` view (image_id, config_id, shard, dim, vector) over
  the committed parts (``vector``: a BLOB of ``dim`` little-endian float32; in
  Python, ``np.frombuffer(blob, '<f4')``), re-created with absolute paths whenever the part list changes
  and whenever the store is opened from another location, so it answers from any
  working directory.

DuckDB allows one writing process; a writable open that meets another
process's lock is retried for ``lock_timeout_s`` seconds, then raises
``StoreLockedError`` (retryable). Readers should use ``read_only=True`` and keep
connections short.
"""

import contextlib
import datetime as _dt
import functools
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from al_core.faults import fault_point
from al_core.files.hashing import sha256_file  # noqa: F401  (re-exported: callers import it from here)
from al_core.catalogue.value_schema import VALUE_MIGRATION
from al_core.catalogue.vectors import VectorsLocation, is_url, pending_commit, write_part

SCHEMA_VERSION = 3
APP_NAME = "al-pipeline"

SHARD_HEX_DIGITS = 1  # 16 shards; 2 -> 256 shards (worth it above ~10 M images)
PART_ROW_GROUP = 65536  # rows per Parquet row group: 65536 x 1280 x 4 B = 335 MB at most per group read
LOAD_THREADS = 2  # parts read concurrently by load_embeddings (pyarrow and numpy copies release the GIL)
DEFAULT_LOCK_TIMEOUT_S = 30.0
LOCK_RETRY_SLEEP_S = 0.2


class StoreError(RuntimeError):
    """A store problem the user must act on (message says what)."""


class StoreLockedError(StoreError):
    """Another process holds the database; retry later (retryable)."""


class SchemaVersionError(StoreError):
    """The database was written by a newer al-pipeline, or is not ours."""


# Migrations: version -> DDL statements. Each version's statements run in one
# transaction together with the version bump; never edit a released version.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE schema_info (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)""",
        """CREATE TABLE scans (
            scan_id BIGINT PRIMARY KEY,
            source VARCHAR NOT NULL,           -- image root or manifest path
            source_kind VARCHAR NOT NULL,      -- 'root' | 'manifest'
            started_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP,
            n_files BIGINT, n_new BIGINT, n_changed BIGINT, n_unchanged BIGINT,
            n_missing BIGINT, n_corrupt BIGINT, n_ok BIGINT, seconds DOUBLE)""",
        """CREATE TABLE images (
            image_id VARCHAR PRIMARY KEY,      -- sha256 of the file bytes
            size_bytes BIGINT NOT NULL,
            width INTEGER, height INTEGER, format VARCHAR,
            first_seen TIMESTAMP NOT NULL,
            first_scan_id BIGINT NOT NULL)""",
        """CREATE TABLE image_paths (
            path VARCHAR PRIMARY KEY,          -- absolute path (or manifest entry resolved)
            image_id VARCHAR,                  -- NULL for a file that could not be read at all
            size_bytes BIGINT, mtime_ns BIGINT,
            status VARCHAR NOT NULL CHECK (status IN ('ok', 'corrupt', 'missing')),
            error VARCHAR,                     -- decoder / OS message when corrupt
            first_seen TIMESTAMP NOT NULL, last_seen TIMESTAMP NOT NULL,
            last_scan_id BIGINT NOT NULL,
            source VARCHAR NOT NULL)           -- the image root or manifest that lists it""",
        """CREATE TABLE ground_truth (
            image_id VARCHAR NOT NULL, path VARCHAR NOT NULL,
            class_name VARCHAR NOT NULL,
            source VARCHAR NOT NULL,           -- 'folder' | 'manifest'
            PRIMARY KEY (image_id, path))""",
        """CREATE TABLE embedding_configs (
            config_id VARCHAR PRIMARY KEY,
            backbone VARCHAR NOT NULL, weights_sha256 VARCHAR,
            preprocessing VARCHAR NOT NULL,    -- JSON
            dtype VARCHAR NOT NULL, dim INTEGER NOT NULL,
            config VARCHAR NOT NULL,           -- full JSON as given by the backbone
            created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE embedding_runs (
            run_id VARCHAR PRIMARY KEY, config_id VARCHAR NOT NULL,
            started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP,
            n_images BIGINT, n_failed BIGINT, images_per_s DOUBLE,
            device VARCHAR, library_versions VARCHAR)""",
        """CREATE TABLE embedding_parts (
            part_id VARCHAR PRIMARY KEY, config_id VARCHAR NOT NULL, shard VARCHAR NOT NULL,
            rel_path VARCHAR NOT NULL,         -- relative to the vectors folder
            n_rows BIGINT NOT NULL, dim INTEGER NOT NULL, sha256 VARCHAR NOT NULL,
            bytes BIGINT NOT NULL, run_id VARCHAR, created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE embedding_index (
            config_id VARCHAR NOT NULL, image_id VARCHAR NOT NULL, part_id VARCHAR NOT NULL,
            PRIMARY KEY (config_id, image_id))""",
        """CREATE TABLE embedding_failures (
            config_id VARCHAR NOT NULL, image_id VARCHAR NOT NULL, path VARCHAR,
            error VARCHAR NOT NULL, failed_at TIMESTAMP NOT NULL)""",
        # ---- the labelling loop -------------------------------------------------
        """CREATE TABLE rounds (
            round INTEGER PRIMARY KEY,         -- 0 is the seed pool
            kind VARCHAR NOT NULL CHECK (kind IN ('seed', 'query')),
            strategy VARCHAR NOT NULL, seed BIGINT NOT NULL,
            budget INTEGER NOT NULL,           -- what was proposed
            requested_budget INTEGER NOT NULL, -- what the config asked; larger when the pool or total budget ran out
            config_id VARCHAR NOT NULL,        -- embedding config the selection used
            probe_id VARCHAR,                  -- probe that scored the pool (NULL for the seed pool)
            status VARCHAR NOT NULL CHECK (status IN ('open', 'closed')),
            proposed_at TIMESTAMP NOT NULL, closed_at TIMESTAMP,
            closed_by VARCHAR,                 -- 'answered' | 'manual'
            select_seconds DOUBLE, run_id VARCHAR, note VARCHAR)""",
        """CREATE TABLE queries (
            round INTEGER NOT NULL, rank INTEGER NOT NULL, image_id VARCHAR NOT NULL,
            path VARCHAR NOT NULL, score DOUBLE, strategy VARCHAR NOT NULL,
            PRIMARY KEY (round, image_id))""",
        """CREATE TABLE label_files (
            file_id VARCHAR PRIMARY KEY, sha256 VARCHAR NOT NULL,
            original_name VARCHAR NOT NULL, stored_path VARCHAR,  -- where it was moved (accepted/ or rejected/)
            format VARCHAR,                    -- 'csv' | 'jsonl' | 'label_studio'
            status VARCHAR NOT NULL CHECK (status IN ('accepted', 'duplicate', 'rejected', 'retracted')),
            reason VARCHAR,                    -- rejection summary / duplicate of which file
            n_rows INTEGER, n_applied INTEGER, n_unproposed INTEGER, n_skips INTEGER,
            is_eval BOOLEAN NOT NULL DEFAULT false,
            received_at TIMESTAMP NOT NULL, round INTEGER, run_id VARCHAR)""",
        """CREATE TABLE labels (               -- append-only history; the newest non-retracted row wins
            label_id BIGINT PRIMARY KEY, image_id VARCHAR NOT NULL,
            label VARCHAR NOT NULL,            -- class name, or the configured skip label
            is_skip BOOLEAN NOT NULL, proposed BOOLEAN NOT NULL,   -- false: image was never proposed (flagged)
            file_sha256 VARCHAR NOT NULL, file_id VARCHAR NOT NULL,
            annotation_id VARCHAR, annotator VARCHAR, received_at TIMESTAMP NOT NULL,
            round INTEGER NOT NULL,            -- round during which it was ingested
            line INTEGER, note VARCHAR)""",
        """CREATE TABLE retractions (
            file_sha256 VARCHAR NOT NULL, retracted_at TIMESTAMP NOT NULL, reason VARCHAR,
            effective_round INTEGER NOT NULL)""",
        """CREATE TABLE eval_set (
            image_id VARCHAR PRIMARY KEY, label VARCHAR,  -- NULL until labelled
            source VARCHAR NOT NULL,           -- 'holdout' | 'inbox/eval'
            added_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE probes (
            probe_id VARCHAR PRIMARY KEY, round INTEGER NOT NULL, version INTEGER NOT NULL,
            trigger VARCHAR NOT NULL,          -- 'round' | 'schedule' | 'manual'
            path VARCHAR NOT NULL, sha256 VARCHAR NOT NULL, config_id VARCHAR NOT NULL,
            n_labels INTEGER NOT NULL, n_classes INTEGER NOT NULL, seed BIGINT NOT NULL,
            train_seconds DOUBLE, trained_at TIMESTAMP NOT NULL, run_id VARCHAR)""",
        """CREATE TABLE probe_labels (probe_id VARCHAR NOT NULL, label_id BIGINT NOT NULL,
            PRIMARY KEY (probe_id, label_id))""",
        """CREATE TABLE metrics (
            probe_id VARCHAR PRIMARY KEY, round INTEGER NOT NULL,
            accuracy DOUBLE, balanced_accuracy DOUBLE, macro_f1 DOUBLE,
            per_class_recall VARCHAR, confusion VARCHAR,   -- JSON
            n_labels INTEGER NOT NULL, n_eval INTEGER NOT NULL, evaluated_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE requests (             -- work asked for by the CLI, launched by the sensor as runs
            request_id VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL,   -- 'close_round' | 'retry_file'
            arg VARCHAR, created_at TIMESTAMP NOT NULL, done_at TIMESTAMP, run_id VARCHAR)""",
        # newest non-retracted label per image (skips included: they keep an image out of proposals)
        """CREATE VIEW current_labels AS
            SELECT * EXCLUDE (rn) FROM (
              SELECT l.*, row_number() OVER (PARTITION BY l.image_id ORDER BY l.label_id DESC) AS rn
              FROM labels l WHERE l.file_sha256 NOT IN (SELECT file_sha256 FROM retractions)) WHERE rn = 1""",
        """CREATE TABLE asset_outputs (
            asset_key VARCHAR NOT NULL, partition_key VARCHAR NOT NULL,
            run_id VARCHAR, value VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (asset_key, partition_key))""",
    ],
    # Audit views (docs/sql.md documents every column; al_core.reporting.audit computes the same in Python).
    2: [
        # One row per round (a round with a batch, a probe or ingested labels). labels_so_far: training
        # labels as of that round: each image's newest label ingested up to the round, a retracted
        # delivery's labels counting only for rounds before its effective_round, skips excluded.
        # The probe columns are the round's latest probe version and its metrics.
        """CREATE VIEW round_summary AS
            WITH all_rounds AS (
              SELECT round FROM rounds UNION SELECT round FROM probes UNION SELECT round FROM labels),
            label_asof AS (
              SELECT a.round AS at_round, l.is_skip,
                     row_number() OVER (PARTITION BY a.round, l.image_id ORDER BY l.label_id DESC) AS rn
              FROM all_rounds a JOIN labels l ON l.round <= a.round
              WHERE NOT EXISTS (SELECT 1 FROM retractions x
                                WHERE x.file_sha256 = l.file_sha256 AND x.effective_round <= a.round)),
            so_far AS (
              SELECT at_round AS round, count(*) FILTER (WHERE NOT is_skip) AS labels_so_far,
                     count(*) FILTER (WHERE is_skip) AS skips_so_far
              FROM label_asof WHERE rn = 1 GROUP BY at_round),
            ingested AS (SELECT round, count(*) AS labels_ingested FROM labels GROUP BY round),
            latest_probe AS (
              SELECT * EXCLUDE (rn) FROM (
                SELECT p.*, count(*) OVER (PARTITION BY p.round) AS n_probes,
                       row_number() OVER (PARTITION BY p.round ORDER BY p.version DESC, p.trained_at DESC) AS rn
                FROM probes p) WHERE rn = 1)
            SELECT a.round, r.kind,
                   coalesce(s.labels_so_far, 0) AS labels_so_far, coalesce(s.skips_so_far, 0) AS skips_so_far,
                   coalesce(i.labels_ingested, 0) AS labels_ingested,
                   r.strategy, r.seed, r.budget, r.requested_budget, r.config_id,
                   p.probe_id, p.version AS probe_version, p.trigger AS probe_trigger,
                   p.n_labels AS probe_n_labels, coalesce(p.n_probes, 0) AS n_probes,
                   m.accuracy, m.balanced_accuracy, m.macro_f1, m.n_eval,
                   r.proposed_at, m.evaluated_at, coalesce(r.status, 'not proposed') AS status,
                   r.closed_at, r.closed_by, r.note
            FROM all_rounds a
            LEFT JOIN rounds r ON r.round = a.round
            LEFT JOIN so_far s ON s.round = a.round
            LEFT JOIN ingested i ON i.round = a.round
            LEFT JOIN latest_probe p ON p.round = a.round
            LEFT JOIN metrics m ON m.probe_id = p.probe_id
            ORDER BY a.round""",
        # One row per labels row (the append-only history): the image, the batch that proposed it (the
        # latest query of the image in an earlier round), the label file, whether the row is current,
        # superseded or retracted, and every probe trained with it (a list of structs; unnest() it).
        """CREATE VIEW label_lineage AS
            WITH ret AS (
              SELECT file_sha256, min(retracted_at) AS retracted_at, min(effective_round) AS retracted_from_round,
                     string_agg(reason, '; ') AS retraction_reason
              FROM retractions GROUP BY file_sha256),
            proposal AS (
              SELECT * EXCLUDE (rn) FROM (
                SELECT l.label_id, q.round, q.rank, q.score, q.strategy, q.path,
                       row_number() OVER (PARTITION BY l.label_id ORDER BY q.round DESC) AS rn
                FROM labels l JOIN queries q ON q.image_id = l.image_id AND q.round < l.round) WHERE rn = 1),
            trained AS (
              SELECT pl.label_id, count(*) AS n_probes,
                     list({'probe_id': p.probe_id, 'round': p.round, 'version': p.version, 'trigger': p.trigger,
                           'sha256': p.sha256, 'accuracy': m.accuracy, 'balanced_accuracy': m.balanced_accuracy}
                          ORDER BY p.round, p.version, p.probe_id) AS probes
              FROM probe_labels pl JOIN probes p ON p.probe_id = pl.probe_id
              LEFT JOIN metrics m ON m.probe_id = p.probe_id
              GROUP BY pl.label_id),
            emb AS (
              SELECT image_id, list(config_id ORDER BY config_id) AS config_ids FROM embedding_index GROUP BY image_id)
            SELECT l.label_id, l.image_id, i.first_seen AS image_first_seen, e.config_ids,
                   l.label, l.is_skip, l.proposed, l.round AS label_round, l.received_at,
                   l.annotator, l.annotation_id, l.line, l.note,
                   l.file_id, f.original_name AS file_name, l.file_sha256, f.status AS file_status,
                   f.stored_path AS file_stored_path,
                   ret.file_sha256 IS NOT NULL AS retracted, ret.retracted_at, ret.retracted_from_round,
                   ret.retraction_reason,
                   c.label_id IS NOT NULL AS is_current,
                   CASE WHEN ret.file_sha256 IS NOT NULL THEN 'retracted'
                        WHEN c.label_id IS NOT NULL THEN 'current' ELSE 'superseded' END AS state,
                   q.round AS proposed_round, q.strategy AS proposed_strategy, q.score AS proposed_score,
                   q.rank AS proposed_rank, q.path AS proposed_path,
                   coalesce(t.n_probes, 0) AS n_probes, coalesce(t.probes, []) AS probes
            FROM labels l
            LEFT JOIN images i ON i.image_id = l.image_id
            LEFT JOIN emb e ON e.image_id = l.image_id
            LEFT JOIN label_files f ON f.file_id = l.file_id
            LEFT JOIN ret ON ret.file_sha256 = l.file_sha256
            LEFT JOIN current_labels c ON c.label_id = l.label_id
            LEFT JOIN proposal q ON q.label_id = l.label_id
            LEFT JOIN trained t ON t.label_id = l.label_id
            ORDER BY l.image_id, l.label_id""",
    ],
    # What the labels bought: label times, stop set, predictions, intervals, cost rates and their views
    # (al_core.catalogue.value_schema; docs/sql.md).
    3: VALUE_MIGRATION,
}


def now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC).replace(tzinfo=None)


def shard_of(image_id: str) -> str:
    return image_id[:SHARD_HEX_DIGITS]


def _is_lock_error(e: Exception) -> bool:
    msg = str(e).lower()
    return "lock" in msg and ("conflicting" in msg or "could not set lock" in msg or "another process" in msg)


@dataclass(frozen=True)
class Embeddings:
    """All vectors of one embedding config, rows in ascending image_id order."""

    config_id: str
    image_ids: np.ndarray  # (N,) str (object)
    features: np.ndarray  # (N, D) float32, C-contiguous

    def __len__(self) -> int:
        return len(self.image_ids)


class Store:
    """Handle on the catalogue. Cheap to construct; connections are opened per use."""

    def __init__(
        self,
        db_path: str | os.PathLike = "data/warehouse.duckdb",
        vectors_dir: str | os.PathLike | None = None,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    ):
        self.db_path = Path(db_path).absolute()
        # vectors_dir may be an fsspec URL (file://, memory://, s3://): parts then go through
        # al_core.catalogue.vectors (pyarrow + fsspec, never DuckDB's httpfs; docs/scale-out.md)
        self.vectors_url = str(vectors_dir) if is_url(str(vectors_dir or "")) else None
        self.vectors_dir = (Path(VectorsLocation(self.vectors_url).root) if self.vectors_url
                            else Path(vectors_dir).absolute() if vectors_dir else self.db_path.parent / "vectors")
        self.lock_timeout_s = float(lock_timeout_s)

    @functools.cached_property
    def vectors_loc(self) -> VectorsLocation:
        """The vectors folder as an fsspec location (al_core.catalogue.vectors)."""
        return VectorsLocation(self.vectors_url or self.vectors_dir)

    def _part_source(self, rel: str):
        """(path, filesystem) for pyarrow: a local path, or the fsspec path and filesystem (object storage)."""
        if self.vectors_url and not self.vectors_loc.is_local:
            return self.vectors_loc.path(rel), self.vectors_loc.fs
        return str(self.vectors_dir / rel), None

    def _open_part(self, rel: str):
        """A part file to read: memory-mapped when local, an fsspec file otherwise."""
        import pyarrow as pa

        if self.vectors_url and not self.vectors_loc.is_local:
            return self.vectors_loc.fs.open(self.vectors_loc.path(rel), "rb")
        return pa.memory_map(str(self.vectors_dir / rel))

    # ------------------------------------------------------------------ connections
    def _connect_raw(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                return duckdb.connect(str(self.db_path), read_only=read_only)
            except duckdb.IOException as e:
                if _is_lock_error(e):
                    if time.monotonic() < deadline:
                        time.sleep(LOCK_RETRY_SLEEP_S)
                        continue
                    raise StoreLockedError(
                        f"{self.db_path} is locked by another process (waited {self.lock_timeout_s:.0f} s; "
                        f"the lock-retry window is the store's lock_timeout_s setting). Retry when it is free."
                    ) from e
                if "not a valid duckdb database" in str(e).lower() or "unable to open" in str(e).lower():
                    raise StoreError(f"{self.db_path} is not a readable DuckDB database: {e}") from e
                raise StoreError(f"cannot open {self.db_path}: {e}") from e
            except duckdb.Error as e:
                raise StoreError(f"cannot open {self.db_path}: {e}") from e

    @contextlib.contextmanager
    def connect(self, read_only: bool = False, view: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the database, migrate it (writable) or check its version (read-only).

        A read-only connection gets a temporary ``embeddings`` view with this
        store's absolute paths unless ``view=False``.
        """
        if read_only and not self.db_path.exists():
            raise StoreError(f"no database at {self.db_path}: run `al ingest` (or `make demo`) first")
        if not read_only:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect_raw(read_only)
        try:
            if self.vectors_url:
                self.vectors_loc.register_duckdb(con)
            if read_only:
                self._check_version(con)
                if view:
                    self._create_embeddings_view(con, temp=True)
            else:
                self._migrate(con)
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A writable connection inside BEGIN ... COMMIT (ROLLBACK on any error)."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # ------------------------------------------------------------------ schema
    @staticmethod
    def _tables(con) -> set[str]:
        rows = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_type = 'BASE TABLE'"
        ).fetchall()
        return {r[0] for r in rows}

    def _version(self, con) -> int:
        tables = self._tables(con)
        if "schema_info" not in tables:
            if tables:
                raise SchemaVersionError(
                    f"{self.db_path} is a DuckDB database but not an {APP_NAME} one "
                    f"(no schema_info table; it holds {sorted(tables)[:5]}). Point the store elsewhere."
                )
            return 0
        row = con.execute("SELECT value FROM schema_info WHERE key = 'schema_version'").fetchone()
        app = con.execute("SELECT value FROM schema_info WHERE key = 'app'").fetchone()
        if row is None or app is None or app[0] != APP_NAME:
            raise SchemaVersionError(f"{self.db_path} has a schema_info table but is not an {APP_NAME} database")
        return int(row[0])

    def _check_version(self, con) -> int:
        v = self._version(con)
        if v > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.db_path} has schema version {v}, newer than this al-pipeline ({SCHEMA_VERSION}): upgrade al-pipeline"
            )
        if v < SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.db_path} has schema version {v}; open it once writable (any `al` write command) to migrate to {SCHEMA_VERSION}"
            )
        return v

    def _migrate(self, con) -> None:
        v = self._version(con)
        if v > SCHEMA_VERSION:
            self._check_version(con)
        for target in range(v + 1, SCHEMA_VERSION + 1):
            con.execute("BEGIN TRANSACTION")
            try:
                for ddl in MIGRATIONS[target]:
                    con.execute(ddl)
                ts = now().isoformat()
                con.execute(
                    "INSERT OR REPLACE INTO schema_info VALUES ('schema_version', ?), ('app', ?), ('migrated_at', ?)",
                    [str(target), APP_NAME, ts],
                )
                if target == 1:
                    con.execute("INSERT INTO schema_info VALUES ('created_at', ?), ('database_id', ?)",
                                [ts, uuid.uuid4().hex])
                self._create_embeddings_view(con)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        recorded = con.execute("SELECT value FROM schema_info WHERE key = 'vectors_dir'").fetchone()
        where = self.vectors_url or str(self.vectors_dir)
        if recorded is None or recorded[0] != where:
            con.execute("BEGIN TRANSACTION")
            con.execute("INSERT OR REPLACE INTO schema_info VALUES ('vectors_dir', ?)", [where])
            self._create_embeddings_view(con)
            con.execute("COMMIT")

    def schema_version(self) -> int:
        with self.connect(read_only=True) as con:
            return self._version(con)

    # ------------------------------------------------------------------ embeddings view
    def _create_embeddings_view(self, con, temp: bool = False) -> None:
        parts = con.execute(
            "SELECT config_id, rel_path FROM embedding_parts ORDER BY config_id, shard, part_id"
        ).fetchall() if "embedding_parts" in self._tables(con) else []
        by_config: dict[str, list[str]] = {}
        for config_id, rel in parts:
            by_config.setdefault(config_id, []).append(
                self.vectors_loc.uri(rel) if self.vectors_url else str(self.vectors_dir / rel))
        selects = []
        for config_id, paths in by_config.items():
            lst = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
            cid = config_id.replace("'", "''")
            selects.append(
                f"SELECT image_id, '{cid}' AS config_id, left(image_id, {SHARD_HEX_DIGITS}) AS shard, "
                f"octet_length(vector) // 4 AS dim, vector FROM read_parquet([{lst}])"
            )
        body = " UNION ALL ".join(selects) or (
            "SELECT NULL::VARCHAR AS image_id, NULL::VARCHAR AS config_id, NULL::VARCHAR AS shard, "
            "NULL::BIGINT AS dim, NULL::BLOB AS vector WHERE false"
        )
        kind = "TEMP VIEW" if temp else "VIEW"
        con.execute(f"CREATE OR REPLACE {kind} embeddings AS {body}")

    # ------------------------------------------------------------------ embedding configs
    def register_embedding_config(self, config_id: str, config: dict) -> None:
        with self.transaction() as con:
            con.execute(
                """INSERT INTO embedding_configs VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
                [
                    config_id,
                    config["backbone"],
                    config.get("weights_sha256"),
                    json.dumps(config.get("preprocessing", {}), sort_keys=True),
                    config.get("dtype", "float32"),
                    int(config.get("dim") or config["feature_dim"]),
                    json.dumps(config, sort_keys=True, default=str),
                    now(),
                ],
            )

    def embedded_ids(self, config_id: str) -> set[str]:
        with self.connect(read_only=True) as con:
            rows = con.execute("SELECT image_id FROM embedding_index WHERE config_id = ?", [config_id]).fetchall()
        return {r[0] for r in rows}

    def write_part_file(self, config_id: str, shard: str, image_ids: Sequence[str], vectors: np.ndarray) -> dict:
        """Write one part file (any process may do this); returns its catalogue record.

        The file is invisible until ``commit_parts`` records it.
        """
        if self.vectors_url:  # object storage / file:// URL: through fsspec
            return write_part(self.vectors_loc, config_id, shard, list(image_ids), vectors)
        import pyarrow as pa
        import pyarrow.parquet as pq

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = vectors.shape
        order = np.argsort(np.asarray(image_ids, dtype=object).astype(str), kind="stable")
        ids_sorted = [image_ids[i] for i in order]
        vectors = vectors[order]
        # One FIXED_LEN_BYTE_ARRAY of D little-endian float32 per row: Parquet
        # decodes it as one contiguous buffer (near np.load speed), where a
        # FLOAT[D] list column costs 4-5x more to decode (docs/benchmarks.md).
        vtype = pa.binary(d * 4)
        schema = pa.schema([pa.field("image_id", pa.string(), nullable=False), pa.field("vector", vtype, nullable=False)])
        vec = pa.FixedSizeBinaryArray.from_buffers(vtype, n, [None, pa.py_buffer(vectors.astype("<f4", copy=False).tobytes())])
        table = pa.Table.from_arrays([pa.array(ids_sorted, pa.string()), vec], schema=schema)
        part_id = uuid.uuid4().hex
        rel = Path(config_id) / f"shard={shard}" / f"part-{part_id}.parquet"
        final = self.vectors_dir / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(final.name + ".tmp")
        pq.write_table(
            table, tmp, compression="none", use_dictionary=False, write_statistics=False,
            row_group_size=PART_ROW_GROUP, data_page_version="2.0", data_page_size=8 << 20,
        )
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        os.replace(tmp, final)
        return {
            "part_id": part_id, "config_id": config_id, "shard": shard, "rel_path": str(rel),
            "n_rows": int(n), "dim": int(d), "sha256": digest, "bytes": final.stat().st_size,
            "image_ids": ids_sorted,
        }

    def commit_parts(self, parts: Sequence[dict], run_id: str | None = None) -> None:
        """Record written part files in the catalogue, all in one transaction."""
        if not parts:
            return
        import pyarrow as pa

        ts = now()
        with self.transaction() as con:
            for p in parts:
                con.execute(
                    "INSERT INTO embedding_parts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [p["part_id"], p["config_id"], p["shard"], p["rel_path"], p["n_rows"], p["dim"],
                     p["sha256"], p["bytes"], run_id, ts],
                )
                idx = pa.table({
                    "config_id": pa.array([p["config_id"]] * p["n_rows"], pa.string()),
                    "image_id": pa.array(p["image_ids"], pa.string()),
                    "part_id": pa.array([p["part_id"]] * p["n_rows"], pa.string()),
                })
                con.register("_idx", idx)
                con.execute("INSERT INTO embedding_index SELECT * FROM _idx")
                con.unregister("_idx")
            self._create_embeddings_view(con)

    def write_embeddings(self, config_id: str, image_ids: Sequence[str], vectors: np.ndarray,
                         run_id: str | None = None) -> list[dict]:
        """Write vectors (grouped into one part per shard) and commit them in one transaction."""
        image_ids = list(image_ids)
        if len(image_ids) != len(vectors):
            raise ValueError(f"{len(image_ids)} image ids for {len(vectors)} vectors")
        if len(set(image_ids)) != len(image_ids):
            raise ValueError("duplicate image ids in one embedding write")
        if not np.all(np.isfinite(vectors)):
            raise ValueError("refusing to store non-finite embedding vectors")
        by_shard: dict[str, list[int]] = {}
        for i, iid in enumerate(image_ids):
            by_shard.setdefault(shard_of(iid), []).append(i)
        parts = []
        for shard in sorted(by_shard):
            idx = by_shard[shard]
            parts.append(self.write_part_file(config_id, shard, [image_ids[i] for i in idx], vectors[idx]))
        fault_point("embeddings.before_commit")  # part files written, not committed: invisible (tests)
        self.commit_parts(parts, run_id=run_id)
        return parts

    def load_embeddings(self, config_id: str, image_ids: Sequence[str] | None = None) -> Embeddings:
        """Every vector of a config as one contiguous float32 N x D array, rows by ascending image_id.

        Reads the committed part files directly with pyarrow (DuckDB's list
        reader is several times slower for this: docs/benchmarks.md). With
        ``image_ids``, returns those rows in the given order (KeyError if one
        has no vector).
        """
        import pyarrow.parquet as pq

        with self.connect(read_only=True, view=False) as con:
            parts = con.execute(
                "SELECT part_id, shard, rel_path, n_rows, dim FROM embedding_parts WHERE config_id = ? "
                "ORDER BY shard, part_id", [config_id]
            ).fetchall()
            known = con.execute("SELECT 1 FROM embedding_configs WHERE config_id = ?", [config_id]).fetchone()
        if known is None:
            raise KeyError(f"unknown embedding config {config_id!r}")
        if not parts:
            dim = 0
            return Embeddings(config_id, np.empty(0, dtype=object), np.empty((0, dim), np.float32))
        dims = {p[4] for p in parts}
        if len(dims) != 1:
            raise StoreError(f"config {config_id} has parts of several dimensions {sorted(dims)}")
        d = dims.pop()
        n_total = sum(p[3] for p in parts)
        features = np.empty((n_total, d), dtype=np.float32)
        ids = np.empty(n_total, dtype=object)
        offsets = np.cumsum([0] + [p[3] for p in parts])

        def read_ids(i: int) -> np.ndarray:
            src, fs = self._part_source(parts[i][2])
            tbl = pq.read_table(src, filesystem=fs, columns=["image_id"], use_threads=False)
            if tbl.num_rows != parts[i][3]:
                raise StoreError(f"part {parts[i][2]} has {tbl.num_rows} rows, the catalogue says {parts[i][3]}")
            return tbl.column("image_id").to_numpy(zero_copy_only=False)

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(LOAD_THREADS) as pool:
            part_ids = list(pool.map(read_ids, range(len(parts))))
        # Rows end up sorted by image_id: shards are laid out in order and each part
        # is sorted; when a shard has several parts, each part's rows are scattered
        # to their merged positions while they are copied (no second pass).
        dest: list[np.ndarray | None] = [None] * len(parts)
        by_shard: dict[str, list[int]] = {}
        for i, p in enumerate(parts):
            by_shard.setdefault(p[1], []).append(i)
        for members in by_shard.values():
            if len(members) == 1:
                ids[offsets[members[0]]:offsets[members[0] + 1]] = part_ids[members[0]]
                continue
            start = int(offsets[members[0]])
            merged = np.concatenate([part_ids[i] for i in members])
            order = np.argsort(merged.astype(str), kind="stable")
            ids[start:start + len(merged)] = merged[order]
            position = np.empty(len(merged), dtype=np.int64)
            position[order] = np.arange(start, start + len(merged))
            k = 0
            for i in members:
                dest[i] = position[k:k + parts[i][3]]
                k += parts[i][3]

        def read_part(i: int) -> None:
            rel = parts[i][2]
            r = int(offsets[i])
            # map, copy, unmap: each part's pages leave the resident set once copied,
            # so peak memory stays at the output matrix plus LOAD_THREADS parts
            with self._open_part(rel) as src:
                tbl = pq.read_table(src, columns=["vector"], use_threads=False)
                k = 0
                for chunk in tbl.column("vector").chunks:
                    m = len(chunk)
                    if chunk.type.byte_width != d * 4:
                        raise StoreError(f"part {rel} holds {chunk.type.byte_width // 4}-d vectors, "
                                         f"the catalogue says {d}")
                    block = np.frombuffer(chunk.buffers()[1], dtype="<f4", count=m * d,
                                          offset=chunk.offset * d * 4).reshape(m, d)
                    if dest[i] is None:
                        features[r + k:r + k + m] = block
                    else:
                        features[dest[i][k:k + m]] = block
                    k += m
                del tbl

        with ThreadPoolExecutor(LOAD_THREADS) as pool:
            list(pool.map(read_part, range(len(parts))))
        if image_ids is not None:
            pos = {iid: i for i, iid in enumerate(ids)}
            try:
                sel = np.fromiter((pos[i] for i in image_ids), dtype=np.int64, count=len(image_ids))
            except KeyError as e:
                raise KeyError(f"image {e.args[0]} has no vector for config {config_id}") from None
            return Embeddings(config_id, ids[sel], np.ascontiguousarray(features[sel]))
        return Embeddings(config_id, ids, features)

    def gc_orphan_parts(self, min_age_s: float = 3600.0) -> list[Path]:
        """Delete part files (and .tmp files) older than min_age_s that the catalogue does not know."""
        if not self.vectors_dir.exists():
            return []
        with self.connect() as con:
            known = {r[0] for r in con.execute("SELECT rel_path FROM embedding_parts").fetchall()}
        removed = []
        cutoff = time.time() - min_age_s
        for p in self.vectors_dir.rglob("part-*"):
            rel = str(p.relative_to(self.vectors_dir))
            if rel not in known and p.stat().st_mtime < cutoff and not pending_commit(p):
                p.unlink()
                removed.append(p)
        return removed

    # ------------------------------------------------------------------ small helpers
    def fetch(self, sql: str, params: Sequence | None = None, read_only: bool = True) -> list[tuple]:
        with self.connect(read_only=read_only) as con:
            return con.execute(sql, params or []).fetchall()

    def put_asset_output(self, asset_key: str, partition_key: str, run_id: str | None, value: dict) -> None:
        with self.transaction() as con:
            con.execute(
                "INSERT OR REPLACE INTO asset_outputs VALUES (?, ?, ?, ?, ?)",
                [asset_key, partition_key, run_id, json.dumps(value, sort_keys=True, default=str), now()],
            )

    def get_asset_output(self, asset_key: str, partition_key: str) -> dict:
        with self.connect(read_only=True) as con:
            row = con.execute(
                "SELECT value FROM asset_outputs WHERE asset_key = ? AND partition_key = ?", [asset_key, partition_key]
            ).fetchone()
        if row is None:
            raise KeyError(f"asset {asset_key} (partition {partition_key or '-'}) has not been materialised")
        return json.loads(row[0])
