"""The store: one DuckDB catalogue plus vector part files beside it.

Layout (see docs/architecture.md):

- ``<db>``: the DuckDB catalogue (default ``data/warehouse.duckdb``). Every table
  lives here (``al_core.catalogue.schema``); ``schema_info`` carries the schema
  version from the first table. Every multi-row write happens inside one
  transaction (``Store.transaction``).
- ``<vectors_dir>/<config_id>/shard=<hh>/part-<uuid>.parquet``: embedding vectors
  in the part format of ``al_core.catalogue.parts``. A part file is written
  completely (``al_core.files.atomic``), and only then committed to the
  catalogue (``embedding_parts`` + ``embedding_index``) by the single DuckDB
  writer. A part that is not in the catalogue is invisible (``gc_orphan_parts``
  deletes it).
- SQL sees one ``embeddings`` view (image_id, config_id, shard, dim, vector) over
  the committed parts (``al_core.catalogue.embeddings.create_view``), re-created
  with absolute paths whenever the part list changes and whenever the store is
  opened from another location, so it answers from any working directory.

DuckDB allows one writing process; a writable open that meets another
process's lock is retried for ``lock_timeout_s`` seconds, then raises
``StoreLockedError`` (retryable). Readers should use ``read_only=True`` and keep
connections short.

The migration mechanism (``Store._migrate``) reads ``SCHEMA_VERSION`` and
``MIGRATIONS`` as attributes of this module (imported from
``al_core.catalogue.schema``).
"""

import contextlib
import datetime as _dt
import functools
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import duckdb
import numpy as np

from al_core.catalogue import asset_outputs
from al_core.catalogue import embeddings as E
from al_core.catalogue.errors import (
    NonFiniteVectors,
    PartDamaged,
    SchemaVersionError,
    StoreError,
    StoreLockedError,
)
from al_core.catalogue.load import Embeddings, load_embeddings
from al_core.catalogue.parts import (
    SHARD_HEX_DIGITS,
    check_part,
    footer_problem,
    pending_commit,
    shard_of,
    write_part,
)
from al_core.catalogue.schema import APP_NAME, MIGRATIONS, SCHEMA_VERSION, table_names
from al_core.catalogue.vectors import VectorsLocation, is_url
from al_core.faults import fault_point
from al_core.files.atomic import TMP_SUFFIX
from al_core.files.hashing import sha256_file  # noqa: F401  (re-exported: callers import it from here)

__all__ = [
    "APP_NAME",
    "DEFAULT_LOCK_TIMEOUT_S",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SHARD_HEX_DIGITS",
    "Embeddings",
    "SchemaVersionError",
    "Store",
    "StoreError",
    "StoreLockedError",
    "now",
    "shard_of",
]

DEFAULT_LOCK_TIMEOUT_S = 30.0
LOCK_RETRY_SLEEP_S = 0.2


def now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC).replace(tzinfo=None)


def _is_lock_error(e: Exception) -> bool:
    msg = str(e).lower()
    return "lock" in msg and ("conflicting" in msg or "could not set lock" in msg or "another process" in msg)


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
        self.vectors_dir = (
            Path(VectorsLocation(self.vectors_url).root)
            if self.vectors_url
            else Path(vectors_dir).absolute()
            if vectors_dir
            else self.db_path.parent / "vectors"
        )
        self.lock_timeout_s = float(lock_timeout_s)

    @functools.cached_property
    def vectors_loc(self) -> VectorsLocation:
        """The vectors folder as a location (al_core.catalogue.vectors): how part files are reached."""
        return VectorsLocation(self.vectors_url or self.vectors_dir)

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

    # ------------------------------------------------------------------ schema version and migrations
    def _version(self, con) -> int:
        tables = table_names(con)
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
                f"{self.db_path} has schema version {v}, newer than this al-pipeline ({SCHEMA_VERSION}): "
                "upgrade al-pipeline"
            )
        if v < SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.db_path} has schema version {v}; open it once writable (any `al` write command) "
                f"to migrate to {SCHEMA_VERSION}"
            )
        return v

    def _migrate(self, con) -> None:
        """Bring the database to SCHEMA_VERSION, one transaction per version, then record where the vectors are."""
        v = self._version(con)
        if v > SCHEMA_VERSION:
            self._check_version(con)
        for target in range(v + 1, SCHEMA_VERSION + 1):
            con.execute("BEGIN TRANSACTION")
            try:
                self._apply_migration(con, target)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        self._record_vectors_location(con)

    def _apply_migration(self, con, target: int) -> None:
        """MIGRATIONS[target] and the version bump (inside the caller's transaction)."""
        for ddl in MIGRATIONS[target]:
            con.execute(ddl)
        ts = now().isoformat()
        con.execute(
            "INSERT OR REPLACE INTO schema_info (key, value) "
            "VALUES ('schema_version', ?), ('app', ?), ('migrated_at', ?)",
            [str(target), APP_NAME, ts],
        )
        if target == 1:
            con.execute(
                "INSERT INTO schema_info (key, value) VALUES ('created_at', ?), ('database_id', ?)",
                [ts, uuid.uuid4().hex],
            )
        self._create_embeddings_view(con)

    def _record_vectors_location(self, con) -> None:
        """Record this store's vectors folder; when it moved, re-create the view with its paths."""
        recorded = con.execute("SELECT value FROM schema_info WHERE key = 'vectors_dir'").fetchone()
        where = self.vectors_url or str(self.vectors_dir)
        if recorded is None or recorded[0] != where:
            con.execute("BEGIN TRANSACTION")
            con.execute("INSERT OR REPLACE INTO schema_info (key, value) VALUES ('vectors_dir', ?)", [where])
            self._create_embeddings_view(con)
            con.execute("COMMIT")

    def schema_version(self) -> int:
        with self.connect(read_only=True) as con:
            return self._version(con)

    # ------------------------------------------------------------------ embeddings
    def _create_embeddings_view(self, con, temp: bool = False) -> None:
        E.create_view(
            con, self.vectors_loc.uri, temp=temp, footer_problem=lambda rel: footer_problem(self.vectors_loc, rel)
        )

    def register_embedding_config(self, config_id: str, config: dict) -> None:
        with self.transaction() as con:
            E.register_config(con, config_id, config, now())

    def embedded_ids(self, config_id: str) -> set[str]:
        with self.connect(read_only=True, view=False) as con:
            return E.embedded_ids(con, config_id)

    def write_part_file(self, config_id: str, shard: str, image_ids: Sequence[str], vectors: np.ndarray) -> dict:
        """Write one part file (any process may do this); returns its catalogue record.

        The file is invisible until ``commit_parts`` records it.
        """
        return write_part(self.vectors_loc, config_id, shard, image_ids, vectors)

    def commit_parts(
        self,
        parts: Sequence[dict],
        run_id: str | None = None,
        configs: Mapping[str, dict] | None = None,
        *,
        verify: bool = True,
    ) -> None:
        """Record written part files in the catalogue (and the embedding ``configs`` they were written
        with, when given), all in one transaction.

        ``verify``: each part file is first checked against its record (size
        and sha256 of the bytes on disk now); a part that changed since it was
        written raises PartDamaged and nothing is committed (the file stays an
        orphan, collected later).
        """
        if not parts and not configs:
            return
        for p in parts if verify else ():
            problem = check_part(self.vectors_loc, p["rel_path"], sha256=p["sha256"], n_bytes=p["bytes"])
            if problem:
                raise PartDamaged(self.vectors_loc.uri(p["rel_path"]), f"before its commit: {problem}", p["rel_path"])
        with self.transaction() as con:
            ts = now()
            for config_id, config in (configs or {}).items():
                E.register_config(con, config_id, config, ts)
            if parts:
                E.insert_parts(con, parts, run_id, ts)
                self._create_embeddings_view(con)

    def write_embeddings(
        self, config_id: str, image_ids: Sequence[str], vectors: np.ndarray, run_id: str | None = None
    ) -> list[dict]:
        """Write vectors (grouped into one part per shard) and commit them in one transaction."""
        image_ids = list(image_ids)
        if len(image_ids) != len(vectors):
            raise ValueError(f"{len(image_ids)} image ids for {len(vectors)} vectors")
        if len(set(image_ids)) != len(image_ids):
            raise ValueError("duplicate image ids in one embedding write")
        vectors = np.asarray(vectors)
        bad = ~np.isfinite(vectors).all(axis=1) if vectors.ndim == 2 else np.zeros(0, bool)
        if bad.any():  # before any part is written (write_part refuses them too, for other writers)
            raise NonFiniteVectors([image_ids[i] for i in np.flatnonzero(bad)])
        by_shard: dict[str, list[int]] = {}
        for i, iid in enumerate(image_ids):
            by_shard.setdefault(shard_of(iid), []).append(i)
        parts = [
            self.write_part_file(config_id, shard, [image_ids[i] for i in by_shard[shard]], vectors[by_shard[shard]])
            for shard in sorted(by_shard)
        ]
        fault_point("embeddings.before_commit")  # part files written, not committed: invisible (tests)
        self.commit_parts(parts, run_id=run_id)
        return parts

    def load_embeddings(self, config_id: str, image_ids: Sequence[str] | None = None) -> Embeddings:
        """Every vector of a config as one contiguous float32 N x D array, rows by ascending image_id
        (al_core.catalogue.load). With ``image_ids``, those rows in the given order (KeyError if one
        has no vector)."""
        return load_embeddings(self, config_id, image_ids)

    def gc_orphan_parts(self, min_age_s: float = 3600.0) -> list[Path]:
        """Delete what the catalogue does not know and no writer still needs, older than ``min_age_s``:
        part files without a manifest, and the temporary files and folders a killed writer left."""
        if not self.vectors_dir.exists():
            return []
        with self.connect() as con:
            known = E.committed_rel_paths(con)
        removed = []
        cutoff = time.time() - min_age_s
        for p in self.vectors_dir.rglob("part-*"):
            rel = p.relative_to(self.vectors_dir).as_posix()
            if rel.startswith(".") or "/." in rel:  # inside a writer's temporary folder: collected below
                continue
            try:  # another process may rename or remove entries meanwhile: a vanished one is skipped
                if rel not in known and p.lstat().st_mtime < cutoff and not pending_commit(p):
                    p.unlink()
                    removed.append(p)
            except FileNotFoundError:
                continue
        for p in self.vectors_dir.rglob(f".part-*{TMP_SUFFIX}"):  # al_core.files.atomic's temporaries
            try:
                if p.lstat().st_mtime >= cutoff:
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
            except FileNotFoundError:
                continue
            removed.append(p)
        return removed

    # ------------------------------------------------------------------ small helpers
    def fetch(self, sql: str, params: Sequence | None = None, read_only: bool = True) -> list[tuple]:
        with self.connect(read_only=read_only) as con:
            return con.execute(sql, params or []).fetchall()

    def put_asset_output(self, asset_key: str, partition_key: str, run_id: str | None, value: dict) -> None:
        with self.transaction() as con:
            asset_outputs.put(con, asset_key, partition_key, run_id, value, now())

    def get_asset_output(self, asset_key: str, partition_key: str) -> dict:
        with self.connect(read_only=True) as con:
            return asset_outputs.get(con, asset_key, partition_key)
