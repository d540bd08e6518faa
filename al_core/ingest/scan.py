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

from al_core.catalogue import images
from al_core.catalogue.store import Store, now
from al_core.faults import fault_point

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
                raise ValueError(f"declared size {w}x{h_} exceeds MAX_IMAGE_PIXELS={MAX_IMAGE_PIXELS} "
                                 "(decompression bomb?)")
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


@dataclass
class _Listing:
    """The image files of one source, before any hashing."""

    source: str  # absolute root or manifest path: the key of image_paths.source
    kind: str  # 'root' | 'manifest'
    entries: list[tuple[str, os.stat_result | None]]  # (absolute path, stat; None when it cannot be stat-ed)
    truth: dict[str, str]  # path -> class name
    truth_source: str  # 'folder' | 'manifest'


@dataclass
class _Sorted:
    """A listing against what the catalogue knows: what to probe, what is unchanged, what is settled."""

    to_probe: list[_Probe]
    unchanged: list[str]
    settled: list[_Probe]  # not regular files / not stat-able: recorded corrupt without reading


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
    listing = _list_root(root, ground_truth_from_folders) if root is not None else _list_manifest(manifest)
    with store.connect() as con:
        known = images.known_paths(con, listing.source)
        scan_id = images.next_scan_id(con)
    report = ScanReport(scan_id=scan_id, source=listing.source, n_files=len(listing.entries))
    work = _sort_listing(listing, known, report)
    probed = work.settled + _probe_all(work.to_probe, progress)
    seen = {path for path, _ in listing.entries}
    gone = [p for p, k in known.items() if p not in seen and k.status != "missing"]
    report.n_missing = len(gone)
    _record(store, listing, report, probed, work.unchanged, gone, t0)
    return report


def _list_root(root: str | os.PathLike, ground_truth_from_folders: bool) -> _Listing:
    """Every image file below ``root``; ground truth from ``<root>/<class>/...`` folder names."""
    root_abs = os.path.abspath(root)
    if not os.path.isdir(root_abs):
        raise FileNotFoundError(f"image root {root_abs} is not a folder")
    entries = list(walk_images(root_abs))
    truth: dict[str, str] = {}
    if ground_truth_from_folders:
        for path, _ in entries:
            rel = os.path.relpath(path, root_abs).split(os.sep)
            if len(rel) >= 2:
                truth[path] = rel[0]
    return _Listing(root_abs, "root", entries, truth, "folder")


def _list_manifest(manifest: str | os.PathLike) -> _Listing:
    """The files a manifest CSV lists (a vanished one stays, to be recorded corrupt)."""
    entries: list[tuple[str, os.stat_result | None]] = []
    truth: dict[str, str] = {}
    for path, cls in _read_manifest(manifest):
        try:
            entries.append((path, os.stat(path)))
        except OSError:
            entries.append((path, None))
        if cls:
            truth[path] = cls
    return _Listing(os.path.abspath(manifest), "manifest", entries, truth, "manifest")


def _unchanged(k: images.KnownPath | None, st: os.stat_result) -> bool:
    """Same size and mtime as last time, and not waiting for a retry (missing, or a transient error)."""
    return (k is not None and k.size_bytes == st.st_size and k.mtime_ns == st.st_mtime_ns and k.status != "missing"
            and not (k.status == "corrupt" and (k.error or "").startswith(TRANSIENT_ERRORS)))


def _sort_listing(listing: _Listing, known: dict[str, images.KnownPath], report: ScanReport) -> _Sorted:
    """Split the listing (counting new, changed and unchanged files into ``report``)."""
    work = _Sorted([], [], [])
    for path, st in listing.entries:
        if st is None:
            work.settled.append(_Probe(path, 0, 0, None, "corrupt", "cannot stat (dangling link or vanished)"))
        elif not stat.S_ISREG(st.st_mode):
            work.settled.append(_Probe(path, 0, 0, None, "corrupt", "not a regular file (FIFO, socket or device)"))
        elif _unchanged(known.get(path), st):
            work.unchanged.append(path)
        else:
            if path in known:
                report.n_changed += 1
            else:
                report.n_new += 1
            work.to_probe.append(_Probe(path, st.st_size, st.st_mtime_ns))
    report.n_unchanged = len(work.unchanged)
    return work


def _probe_all(to_probe: list[_Probe], progress: Callable[[str], None] | None) -> list[_Probe]:
    """Hash and decode every new or changed file (HASH_THREADS at a time)."""
    out = []
    last = time.monotonic()
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        for i, p in enumerate(pool.map(_hash_and_decode, to_probe), 1):
            out.append(p)
            if progress and time.monotonic() - last > PROGRESS_EVERY_S:
                last = time.monotonic()
                progress(f"scan: hashed and decoded {i}/{len(to_probe)} new or changed files")
    return out


def _path_columns(probed: list[_Probe]) -> dict[str, list]:
    return {"path": [p.path for p in probed], "image_id": [p.image_id for p in probed],
            "size_bytes": [p.size for p in probed], "mtime_ns": [p.mtime_ns for p in probed],
            "status": [p.status for p in probed], "error": [p.error for p in probed],
            "width": [p.width for p in probed], "height": [p.height for p in probed],
            "format": [p.fmt for p in probed]}


def _record(store: Store, listing: _Listing, report: ScanReport, probed: list[_Probe], unchanged: list[str],
            gone: list[str], t0: float) -> None:
    """Write the whole scan in one transaction; fills the report's ok / corrupt / image counts."""
    ts, scan_id, source = now(), report.scan_id, listing.source
    with store.transaction() as con:
        images.start_scan(con, scan_id, source, listing.kind, ts)
        if probed:
            images.record_paths(con, _path_columns(probed), seen_at=ts, scan_id=scan_id, source=source)
        if unchanged:
            images.touch_paths(con, unchanged, seen_at=ts, scan_id=scan_id)
        if gone:
            images.mark_missing(con, gone, scan_id=scan_id)
        truth = [(p.image_id, p.path, listing.truth[p.path]) for p in probed
                 if p.status == "ok" and p.path in listing.truth]
        if truth:
            images.upsert_ground_truth(con, truth, listing.truth_source)
        report.n_ok, report.n_corrupt, report.n_images = images.source_counts(con, source)
        report.seconds = time.monotonic() - t0
        fault_point("scan.in_transaction")  # every row inserted, nothing committed (tests)
        images.finish_scan(con, scan_id, now(), report.as_dict())


def ok_images(store: Store, source: str | None = None) -> list[tuple[str, str]]:
    """(image_id, one path) for every image with at least one ok path, by image_id."""
    with store.connect(read_only=True, view=False) as con:
        return images.ok_images(con, source)


def scan_project(store: Store, cfg, *, image_root: str | os.PathLike | None = None,
                 manifest: str | os.PathLike | None = None, ground_truth_from_folders: bool = True,
                 progress: Callable[[str], None] | None = None) -> ScanReport:
    """Scan ``image_root`` or ``manifest`` when given, else the project's ``images.manifest`` /
    ``images.root``. A manifest's ground truth comes from its column, never from folder names."""
    if manifest is None and image_root is None:
        manifest, image_root = cfg.manifest, cfg.image_root
    if manifest is not None:
        return scan(store, manifest=manifest, ground_truth_from_folders=False, progress=progress)
    if image_root is None:
        raise ValueError("no images to scan: set images.root (or images.manifest) in the project file")
    return scan(store, root=image_root, ground_truth_from_folders=ground_truth_from_folders, progress=progress)
