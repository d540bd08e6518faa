"""The entry point: ``parse_label_file`` detects the format, hashes every byte and runs that format's reader."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Container, Sequence

from al_core.files.safe import UnsafeEntry, open_regular
from al_core.labels import csv_polars
from al_core.labels.csv_reader import parse_csv
from al_core.labels.jsonl_reader import parse_jsonl
from al_core.labels.limits import MAX_FILE_BYTES, MAX_LINE_BYTES, READ_CHUNK
from al_core.labels.ls_rows import ls_table_delimiter, parse_ls_array, parse_ls_table
from al_core.labels.ls_tasks import is_ls_object, parse_ls_object
from al_core.labels.reader import UTF8_BOM, LineReader, hash_rest, read_document
from al_core.labels.results import ErrorCollector, ParsedLabels, ReadStats
from al_core.labels.rows import RowValidator

EXT_FORMAT = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "label_studio"}


def detect_format(head: bytes) -> str | None:
    """The format from the first bytes (None for a blank head):

    - ``[``: a Label Studio array, ``label_studio`` (its JSON export, or JSON_MIN: told by the first element);
    - ``{``: JSON lines, unless the first line is a lone ``{`` (an indented document) or a Label Studio task or
      annotation: then ``label_studio_task`` (a target-storage file; task or annotation is told when read);
    - anything else: ``csv``, or ``label_studio_csv`` / ``label_studio_tsv`` when the first line names Label
      Studio's export columns (ls_rows.LS_SIGNATURE).
    """
    body = head[len(UTF8_BOM) :] if head.startswith(UTF8_BOM) else head
    stripped = body.lstrip(b" \t\r\n")
    first = stripped[:1]
    if not first:
        return None
    if first == b"[":
        return "label_studio"
    end = stripped.find(b"\n")
    line = (stripped if end < 0 else stripped[:end]).decode("utf-8", errors="replace")
    if first == b"{":
        if line.strip() == "{":
            return "label_studio_task"  # an indented JSON document, as Label Studio's target storage writes it
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            return "jsonl"  # the JSON lines reader reports it
        return "label_studio_task" if is_ls_object(obj) else "jsonl"
    delim = ls_table_delimiter(line)
    if delim is not None:
        return "label_studio_tsv" if delim == "\t" else "label_studio_csv"
    return "csv"


def parse_label_file(
    path: str | os.PathLike,
    *,
    classes: Sequence[str],
    known_image_ids: Container[str],
    skip_label: str = "skip",
    max_bytes: int = MAX_FILE_BYTES,
    max_line_bytes: int = MAX_LINE_BYTES,
    root: str | os.PathLike | None = None,
) -> ParsedLabels:
    """Read and validate one label file (the contract: ``al_core.labels``). Never raises on bad content.

    ``root``: a folder ``path`` lies in (the inbox); no folder below it is followed when it is a link.
    """
    classes = tuple(classes)
    if not classes:
        raise ValueError("parse_label_file needs a non-empty class list")
    if skip_label in classes:
        raise ValueError(f"the skip label {skip_label!r} is also a class name")
    p = os.fspath(path)
    errs = ErrorCollector()
    rows = RowValidator(classes, known_image_ids, skip_label, errs)
    read = ReadStats(format=EXT_FORMAT.get(os.path.splitext(p)[1].lower()))
    try:  # never a link followed, a FIFO or device opened (al_core.files.safe); read from this descriptor only
        f = open_regular(p, root=root)
    except UnsafeEntry as e:
        errs.add(None, None, "not a regular file", e.reason)
        return _result(p, "", read, rows, errs)
    except OSError as e:
        errs.add(None, None, f"cannot read the file: {e.strerror or e}")
        return _result(p, "", read, rows, errs)
    with f:
        h = _read_file(f, read, rows, errs, max_bytes, max_line_bytes)
    return _result(p, h.hexdigest(), read, rows, errs)


def _read_file(f, read: ReadStats, rows: RowValidator, errs: ErrorCollector, max_bytes: int, max_line_bytes: int):
    """Refuse what cannot be read (too large, UTF-16, empty), detect the format, run its reader.

    Returns the sha256 object that hashed every byte of the file.
    """
    h = hashlib.sha256()
    size = os.fstat(f.fileno()).st_size
    if size > max_bytes:
        errs.add(
            None,
            None,
            f"the file is {size} bytes; the limit is {max_bytes} bytes (MAX_FILE_BYTES): "
            "split it into several deliveries",
        )
        hash_rest(f, h)
        return h
    head = f.read(min(READ_CHUNK, max(size, 1)))
    f.seek(0)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        read.format = None
        errs.add(None, None, "the file is UTF-16 encoded: save it as UTF-8")
        hash_rest(f, h)
        return h
    detected = detect_format(head)
    if detected is None and len(head) < READ_CHUNK:
        errs.add(None, None, "empty file" if not head else "empty file: only blank lines")
        hash_rest(f, h)
        return h
    read.format = detected or "csv"
    if read.format in ("label_studio", "label_studio_task"):
        text = read_document(f, h, errs, size, max_bytes)
        if text is not None:
            (parse_ls_array if read.format == "label_studio" else parse_ls_object)(text, rows, errs, read)
        return h
    if read.format == "csv" and size >= csv_polars.POLARS_CSV_MIN_BYTES:
        n = csv_polars.read_csv_fast(f, h, rows, max_line_bytes, max_bytes)
        if n is not None:
            read.n_records = n
            return h
        f.seek(0)  # not plain enough for polars: the reference reader decides, from the first byte again
        h = hashlib.sha256()
    reader = LineReader(f, h, errs, max_line_bytes, max_bytes)
    if read.format in ("label_studio_csv", "label_studio_tsv"):
        parse_ls_table(reader, "\t" if read.format == "label_studio_tsv" else ",", rows, errs, read)
    else:
        read.n_records = (parse_jsonl if read.format == "jsonl" else parse_csv)(reader, rows, errs)
    hash_rest(f, h)  # a CSV with a bad header stops early: hash every byte all the same
    return h


def _result(path: str, sha: str, read: ReadStats, rows: RowValidator, errs: ErrorCollector) -> ParsedLabels:
    if not errs.count and not rows.rows and not errs.warnings and not read.n_drafts and not read.n_unanswered:
        why = (
            "nothing but a header or blank lines"
            if not read.format or not read.format.startswith("label_studio")
            else "no task"
        )
        errs.add(None, None, f"no data rows ({why})")
    users = dict(read.users)
    out = rows.rows
    if users and not errs.count:  # a Label Studio user id the file also names with an email: the email
        out = [dataclasses.replace(r, annotator=users[r.annotator]) if r.annotator in users else r for r in out]
    return ParsedLabels(
        path=path,
        sha256=sha,
        format=read.format,
        rows=() if errs.count else tuple(out),
        errors=tuple(errs.items),
        n_cancelled=read.n_cancelled,
        decisions=tuple(read.decisions),
        n_records=read.n_records,
        n_duplicates=rows.n_duplicates,
        errors_dropped=errs.dropped,
        warnings=tuple(errs.warnings),
        warnings_dropped=errs.warnings_dropped,
        n_empty=read.n_empty,
        n_drafts=read.n_drafts,
        n_unanswered=read.n_unanswered,
        users=users,
    )
