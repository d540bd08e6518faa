"""What a label-file reader returns: the rows, the errors and their collector (``ErrorCollector``)."""

from __future__ import annotations

import reprlib
from collections import Counter
from dataclasses import dataclass

from al_core.labels.limits import MAX_ERRORS_KEPT, PREVIEW_CHARS

_repr = reprlib.Repr()
_repr.maxstring = PREVIEW_CHARS
_repr.maxother = PREVIEW_CHARS
_repr.maxlevel = 3


@dataclass(frozen=True, slots=True)
class LabelRow:
    line: int  # line where the row (Label Studio: the task) starts, 1-based
    image_id: str
    label: str  # class name, or the skip label
    is_skip: bool
    annotator: str | None = None
    annotation_id: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class LabelError:
    line: int | None  # None: the whole file
    field: str | None  # column / key (Label Studio: a path such as annotations[1].result), None: the line
    message: str
    value_preview: str | None = None  # repr-escaped, truncated to ~PREVIEW_CHARS

    def as_dict(self) -> dict:
        return {"line": self.line, "field": self.field, "message": self.message, "value_preview": self.value_preview}

    def __str__(self) -> str:
        where = "file" if self.line is None else f"line {self.line}"
        if self.field:
            where += f" [{self.field}]"
        tail = f" (value: {self.value_preview})" if self.value_preview is not None else ""
        return f"{where}: {self.message}{tail}"


@dataclass(frozen=True)
class ParsedLabels:
    path: str
    sha256: str  # of every byte of the file ("" when it could not be opened)
    format: str | None  # 'csv' | 'jsonl' | 'label_studio'; None when not even that could be told
    rows: tuple[LabelRow, ...]  # empty whenever errors is not: a bad file is rejected whole
    errors: tuple[LabelError, ...]
    n_cancelled: int  # Label Studio annotations skipped because cancelled
    decisions: tuple[dict, ...]  # Label Studio tasks with several annotations: how each was resolved
    n_records: int = 0  # data records read (valid or not; Label Studio: tasks)
    n_duplicates: int = 0  # rows repeating an earlier (image, label) of the file, counted once
    errors_dropped: int = 0  # errors beyond MAX_ERRORS_KEPT, counted but not kept

    @property
    def ok(self) -> bool:
        return not self.errors and not self.errors_dropped and len(self.rows) > 0

    @property
    def n_errors(self) -> int:
        return len(self.errors) + self.errors_dropped

    def summary(self) -> dict:
        labels = Counter(r.label for r in self.rows if not r.is_skip)
        annotators = Counter(r.annotator for r in self.rows if r.annotator is not None)
        return {
            "file": self.path,
            "sha256": self.sha256,
            "format": self.format,
            "ok": self.ok,
            "rows": len(self.rows),
            "labels": dict(sorted(labels.items())),
            "skips": sum(1 for r in self.rows if r.is_skip),
            "annotators": dict(sorted(annotators.items())),
            "rows_without_annotator": sum(1 for r in self.rows if r.annotator is None),
            "n_records": self.n_records,
            "n_duplicates": self.n_duplicates,
            "n_cancelled": self.n_cancelled,
            "n_decisions": len(self.decisions),
            "n_errors": self.n_errors,
        }


def preview(value) -> str | None:
    """A printable (repr-escaped), truncated rendering of a bad value."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        out = repr(bytes(value[:PREVIEW_CHARS]))
        n = len(value)
    elif isinstance(value, str):
        out = repr(value[:PREVIEW_CHARS])
        n = len(value)
    else:
        return _repr.repr(value)[: 2 * PREVIEW_CHARS]
    if n > PREVIEW_CHARS:
        out += f"... ({n} in all)"
    return out


class ErrorCollector:
    """The errors of one file: the first MAX_ERRORS_KEPT are kept, further ones only counted."""

    def __init__(self) -> None:
        self.items: list[LabelError] = []
        self.dropped = 0

    def add(self, line: int | None, field: str | None, message: str, value=None) -> None:
        if len(self.items) < MAX_ERRORS_KEPT:
            self.items.append(LabelError(line, field, message, preview(value)))
        else:
            self.dropped += 1

    @property
    def count(self) -> int:
        return len(self.items) + self.dropped
