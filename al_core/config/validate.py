"""Checking a project file: types without silent coercion, the rules of each setting, and "did you mean".

Every problem raises ``ConfigError`` with one line that names the key, what is
wrong and, for a misspelt key or name, the closest known one.
"""

import dataclasses
import difflib
import math
import re
import string
import types
import typing


class ConfigError(ValueError):
    """The project file is malformed; the message names the file (when known), the key and the fix."""


def did_you_mean(word: str, known) -> str:
    """'; did you mean X?' when a known word is close to ``word``, else ''."""
    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _describe(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v)


_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _base_types(hint) -> tuple[set[type], bool]:
    """(allowed base types, whether None is allowed) of a field's annotation."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = typing.get_args(hint)
        return {a for a in args if a is not type(None)}, type(None) in args
    return {hint}, False


def check_mapping(value, kind: type, where: str) -> tuple:
    """A mapping of names to positive finite numbers (``kind`` float) or to non-blank strings (``kind`` str),
    as a tuple of (name, value) pairs sorted by name."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: expected a mapping of names to {'numbers' if kind is float else 'names'}, got {_describe(value)}"
        )
    out = []
    for k, v in value.items():
        if not isinstance(k, str) or not k.strip() or k != k.strip():
            raise ConfigError(
                f"{where}: the name {_describe(k)} must be a non-empty string without surrounding "
                f'spaces (quote it: "{k}")'
            )
        if kind is float:
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"{where}.{k}: expected a positive finite number, got {_describe(v)}")
            v = float(v)
        elif not isinstance(v, str) or not v.strip() or v != v.strip():
            raise ConfigError(f"{where}.{k}: expected a non-empty name without surrounding spaces, got {_describe(v)}")
        out.append((k, v))
    return tuple(sorted(out))


def check_value(value, hint, rules: dict, where: str):
    """The value of one setting, typed and checked against its rules (schema.setting)."""
    if "mapping" in rules:
        return check_mapping(value, rules["mapping"], where)
    allowed, nullable = _base_types(hint)
    if rules.get("auto") and value == "auto":  # a setting whose value the tool chooses (documented per setting)
        return value
    if value is None:
        if nullable:
            return None
        raise ConfigError(f"{where}: a value is required here, got null")
    if bool in allowed:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_describe(value)}")
        return value
    if int in allowed:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_describe(value)}")
    elif float in allowed:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string: the number the user wrote
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {_describe(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value}")
    elif str in allowed:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_describe(value)}")
        if rules.get("nonblank") and (not value.strip() or value != value.strip()):
            raise ConfigError(f"{where}: {_describe(value)} must be non-empty without surrounding spaces")
    _check_rules(value, rules, where)
    return value


def _check_rules(value, rules: dict, where: str) -> None:
    if "min" in rules and value < rules["min"]:
        raise ConfigError(f"{where}: must be at least {rules['min']}, got {_describe(value)}")
    if "gt" in rules and value <= rules["gt"]:
        raise ConfigError(f"{where}: must be greater than {rules['gt']}, got {_describe(value)}")
    if "max" in rules and value > rules["max"]:
        raise ConfigError(f"{where}: must be at most {rules['max']}, got {_describe(value)}")
    if "choices" in rules:
        choices = rules["choices"]() if callable(rules["choices"]) else rules["choices"]
        if value not in choices:
            raise ConfigError(
                f"{where}: unknown value {_describe(value)}{did_you_mean(value, choices)} "
                f"(known: {', '.join(map(str, choices))})"
            )


def build_section(cls, data, where: str):
    """An instance of the section dataclass ``cls`` from its mapping in the file (None: the defaults)."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}{did_you_mean(key, fields)} (known: {', '.join(fields)})")
    values = {k: check_value(v, hints[k], dict(fields[k].metadata), f"{where}.{k}") for k, v in data.items()}
    return cls(**values)


def check_classes(classes, skip_label: str):
    """The `classes:` list: non-empty names without surrounding spaces, unique, not the skip label."""
    if classes is None:
        return None
    if not isinstance(classes, list) or not classes:
        raise ConfigError(f"classes: expected a non-empty list of names, got {_describe(classes)}")
    for i, c in enumerate(classes):
        if not isinstance(c, str) or not c.strip() or c != c.strip():
            raise ConfigError(f"classes[{i}]: {_describe(c)} must be a non-empty name without surrounding spaces")
    seen = set()
    for c in classes:
        if c in seen:
            raise ConfigError(f"classes: duplicate name {c!r}")
        seen.add(c)
    if skip_label in seen:
        raise ConfigError(f"labels.skip_label {skip_label!r} is also a class name: rename one of them")
    return tuple(classes)


def check_url_template(template: str, fields: tuple[str, ...], where: str) -> None:
    """A str.format template naming only ``fields`` (no positional or attribute lookups)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ConfigError(f"{where}: not a valid template ({e}); write literal braces as {{{{ and }}}}") from None
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if name not in fields:
            raise ConfigError(
                f"{where}: unknown field {{{name}}}{did_you_mean(name, fields)} "
                f"(known: {', '.join('{' + f + '}' for f in fields)})"
            )
        if spec or conv:
            raise ConfigError(f"{where}: {{{name}}} takes no format spec or conversion")


# ---------------------------------------------------------------------------- cron
_CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, lowest, highest, names for values starting at lowest)
_CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)


def _cron_value(text: str, lo: int, hi: int, names: tuple[str, ...]) -> int:
    low = text.lower()
    if low in names:
        return lo + names.index(low)
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a number")
    v = int(text)
    if not lo <= v <= hi:
        raise ValueError(f"{v} is outside {lo}-{hi}")
    return v


def _cron_item(item: str, lo: int, hi: int, names: tuple[str, ...]) -> None:
    if lo == 1 and hi == 31 and item.upper() in ("L", "?"):  # croniter's last day of month / any day
        return
    if names is _DAYS:  # croniter's "?" (any) and "1#2" (second Monday)
        if item == "?":
            return
        if "#" in item:
            item, _, nth = item.partition("#")
            if not nth.isdigit() or not 1 <= int(nth) <= 5:
                raise ValueError(f"'#{nth}' must be #1 to #5")
    base, _, step = item.partition("/")
    if step and (not step.isdigit() or int(step) < 1):
        raise ValueError(f"step {step!r} must be a positive integer")
    if base == "*":
        return
    first, dash, last = base.partition("-")
    _cron_value(first, lo, hi, names)  # "a/step" counts from a; a range "b-a" wraps around, as Dagster's croniter
    if dash:
        _cron_value(last, lo, hi, names)


def check_cron(expr: str, where: str) -> None:
    """A standard 5-field cron expression (or @daily-style macro), as Dagster's schedules accept."""
    if expr.strip().lower() in _CRON_MACROS:
        return
    parts = expr.split()
    if len(parts) != 5:
        raise ConfigError(
            f"{where}: {expr!r} is not a cron expression: expected 5 fields "
            '(minute hour day-of-month month day-of-week), e.g. "0 3 * * *"'
        )
    for part, (name, lo, hi, names) in zip(parts, _CRON_FIELDS, strict=True):
        try:
            for item in part.split(","):
                _cron_item(item, lo, hi, names)
        except ValueError as e:
            raise ConfigError(f"{where}: {expr!r}: the {name} field {part!r} is invalid: {e}") from None
