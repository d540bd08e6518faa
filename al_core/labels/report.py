"""The report of a label file: ``<name>.errors.json`` beside a rejected file, ``<name>.warnings.json`` beside an
accepted file with warnings, and what ``al labels check`` prints. Each error and warning names its line and, in a
Label Studio export, its task id and annotation id."""

from __future__ import annotations

import json
import os
from pathlib import Path

from al_core.files.atomic import atomic_write_text
from al_core.labels.limits import MAX_REPORT_ERRORS
from al_core.labels.results import ParsedLabels


def error_report(parsed: ParsedLabels, max_errors: int = MAX_REPORT_ERRORS) -> dict:
    """The report of a file (what ``al labels check`` prints): its errors, then its warnings, at most
    ``max_errors`` of each listed."""
    listed = parsed.errors[:max_errors]
    warned = parsed.warnings[:max_errors]
    return {
        "file": parsed.path,
        "sha256": parsed.sha256,
        "format": parsed.format,
        "n_errors": parsed.n_errors,
        "n_listed": len(listed),
        "n_omitted": parsed.n_errors - len(listed),
        "errors": [e.as_dict() for e in listed],
        "n_warnings": parsed.n_warnings,
        "n_warnings_omitted": parsed.n_warnings - len(warned),
        "warnings": [w.as_dict() for w in warned],
    }


def write_error_report(
    parsed: ParsedLabels,
    dest: str | os.PathLike,
    max_errors: int = MAX_REPORT_ERRORS,
    *,
    within: str | os.PathLike | None = None,
) -> Path:
    """Write the error report as JSON to ``dest`` atomically (``al_core.files.atomic``; ``within``: no folder below
    it may be a link); returns ``dest``."""
    text = json.dumps(error_report(parsed, max_errors), indent=2, ensure_ascii=False) + "\n"
    return atomic_write_text(Path(dest), text, within=within)
