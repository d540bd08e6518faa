"""A polars path for large, plain CSV label files: the same acceptance as ``csv_reader``, vectorised.

``read_csv_fast`` accepts a file only when the reference reader (``csv_reader``
over ``reader.LineReader``) would accept it with exactly the same rows; for
anything else it returns None and the caller runs the reference reader, which
writes every error message. So a bad file costs both readers, and there is one
implementation of the error reports.

It first reads the file in READ_CHUNK pieces, hashing them and checking the
bytes with numpy, and gives up (None) at the first sign of: a NUL byte, a
double quote (quoted cells may span lines; their line numbers are the
reference reader's business), a carriage return not followed by a newline, a
line over ``max_line_bytes`` (given up before the line is read whole, as the
reference reader never holds it either) or invalid UTF-8. A clean file is then
held whole once (at most MAX_FILE_BYTES) and polars checks, per line: blank
lines (only commas and whitespace) are skipped, the cell count, the image id
(64 lowercase hex characters after trimming, then known to the store), the
label (a class or the skip label after trimming), the inert texts
(at most MAX_FIELD_CHARS after trimming), the seconds, and one label per image and annotator. Trimming
strips exactly what Python's ``str.strip()`` strips (``WHITESPACE``).
"""

from __future__ import annotations

import codecs
import csv
from itertools import repeat
from typing import TYPE_CHECKING

from al_core.labels.csv_reader import csv_header
from al_core.labels.limits import MAX_FIELD_CHARS, READ_CHUNK
from al_core.labels.reader import UTF8_BOM
from al_core.labels.results import ErrorCollector, LabelRow
from al_core.labels.rows import SECONDS_RE, RowValidator

if TYPE_CHECKING:
    import numpy as np

# Scale switch (docs/benchmarks.md, "CSV label files"): CSV files of at least this size try the polars path.
# It saves ~1.5 us of CPU a row (3.8 against 5.3 us at 1,000,000 rows; more in wall time, on several cores) but
# costs numpy's and polars' import once per process (~0.25 s, ~80 MB resident) and ~100 MB more at its peak
# for 1,000,000 rows: below ~170,000 rows (12 MB) it does not pay.
POLARS_CSV_MIN_BYTES = 16 << 20  # 16 MiB, ~235,000 rows of image_id,label (71 bytes a row)
# What str.strip() removes: every character whose str.isspace() is true (tests/test_labels_polars.py checks it).
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
_NUL, _LF, _CR, _QUOTE, _COMMA = 0, 10, 13, 34, 44


def _read_gated(f, h, max_line_bytes: int, max_bytes: int) -> tuple[bytes, np.ndarray] | None:
    """(the whole file, commas per line), hashed into ``h``; None as soon as a byte needs the reference reader.

    Lines are what ``readline`` yields: ended by a newline, plus a last line
    without one if the file does not end in a newline.
    """
    import numpy as np

    pieces: list[bytes] = []
    counts: list[np.ndarray] = []  # commas per line ended so far, one array per piece
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    total = 0
    line_bytes = line_commas = 0  # the line not yet ended by a newline
    cr_at_end = False  # the previous piece ended in a carriage return
    while True:
        piece = f.read(READ_CHUNK)
        if not piece:
            break
        h.update(piece)
        total += len(piece)
        if total > max_bytes:  # it grew while being read: the reference reader reports it
            return None
        c = np.frombuffer(piece, np.uint8)
        if (cr_at_end and c[0] != _LF) or np.any((c == _NUL) | (c == _QUOTE)):
            return None
        cr = np.flatnonzero(c[:-1] == _CR)
        if cr.size and np.any(c[cr + 1] != _LF):
            return None
        cr_at_end = bool(c[-1] == _CR)
        nl = np.flatnonzero(c == _LF)
        if nl.size:
            longest = max(line_bytes + int(nl[0]), int(np.diff(nl).max()) - 1 if nl.size > 1 else 0)
            line_bytes = c.size - int(nl[-1]) - 1
        else:
            longest = line_bytes = line_bytes + c.size
        if longest > max_line_bytes or line_bytes > max_line_bytes:
            return None
        per_line = np.bincount(np.searchsorted(nl, np.flatnonzero(c == _COMMA)), minlength=nl.size + 1)
        per_line[0] += line_commas
        counts.append(per_line[:-1].astype(np.int32))
        line_commas = int(per_line[-1])
        try:
            decoder.decode(piece)
        except UnicodeDecodeError:
            return None
        pieces.append(piece)
    if cr_at_end:
        return None
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return None
    if line_bytes:
        counts.append(np.array([line_commas], np.int32))
    return b"".join(pieces), np.concatenate(counts) if counts else np.zeros(0, np.int32)


def read_csv_fast(f, h, rows: RowValidator, max_line_bytes: int, max_bytes: int) -> int | None:
    """Validate a plain CSV file into ``rows``; the number of data records, or None for the reference reader.

    Reads ``f`` from its start, hashing every byte into ``h`` (when None comes
    back, ``h`` holds part of the file: the caller starts over with a new one).
    Adds no error to ``rows.errs`` and rows only when it accepts the file.
    """
    import numpy as np
    import polars as pl

    # a line no longer than csv's field limit cannot hold a field the reference reader refuses as too large
    gated = _read_gated(f, h, min(max_line_bytes, csv.field_size_limit()), max_bytes)
    if gated is None:
        return None
    data, commas = gated
    del gated  # the file's bytes go as soon as polars holds them
    names = _header(data)
    if names is None or commas.size < 2 or np.any(commas[1:] > len(names) - 1):
        return None  # no valid header on line 1, no line after it, or a line with too many cells
    try:
        table = pl.read_csv(
            data,
            has_header=True,
            new_columns=names,
            infer_schema=False,
            quote_char=None,
            empty_string_is_null=False,
            raise_if_empty=False,
            comment_prefix=None,
            eol_char="\n",
            encoding="utf8",
        )
    except pl.exceptions.PolarsError:  # not expected after the checks above: the reference reader decides
        return None
    del data
    if table.height != commas.size - 1:  # one row per line after the header, blank ones included
        return None
    labels = list(dict.fromkeys([*rows.class_list, rows.skip]))  # the skip label last, never a class
    df = _validated(
        pl, table.with_row_index("line", offset=2).with_columns(pl.Series("commas", commas[1:])), names, labels
    )
    del table
    if df is None:
        return None
    n_records = df.height
    key = ["image_id", "annotator"] if "annotator" in names else ["image_id"]
    first = df.select(pl.struct(key).is_first_distinct()).to_series()
    if not first.all():  # one annotator answering an image twice: counted once if with the same label
        again = df.filter(~first).select(key).unique()
        twice = df.join(again, on=key, how="semi")
        if twice.select(pl.col("label").n_unique().over(key).max()).item() > 1:
            return None  # two labels: the reference reader keeps both and writes the warning
        df = df.filter(first)
    if not all(map(rows.known.__contains__, ids := df["image_id"].to_list())):
        return None
    columns = _columns(pl, df, names, labels, rows)
    del df  # polars' copy goes before the rows are built
    n = len(ids)
    sources = ["column" if v is not None else None for v in columns["seconds"]]
    rows.rows.extend(
        map(
            LabelRow,
            columns["line"],
            ids,
            columns["label"],
            columns["is_skip"],
            columns["annotator"],
            columns["annotation_id"],
            columns["note"],
            repeat(None, n),
            repeat(None, n),
            columns["seconds"],
            sources,
        )
    )
    rows.n_duplicates += n_records - n
    return n_records


def _header(data: bytes) -> list[str] | None:
    """The column names of line 1 when it is a valid header (as ``csv_header`` decides), else None."""
    end = data.find(b"\n")
    first = data[: len(data) if end < 0 else end]
    first = first[len(UTF8_BOM) :] if first.startswith(UTF8_BOM) else first
    cells = first.decode("utf-8").rstrip("\r").split(",")
    if not "".join(cells).strip():
        return None  # blank lines before the header
    header = csv_header(1, cells, ErrorCollector())
    if header is None or (end >= 0 and data.startswith(UTF8_BOM, end + 1)):  # polars would drop a BOM on line 2
        return None
    return list(header)


def _validated(pl, df, names: list[str], labels: list[str]):
    """The data lines, trimmed, without blank lines, when every check passes; else None.

    Values are first checked as they are (the common case: nothing to trim, no
    blank line, so no copy); only when that fails is every cell trimmed and
    blank lines dropped before checking again.
    """
    texts = [c for c in names if c not in ("image_id", "label", "seconds")]
    trimmed = [x for x in labels if x == x.strip()]  # a class named " cat" is never what a trimmed cell holds
    checks = [
        (pl.col("commas") == len(names) - 1).all(),
        pl.col("image_id").str.contains(r"^[0-9a-f]{64}$").all(),
        pl.col("label").is_in(trimmed).all(),
    ]
    checks += [(pl.col(c).str.len_chars() <= MAX_FIELD_CHARS).all() for c in texts]
    if "seconds" in names:  # empty, or SECONDS_RE and finite (what RowValidator.seconds_text accepts)
        sec = pl.col("seconds").str.strip_chars(WHITESPACE)
        checks.append(
            (
                (sec == "")
                | (sec.str.contains(f"^(?:{SECONDS_RE.pattern})$") & sec.cast(pl.Float64, strict=False).is_finite())
            ).all()
        )
    df = df.with_columns(pl.col(texts).str.strip_chars(WHITESPACE))
    if all(df.select(checks).row(0)):
        return df
    df = df.with_columns(pl.col(names).str.strip_chars(WHITESPACE)).filter(
        pl.any_horizontal(pl.col(names) != "")
    )  # blank lines (only commas and whitespace) are skipped
    if df.height == 0 or not all(df.select(checks).row(0)):
        return None
    return df


def _columns(pl, df, names: list[str], labels: list[str], rows: RowValidator) -> dict[str, list]:
    """LabelRow's fields but the image id, as Python lists, with the validator's own label objects."""
    canon = [rows.classes.get(x, rows.skip) for x in labels]  # one string object per class, as the reference keeps
    codes = df["label"].cast(pl.Enum(labels)).to_physical().to_list()
    skip_code = len(labels) - 1
    out = {"line": df["line"].to_list(), "label": [canon[k] for k in codes], "is_skip": [k == skip_code for k in codes]}
    for c in ("annotator", "annotation_id", "note"):
        out[c] = (
            df.select(pl.when(pl.col(c) != "").then(pl.col(c))).to_series().to_list()
            if c in names
            else [None] * df.height
        )
    out["annotator"] = [None if v is None else rows.annotators.setdefault(v, v) for v in out["annotator"]]
    out["seconds"] = (
        [None if v == "" else float(v) for v in df["seconds"].str.strip_chars(WHITESPACE).to_list()]
        if "seconds" in names
        else [None] * df.height
    )
    return out
