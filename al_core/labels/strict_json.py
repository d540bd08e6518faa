"""Strict JSON decoding shared by the JSON lines and Label Studio readers.

Duplicate keys in one object are errors (``DECODER``), nesting deeper than
MAX_JSON_DEPTH is an error (``too_deep``), and a value where a string belongs
must be a string (``json_str``): nothing is converted. ``walk_array`` decodes a
top-level array element by element (a Label Studio export), ``decode_document``
one whole document (a target-storage file).
"""

from __future__ import annotations

import dataclasses
import json
import re

from al_core.labels.limits import MAX_JSON_DEPTH, PREVIEW_CHARS
from al_core.labels.results import ErrorCollector

BAD = object()  # marks a value already reported as an error
JSON_WS = re.compile(r"[ \t\n\r]*")
# Strings or brackets; only ever run over text that json already parsed (so
# every quote opens a terminated string and the scan stays linear).
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def json_type(v) -> str:
    """How an error names the JSON type of ``v`` ("a number", "null", ...)."""
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


class DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set = set()
        for k, _ in pairs:
            if k in seen:
                raise DuplicateKey(f"duplicate key {k!r} in one JSON object")
            seen.add(k)
    return d


DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys)


def too_deep(text: str, start: int = 0, end: int | None = None, limit: int = MAX_JSON_DEPTH) -> bool:
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


@dataclasses.dataclass(frozen=True)
class Refused:
    """Why ``decode_strict`` refused a JSON value: ``message``; a syntax error also has its line in the text
    (``lineno``) and a ``preview`` of the text from where it is."""

    message: str
    lineno: int | None = None
    preview: str | None = None


def decode_strict(text: str, pos: int | None = None, *, limit: int = MAX_JSON_DEPTH, column_only: bool = False):
    """Strictly decode the whole of ``text`` (``pos`` None) or the value starting at ``pos``: (value, end, None);
    (BAD, end, Refused) for a value nested deeper than ``limit`` levels (it was read: ``end`` is after it); (BAD,
    None, Refused) for one that cannot be read (malformed, a duplicate key, an integer with too many digits, nested
    too deep for the decoder). ``column_only``: a syntax error names its column alone (one line of JSON lines)."""
    try:
        value, end = (DECODER.decode(text), len(text)) if pos is None else DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as e:
        where = f"column {e.colno}" if column_only else f"line {e.lineno} column {e.colno}"
        return BAD, None, Refused(f"malformed JSON at {where}: {e.msg}", e.lineno, text[e.pos : e.pos + PREVIEW_CHARS])
    except RecursionError:
        return BAD, None, Refused(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    except ValueError as e:  # duplicate key, integer with too many digits
        return BAD, None, Refused(f"malformed JSON: {e}")
    if too_deep(text, pos or 0, end, limit):
        return BAD, end, Refused(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value, end, None


def json_str(obj: dict, key: str, line: int, errs: ErrorCollector, required: bool, field: str | None = None, **ids):
    """obj[key] as a string; None when optional and absent/null; BAD on error (``ids``: Label Studio's task and
    annotation ids, for the error)."""
    field = field or key
    if key not in obj or (obj[key] is None and not required):
        if required:
            errs.add(line, field, f"missing {key!r}", **ids)
            return BAD
        return None
    v = obj[key]
    if not isinstance(v, str):
        errs.add(line, field, f"{field} must be a string, got {json_type(v)} (not converted)", v, **ids)
        return BAD
    return v


def walk_array(text: str, errs: ErrorCollector, what: str, on_item) -> int:
    """Decode the top-level JSON array of ``text`` one element at a time and call ``on_item(item, index,
    start_line)`` for each (so one element is held decoded at a time); returns the number of elements.

    Malformed JSON (an unclosed array, a trailing comma, extra data, a duplicate key) is reported in ``errs``
    with its line, and stops the walk; an element nested deeper than MAX_JSON_DEPTH (counting the enclosing
    array) is reported and passed over. ``what`` names an element in messages ("task", "row").
    """
    n = 0
    line, line_pos = 1, 0

    def line_at(pos: int) -> int:
        nonlocal line, line_pos
        line += text.count("\n", line_pos, pos)
        line_pos = pos
        return line

    pos = JSON_WS.match(text).end()
    if text[pos : pos + 1] != "[":  # pragma: no cover - format detection guarantees it
        errs.add(1, None, "a Label Studio export must be a JSON array")
        return 0
    pos += 1
    expect_value = False
    while True:
        pos = JSON_WS.match(text, pos).end()
        if pos >= len(text):
            errs.add(line_at(pos), None, "malformed JSON: the array is not closed (missing ']')")
            break
        if text[pos] == "]" and not expect_value:
            pos += 1
            rest = JSON_WS.match(text, pos).end()
            if rest < len(text):
                errs.add(
                    line_at(rest), None, "malformed JSON: extra data after the array", text[rest : rest + PREVIEW_CHARS]
                )
            break
        start_line = line_at(pos)
        item, end, refused = decode_strict(text, pos, limit=MAX_JSON_DEPTH - 1)  # the enclosing array is one level
        if refused is not None and refused.lineno is not None:  # a syntax error, at its own line
            errs.add(refused.lineno, None, refused.message, refused.preview)
        elif refused is not None:
            errs.add(start_line, None, f"{what} #{n + 1}: {refused.message}")
        if end is None:
            break
        n += 1
        if refused is None:
            on_item(item, n - 1, start_line)
        del item
        pos = JSON_WS.match(text, end).end()
        if text[pos : pos + 1] == ",":
            pos += 1
            expect_value = True
            nxt = JSON_WS.match(text, pos).end()
            if text[nxt : nxt + 1] == "]":
                errs.add(line_at(nxt), None, "malformed JSON: trailing comma before ']'")
                break
        elif text[pos : pos + 1] == "]":
            expect_value = False
        elif pos >= len(text):
            errs.add(line_at(pos), None, "malformed JSON: the array is not closed (missing ']')")
            break
        else:
            errs.add(
                line_at(pos),
                None,
                f"malformed JSON: expected ',' or ']' after a {what}",
                text[pos : pos + PREVIEW_CHARS],
            )
            break
    return n


def decode_document(text: str, errs: ErrorCollector):
    """One whole JSON document (a Label Studio target-storage file), strictly decoded; BAD after reporting why."""
    value, _, refused = decode_strict(text)
    if refused is not None:
        errs.add(refused.lineno, None, refused.message, refused.preview)
    return value
