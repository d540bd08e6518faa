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
- The root is a folder others write into (al_core.ingest.image_files): links
  are followed only inside it, FIFOs and devices are recorded without being
  opened, each file is read once and what is recorded (hash, size, pixels) is
  what that read returned; a name that is not UTF-8 is stored printable with its
  bytes in ``image_paths.fs_path``.
- What is scanned is listed first (al_core.ingest.listing); a root that is
  missing, not a folder or without image files raises ``ImageRootError`` naming
  the setting (``images.root``) before anything is recorded; ``require_images``
  refuses a scanned root with no usable image.
- The listing's fingerprint (al_core.ingest.fingerprint: no file opened) is
  recorded with the scan, so the inbox sensor can tell whether a round needs an
  ingest run first (al_core.ingest.freshness).
"""

import hashlib
import io
import os
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from al_core.catalogue import images
from al_core.catalogue.store import Store, now
from al_core.faults import fault_point
from al_core.files.safe import UnsafeEntry, printable_name
from al_core.ingest.image_files import IMAGE_EXTENSIONS, LINK_OUTSIDE, read_image_bytes, walk_images
from al_core.ingest.listing import (
    ROOT_SETTING,
    ImageRootError,
    Listing,
    list_manifest,
    list_root,
    root_problem,
    source_fingerprint,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "LINK_OUTSIDE",
    "ImageRootError",
    "Listing",
    "ScanReport",
    "ok_images",
    "read_image_bytes",
    "require_images",
    "scan",
    "scan_project",
    "source_fingerprint",
    "walk_images",
]

# Decompression-bomb guard: a declared size above this is refused without decoding.
MAX_IMAGE_PIXELS = 89_478_485  # Pillow's default; ~256 MB of RGB at most per decoded image
HASH_THREADS = 4  # hashing + decoding release the GIL; 4 files in memory at once (each at most MAX_IMAGE_BYTES)
PROGRESS_EVERY_S = 5.0
SKIPPED_KEPT = 20  # skipped entries named in a scan report (every one is logged)
# errors that may go away without the file changing (permissions, a writer still busy): retried at every scan
TRANSIENT_ERRORS = ("unreadable:", "file changed while being read", "changed since the scan")


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
    n_skipped: int = 0  # entries not listed (a link to a folder outside the root, a folder that cannot be read)
    skipped: list[str] = field(default_factory=list)  # the first SKIPPED_KEPT of them, each with its reason
    fingerprint: str | None = None  # of the listing scanned (al_core.ingest.fingerprint), recorded in scans

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Probe:
    path: str  # as stored: printable (al_core.files.safe.printable_name)
    size: int
    mtime_ns: int
    image_id: str | None = None
    status: str = "ok"
    error: str | None = None
    width: int | None = None
    height: int | None = None
    fmt: str | None = None
    fs_path: str | None = None  # the path that opens the file, when it is not ``path`` (a name not UTF-8)
    root: str | None = None  # the image root the file must stay inside (None: a manifest's file)


def _hash_and_decode(p: _Probe) -> _Probe:
    """Read the file once, hash those bytes and decode the same bytes (what is recorded is what was read)."""
    from PIL import Image

    from al_core.ingest.pixels import UnsupportedImage, to_rgb8

    try:
        data = read_image_bytes(p.fs_path or p.path, p.root)
        after = os.stat(p.fs_path or p.path)
    except UnsafeEntry as e:
        p.status, p.error = "corrupt", e.reason
        return p
    except OSError as e:
        p.status, p.error = "corrupt", f"unreadable: {e.strerror or e}"
        return p
    except ValueError as e:
        p.status, p.error = "corrupt", f"too large: {e}"
        return p
    n = len(data)
    p.image_id = hashlib.sha256(data).hexdigest()
    if n != p.size or after.st_size != p.size or after.st_mtime_ns != p.mtime_ns:  # changed while being read
        p.status, p.error = (
            "corrupt",
            (f"file changed while being read ({p.size} -> {n} bytes read, {after.st_size} now); rescan to record it"),
        )
        return p
    if n == 0:
        p.status, p.error = "corrupt", "empty file"
        return p
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h_ = im.size
            if w * h_ > MAX_IMAGE_PIXELS:
                raise ValueError(
                    f"declared size {w}x{h_} exceeds MAX_IMAGE_PIXELS={MAX_IMAGE_PIXELS} (decompression bomb?)"
                )
            p.width, p.height, p.fmt = w, h_, im.format
            im.load()  # full decode: catches truncated files
            to_rgb8(im)  # the pixels embedding will see: a mode without an 8-bit rendering is refused here
    except UnsupportedImage as e:
        p.status, p.error = "corrupt", f"unsupported: {e}"
    except Exception as e:  # Pillow raises many types; every one means "cannot use"
        p.status, p.error = "corrupt", f"{type(e).__name__}: {e}"
    return p


@dataclass
class _Sorted:
    """A listing against what the catalogue knows: what to probe, what is unchanged, what is settled."""

    to_probe: list[_Probe]
    unchanged: list[str]
    settled: list[_Probe]  # not regular files / not stat-able: recorded corrupt without reading


def require_images(report: ScanReport, setting: str = ROOT_SETTING, where: str = "") -> ScanReport:
    """``report`` when its source has a usable image; ImageRootError (after the scan was recorded) otherwise."""
    if report.n_images == 0:
        raise root_problem(
            setting,
            where,
            report.source,
            f"holds {report.n_files} image file(s) and none is usable ({report.n_corrupt} corrupt, "
            f"{report.n_missing} missing; `al status` lists them)",
        )
    return report


def scan(
    store: Store,
    root: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    *,
    ground_truth_from_folders: bool = True,
    progress: Callable[[str], None] | None = None,
    root_setting: str = ROOT_SETTING,
    root_where: str = "",
) -> ScanReport:
    """Scan a root folder or a manifest and record every image path in one transaction.

    ``ImageRootError`` (naming ``root_setting`` and ``root_where``, e.g.
    ``images.root`` `` (in /p/al.yaml)``) for a root that does not exist, is not a
    folder or holds no image files, before anything is recorded: an unmounted
    disk never marks every image missing.
    """
    if (root is None) == (manifest is None):
        raise ValueError("give exactly one of root or manifest")
    t0 = time.monotonic()
    listing = (
        list_root(root, ground_truth_from_folders, root_setting, root_where)
        if root is not None
        else list_manifest(manifest)
    )
    with store.connect() as con:
        known = images.known_paths(con, listing.source)
        scan_id = images.next_scan_id(con)
    report = ScanReport(
        scan_id=scan_id,
        source=listing.source,
        n_files=len(listing.entries),
        n_skipped=len(listing.skipped),
        skipped=listing.skipped[:SKIPPED_KEPT],
        fingerprint=listing.fingerprint().digest,
    )
    if progress:
        for line in listing.skipped:
            progress(f"scan: skipped {line}")
    work = _sort_listing(listing, known, report)
    probed = work.settled + _probe_all(work.to_probe, progress)
    seen = {printable_name(path) for path, _, _ in listing.entries}
    gone = [p for p, k in known.items() if p not in seen and k.status != "missing"]
    report.n_missing = len(gone)
    _record(store, listing, report, probed, work.unchanged, gone, t0)
    return report


def _unchanged(k: images.KnownPath | None, st: os.stat_result) -> bool:
    """Same size and mtime as last time, and not waiting for a retry (missing, or a transient error)."""
    return (
        k is not None
        and k.size_bytes == st.st_size
        and k.mtime_ns == st.st_mtime_ns
        and k.status != "missing"
        and not (k.status == "corrupt" and (k.error or "").startswith(TRANSIENT_ERRORS))
    )


def _sort_listing(listing: Listing, known: dict[str, images.KnownPath], report: ScanReport) -> _Sorted:
    """Split the listing (counting new, changed and unchanged files into ``report``). A name that is not UTF-8
    (or holds control characters) is stored printable, with the path that opens it beside (``fs_path``)."""
    work = _Sorted([], [], [])
    for fs_path, st, problem in listing.entries:
        path = printable_name(fs_path)
        opener = fs_path if path != fs_path else None
        if st is None:
            work.settled.append(_Probe(path, 0, 0, None, "corrupt", problem, fs_path=opener))
        elif not stat.S_ISREG(st.st_mode):
            work.settled.append(
                _Probe(path, 0, 0, None, "corrupt", "not a regular file (FIFO, socket or device)", fs_path=opener)
            )
        elif _unchanged(known.get(path), st):
            work.unchanged.append(path)
        else:
            if path in known:
                report.n_changed += 1
            else:
                report.n_new += 1
            work.to_probe.append(_Probe(path, st.st_size, st.st_mtime_ns, fs_path=opener, root=listing.root))
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
    return {
        "path": [p.path for p in probed],
        "image_id": [p.image_id for p in probed],
        "size_bytes": [p.size for p in probed],
        "mtime_ns": [p.mtime_ns for p in probed],
        "status": [p.status for p in probed],
        "error": [p.error for p in probed],
        "width": [p.width for p in probed],
        "height": [p.height for p in probed],
        "format": [p.fmt for p in probed],
        "fs_path": [os.fsencode(p.fs_path) if p.fs_path else None for p in probed],
    }


def _record(
    store: Store,
    listing: Listing,
    report: ScanReport,
    probed: list[_Probe],
    unchanged: list[str],
    gone: list[str],
    t0: float,
) -> None:
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
        truth = [
            (p.image_id, p.path, listing.truth[p.fs_path or p.path])
            for p in probed
            if p.status == "ok" and (p.fs_path or p.path) in listing.truth
        ]
        if truth:
            images.upsert_ground_truth(con, truth, listing.truth_source)
        report.n_ok, report.n_corrupt, report.n_images = images.source_counts(con, source)
        report.seconds = time.monotonic() - t0
        fault_point("scan.in_transaction")  # every row inserted, nothing committed (tests)
        images.finish_scan(con, scan_id, now(), report.as_dict(), fingerprint=report.fingerprint)


def ok_images(store: Store, source: str | None = None) -> list[tuple[str, str]]:
    """(image_id, one path) for every image with at least one ok path, by image_id."""
    with store.connect(read_only=True, view=False) as con:
        return images.ok_images(con, source)


def scan_project(
    store: Store,
    cfg,
    *,
    image_root: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    ground_truth_from_folders: bool = True,
    progress: Callable[[str], None] | None = None,
) -> ScanReport:
    """Scan ``image_root`` or ``manifest`` when given, else the project's ``images.manifest`` /
    ``images.root``. A manifest's ground truth comes from its column, never from folder names. An image root
    that is missing, not a folder, or holds no usable image raises ImageRootError naming the setting."""
    setting, where = "image_root", " (the run's config)"
    if manifest is None and image_root is None:
        manifest, image_root = cfg.manifest, cfg.image_root
        where = f" (in {getattr(cfg, 'source_file', None) or 'the defaults: no project file'})"
        setting = ROOT_SETTING
    if manifest is not None:
        return scan(store, manifest=manifest, ground_truth_from_folders=False, progress=progress)
    if image_root is None:
        raise ImageRootError("no images to scan: set images.root (or images.manifest) in the project file")
    report = scan(
        store,
        root=image_root,
        ground_truth_from_folders=ground_truth_from_folders,
        progress=progress,
        root_setting=setting,
        root_where=where,
    )
    return require_images(report, setting, where)
