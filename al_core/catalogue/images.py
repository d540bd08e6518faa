"""Named queries over the scanned images: ``images``, ``image_paths``, ``ground_truth``, ``scans``.

Every function takes a DuckDB connection; ``al_core.ingest.scan.scan`` composes
the writers inside one ``Store.transaction()``.
"""

import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

# the columns of one scanned path, as record_paths takes them
PATH_COLUMNS = ("path", "image_id", "size_bytes", "mtime_ns", "status", "error", "width", "height", "format", "fs_path")
SCAN_COUNTS = ("n_files", "n_new", "n_changed", "n_unchanged", "n_missing", "n_corrupt", "n_ok", "seconds")


class ScanRecord(NamedTuple):
    """The last finished scan of a source, as ``last_scan`` returns it."""

    scan_id: int
    finished_at: object  # datetime
    n_files: int | None
    fingerprint: str | None  # None: recorded before schema version 9


class KnownPath(NamedTuple):
    """What the catalogue knows of a path from earlier scans."""

    size_bytes: int | None
    mtime_ns: int | None
    image_id: str | None
    status: str
    error: str | None


def known_image_ids(con) -> set[str]:
    """Ids of every image with at least one readable ('ok') path: the ids a label file may name."""
    return {r[0] for r in con.execute("SELECT DISTINCT image_id FROM image_paths WHERE status = 'ok'").fetchall()}


def ok_image_paths(con) -> list[tuple[str, str]]:
    """(image_id, path) of every readable ('ok') path: the names a label file may give an image
    (al_core.labels.names.ImageNames)."""
    return [
        (r[0], r[1])
        for r in con.execute(
            "SELECT image_id, path FROM image_paths WHERE status = 'ok' AND image_id IS NOT NULL"
        ).fetchall()
    ]


def ok_images(con, source: str | None = None) -> list[tuple[str, str]]:
    """(image_id, one path) for every image with at least one ok path (of ``source``, a scanned root or
    manifest, or of all), by image_id."""
    sql = "SELECT image_id, min(path) FROM image_paths WHERE status = 'ok'"
    params: list = []
    if source:
        sql += " AND source = ?"
        params.append(os.path.abspath(source))
    sql += " GROUP BY image_id ORDER BY image_id"
    return [(r[0], r[1]) for r in con.execute(sql, params).fetchall()]


def ok_image_files(con, source: str | None = None) -> list[tuple[str, str, str, str]]:
    """(image_id, stored path, the path that opens its file, its source) for every image with an ok path (of
    ``source``, or of all), by image_id: the path with the smallest stored name; for a name that is not UTF-8
    the opening path is ``os.fsdecode`` of its bytes (``fs_path``)."""
    sql = (
        "SELECT image_id, min(path), arg_min(fs_path, path), arg_min(source, path) FROM image_paths WHERE status = 'ok'"
    )
    params: list = []
    if source:
        sql += " AND source = ?"
        params.append(os.path.abspath(source))
    sql += " GROUP BY image_id ORDER BY image_id"
    return [
        (iid, path, os.fsdecode(bytes(raw)) if raw is not None else path, src)
        for iid, path, raw, src in con.execute(sql, params).fetchall()
    ]


def mark_changed(con, paths: Sequence[str], error: str) -> None:
    """Paths whose bytes no longer match their image id (found while embedding): status 'corrupt' with
    ``error`` (which starts with a retried error, so the next scan hashes them again)."""
    if paths:
        con.execute(
            "UPDATE image_paths SET status = 'corrupt', error = ? WHERE path IN (SELECT unnest(?))",
            [error, list(paths)],
        )


def ground_truth_classes(con) -> tuple[str, ...]:
    """The distinct ground-truth class names found by the scans (folder names or a manifest's column), sorted."""
    return tuple(r[0] for r in con.execute("SELECT DISTINCT class_name FROM ground_truth ORDER BY 1").fetchall())


def ok_path_of(con, image_ids=None) -> dict[str, str]:
    """image_id -> its first readable path (min over 'ok' paths); of ``image_ids`` only, when given."""
    if image_ids is None:
        return dict(
            con.execute("SELECT image_id, min(path) FROM image_paths WHERE status = 'ok' GROUP BY 1").fetchall()
        )
    return dict(
        con.execute(
            "SELECT image_id, min(path) FROM image_paths WHERE status = 'ok' "
            "AND image_id IN (SELECT unnest(?)) GROUP BY 1",
            [list(image_ids)],
        ).fetchall()
    )


def known_images_with_ground_truth(con) -> list[tuple[str, str | None]]:
    """(image_id, a ground-truth class or None) of every known image, by image_id."""
    return con.execute(
        """SELECT p.image_id, any_value(g.class_name) FROM (SELECT DISTINCT image_id FROM image_paths
           WHERE status = 'ok') p LEFT JOIN ground_truth g USING (image_id) GROUP BY p.image_id ORDER BY p.image_id"""
    ).fetchall()


def ground_truth_of(con, image_ids) -> dict[str, str]:
    """image_id -> a ground-truth class, for those of ``image_ids`` that have one."""
    return dict(
        con.execute(
            "SELECT image_id, any_value(class_name) FROM ground_truth WHERE image_id IN (SELECT unnest(?)) GROUP BY 1",
            [list(image_ids)],
        ).fetchall()
    )


def path_status_counts(con, source: str) -> dict[str, int]:
    """status -> number of paths of ``source`` (an image root or manifest)."""
    rows = con.execute(
        "SELECT status, count(*) FROM image_paths WHERE source = ? GROUP BY status ORDER BY status", [source]
    ).fetchall()
    return {s: int(n) for s, n in rows}


# ---------------------------------------------------------------------------- one scan
def known_paths(con, source: str) -> dict[str, KnownPath]:
    """Every path an earlier scan of ``source`` recorded."""
    rows = con.execute(
        "SELECT path, size_bytes, mtime_ns, image_id, status, error FROM image_paths WHERE source = ?", [source]
    ).fetchall()
    return {r[0]: KnownPath(*r[1:]) for r in rows}


def next_scan_id(con) -> int:
    return int(con.execute("SELECT coalesce(max(scan_id), 0) + 1 FROM scans").fetchone()[0])


def start_scan(con, scan_id: int, source: str, source_kind: str, started_at) -> None:
    con.execute(
        "INSERT INTO scans (scan_id, source, source_kind, started_at) VALUES (?, ?, ?, ?)",
        [scan_id, source, source_kind, started_at],
    )


def record_paths(con, columns: Mapping[str, Sequence], *, seen_at, scan_id: int, source: str) -> None:
    """Insert or update the paths hashed and decoded by a scan (``columns``: PATH_COLUMNS), and add
    the images first seen (their ok paths) to ``images``."""
    import pyarrow as pa

    types = {
        "size_bytes": pa.int64(),
        "mtime_ns": pa.int64(),
        "width": pa.int32(),
        "height": pa.int32(),
        "fs_path": pa.binary(),
    }
    table = pa.table({c: pa.array(list(columns[c]), types.get(c, pa.string())) for c in PATH_COLUMNS})
    con.register("_scanned", table)
    try:
        con.execute(
            """INSERT INTO images (image_id, size_bytes, width, height, format, first_seen, first_scan_id)
               SELECT image_id, any_value(size_bytes), any_value(width), any_value(height), any_value(format), ?, ?
               FROM _scanned WHERE status = 'ok' GROUP BY image_id
               ON CONFLICT DO NOTHING""",
            [seen_at, scan_id],
        )
        con.execute(
            """INSERT INTO image_paths (path, image_id, size_bytes, mtime_ns, status, error, first_seen, last_seen,
                                        last_scan_id, source, fs_path)
               SELECT path, image_id, size_bytes, mtime_ns, status, error, ?, ?, ?, ?, fs_path FROM _scanned
               ON CONFLICT (path) DO UPDATE SET image_id = excluded.image_id, size_bytes = excluded.size_bytes,
                 mtime_ns = excluded.mtime_ns, status = excluded.status, error = excluded.error,
                 fs_path = excluded.fs_path,
                 last_seen = excluded.last_seen, last_scan_id = excluded.last_scan_id,
                 source = excluded.source""",
            [seen_at, seen_at, scan_id, source],
        )
    finally:
        con.unregister("_scanned")


def touch_paths(con, paths: Sequence[str], *, seen_at, scan_id: int) -> None:
    """Paths seen unchanged (same size and mtime): only their last sighting moves."""
    import pyarrow as pa

    con.register("_same", pa.table({"path": pa.array(list(paths), pa.string())}))
    try:
        con.execute(
            "UPDATE image_paths SET last_seen = ?, last_scan_id = ? FROM _same WHERE image_paths.path = _same.path",
            [seen_at, scan_id],
        )
    finally:
        con.unregister("_same")


def mark_missing(con, paths: Sequence[str], *, scan_id: int) -> None:
    """Paths an earlier scan saw and this one did not: status 'missing' (never silently dropped)."""
    import pyarrow as pa

    con.register("_gone", pa.table({"path": pa.array(list(paths), pa.string())}))
    try:
        con.execute(
            "UPDATE image_paths SET status = 'missing', error = 'not found at scan ' || ?, "
            "last_scan_id = ? FROM _gone WHERE image_paths.path = _gone.path",
            [str(scan_id), scan_id],
        )
    finally:
        con.unregister("_gone")


def upsert_ground_truth(con, rows: Sequence[tuple[str, str, str]], source_kind: str) -> None:
    """(image_id, path, class_name) rows from folder names or a manifest column (``source_kind``)."""
    import pyarrow as pa

    con.register(
        "_truth",
        pa.table(
            {
                "image_id": pa.array([r[0] for r in rows], pa.string()),
                "path": pa.array([r[1] for r in rows], pa.string()),
                "class_name": pa.array([r[2] for r in rows], pa.string()),
            }
        ),
    )
    try:
        con.execute(
            """INSERT INTO ground_truth (image_id, path, class_name, source)
               SELECT image_id, path, class_name, ? FROM _truth
               ON CONFLICT (image_id, path) DO UPDATE SET class_name = excluded.class_name""",
            [source_kind],
        )
    finally:
        con.unregister("_truth")


def source_counts(con, source: str) -> tuple[int, int, int]:
    """(ok paths, corrupt paths, distinct ok images) of a scanned source."""
    n_ok, n_corrupt, n_images = con.execute(
        "SELECT count(*) FILTER (status = 'ok'), count(*) FILTER (status = 'corrupt'), "
        "count(DISTINCT image_id) FILTER (status = 'ok') FROM image_paths WHERE source = ?",
        [source],
    ).fetchone()
    return int(n_ok), int(n_corrupt), int(n_images)


def finish_scan(con, scan_id: int, finished_at, counts: Mapping[str, float], fingerprint: str | None = None) -> None:
    """Close a scan's row with its counts (SCAN_COUNTS) and the fingerprint of what it listed."""
    con.execute(
        f"UPDATE scans SET finished_at = ?, fingerprint = ?, {', '.join(f'{c} = ?' for c in SCAN_COUNTS)} "
        "WHERE scan_id = ?",
        [finished_at, fingerprint, *(counts[c] for c in SCAN_COUNTS), scan_id],
    )


def last_scan(con, source: str) -> ScanRecord | None:
    """The last finished scan of ``source`` (an absolute image root or manifest path), or None."""
    row = con.execute(
        "SELECT scan_id, finished_at, n_files, fingerprint FROM scans WHERE source = ? AND finished_at IS NOT NULL "
        "ORDER BY scan_id DESC LIMIT 1",
        [source],
    ).fetchone()
    return ScanRecord(int(row[0]), row[1], row[2], row[3]) if row else None
