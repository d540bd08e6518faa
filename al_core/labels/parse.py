"""Label files: read and validate what annotators deliver. Pure: never imports dagster.

``parse_label_file(path, classes=..., known_image_ids=...)`` reads one delivered
file and returns a ``ParsedLabels``. It never raises on bad content: every
problem becomes a ``LabelError`` naming its line (``None`` for the whole file),
the field and why. **A file with any error is rejected whole**: its ``rows``
are then empty, so nothing from it can be half-applied. The sensor, the
ingesting run and ``al labels check`` all call this same function.

Formats (detected by content; the extension only names the format of an empty
file):

- **CSV** (first non-blank byte is neither ``[`` nor ``{``): a header row naming
  the columns, comma-delimited, RFC 4180 quoting. ``image_id`` and ``label`` are
  required; ``annotator``, ``annotation_id`` and ``note`` are optional; any other
  column is an error.
- **JSON lines** (first byte ``{``): one object per line with ``image_id`` and
  ``label`` (strings) and optionally ``annotator``, ``annotation_id``, ``note``
  (strings or null). Other keys are errors.
- **Label Studio JSON export** (first byte ``[``): an array of tasks, each with
  ``data.image_id`` and ``annotations`` ``[{id, was_cancelled, result: [{type:
  "choices", value: {choices: [label]}}], completed_by, created_at,
  updated_at}]``. A cancelled annotation (``was_cancelled: true``, what Label
  Studio's *Skip* button writes) is ignored and counted in ``n_cancelled``; a
  task whose annotations are all cancelled (or that has none) yields no row.
  A ``textarea`` result, if any, becomes the row's note. Only JSON exports are
  read (not JSON-MIN or Label Studio's CSV).

  **Several non-cancelled annotations on one task** (RESOLUTION_RULE): the
  most recently updated annotation wins, i.e. the maximum of
  (``updated_at``, else ``created_at``; then the annotation ``id``). An
  annotation with neither time counts as older than any dated one; equal
  times go to the higher id. Every such resolution is recorded in
  ``ParsedLabels.decisions`` (task id, image id, chosen annotation and label,
  the others and their labels). Every non-cancelled annotation's label must be
  valid, the overridden ones included.

Validation, all formats:

- ``image_id``: exactly 64 lowercase hex characters (the image's sha256). This
  also rejects path-like ids (``../x``, ``/etc/passwd``), absurdly long ids
  and SQL metacharacters; the id must also be known (``known_image_ids``).
- ``label``: one of ``classes`` or the skip label, case-sensitive, after
  trimming surrounding whitespace (the only normalisation: every value has its
  surrounding whitespace trimmed, nothing else). A skip-label row has
  ``is_skip=True``.
- One image with two different labels in one file is an error; the same label
  twice is accepted and counted once (the first row is kept).
- JSON values where a string belongs must be strings: a number, boolean, list
  or object is rejected, never converted (Label Studio's integer annotation id
  and ``completed_by`` user id are the format's own types and are written as
  decimal strings).
- ``annotator`` / ``annotation_id`` / ``note`` are inert data: stored verbatim
  (``=cmd``, ``+1``, ``@x`` included), never evaluated, at most
  MAX_FIELD_CHARS characters. A ``=cmd`` label is simply not a class.
- Bytes: NUL bytes, invalid UTF-8 (reported with its byte offset), UTF-16
  files, lines over ``max_line_bytes`` (read with a bounded readline and
  skipped in READ_CHUNK pieces, never held whole), files over ``max_bytes``
  (refused before reading), Label Studio exports over MAX_JSON_DOCUMENT_BYTES
  (one JSON document, read whole: Label Studio may write it on one line, so
  the per-line limit does not apply to it), JSON nested deeper than
  MAX_JSON_DEPTH, duplicate keys in one JSON object.
- JSON strings holding a ``\u0000`` or a lone-surrogate escape are errors.
- An empty file, or one without data rows, is an error.

``sha256`` covers every byte of the file, a refused or skipped part included
(hashed in READ_CHUNK pieces). At most MAX_ERRORS_KEPT errors are kept per
file; further ones are only counted (``errors_dropped``; ``n_errors`` is the
total).

``write_error_report(parsed, dest)`` writes the ``.errors.json`` report beside a
rejected file (atomically). The same report is what ``al labels check`` prints.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import os
import re
import reprlib
import stat
import tempfile
from collections import Counter
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# -- limits (each with what it costs) ------------------------------------------
MAX_FILE_BYTES = 256 << 20  # 256 MiB: largest label file read at all (~2.5 M CSV rows; ~300 B of memory per kept row)
MAX_LINE_BYTES = 1 << 20  # 1 MiB: longest line read into memory (CSV / JSON lines); longer ones are skipped unread
MAX_JSON_DOCUMENT_BYTES = 64 << 20  # 64 MiB: a Label Studio export is read whole (~2x in memory: bytes, then text)
MAX_JSON_DEPTH = 32  # nesting levels allowed in JSON (a Label Studio export needs 7); deeper is an error
MAX_FIELD_CHARS = 4096  # 4 KiB per annotator / annotation_id / note: stored verbatim in DuckDB
MAX_ERRORS_KEPT = 10_000  # errors kept in memory per file (~4 MB); further ones are only counted
MAX_REPORT_ERRORS = 1_000  # errors listed in an .errors.json report (~250 KB); the rest are counted
PREVIEW_CHARS = 80  # characters of a bad value quoted in an error (repr-escaped)
READ_CHUNK = 1 << 20  # 1 MiB: piece size when hashing a refused file or skipping an over-long line

FORMATS = ("csv", "jsonl", "label_studio")
CSV_COLUMNS = ("image_id", "label", "annotator", "annotation_id", "note")
CSV_REQUIRED = ("image_id", "label")
JSONL_KEYS = CSV_COLUMNS
IMAGE_ID_LEN = 64
RESOLUTION_RULE = (
    "most recently updated annotation wins: max of (updated_at, else created_at; then annotation id); "
    "an annotation with neither time is older than any dated one"
)

_UTF8_BOM = b"\xef\xbb\xbf"
_ID_RE = re.compile(r"[0-9a-f]{64}")
_HEX_ANY_CASE = re.compile(r"[0-9a-fA-F]{64}")
_JSON_WS = re.compile(r"[ \t\n\r]*")
# Strings or brackets; only ever run over text that json already parsed (so
# every quote opens a terminated string and the scan stays linear).
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_EXT_FORMAT = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "label_studio"}
_OLDEST = _dt.datetime.min.replace(tzinfo=_dt.UTC)

_repr = reprlib.Repr()
_repr.maxstring = PREVIEW_CHARS
_repr.maxother = PREVIEW_CHARS
_repr.maxlevel = 3


# -- results ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LabelRow:
    line: int  # line where the row (Label Studio: the task) starts, 1-based
    image_id: str
    label: str  # class name, or the skip label
    is_skip: bool
    annotator: str | None = None
    annotation_id: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class LabelError:
    line: int | None  # None: the whole file
    field: str | None  # column / key (Label Studio: a path such as annotations[1].result), None: the line
    message: str
    value_preview: str | None = None  # repr-escaped, truncated to ~PREVIEW_CHARS

    def as_dict(self) -> dict:
        return {"line": self.line, "field": self.field, "message": self.message, "value_preview": self.value_preview}

    def __str__(self) -> str:
        where = "file" if self.line is None else f"line {self.line}"
        if self.field:
            where += f" [{self.field}]"
        tail = f" (value: {self.value_preview})" if self.value_preview is not None else ""
        return f"{where}: {self.message}{tail}"


@dataclass(frozen=True)
class ParsedLabels:
    path: str
    sha256: str  # of every byte of the file ("" when it could not be opened)
    format: str | None  # 'csv' | 'jsonl' | 'label_studio'; None when not even that could be told
    rows: tuple[LabelRow, ...]  # empty whenever errors is not: a bad file is rejected whole
    errors: tuple[LabelError, ...]
    n_cancelled: int  # Label Studio annotations skipped because cancelled
    decisions: tuple[dict, ...]  # Label Studio tasks with several annotations: how each was resolved
    n_records: int = 0  # data records read (valid or not; Label Studio: tasks)
    n_duplicates: int = 0  # rows repeating an earlier (image, label) of the file, counted once
    errors_dropped: int = 0  # errors beyond MAX_ERRORS_KEPT, counted but not kept

    @property
    def ok(self) -> bool:
        return not self.errors and not self.errors_dropped and len(self.rows) > 0

    @property
    def n_errors(self) -> int:
        return len(self.errors) + self.errors_dropped

    def summary(self) -> dict:
        labels = Counter(r.label for r in self.rows if not r.is_skip)
        annotators = Counter(r.annotator for r in self.rows if r.annotator is not None)
        return {
            "file": self.path,
            "sha256": self.sha256,
            "format": self.format,
            "ok": self.ok,
            "rows": len(self.rows),
            "labels": dict(sorted(labels.items())),
            "skips": sum(1 for r in self.rows if r.is_skip),
            "annotators": dict(sorted(annotators.items())),
            "rows_without_annotator": sum(1 for r in self.rows if r.annotator is None),
            "n_records": self.n_records,
            "n_duplicates": self.n_duplicates,
            "n_cancelled": self.n_cancelled,
            "n_decisions": len(self.decisions),
            "n_errors": self.n_errors,
        }


# -- helpers -----------------------------------------------------------------------
def preview(value) -> str | None:
    """A printable (repr-escaped), truncated rendering of a bad value."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        out = repr(bytes(value[:PREVIEW_CHARS]))
        n = len(value)
    elif isinstance(value, str):
        out = repr(value[:PREVIEW_CHARS])
        n = len(value)
    else:
        return _repr.repr(value)[: 2 * PREVIEW_CHARS]
    if n > PREVIEW_CHARS:
        out += f"... ({n} in all)"
    return out


def _json_type(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, str):
        return "a string"
    return type(v).__name__


class _Errors:
    def __init__(self) -> None:
        self.items: list[LabelError] = []
        self.dropped = 0

    def add(self, line: int | None, field: str | None, message: str, value=None) -> None:
        if len(self.items) < MAX_ERRORS_KEPT:
            self.items.append(LabelError(line, field, message, preview(value)))
        else:
            self.dropped += 1

    @property
    def count(self) -> int:
        return len(self.items) + self.dropped


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(f"duplicate key {k!r} in one JSON object")
            seen.add(k)
    return d


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys)


def _too_deep(text: str, start: int = 0, end: int | None = None, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether an already-parsed JSON text slice nests deeper than ``limit`` levels."""
    end = len(text) if end is None else end
    if text.count("[", start, end) + text.count("{", start, end) <= limit:
        return False  # too few brackets to exceed the limit: no scan
    depth = 0
    for m in _JSON_TOKEN.finditer(text, start, end):
        c = text[m.start()]
        if c in "[{":
            depth += 1
            if depth > limit:
                return True
        elif c in "]}":
            depth -= 1
    return False


def _bad_id_reason(v: str) -> str:
    if "/" in v or "\\" in v or v.startswith((".", "~")) or (len(v) > 1 and v[1] == ":"):
        why = "it looks like a path"
    elif len(v) != IMAGE_ID_LEN:
        why = f"it is {len(v)} characters long"
    elif _HEX_ANY_CASE.fullmatch(v):
        why = "it has uppercase hex digits"
    else:
        why = "it has characters other than 0-9 a-f"
    return f"image_id must be the image's sha256: exactly 64 lowercase hex characters ({why})"


def _text_problem(v: str) -> str | None:
    if "\x00" in v:
        return "contains a NUL character"
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired surrogate (\\ud800-\\udfff escape)"
    return None


class _Rows:
    """Validates candidate rows and keeps the good ones, one per image."""

    def __init__(self, classes: Sequence[str], known: Container[str], skip_label: str, errs: _Errors):
        self.classes = {c: c for c in classes}  # canonical objects: one string per class in memory
        self.lower = {c.lower(): c for c in classes}
        self.class_list = tuple(classes)
        self.known = known
        self.skip = skip_label
        self.errs = errs
        self.rows: list[LabelRow] = []
        self.seen: dict[str, LabelRow] = {}
        self.n_duplicates = 0
        self.annotators: dict[str, str] = {}
        # JSON strings may hold \u0000 or lone-surrogate escapes; CSV text was checked as bytes already.
        self.json_text = False

    def check_label(self, line: int, label: str, field: str = "label") -> str | None:
        lab = label.strip()
        if not lab:
            self.errs.add(line, field, "missing label")
            return None
        if lab == self.skip:
            return self.skip
        c = self.classes.get(lab)
        if c is not None:
            return c
        hint = ""
        if lab.lower() in self.lower:
            hint = f"; labels are case-sensitive: did you mean {self.lower[lab.lower()]!r}?"
        elif lab.lower() == self.skip.lower():
            hint = f"; labels are case-sensitive: did you mean the skip label {self.skip!r}?"
        elif len(self.class_list) <= 20:
            hint = f"; classes: {', '.join(self.class_list)} (or the skip label {self.skip!r})"
        self.errs.add(line, field, f"label is not a class of this project{hint}", label)
        return None

    def check_id(self, line: int, image_id: str, field: str = "image_id") -> str | None:
        iid = image_id.strip()
        if not iid:
            self.errs.add(line, field, "missing image_id")
            return None
        if not _ID_RE.fullmatch(iid):
            self.errs.add(line, field, _bad_id_reason(iid), image_id)
            return None
        if iid not in self.known:
            self.errs.add(line, field, "unknown image_id: no image with this sha256 in the store", iid)
            return None
        return iid

    def text(self, line: int, value: str | None, field: str) -> tuple[bool, str | None]:
        """An optional inert text field: (ok, value or None)."""
        if value is None:
            return True, None
        problem = _text_problem(value)
        if problem:
            self.errs.add(line, field, f"{field} {problem}", value)
            return False, None
        v = value.strip()
        if len(v) > MAX_FIELD_CHARS:
            self.errs.add(line, field, f"{field} is {len(v)} characters long; the limit is {MAX_FIELD_CHARS}", v)
            return False, None
        return True, (v or None)

    def add(self, line: int, image_id: str, label: str, annotator: str | None = None,
            annotation_id: str | None = None, note: str | None = None, fields: dict[str, str] | None = None) -> bool:
        """Validate one row and keep it (once per image). ``fields`` renames fields in error reports."""
        iid = image_id.strip()
        lab = label.strip()
        # Fast path (the common case): a known id, a class (or skip) label, short clean texts.
        if (
            not self.json_text
            and _ID_RE.fullmatch(iid) and iid in self.known
            and (lab in self.classes or lab == self.skip)
            and (annotator is None or len(annotator) <= MAX_FIELD_CHARS)
            and (annotation_id is None or len(annotation_id) <= MAX_FIELD_CHARS)
            and (note is None or len(note) <= MAX_FIELD_CHARS)
        ):
            lab = self.classes.get(lab, self.skip)
            annotator = annotator.strip() or None if annotator is not None else None
            annotation_id = annotation_id.strip() or None if annotation_id is not None else None
            note = note.strip() or None if note is not None else None
        else:
            fn = (lambda k: fields.get(k, k)) if fields else (lambda k: k)  # noqa: E731
            for fld, v in (("image_id", image_id), ("label", label)):
                problem = _text_problem(v)
                if problem:
                    self.errs.add(line, fn(fld), f"{fld} {problem}", v)
                    return False
            iid = self.check_id(line, image_id, fn("image_id"))
            lab = self.check_label(line, label, fn("label"))
            ok_a, annotator = self.text(line, annotator, fn("annotator"))
            ok_i, annotation_id = self.text(line, annotation_id, fn("annotation_id"))
            ok_n, note = self.text(line, note, fn("note"))
            if iid is None or lab is None or not (ok_a and ok_i and ok_n):
                return False
        prev = self.seen.get(iid)
        if prev is not None:
            if prev.label != lab:
                fld = fields.get("label", "label") if fields else "label"
                self.errs.add(
                    line, fld,
                    f"image {iid} is labelled {lab!r} here and {prev.label!r} at line {prev.line}: "
                    "two different labels for one image in one file", label)
                return False
            self.n_duplicates += 1
            return True
        if annotator is not None:  # a file has few annotators: one string object each
            annotator = self.annotators.setdefault(annotator, annotator)
        row = LabelRow(line, iid, lab, lab == self.skip, annotator, annotation_id, note)
        self.rows.append(row)
        self.seen[iid] = row
        return True


# -- reading -------------------------------------------------------------------------
class _LineReader:
    """Bounded line reader: yields decoded lines, records byte-level errors.

    Never holds more than ``max_line_bytes + 1`` bytes of one line: a longer
    line is reported and skipped in READ_CHUNK pieces. Lines with a NUL byte or
    invalid UTF-8 are reported and not yielded. Every byte read is hashed.
    """

    def __init__(self, f, hasher, errs: _Errors, max_line_bytes: int, max_bytes: int):
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
            if n == 1 and raw.startswith(_UTF8_BOM):
                raw = raw[len(_UTF8_BOM):]
                start += len(_UTF8_BOM)
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
                self.errs.add(n, None, f"NUL byte at byte offset {start + i}", raw[max(0, i - 20): i + 20])
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                self.errs.add(n, None, f"invalid UTF-8 at byte offset {start + e.start} ({e.reason})",
                              raw[max(0, e.start - 20): e.start + 20])
                continue
            if self.first_since_mark is None:
                self.first_since_mark = n
            yield text


def _parse_csv(reader: _LineReader, rows: _Rows, errs: _Errors) -> int:
    cr = csv.reader(reader.lines(), strict=True)
    header: dict[str, int] | None = None
    n_records = 0
    while True:
        reader.mark()
        try:
            cells = next(cr)
        except StopIteration:
            break
        except csv.Error as e:
            errs.add(reader.first_since_mark or reader.line_no, None, f"malformed CSV: {e}")
            if header is None:
                return n_records
            continue
        line = reader.first_since_mark or reader.line_no
        if not cells or not "".join(cells).strip():
            continue  # blank line (or nothing but empty cells)
        if header is None:
            header = _csv_header(line, cells, errs)
            if header is None:
                return n_records  # rows cannot be read without a valid header
            i_id, i_lab = header["image_id"], header["label"]
            i_ann, i_aid, i_note = header.get("annotator"), header.get("annotation_id"), header.get("note")
            continue
        n_records += 1
        if len(cells) != len(header):
            errs.add(line, None, f"expected {len(header)} cells ({', '.join(header)}), got {len(cells)}",
                     ",".join(cells))
            continue
        rows.add(line, cells[i_id], cells[i_lab], cells[i_ann] if i_ann is not None else None,
                 cells[i_aid] if i_aid is not None else None, cells[i_note] if i_note is not None else None)
    return n_records


def _csv_header(line: int, cells: list[str], errs: _Errors) -> dict[str, int] | None:
    names = [c.strip() for c in cells]
    usage = "the first line must be a header such as image_id,label,annotator"
    if _HEX_ANY_CASE.fullmatch(names[0]):
        errs.add(line, "header", f"no header row: {usage}", ",".join(cells))
        return None
    bad = False
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        errs.add(line, "header", f"duplicate column(s) {', '.join(map(repr, dups))}")
        bad = True
    unknown = [n for n in names if n not in CSV_COLUMNS]
    if unknown:
        hint = ""
        if any(d in n for n in unknown for d in ";\t|"):
            hint = " (the delimiter must be a comma)"
        errs.add(line, "header", f"unknown column(s) {', '.join(map(repr, unknown))}{hint}; "
                 f"allowed: {', '.join(CSV_COLUMNS)}", ",".join(cells))
        bad = True
    missing = [n for n in CSV_REQUIRED if n not in names]
    if missing and not unknown:
        errs.add(line, "header", f"missing column(s) {', '.join(missing)}; {usage}", ",".join(cells))
        bad = True
    elif missing:
        bad = True
    return None if bad else {n: i for i, n in enumerate(names)}


def _json_str(obj: dict, key: str, line: int, errs: _Errors, required: bool, field: str | None = None):
    """obj[key] as a string; None when optional and absent/null; _BAD on error."""
    field = field or key
    if key not in obj or (obj[key] is None and not required):
        if required:
            errs.add(line, field, f"missing {key!r}")
            return _BAD
        return None
    v = obj[key]
    if not isinstance(v, str):
        errs.add(line, field, f"{field} must be a string, got {_json_type(v)} (not converted)", v)
        return _BAD
    return v


_BAD = object()


def _parse_jsonl(reader: _LineReader, rows: _Rows, errs: _Errors) -> int:
    n_records = 0
    rows.json_text = True
    for text in reader.lines():
        line = reader.line_no
        s = text.strip()
        if not s:
            continue
        n_records += 1
        try:
            obj = _DECODER.decode(s)
        except json.JSONDecodeError as e:
            errs.add(line, None, f"malformed JSON at column {e.colno}: {e.msg}", s)
            continue
        except RecursionError:
            errs.add(line, None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            continue
        except ValueError as e:  # duplicate key, integer with too many digits
            errs.add(line, None, f"malformed JSON: {e}")
            continue
        if _too_deep(s):
            errs.add(line, None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            continue
        if not isinstance(obj, dict):
            errs.add(line, None, f"a JSON lines row must be an object, got {_json_type(obj)}", s)
            continue
        unknown = [k for k in obj if k not in JSONL_KEYS]
        if unknown:
            errs.add(line, None, f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(JSONL_KEYS)}")
            continue
        vals = {k: _json_str(obj, k, line, errs, required=k in CSV_REQUIRED) for k in JSONL_KEYS}
        if any(v is _BAD for v in vals.values()):
            continue
        rows.add(line, vals["image_id"], vals["label"], vals["annotator"], vals["annotation_id"], vals["note"])
    return n_records


# -- Label Studio ----------------------------------------------------------------------
def _ls_time(v) -> _dt.datetime | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise TypeError(f"must be an ISO 8601 string or null, got {_json_type(v)}")
    try:
        t = _dt.datetime.fromisoformat(v.strip())
    except ValueError:
        raise ValueError("is not an ISO 8601 time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t.astimezone(_dt.UTC)


def _ls_annotator(v, line: int, field: str, errs: _Errors):
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)  # Label Studio user id
    if isinstance(v, dict):
        email = v.get("email")
        if isinstance(email, str) and email.strip():
            return email
        uid = v.get("id")
        if isinstance(uid, int) and not isinstance(uid, bool):
            return str(uid)
    errs.add(line, field, f"completed_by must be a user id, an email or a user object, got {_json_type(v)}", v)
    return _BAD


def _ls_result(result, line: int, field: str, errs: _Errors):
    """(label, note) of one annotation's result list, or _BAD."""
    if not isinstance(result, list):
        errs.add(line, field, f"result must be a list, got {_json_type(result)}", result)
        return _BAD
    choices, texts = [], []
    for k, item in enumerate(result):
        if not isinstance(item, dict):
            errs.add(line, f"{field}[{k}]", f"a result must be an object, got {_json_type(item)}", item)
            return _BAD
        kind = item.get("type")
        if kind == "choices":
            choices.append((k, item))
        elif kind == "textarea":
            texts.append((k, item))
    if not choices:
        errs.add(line, field, "no 'choices' result: the annotation holds no label")
        return _BAD
    if len(choices) > 1:
        errs.add(line, field, f"{len(choices)} 'choices' results: one single-choice classification is expected")
        return _BAD
    k, item = choices[0]
    value = item.get("value")
    got = value.get("choices") if isinstance(value, dict) else None
    if not isinstance(got, list) or len(got) != 1:
        n = f"{len(got)} choices" if isinstance(got, list) else f"{_json_type(got)}"
        errs.add(line, f"{field}[{k}].value.choices", f"must be a list of exactly one label, got {n}", got)
        return _BAD
    label = got[0]
    if not isinstance(label, str):
        errs.add(line, f"{field}[{k}].value.choices", f"a label must be a string, got {_json_type(label)} "
                 "(not converted)", label)
        return _BAD
    note_parts = []
    for k, item in texts:
        value = item.get("value")
        t = value.get("text") if isinstance(value, dict) else None
        t = [t] if isinstance(t, str) else t
        if not isinstance(t, list) or not all(isinstance(x, str) for x in t):
            errs.add(line, f"{field}[{k}].value.text", "must be a list of strings", t)
            return _BAD
        note_parts.extend(t)
    return label, ("\n".join(note_parts) if note_parts else None)


def _ls_task(task, idx: int, line: int, rows: _Rows, errs: _Errors) -> tuple[int, dict | None]:
    """Validate one task; add its row. Returns (cancelled annotations, decision or None)."""
    if not isinstance(task, dict):
        errs.add(line, None, f"task #{idx + 1}: a task must be a JSON object, got {_json_type(task)}", task)
        return 0, None
    tid = task.get("id")
    name = f"task #{idx + 1}" + (f" (id {tid})" if isinstance(tid, int | str) and not isinstance(tid, bool) else "")
    before = errs.count
    data = task.get("data")
    iid = _BAD
    if not isinstance(data, dict):
        errs.add(line, "data", f"{name}: 'data' must be an object, got {_json_type(data)}", data)
    else:
        iid = _json_str(data, "image_id", line, errs, required=True, field="data.image_id")
    anns = task.get("annotations", _BAD)
    if anns is _BAD:
        errs.add(line, "annotations", f"{name}: no 'annotations' list (only Label Studio's JSON export is read, "
                 "not JSON-MIN or CSV)")
        return 0, None
    if not isinstance(anns, list):
        errs.add(line, "annotations", f"{name}: 'annotations' must be a list, got {_json_type(anns)}", anns)
        return 0, None
    n_cancelled = 0
    live = []
    for j, ann in enumerate(anns):
        f = f"annotations[{j}]"
        if not isinstance(ann, dict):
            errs.add(line, f, f"{name}: an annotation must be an object, got {_json_type(ann)}", ann)
            continue
        wc = ann.get("was_cancelled", False)
        if wc is None:
            wc = False
        if not isinstance(wc, bool):
            errs.add(line, f + ".was_cancelled", f"{name}: must be true or false, got {_json_type(wc)}", wc)
            continue
        if wc:
            n_cancelled += 1
            continue
        aid = ann.get("id")
        if not isinstance(aid, int) or isinstance(aid, bool):
            errs.add(line, f + ".id", f"{name}: an annotation id must be an integer, got {_json_type(aid)}", aid)
            continue
        times = {}
        for key in ("updated_at", "created_at"):
            try:
                times[key] = _ls_time(ann.get(key))
            except (TypeError, ValueError) as e:
                errs.add(line, f"{f}.{key}", f"{name}: {key} {e}", ann.get(key))
                times[key] = _BAD
        if _BAD in times.values():
            continue
        annotator = _ls_annotator(ann.get("completed_by"), line, f + ".completed_by", errs)
        res = _ls_result(ann.get("result"), line, f + ".result", errs)
        if annotator is _BAD or res is _BAD:
            continue
        label, note = res
        when = times["updated_at"] or times["created_at"]
        live.append({"id": aid, "when": when, "label": label, "annotator": annotator, "note": note, "field": f})
    ids = [a["id"] for a in live]
    if len(set(ids)) != len(ids):
        errs.add(line, "annotations", f"{name}: the same annotation id appears twice", ids)
    if errs.count > before or iid is _BAD:
        return n_cancelled, None
    if not live:
        return n_cancelled, None  # nothing but cancelled annotations (or none): no row
    winner = max(live, key=lambda a: (a["when"] or _OLDEST, a["id"]))
    others = [a for a in live if a is not winner]
    for a in others:  # overridden annotations must hold valid labels too
        rows.check_label(line, a["label"], a["field"] + ".result")
    wf = winner["field"]
    rows.add(line, iid, winner["label"], winner["annotator"], str(winner["id"]), winner["note"],
             fields={"image_id": "data.image_id", "label": wf + ".result", "annotator": wf + ".completed_by",
                     "annotation_id": wf + ".id", "note": wf + ".result"})
    if not others:
        return n_cancelled, None
    iso = lambda t: t.isoformat() if t else None  # noqa: E731
    return n_cancelled, {
        "task_id": tid if isinstance(tid, int | str) and not isinstance(tid, bool) else None,
        "image_id": iid.strip(),
        "line": line,
        "rule": RESOLUTION_RULE,
        "chosen_annotation_id": str(winner["id"]),
        "chosen_label": winner["label"].strip(),
        "chosen_annotator": winner["annotator"],
        "chosen_time": iso(winner["when"]),
        "others": [
            {"annotation_id": str(a["id"]), "label": a["label"].strip(), "annotator": a["annotator"],
             "time": iso(a["when"])}
            for a in sorted(others, key=lambda a: (a["when"] or _OLDEST, a["id"]), reverse=True)
        ],
        "n_cancelled": n_cancelled,
    }


def _parse_label_studio(text: str, rows: _Rows, errs: _Errors) -> tuple[int, int, list[dict]]:
    """Walk the top-level array task by task (each decoded alone); (tasks, cancelled, decisions)."""
    n_tasks = n_cancelled = 0
    decisions: list[dict] = []
    line, line_pos = 1, 0
    rows.json_text = True

    def line_at(pos: int) -> int:
        nonlocal line, line_pos
        line += text.count("\n", line_pos, pos)
        line_pos = pos
        return line

    pos = _JSON_WS.match(text).end()
    if text[pos: pos + 1] != "[":  # pragma: no cover - format detection guarantees it
        errs.add(1, None, "a Label Studio export must be a JSON array of tasks")
        return 0, 0, decisions
    pos += 1
    expect_value = False
    while True:
        pos = _JSON_WS.match(text, pos).end()
        if pos >= len(text):
            errs.add(line_at(pos), None, "malformed JSON: the array is not closed (missing ']')")
            break
        if text[pos] == "]" and not expect_value:
            pos += 1
            rest = _JSON_WS.match(text, pos).end()
            if rest < len(text):
                errs.add(line_at(rest), None, "malformed JSON: extra data after the array",
                         text[rest: rest + PREVIEW_CHARS])
            break
        start_line = line_at(pos)
        try:
            task, end = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            errs.add(e.lineno, None, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}",
                     text[e.pos: e.pos + PREVIEW_CHARS])
            break
        except RecursionError:
            errs.add(start_line, None, f"task #{n_tasks + 1}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
            break
        except ValueError as e:  # duplicate key, integer with too many digits
            errs.add(start_line, None, f"task #{n_tasks + 1}: malformed JSON: {e}")
            break
        n_tasks += 1
        if _too_deep(text, pos, end, MAX_JSON_DEPTH - 1):  # the enclosing array is one level
            errs.add(start_line, None, f"task #{n_tasks}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
        else:
            c, decision = _ls_task(task, n_tasks - 1, start_line, rows, errs)
            n_cancelled += c
            if decision is not None:
                decisions.append(decision)
        del task
        pos = _JSON_WS.match(text, end).end()
        if text[pos: pos + 1] == ",":
            pos += 1
            expect_value = True
            nxt = _JSON_WS.match(text, pos).end()
            if text[nxt: nxt + 1] == "]":
                errs.add(line_at(nxt), None, "malformed JSON: trailing comma before ']'")
                break
        elif text[pos: pos + 1] == "]":
            expect_value = False
        elif pos >= len(text):
            errs.add(line_at(pos), None, "malformed JSON: the array is not closed (missing ']')")
            break
        else:
            errs.add(line_at(pos), None, "malformed JSON: expected ',' or ']' after a task",
                     text[pos: pos + PREVIEW_CHARS])
            break
    return n_tasks, n_cancelled, decisions


# -- entry point -------------------------------------------------------------------------
def _hash_rest(f, h) -> None:
    while True:
        b = f.read(READ_CHUNK)
        if not b:
            return
        h.update(b)


def _detect(head: bytes) -> str | None:
    """'csv' | 'jsonl' | 'label_studio' from the first non-blank byte; None for a blank head."""
    body = head[len(_UTF8_BOM):] if head.startswith(_UTF8_BOM) else head
    first = body.lstrip(b" \t\r\n")[:1]
    if not first:
        return None
    if first == b"[":
        return "label_studio"
    if first == b"{":
        return "jsonl"
    return "csv"


def parse_label_file(
    path: str | os.PathLike,
    *,
    classes: Sequence[str],
    known_image_ids: Container[str],
    skip_label: str = "skip",
    max_bytes: int = MAX_FILE_BYTES,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> ParsedLabels:
    """Read and validate one label file (see the module docstring). Never raises on bad content."""
    classes = tuple(classes)
    if not classes:
        raise ValueError("parse_label_file needs a non-empty class list")
    if skip_label in classes:
        raise ValueError(f"the skip label {skip_label!r} is also a class name")
    p = os.fspath(path)
    errs = _Errors()
    rows = _Rows(classes, known_image_ids, skip_label, errs)
    h = hashlib.sha256()
    fmt: str | None = _EXT_FORMAT.get(os.path.splitext(p)[1].lower())
    n_records = n_cancelled = 0
    decisions: list[dict] = []

    def result(sha: str) -> ParsedLabels:
        if not errs.count and not rows.rows:
            why = "every annotation was cancelled" if n_cancelled else "nothing but a header or blank lines"
            errs.add(None, None, f"no data rows ({why})")
        return ParsedLabels(
            path=p, sha256=sha, format=fmt,
            rows=() if errs.count else tuple(rows.rows),
            errors=tuple(errs.items), n_cancelled=n_cancelled, decisions=tuple(decisions),
            n_records=n_records, n_duplicates=rows.n_duplicates, errors_dropped=errs.dropped,
        )

    try:
        st = os.stat(p)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
            errs.add(None, None, "not a regular file")
            return result("")
        f = open(p, "rb")
    except OSError as e:
        errs.add(None, None, f"cannot read the file: {e.strerror or e}")
        return result("")
    with f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            errs.add(None, None, f"the file is {size} bytes; the limit is {max_bytes} bytes (MAX_FILE_BYTES): "
                     "split it into several deliveries")
            _hash_rest(f, h)
            return result(h.hexdigest())
        head = f.read(min(READ_CHUNK, max(size, 1)))
        f.seek(0)
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            fmt = None
            errs.add(None, None, "the file is UTF-16 encoded: save it as UTF-8")
            _hash_rest(f, h)
            return result(h.hexdigest())
        detected = _detect(head)
        if detected is None and len(head) < READ_CHUNK:
            errs.add(None, None, "empty file" if not head else "empty file: only blank lines")
            _hash_rest(f, h)
            return result(h.hexdigest())
        fmt = detected or "csv"
        if fmt == "label_studio":
            cap = min(max_bytes, MAX_JSON_DOCUMENT_BYTES)
            if size > cap:
                errs.add(None, None, f"a Label Studio export is read whole; this one is {size} bytes, the limit is "
                         f"{cap} bytes (MAX_JSON_DOCUMENT_BYTES): export fewer tasks per file")
                _hash_rest(f, h)
                return result(h.hexdigest())
            raw = f.read(cap + 1)
            h.update(raw)
            if len(raw) > cap:
                errs.add(None, None, f"the file grew beyond the {cap}-byte limit while being read")
                _hash_rest(f, h)
                return result(h.hexdigest())
            bom = len(_UTF8_BOM) if raw.startswith(_UTF8_BOM) else 0
            i = raw.find(b"\x00")
            if i >= 0:
                errs.add(raw.count(b"\n", 0, i) + 1, None, f"NUL byte at byte offset {i}", raw[max(0, i - 20): i + 20])
                return result(h.hexdigest())
            try:
                text = raw[bom:].decode("utf-8")
            except UnicodeDecodeError as e:
                off = bom + e.start
                errs.add(raw.count(b"\n", 0, off) + 1, None, f"invalid UTF-8 at byte offset {off} ({e.reason})",
                         raw[max(0, off - 20): off + 20])
                return result(h.hexdigest())
            del raw
            n_records, n_cancelled, decisions = _parse_label_studio(text, rows, errs)
            return result(h.hexdigest())
        reader = _LineReader(f, h, errs, max_line_bytes, max_bytes)
        if fmt == "jsonl":
            n_records = _parse_jsonl(reader, rows, errs)
        else:
            n_records = _parse_csv(reader, rows, errs)
        _hash_rest(f, h)  # a CSV with a bad header stops early: hash every byte all the same
        return result(h.hexdigest())


# -- reports ----------------------------------------------------------------------------
def error_report(parsed: ParsedLabels, max_errors: int = MAX_REPORT_ERRORS) -> dict:
    """The ``.errors.json`` report of a rejected file (what ``al labels check`` prints)."""
    listed = parsed.errors[:max_errors]
    return {
        "file": parsed.path,
        "sha256": parsed.sha256,
        "format": parsed.format,
        "n_errors": parsed.n_errors,
        "n_listed": len(listed),
        "n_omitted": parsed.n_errors - len(listed),
        "errors": [e.as_dict() for e in listed],
    }


def write_error_report(parsed: ParsedLabels, dest: str | os.PathLike, max_errors: int = MAX_REPORT_ERRORS) -> Path:
    """Write the error report as JSON to ``dest`` atomically (temporary name, then rename)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(error_report(parsed, max_errors), out, indent=2, ensure_ascii=False)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return dest
