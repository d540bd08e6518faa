"""JSON lines label files: one object per line with ``image_id`` and ``label``, optional inert strings and an
optional ``seconds`` (a number: the time spent on the answer)."""

from __future__ import annotations

import json

from al_core.labels.limits import CSV_REQUIRED, JSONL_KEYS, MAX_JSON_DEPTH
from al_core.labels.reader import LineReader
from al_core.labels.results import ErrorCollector
from al_core.labels.rows import RowValidator
from al_core.labels.strict_json import BAD, DECODER, json_str, json_type, too_deep


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
        try:
            obj = DECODER.decode(s)
        except json.JSONDecodeError as e:
            errs.add(line, None, f"malformed JSON at column {e.colno}: {e.msg}", s)
            continue
        except RecursionError:
            errs.add(line, None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            continue
        except ValueError as e:  # duplicate key, integer with too many digits
            errs.add(line, None, f"malformed JSON: {e}")
            continue
        if too_deep(s):
            errs.add(line, None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            continue
        if not isinstance(obj, dict):
            errs.add(line, None, f"a JSON lines row must be an object, got {json_type(obj)}", s)
            continue
        unknown = [k for k in obj if k not in JSONL_KEYS]
        if unknown:
            errs.add(line, None, f"unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(JSONL_KEYS)}")
            continue
        vals = {k: json_str(obj, k, line, errs, required=k in CSV_REQUIRED) for k in JSONL_KEYS if k != "seconds"}
        ok, seconds = rows.seconds_number(line, obj.get("seconds"))
        if not ok or any(v is BAD for v in vals.values()):
            continue
        rows.add(
            line,
            vals["image_id"],
            vals["label"],
            vals["annotator"],
            vals["annotation_id"],
            vals["note"],
            seconds=seconds,
            seconds_source=None if seconds is None else "column",
        )
    return n_records
