"""JSON lines label files: one object per line with ``image_id`` (or another of IMAGE_COLUMNS: a path relative to
the image root or a unique file name) and ``label``, optional inert strings and an optional ``seconds`` (a number:
the time spent on the answer)."""

from __future__ import annotations

from al_core.labels.limits import IMAGE_COLUMNS, JSONL_KEYS
from al_core.labels.reader import LineReader
from al_core.labels.results import ErrorCollector
from al_core.labels.rows import RowValidator
from al_core.labels.strict_json import BAD, decode_strict, json_str, json_type


def parse_jsonl(reader: LineReader, rows: RowValidator, errs: ErrorCollector) -> int:
    """Validate every line into ``rows``; returns the number of non-blank lines read."""
    n_records = 0
    rows.json_text = True
    for text in reader.lines():
        line = reader.line_no
        s = text.strip()
        if not s:
            continue
        n_records += 1
        obj, _, refused = decode_strict(s, column_only=True)
        if refused is not None:
            errs.add(line, None, refused.message, s if refused.preview is not None else None)  # the line as preview
            continue
        if not isinstance(obj, dict):
            errs.add(line, None, f"a JSON lines row must be an object, got {json_type(obj)}", s)
            continue
        unknown = [k for k in obj if k not in JSONL_KEYS]
        if unknown:
            errs.add(line, None, f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(JSONL_KEYS)}")
            continue
        key = next((k for k in IMAGE_COLUMNS if obj.get(k) not in (None, "")), "image_id")
        vals = {k: json_str(obj, k, line, errs, required=k in (key, "label")) for k in JSONL_KEYS if k != "seconds"}
        ok, seconds = rows.seconds_number(line, obj.get("seconds"))
        if not ok or any(v is BAD for v in vals.values()):
            continue
        rows.add(
            line,
            vals[key],
            vals["label"],
            vals["annotator"],
            vals["annotation_id"],
            vals["note"],
            seconds=seconds,
            seconds_source=None if seconds is None else "column",
        )
    return n_records
