"""Named queries over the embedding tables, and the ``embeddings`` view over the committed parts.

Tables: ``embedding_configs``, ``embedding_parts`` (one row per committed part
file), ``embedding_index`` (which part holds each image's vector),
``embedding_runs`` and ``embedding_failures``. Every function takes a DuckDB
connection, so a caller composes several inside one ``Store.transaction()``.
"""

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from al_core.catalogue.parts import SHARD_HEX_DIGITS


@dataclass(frozen=True)
class PartRow:
    """A committed part file of a config, as ``embedding_parts`` records it."""

    part_id: str
    config_id: str
    shard: str
    rel_path: str
    n_rows: int
    dim: int
    sha256: str = ""
    n_bytes: int = -1  # -1: not known


# ---------------------------------------------------------------------------- configs
def register_config(con, config_id: str, config: dict, created_at) -> None:
    """Record an embedding config once (a known ``config_id`` is left as it is)."""
    con.execute(
        """INSERT INTO embedding_configs
               (config_id, backbone, weights_sha256, preprocessing, dtype, dim, config, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
        [
            config_id,
            config["backbone"],
            config.get("weights_sha256"),
            json.dumps(config.get("preprocessing", {}), sort_keys=True),
            config.get("dtype", "float32"),
            int(config.get("dim") or config["feature_dim"]),
            json.dumps(config, sort_keys=True, default=str),
            created_at,
        ],
    )


def config_exists(con, config_id: str) -> bool:
    return con.execute("SELECT 1 FROM embedding_configs WHERE config_id = ?", [config_id]).fetchone() is not None


# ---------------------------------------------------------------------------- parts and index
def committed_parts(con, config_id: str) -> list[PartRow]:
    """The committed parts of a config, by shard then part id (the order of the rows they hold)."""
    rows = con.execute(
        "SELECT part_id, config_id, shard, rel_path, n_rows, dim, sha256, bytes FROM embedding_parts "
        "WHERE config_id = ? ORDER BY shard, part_id",
        [config_id],
    ).fetchall()
    return [PartRow(p, c, s, r, int(n), int(d), h, int(b)) for p, c, s, r, n, d, h, b in rows]


def all_parts(con) -> list[PartRow]:
    """Every committed part of every config, by config, shard and part id (what ``al verify`` checks)."""
    rows = con.execute(
        "SELECT part_id, config_id, shard, rel_path, n_rows, dim, sha256, bytes FROM embedding_parts "
        "ORDER BY config_id, shard, part_id"
    ).fetchall()
    return [PartRow(p, c, s, r, int(n), int(d), h, int(b)) for p, c, s, r, n, d, h, b in rows]


def drop_parts(con, part_ids: Sequence[str]) -> int:
    """Forget committed parts: their ``embedding_index`` rows and ``embedding_parts`` rows (the images then have
    no vector, so the next embedding run embeds them again). Returns the index rows removed."""
    if not part_ids:
        return 0
    ids = list(part_ids)
    n = con.execute("SELECT count(*) FROM embedding_index WHERE part_id IN (SELECT unnest(?))", [ids]).fetchone()[0]
    con.execute("DELETE FROM embedding_index WHERE part_id IN (SELECT unnest(?))", [ids])
    con.execute("DELETE FROM embedding_parts WHERE part_id IN (SELECT unnest(?))", [ids])
    return int(n)


def committed_part_ids(con, config_id: str | None = None) -> set[str]:
    """Ids of the committed parts (of one config, or of all)."""
    if config_id is None:
        return {r[0] for r in con.execute("SELECT part_id FROM embedding_parts").fetchall()}
    return {
        r[0] for r in con.execute("SELECT part_id FROM embedding_parts WHERE config_id = ?", [config_id]).fetchall()
    }


def committed_rel_paths(con) -> set[str]:
    """Relative paths of every committed part (what the garbage collector keeps)."""
    return {r[0] for r in con.execute("SELECT rel_path FROM embedding_parts").fetchall()}


def embedded_ids(con, config_id: str) -> set[str]:
    """Ids of the images that have a committed vector for the config."""
    return {
        r[0] for r in con.execute("SELECT image_id FROM embedding_index WHERE config_id = ?", [config_id]).fetchall()
    }


def count_vectors(con, config_id: str) -> int:
    return int(con.execute("SELECT count(*) FROM embedding_index WHERE config_id = ?", [config_id]).fetchone()[0])


def insert_parts(con, records: Sequence[dict], run_id: str | None, created_at) -> None:
    """Record written part files (``al_core.catalogue.parts.write_part`` records) and index their rows."""
    import pyarrow as pa

    if not records:
        return
    con.executemany(
        """INSERT INTO embedding_parts
               (part_id, config_id, shard, rel_path, n_rows, dim, sha256, bytes, run_id, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            [
                p["part_id"],
                p["config_id"],
                p["shard"],
                p["rel_path"],
                p["n_rows"],
                p["dim"],
                p["sha256"],
                p["bytes"],
                run_id,
                created_at,
            ]
            for p in records
        ],
    )
    index = pa.table(
        {
            "config_id": pa.array([p["config_id"] for p in records for _ in range(p["n_rows"])], pa.string()),
            "image_id": pa.array([i for p in records for i in p["image_ids"]], pa.string()),
            "part_id": pa.array([p["part_id"] for p in records for _ in range(p["n_rows"])], pa.string()),
        }
    )
    con.register("_index_rows", index)
    try:
        con.execute(
            "INSERT INTO embedding_index (config_id, image_id, part_id) "
            "SELECT config_id, image_id, part_id FROM _index_rows"
        )
    finally:
        con.unregister("_index_rows")


def parts_signature(con, config_id: str) -> tuple:
    """(number of parts, rows over all parts, highest part id) of a config: it changes whenever a part is committed."""
    return tuple(
        con.execute(
            "SELECT count(*), coalesce(sum(n_rows), 0), max(part_id) FROM embedding_parts WHERE config_id = ?",
            [config_id],
        ).fetchone()
    )


def coverage_gaps(con, source: str, config_id: str) -> tuple[int, int]:
    """(ok images of ``source`` with neither a vector of ``config_id`` nor a recorded failure, duplicate vectors)."""
    missing, dup = con.execute(
        """WITH ok AS (SELECT DISTINCT image_id FROM image_paths WHERE status = 'ok' AND source = ?),
                idx AS (SELECT image_id FROM embedding_index WHERE config_id = ?),
                failed AS (SELECT DISTINCT image_id FROM embedding_failures WHERE config_id = ?)
           SELECT (SELECT count(*) FROM ok WHERE image_id NOT IN (SELECT image_id FROM idx)
                                        AND image_id NOT IN (SELECT image_id FROM failed)),
                  (SELECT count(*) - count(DISTINCT image_id) FROM idx)""",
        [source, config_id, config_id],
    ).fetchone()
    return int(missing), int(dup)


def indexed_pairs(con, config_ids: Sequence[str], image_ids: Sequence[str]) -> set[tuple[str, str]]:
    """The (config_id, image_id) pairs among the given ones that already have a committed vector.

    An anti-join in DuckDB: the index may hold millions of rows.
    """
    import pyarrow as pa

    con.register(
        "_candidates",
        pa.table(
            {"config_id": pa.array(list(config_ids), pa.string()), "image_id": pa.array(list(image_ids), pa.string())}
        ),
    )
    try:
        rows = con.execute(
            "SELECT c.config_id, c.image_id FROM _candidates c JOIN embedding_index e "
            "ON e.config_id = c.config_id AND e.image_id = c.image_id"
        ).fetchall()
    finally:
        con.unregister("_candidates")
    return {(c, i) for c, i in rows}


# ---------------------------------------------------------------------------- runs and failures
def insert_failures(con, config_id: str, failures: Iterable[tuple[str, str | None, str]], failed_at) -> None:
    """One ``embedding_failures`` row per (image_id, path, error)."""
    rows = [[config_id, image_id, path, error, failed_at] for image_id, path, error in failures]
    if rows:
        con.executemany(
            "INSERT INTO embedding_failures (config_id, image_id, path, error, failed_at) VALUES (?, ?, ?, ?, ?)", rows
        )


def insert_run(
    con,
    *,
    run_id: str,
    config_id: str,
    started_at,
    finished_at,
    n_images: int,
    n_failed: int,
    images_per_s: float,
    device: str | None,
    library_versions: dict,
) -> None:
    con.execute(
        """INSERT INTO embedding_runs (run_id, config_id, started_at, finished_at, n_images, n_failed,
                                       images_per_s, device, library_versions)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            run_id,
            config_id,
            started_at,
            finished_at,
            n_images,
            n_failed,
            images_per_s,
            device,
            json.dumps(library_versions, sort_keys=True),
        ],
    )


# ---------------------------------------------------------------------------- the embeddings view
EMPTY_VIEW = (
    "SELECT NULL::VARCHAR AS image_id, NULL::VARCHAR AS config_id, NULL::VARCHAR AS shard, "
    "NULL::BIGINT AS dim, NULL::BLOB AS vector WHERE false"
)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _failing_view(message: str) -> str:
    """A view body with the view's columns that raises ``message`` whenever it is read."""
    return (
        "SELECT NULL::VARCHAR AS image_id, NULL::VARCHAR AS config_id, NULL::VARCHAR AS shard, "
        f"NULL::BIGINT AS dim, NULL::BLOB AS vector FROM range(1) WHERE error({_quote(message)}) IS NULL"
    )


def create_view(
    con, uri_of: Callable[[str], str], *, temp: bool = False, footer_problem: Callable[[str], str | None] | None = None
) -> None:
    """(Re-)create the ``embeddings`` view (image_id, config_id, shard, dim, vector) over the committed parts.

    ``uri_of`` turns a part's relative path into what DuckDB opens (an absolute
    path or a URL), so the view answers from any working directory. ``temp``: a
    view of this connection only (read-only connections). DuckDB reads the
    first part of each config to bind the view; ``footer_problem(rel)`` checks
    that part first (a failed statement would abort the caller's transaction),
    and a config whose first part cannot be opened gets a select that raises
    that part's one-line message (PartDamaged's) when read, so every other
    query, and the transaction around it, still works.
    """
    import duckdb

    from al_core.catalogue.errors import PartDamaged
    from al_core.catalogue.schema import table_names

    parts = (
        con.execute("SELECT config_id, rel_path FROM embedding_parts ORDER BY config_id, shard, part_id").fetchall()
        if "embedding_parts" in table_names(con)
        else []
    )
    by_config: dict[str, list[str]] = {}
    first: dict[str, str] = {}
    for config_id, rel in parts:
        by_config.setdefault(config_id, []).append(uri_of(rel))
        first.setdefault(config_id, rel)
    selects = []
    for config_id, paths in by_config.items():
        problem = footer_problem(first[config_id]) if footer_problem else None
        if problem:
            selects.append(_failing_view(str(PartDamaged(paths[0], problem))))
            continue
        selects.append(
            f"SELECT image_id, {_quote(config_id)} AS config_id, left(image_id, {SHARD_HEX_DIGITS}) AS shard, "
            f"octet_length(vector) // 4 AS dim, vector FROM read_parquet([{', '.join(_quote(p) for p in paths)}])"
        )
    body = " UNION ALL ".join(selects) or EMPTY_VIEW
    create = f"CREATE OR REPLACE {'TEMP VIEW' if temp else 'VIEW'} embeddings AS "
    try:
        con.execute(create + body)
    except duckdb.Error as e:
        bad = next((p for paths in by_config.values() for p in paths if p in str(e)), "of the embeddings view")
        con.execute(create + _failing_view(str(PartDamaged(bad, str(e).splitlines()[0]))))
