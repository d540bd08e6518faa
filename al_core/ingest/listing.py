"""What a scan lists: the candidate files of an image root or a manifest, before anything is opened.

``list_root`` walks an image root with ``al_core.ingest.image_files.walk_images``
(links only inside the root, hidden names and other extensions left out) and
``list_manifest`` stats the files a manifest CSV names; both give a ``Listing``,
which ``al_core.ingest.scan.scan`` sorts against the catalogue, and whose
fingerprint (al_core.ingest.fingerprint) the scan records. ``source_fingerprint``
is that fingerprint now, for the inbox sensor's check before a round
(al_core.ingest.freshness). A root that is missing, not a folder or without
image files raises ``ImageRootError`` naming the setting (``images.root``).
"""

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from al_core.files.safe import kind_of, printable_name
from al_core.ingest.fingerprint import Fingerprint, fingerprint_entries
from al_core.ingest.image_files import IMAGE_EXTENSIONS, walk_images

ROOT_SETTING = "images.root"  # the setting an image root comes from, named by every ImageRootError


def read_manifest(manifest: str | os.PathLike) -> list[tuple[str, str | None]]:
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
class Listing:
    """The image files of one source, before any hashing."""

    source: str  # absolute root or manifest path: the key of image_paths.source
    kind: str  # 'root' | 'manifest'
    entries: list[tuple[str, os.stat_result | None, str | None]]  # (path that opens it, stat or None, problem)
    truth: dict[str, str]  # path that opens it -> class name
    truth_source: str  # 'folder' | 'manifest'
    skipped: list[str] = field(default_factory=list)  # entries not listed, with the reason (folders outside)
    source_stat: os.stat_result | None = None  # a manifest file's own stat, taken before it was read

    @property
    def root(self) -> str | None:
        """The folder every file must stay inside (None for a manifest)."""
        return self.source if self.kind == "root" else None

    def fingerprint(self) -> Fingerprint:
        """What this listing saw, hashed without opening a file (al_core.ingest.fingerprint)."""
        return fingerprint_entries(self.root, self.entries, self.skipped, self.source_stat)


class ImageRootError(ValueError):
    """The image root is missing, not a folder, or holds no images: one line naming the setting and the fix."""


def root_problem(setting: str, where: str, root_abs: str, problem: str) -> ImageRootError:
    return ImageRootError(
        f"{setting}{where}: {printable_name(root_abs)} {problem}; put the images there (one "
        f"folder per class gives ground truth) or set {setting} to the folder that holds them"
    )


def source_fingerprint(
    root: str | os.PathLike | None = None, manifest: str | os.PathLike | None = None
) -> tuple[str, Fingerprint]:
    """(source, fingerprint) a scan of ``root`` or ``manifest`` would record now: the same listing, no file
    opened. ImageRootError / OSError / ValueError as the scan would raise them."""
    if (root is None) == (manifest is None):
        raise ValueError("give exactly one of root or manifest")
    listing = list_root(root, False, ROOT_SETTING, "") if root is not None else list_manifest(manifest)
    return listing.source, listing.fingerprint()


def list_root(root: str | os.PathLike, ground_truth_from_folders: bool, setting: str, where: str) -> Listing:
    """Every image file below ``root``; ground truth from ``<root>/<class>/...`` folder names."""
    root_abs = os.path.abspath(root)
    if not os.path.exists(root_abs):
        raise root_problem(
            setting, where, root_abs, "is a dangling link" if os.path.lexists(root_abs) else "does not exist"
        )
    if not os.path.isdir(root_abs):
        raise root_problem(setting, where, root_abs, f"is a {kind_of(os.stat(root_abs).st_mode)}, not a folder")
    skipped: list[str] = []
    entries = list(walk_images(root_abs, skipped))
    if not entries:
        raise root_problem(setting, where, root_abs, f"holds no image files ({' '.join(sorted(IMAGE_EXTENSIONS))})")
    truth: dict[str, str] = {}
    if ground_truth_from_folders:
        for path, _, _ in entries:
            rel = os.path.relpath(path, root_abs).split(os.sep)
            if len(rel) >= 2:
                truth[path] = printable_name(rel[0])
    return Listing(root_abs, "root", entries, truth, "folder", skipped)


def list_manifest(manifest: str | os.PathLike) -> Listing:
    """The files a manifest CSV lists (a vanished one stays, to be recorded corrupt)."""
    entries: list[tuple[str, os.stat_result | None, str | None]] = []
    truth: dict[str, str] = {}
    source_stat = os.stat(manifest)  # before the read: an edit during the scan changes the next fingerprint
    for path, cls in read_manifest(manifest):
        try:
            entries.append((path, os.stat(path), None))
        except OSError:
            entries.append((path, None, "cannot stat (dangling link or vanished)"))
        if cls:
            truth[path] = cls
    return Listing(os.path.abspath(manifest), "manifest", entries, truth, "manifest", source_stat=source_stat)
