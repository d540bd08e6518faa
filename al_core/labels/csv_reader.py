"""CSV label files: a header row naming the columns, RFC 4180 quoting (Python's csv module).

The delimiter is a comma, or the semicolon or tab a spreadsheet saves with when the header holds no comma
(``header_delimiter``). The image is named by the first non-empty cell of the IMAGE_COLUMNS present (a sha256 id,
a relative path or a unique file name); the outbox batch CSV's own columns (OUTBOX_COLUMNS) are ignored, so that
CSV is a label file once its ``label`` column is filled, also after a spreadsheet's round trip (BOM, CRLF, ``;``).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator

from al_core.labels.limits import CSV_COLUMNS, CSV_DELIMITERS, IMAGE_COLUMNS, OUTBOX_COLUMNS
from al_core.labels.reader import LineReader
from al_core.labels.results import ErrorCollector
from al_core.labels.rows import HEX_ANY_CASE, RowValidator


def csv_rows(
    reader: LineReader, cr, errs: ErrorCollector, what: str, read_header: Callable[[int, list[str]], dict | None]
) -> Iterator[tuple[int, dict[str, int], list[str]]]:
    """(line, header, cells) of each data record of ``cr``, a csv.reader over ``reader.lines()`` (``line``: the
    line the record starts on). The first record is the header: ``read_header(line, cells)`` gives column name ->
    index, or None (it reported why), which ends the file: rows cannot be read without a valid header. Blank
    records (nothing but empty cells) are passed over; a malformed one is reported (``malformed WHAT: ...``) and
    passed over, or ends the file before the header."""
    header: dict[str, int] | None = None
    while True:
        reader.mark()
        try:
            cells = next(cr)
        except StopIteration:
            return
        except csv.Error as e:
            errs.add(reader.first_since_mark or reader.line_no, None, f"malformed {what}: {e}")
            if header is None:
                return
            continue
        line = reader.first_since_mark or reader.line_no
        if not cells or not "".join(cells).strip():
            continue
        if header is None:
            header = read_header(line, cells)
            if header is None:
                return
            continue
        yield line, header, cells


def parse_csv(reader: LineReader, rows: RowValidator, errs: ErrorCollector) -> int:
    """Validate every record into ``rows``; returns the number of data records read."""
    lines = reader.lines()
    first = next(lines, None)
    if first is None:
        return 0
    delim = header_delimiter(first)
    cr = csv.reader(_chain(first, lines), strict=True, delimiter=delim)
    read_header = lambda line, cells: csv_header(line, cells, errs, delim)
    n_records = 0
    i_ids = None
    for line, header, cells in csv_rows(reader, cr, errs, "CSV", read_header):
        if i_ids is None:  # the header's columns
            i_ids, i_lab = [header[c] for c in IMAGE_COLUMNS if c in header], header["label"]
            i_ann, i_aid, i_note = header.get("annotator"), header.get("annotation_id"), header.get("note")
            i_sec = header.get("seconds")
        n_records += 1
        if len(cells) != len(header):
            errs.add(
                line, None, f"expected {len(header)} cells ({', '.join(header)}), got {len(cells)}", delim.join(cells)
            )
            continue
        seconds = None
        if i_sec is not None:
            ok, seconds = rows.seconds_text(line, cells[i_sec])
            if not ok:
                continue
        image = next((cells[i] for i in i_ids if cells[i].strip()), cells[i_ids[0]])
        rows.add(
            line,
            image,
            cells[i_lab],
            cells[i_ann] if i_ann is not None else None,
            cells[i_aid] if i_aid is not None else None,
            cells[i_note] if i_note is not None else None,
            seconds=seconds,
            seconds_source=None if seconds is None else "column",
        )
    return n_records


def _chain(first: str, rest):
    yield first
    yield from rest


def header_delimiter(line: str) -> str:
    """The delimiter of a CSV whose first line is ``line``: a comma, unless the line holds none and holds a
    semicolon or a tab (what a spreadsheet saves with in some locales)."""
    if "," not in line:
        for d in CSV_DELIMITERS[1:]:
            if d in line:
                return d
    return ","


def csv_header(line: int, cells: list[str], errs: ErrorCollector, delim: str = ",") -> dict[str, int] | None:
    names = [c.strip() for c in cells]
    usage = "the first line must be a header such as image_id,label,annotator"
    if HEX_ANY_CASE.fullmatch(names[0]):
        errs.add(line, "header", f"no header row: {usage}", delim.join(cells))
        return None
    bad = False
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        errs.add(line, "header", f"duplicate column(s) {', '.join(map(repr, dups))}")
        bad = True
    unknown = [n for n in names if n not in CSV_COLUMNS and n not in IMAGE_COLUMNS and n not in OUTBOX_COLUMNS]
    if unknown:
        hint = ""
        if any(d in n for n in unknown for d in ",;\t|"):
            hint = " (the delimiter must be a comma, a semicolon or a tab)"
        errs.add(
            line,
            "header",
            f"unknown column(s) {', '.join(map(repr, unknown))}{hint}; "
            f"allowed: {', '.join(dict.fromkeys([*CSV_COLUMNS, *IMAGE_COLUMNS]))} "
            f"(and the outbox CSV's {', '.join(OUTBOX_COLUMNS)}, ignored)",
            delim.join(cells),
        )
        bad = True
    missing = [] if any(n in names for n in IMAGE_COLUMNS) else ["image_id"]
    missing += [] if "label" in names else ["label"]
    if missing and not unknown:
        errs.add(line, "header", f"missing column(s) {', '.join(missing)}; {usage}", delim.join(cells))
        bad = True
    elif missing:
        bad = True
    return None if bad else {n: i for i, n in enumerate(names)}
