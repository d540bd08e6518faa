"""Byte-level reading of a label file: a bounded line reader, whole-document reading, hashing every byte.

Both readers report NUL bytes and invalid UTF-8 (with its byte offset) as
errors, and hash every byte they read, so the caller's sha256 covers the file.
"""

from __future__ import annotations

from collections.abc import Iterator

from al_core.labels.limits import MAX_JSON_DOCUMENT_BYTES, PREVIEW_CHARS, READ_CHUNK
from al_core.labels.results import ErrorCollector

UTF8_BOM = b"\xef\xbb\xbf"


def hash_rest(f, h) -> None:
    """Hash what is left of ``f`` in READ_CHUNK pieces."""
    while True:
        b = f.read(READ_CHUNK)
        if not b:
            return
        h.update(b)


class LineReader:
    """Bounded line reader: yields decoded lines, records byte-level errors.

    Never holds more than ``max_line_bytes + 1`` bytes of one line: a longer
    line is reported and skipped in READ_CHUNK pieces. Lines with a NUL byte or
    invalid UTF-8 are reported and not yielded. Every byte read is hashed.
    """

    def __init__(self, f, hasher, errs: ErrorCollector, max_line_bytes: int, max_bytes: int):
        self.f, self.hasher, self.errs = f, hasher, errs
        self.max_line, self.max_bytes = max_line_bytes, max_bytes
        self.line_no = 0  # line number of the last line read
        self.offset = 0  # byte offset just after the last line read
        self.first_since_mark: int | None = None

    def mark(self) -> None:
        self.first_since_mark = None

    def _grew(self) -> bool:
        if self.offset > self.max_bytes:
            self.errs.add(None, None, f"the file grew beyond the {self.max_bytes}-byte limit while being read")
            return True
        return False

    def lines(self) -> Iterator[str]:
        """Decoded lines (newline kept); ``line_no`` is the yielded line's number."""
        f, update, max_line = self.f, self.hasher.update, self.max_line
        while True:
            start = self.offset
            raw = f.readline(max_line + 1)
            if not raw:
                return
            self.line_no += 1
            update(raw)
            self.offset += len(raw)
            if self.offset > self.max_bytes and self._grew():
                return
            n = self.line_no
            if n == 1 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM) :]
                start += len(UTF8_BOM)
            if len(raw) > max_line and not raw.endswith(b"\n"):
                total = len(raw)
                head = raw[:PREVIEW_CHARS]
                del raw
                while True:
                    chunk = f.readline(READ_CHUNK)
                    if not chunk:
                        break
                    update(chunk)
                    self.offset += len(chunk)
                    if self._grew():
                        return
                    total += len(chunk)
                    if chunk.endswith(b"\n"):
                        total -= 1 + chunk.endswith(b"\r\n")
                        break
                self.errs.add(n, None, f"line is {total} bytes long; the limit is {max_line} bytes", head)
                continue
            i = raw.find(b"\x00")
            if i >= 0:
                self.errs.add(n, None, f"NUL byte at byte offset {start + i}", raw[max(0, i - 20) : i + 20])
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                self.errs.add(
                    n,
                    None,
                    f"invalid UTF-8 at byte offset {start + e.start} ({e.reason})",
                    raw[max(0, e.start - 20) : e.start + 20],
                )
                continue
            if self.first_since_mark is None:
                self.first_since_mark = n
            yield text


def read_document(f, h, errs: ErrorCollector, size: int, max_bytes: int) -> str | None:
    """The whole file as text (a Label Studio export is one JSON document), or None after reporting why not.

    Refused before reading above ``min(max_bytes, MAX_JSON_DOCUMENT_BYTES)``
    (Label Studio may write the export on one line, so the per-line limit
    cannot apply). Every byte is hashed into ``h`` in every case.
    """
    cap = min(max_bytes, MAX_JSON_DOCUMENT_BYTES)
    if size > cap:
        errs.add(
            None,
            None,
            f"a Label Studio export is read whole; this one is {size} bytes, the limit is "
            f"{cap} bytes (MAX_JSON_DOCUMENT_BYTES): export fewer tasks per file",
        )
        hash_rest(f, h)
        return None
    raw = f.read(cap + 1)
    h.update(raw)
    if len(raw) > cap:
        errs.add(None, None, f"the file grew beyond the {cap}-byte limit while being read")
        hash_rest(f, h)
        return None
    bom = len(UTF8_BOM) if raw.startswith(UTF8_BOM) else 0
    i = raw.find(b"\x00")
    if i >= 0:
        errs.add(raw.count(b"\n", 0, i) + 1, None, f"NUL byte at byte offset {i}", raw[max(0, i - 20) : i + 20])
        return None
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        off = bom + e.start
        errs.add(
            raw.count(b"\n", 0, off) + 1,
            None,
            f"invalid UTF-8 at byte offset {off} ({e.reason})",
            raw[max(0, off - 20) : off + 20],
        )
        return None
