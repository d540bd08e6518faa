"""Scanning an image root (or a manifest CSV) into the store.

- ``image_id`` is the sha256 of the file bytes: byte-identical files collapse to
  one image, and every path is kept in ``image_paths`` with a status:
  ``ok``, ``corrupt`` (with the decoder's or the OS's message) or ``missing``
  (seen before, gone now; never silently dropped).
- Incremental: a known path whose size and mtime_ns are unchanged is neither
  re-hashed nor decoded.
- Ground truth comes from ``<root>/<class>/<file>`` folder names (or a manifest
  column) and goes to ``ground_truth``, apart from labels; only simulation
  reads it.
- The whole scan is written in one transaction.
"""

import csv
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from al_core.faults import fault_point
from al_core.catalogue.store import Store, now

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Decompression-bomb guard: a declared size above this is refused without decoding.
MAX_IMAGE_PIXELS = 89_478_485  # Pillow's default; ~256 MB of RGB at most per decoded image
HASH_CHUNK = 1 << 20  # 1 MiB read buffer per hashing thread
HASH_THREADS = 4  # hashing + decoding release the GIL; 4 threads x 1 MiB buffers
PROGRESS_EVERY_S = 5.0
# errors that may go away without the file changing (permissions, a writer still busy): retried at every scan
TRANSIENT_ERRORS = ("unreadable:", "file changed while being read")


@dataclass
class ScanReport:
    scan_id: int
    source: str
    n_files: int = 0
    n_new: int = 0
    n_changed: int = 0
    n_unchanged: int = 0
    n_missing: int = 0
    n_corrupt: int = 0
    n_ok: int = 0
    n_images: int = 0  # distinct ok image ids in this source after the scan
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Probe:
    path: str
    size: int
    mtime_ns: int
    image_id: str | None = None
    status: str = "ok"
    error: str | None = None
    width: int | None = None
    height: int | None = None
    fmt: str | None = None


def walk_images(root: str | os.PathLike) -> Iterator[tuple[str, os.stat_result]]:
    """Yield (absolute path, stat) of every image file below root.

    Follows symbolic links to folders but never enters a folder twice (so a
    symlink loop ends); skips hidden folders.
    """
    root = os.path.abspath(root)
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            st = os.stat(d)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                if e.is_dir(follow_symlinks=True):
                    subdirs.append(e.path)
                    continue
                if os.path.splitext(e.name)[1].lower() not in IMAGE_EXTENSIONS:
                    continue
                yield e.path, e.stat(follow_symlinks=True)
            except OSError:
                # a dangling link or a file gone while listing: report it as corrupt
                yield e.path, None  # type: ignore[misc]
        stack.extend(reversed(subdirs))


def _hash_and_decode(p: _Probe) -> _Probe:
    from PIL import Image

    try:
        h = hashlib.sha256()
        n = 0
        # O_NONBLOCK: a FIFO named x.jpg must not block the scan waiting for a writer
        fd = os.open(p.path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                p.status, p.error = "corrupt", "not a regular file (FIFO, socket or device)"
                return p
            while True:
                b = f.read(HASH_CHUNK)
                if not b:
                    break
                h.update(b)
                n += len(b)
            after = os.fstat(fd)
        p.image_id = h.hexdigest()
        if n != p.size or after.st_size != p.size or after.st_mtime_ns != p.mtime_ns:  # changed while being read
            p.status, p.error = "corrupt", (f"file changed while being read ({p.size} -> {n} bytes read, "
                                            f"{after.st_size} now); rescan to record it")
            return p
    except OSError as e:
        p.status, p.error = "corrupt", f"unreadable: {e.strerror or e}"
        p.image_id = None
        return p
    if n == 0:
        p.status, p.error = "corrupt", "empty file"
        return p
    try:
        with Image.open(p.path) as im:
            w, h_ = im.size
            if w * h_ > MAX_IMAGE_PIXELS:
                raise ValueError(f"declared size {w}x{h_} exceeds MAX_IMAGE_PIXELS={MAX_IMAGE_PIXELS} (decompression bomb?)")
            p.width, p.height, p.fmt = w, h_, im.format
            im.load()  # full decode: catches truncated files
    except Exception as e:  # Pillow raises many types; every one means "cannot use"
        p.status, p.error = "corrupt", f"{type(e).__name__}: {e}"
    return p


def _read_manifest(manifest: str | os.PathLike) -> list[tuple[str, str | None]]:
    """CSV with a `path` column and optional `label`/`class` column; relative paths are relative to the CSV."""
    base = Path(manifest).absolute().parent
    out = []
    with open(manifest, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise ValueError(f"manifest {manifest} needs a 'path' column (has {reader.fieldnames})")
        col = next((c for c in ("class", "label", "ground_truth") if c in reader.fieldnames), None)
        for row in reader:
            path = row["path"]
            if not path:
                continue
            full = path if os.path.isabs(path) else str(base / path)
            out.append((os.path.abspath(full), (row.get(col) or None) if col else None))
    return out


def scan(
    store: Store,
    root: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    *,
    ground_truth_from_folders: bool = True,
    progress: Callable[[str], None] | None = None,
) -> ScanReport:
    """Scan a root folder or a manifest and record every image path in one transaction."""
    if (root is None) == (manifest is None):
        raise ValueError("give exactly one of root or manifest")
    t0 = time.monotonic()
    if root is not None:
        root_abs = os.path.abspath(root)
        if not os.path.isdir(root_abs):
            raise FileNotFoundError(f"image root {root_abs} is not a folder")
        source, kind = root_abs, "root"
        listing = []
        for path, st in walk_images(root_abs):
            listing.append((path, st))
        truth: dict[str, str] = {}
        if ground_truth_from_folders:
            for path, _ in listing:
                rel = os.path.relpath(path, root_abs).split(os.sep)
                if len(rel) >= 2:
                    truth[path] = rel[0]
        truth_source = "folder"
    else:
        source, kind = os.path.abspath(manifest), "manifest"
        entries = _read_manifest(manifest)
        listing = []
        truth = {}
        for path, cls in entries:
            try:
                listing.append((path, os.stat(path)))
            except OSError:
                listing.append((path, None))
            if cls:
                truth[path] = cls
        truth_source = "manifest"

    with store.connect() as con:
        known = {
            r[0]: (r[1], r[2], r[3], r[4], r[5])
            for r in con.execute(
                "SELECT path, size_bytes, mtime_ns, image_id, status, error FROM image_paths WHERE source = ?", [source]
            ).fetchall()
        }
        scan_id = con.execute("SELECT coalesce(max(scan_id), 0) + 1 FROM scans").fetchone()[0]

    report = ScanReport(scan_id=scan_id, source=source, n_files=len(listing))
    to_probe: list[_Probe] = []
    unchanged: list[str] = []
    results: list[_Probe] = []
    for path, st in listing:
        if st is None:
            results.append(_Probe(path, 0, 0, None, "corrupt", "cannot stat (dangling link or vanished)"))
            continue
        if not stat.S_ISREG(st.st_mode):
            results.append(_Probe(path, 0, 0, None, "corrupt", "not a regular file (FIFO, socket or device)"))
            continue
        k = known.get(path)
        if (k is not None and k[0] == st.st_size and k[1] == st.st_mtime_ns and k[3] != "missing"
                and not (k[3] == "corrupt" and (k[4] or "").startswith(TRANSIENT_ERRORS))):
            unchanged.append(path)
            continue
        if k is not None:
            report.n_changed += 1
        else:
            report.n_new += 1
        to_probe.append(_Probe(path, st.st_size, st.st_mtime_ns))
    report.n_unchanged = len(unchanged)

    last = time.monotonic()
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        for i, p in enumerate(pool.map(_hash_and_decode, to_probe), 1):
            results.append(p)
            if progress and time.monotonic() - last > PROGRESS_EVERY_S:
                last = time.monotonic()
                progress(f"scan: hashed and decoded {i}/{len(to_probe)} new or changed files")

    seen = {path for path, _ in listing}
    gone = [p for p, k in known.items() if p not in seen and k[3] != "missing"]
    report.n_missing = len(gone)

    ts = now()
    import pyarrow as pa

    with store.transaction() as con:
        con.execute(
            "INSERT INTO scans (scan_id, source, source_kind, started_at) VALUES (?, ?, ?, ?)", [scan_id, source, kind, ts]
        )
        if results:
            tbl = pa.table({
                "path": [p.path for p in results],
                "image_id": [p.image_id for p in results],
                "size_bytes": pa.array([p.size for p in results], pa.int64()),
                "mtime_ns": pa.array([p.mtime_ns for p in results], pa.int64()),
                "status": [p.status for p in results],
                "error": [p.error for p in results],
                "width": pa.array([p.width for p in results], pa.int32()),
                "height": pa.array([p.height for p in results], pa.int32()),
                "format": [p.fmt for p in results],
            })
            con.register("_scan", tbl)
            con.execute(
                """INSERT INTO images
                   SELECT image_id, any_value(size_bytes), any_value(width), any_value(height), any_value(format), ?, ?
                   FROM _scan WHERE status = 'ok' GROUP BY image_id
                   ON CONFLICT DO NOTHING""", [ts, scan_id])
            con.execute(
                """INSERT INTO image_paths
                   SELECT path, image_id, size_bytes, mtime_ns, status, error, ?, ?, ?, ? FROM _scan
                   ON CONFLICT (path) DO UPDATE SET image_id = excluded.image_id, size_bytes = excluded.size_bytes,
                     mtime_ns = excluded.mtime_ns, status = excluded.status, error = excluded.error,
                     last_seen = excluded.last_seen, last_scan_id = excluded.last_scan_id,
                     source = excluded.source""", [ts, ts, scan_id, source])
            con.unregister("_scan")
        if unchanged:
            con.register("_same", pa.table({"path": unchanged}))
            con.execute(
                "UPDATE image_paths SET last_seen = ?, last_scan_id = ? FROM _same WHERE image_paths.path = _same.path",
                [ts, scan_id])
            con.unregister("_same")
        if gone:
            con.register("_gone", pa.table({"path": gone}))
            con.execute(
                "UPDATE image_paths SET status = 'missing', error = 'not found at scan ' || ?, last_scan_id = ? "
                "FROM _gone WHERE image_paths.path = _gone.path", [str(scan_id), scan_id])
            con.unregister("_gone")
        truth_rows = [(p.image_id, p.path, truth[p.path]) for p in results if p.status == "ok" and p.path in truth]
        if truth_rows:
            con.register("_gt", pa.table({
                "image_id": [r[0] for r in truth_rows], "path": [r[1] for r in truth_rows],
                "class_name": [r[2] for r in truth_rows]}))
            con.execute(
                f"""INSERT INTO ground_truth SELECT image_id, path, class_name, '{truth_source}' FROM _gt
                    ON CONFLICT (image_id, path) DO UPDATE SET class_name = excluded.class_name""")
            con.unregister("_gt")
        n_ok, n_corrupt, n_images = con.execute(
            "SELECT count(*) FILTER (status = 'ok'), count(*) FILTER (status = 'corrupt'), "
            "count(DISTINCT image_id) FILTER (status = 'ok') FROM image_paths WHERE source = ?", [source]).fetchone()
        report.n_ok, report.n_corrupt, report.n_images = int(n_ok), int(n_corrupt), int(n_images)
        report.seconds = time.monotonic() - t0
        fault_point("scan.in_transaction")  # every row inserted, nothing committed (tests)
        con.execute(
            """UPDATE scans SET finished_at = ?, n_files = ?, n_new = ?, n_changed = ?, n_unchanged = ?,
               n_missing = ?, n_corrupt = ?, n_ok = ?, seconds = ? WHERE scan_id = ?""",
            [now(), report.n_files, report.n_new, report.n_changed, report.n_unchanged, report.n_missing,
             report.n_corrupt, report.n_ok, report.seconds, scan_id])
    return report


def ok_images(store: Store, source: str | None = None) -> list[tuple[str, str]]:
    """(image_id, one path) for every image with at least one ok path, by image_id."""
    sql = "SELECT image_id, min(path) FROM image_paths WHERE status = 'ok'"
    params: list = []
    if source:
        sql += " AND source = ?"
        params.append(os.path.abspath(source))
    sql += " GROUP BY image_id ORDER BY image_id"
    return [(r[0], r[1]) for r in store.fetch(sql, params)]
