"""Strict JSON decoding shared by the JSON lines and Label Studio readers.

Duplicate keys in one object are errors (``DECODER``), nesting deeper than
MAX_JSON_DEPTH is an error (``too_deep``), and a value where a string belongs
must be a string (``json_str``): nothing is converted.
"""

from __future__ import annotations

import json
import re

from al_core.labels.limits import MAX_JSON_DEPTH
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


def json_str(obj: dict, key: str, line: int, errs: ErrorCollector, required: bool, field: str | None = None):
    """obj[key] as a string; None when optional and absent/null; BAD on error."""
    field = field or key
    if key not in obj or (obj[key] is None and not required):
        if required:
            errs.add(line, field, f"missing {key!r}")
            return BAD
        return None
    v = obj[key]
    if not isinstance(v, str):
        errs.add(line, field, f"{field} must be a string, got {json_type(v)} (not converted)", v)
        return BAD
    return v
