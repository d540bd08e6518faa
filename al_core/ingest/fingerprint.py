"""A cheap fingerprint of what a scan lists: has anything a scan would see changed since the last one?

``fingerprint_entries`` hashes (sha256), for every candidate file of a listing
in the listing's order, its path (relative to the image root; a manifest's
paths as the manifest resolves them), size, mtime_ns, ctime_ns and mode, then
every entry the walk could not list. The listing is the scanner's own
(``al_core.ingest.scan.source_fingerprint``: the same walk, extensions, hidden
names, links and manifest rules); no file is opened. A file added, removed,
renamed, rewritten (its size or mtime changes; a rewrite keeping both still
moves its ctime), made readable or unreadable (chmod, chown: ctime and mode)
changes the fingerprint, and so does any change of a manifest file itself. A
copy or restore of the whole root moves every ctime: one needless rescan, which
re-hashes nothing (size and mtime unchanged).

The scan records the fingerprint of the listing it scanned in ``scans.fingerprint``
(same transaction as the scan's record); ``al_core.ingest.freshness`` compares it
with the current one before a round.

Cost: one ``stat`` per file (the walk) and about 1 µs of hashing per file;
100,000 files: docs/benchmarks.md ("Image scanning").
"""

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

FINGERPRINT_RULES = "fp1"  # prefix of every fingerprint: a change of what is hashed changes every fingerprint once
FINGERPRINT_BLOCK_ENTRIES = 4096  # entries joined per sha256 update: 4096 x ~100 B = ~400 KB buffered at a time


@dataclass(frozen=True)
class Fingerprint:
    """The fingerprint of a listing: ``digest`` (FINGERPRINT_RULES + ':' + sha256 hex) and its candidate files."""

    digest: str
    n_files: int


def _line(rel: str, st: os.stat_result | None, problem: str | None) -> bytes:
    name = os.fsencode(rel)
    if st is None:
        return name + b"\0!" + (problem or "").encode("utf-8", "backslashreplace") + b"\n"
    return name + f"\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_mode:o}\n".encode()


def fingerprint_entries(
    base: str | None,
    entries: Sequence[tuple[str, os.stat_result | None, str | None]],
    skipped: Iterable[str] = (),
    source_stat: os.stat_result | None = None,
) -> Fingerprint:
    """The fingerprint of a listing: ``entries`` (path, stat or None, problem or None) as the scan's walk yields
    them, paths made relative to ``base`` (the image root; None: kept as given, a manifest's), the ``skipped``
    lines of the walk, and ``source_stat`` (the manifest file's own stat, taken before it was read)."""
    h = hashlib.sha256()
    cut = len(base.rstrip(os.sep)) + 1 if base else 0
    block: list[bytes] = []
    if source_stat is not None:
        block.append(_line("\0manifest", source_stat, None))
    for path, st, problem in entries:
        block.append(_line(path[cut:] if cut else path, st, problem))
        if len(block) >= FINGERPRINT_BLOCK_ENTRIES:
            h.update(b"".join(block))
            block.clear()
    block.extend(b"\0skipped\0" + line.encode("utf-8", "backslashreplace") + b"\n" for line in skipped)
    h.update(b"".join(block))
    return Fingerprint(f"{FINGERPRINT_RULES}:{h.hexdigest()}", len(entries))
