"""CSV label files: a header row naming the columns, comma-delimited, RFC 4180 quoting (Python's csv module)."""

from __future__ import annotations

import csv

from al_core.labels.limits import CSV_COLUMNS, CSV_REQUIRED
from al_core.labels.reader import LineReader
from al_core.labels.results import ErrorCollector
from al_core.labels.rows import HEX_ANY_CASE, RowValidator


def parse_csv(reader: LineReader, rows: RowValidator, errs: ErrorCollector) -> int:
    """Validate every record into ``rows``; returns the number of data records read."""
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
            header = csv_header(line, cells, errs)
            if header is None:
                return n_records  # rows cannot be read without a valid header
            i_id, i_lab = header["image_id"], header["label"]
            i_ann, i_aid, i_note = header.get("annotator"), header.get("annotation_id"), header.get("note")
            i_sec = header.get("seconds")
            continue
        n_records += 1
        if len(cells) != len(header):
            errs.add(
                line, None, f"expected {len(header)} cells ({', '.join(header)}), got {len(cells)}", ",".join(cells)
            )
            continue
        seconds = None
        if i_sec is not None:
            ok, seconds = rows.seconds_text(line, cells[i_sec])
            if not ok:
                continue
        rows.add(
            line,
            cells[i_id],
            cells[i_lab],
            cells[i_ann] if i_ann is not None else None,
            cells[i_aid] if i_aid is not None else None,
            cells[i_note] if i_note is not None else None,
            seconds=seconds,
            seconds_source=None if seconds is None else "column",
        )
    return n_records


def csv_header(line: int, cells: list[str], errs: ErrorCollector) -> dict[str, int] | None:
    names = [c.strip() for c in cells]
    usage = "the first line must be a header such as image_id,label,annotator"
    if HEX_ANY_CASE.fullmatch(names[0]):
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
        errs.add(
            line,
            "header",
            f"unknown column(s) {', '.join(map(repr, unknown))}{hint}; allowed: {', '.join(CSV_COLUMNS)}",
            ",".join(cells),
        )
        bad = True
    missing = [n for n in CSV_REQUIRED if n not in names]
    if missing and not unknown:
        errs.add(line, "header", f"missing column(s) {', '.join(missing)}; {usage}", ",".join(cells))
        bad = True
    elif missing:
        bad = True
    return None if bad else {n: i for i, n in enumerate(names)}
