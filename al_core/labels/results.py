"""What a label-file reader returns: the rows, the errors and warnings, and their collector (``ErrorCollector``)."""

from __future__ import annotations

import datetime as _dt
import reprlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from al_core.labels.limits import MAX_ERRORS_KEPT, PREVIEW_CHARS

_repr = reprlib.Repr()
_repr.maxstring = PREVIEW_CHARS
_repr.maxother = PREVIEW_CHARS
_repr.maxlevel = 3


@dataclass(frozen=True, slots=True)
class LabelRow:
    """One answer: an annotator's class (or skip) for one image."""

    line: int  # line where the row (Label Studio: the task or export row) starts, 1-based
    image_id: str
    label: str  # class name, or the skip label
    is_skip: bool
    annotator: str | None = None  # Label Studio: the user's email when the file carries it, else the user id
    annotation_id: str | None = None
    note: str | None = None
    task_id: str | None = None  # Label Studio's task id
    annotated_at: _dt.datetime | None = None  # UTC (aware): Label Studio's updated_at, else created_at
    seconds: float | None = None  # time spent on the answer
    seconds_source: str | None = None  # 'lead_time' (Label Studio) | 'column' (a `seconds` column); None: unknown


@dataclass(frozen=True, slots=True)
class LabelError:
    """A problem of a file (an error rejects it, a warning does not): where, which field, why."""

    line: int | None  # None: the whole file
    field: str | None  # column / key (Label Studio: a path such as annotations[1].result), None: the line
    message: str
    value_preview: str | None = None  # repr-escaped, truncated to ~PREVIEW_CHARS
    task_id: str | None = None  # Label Studio task id, when the problem is in one
    annotation_id: str | None = None  # Label Studio annotation id, when the problem is in one

    def as_dict(self) -> dict:
        return {
            "line": self.line,
            "field": self.field,
            "message": self.message,
            "value_preview": self.value_preview,
            "task_id": self.task_id,
            "annotation_id": self.annotation_id,
        }

    @property
    def where(self) -> str:
        """'task 4, annotation 3 (line 1) [field]', or 'line 7 [field]', or 'file'."""
        if self.task_id is not None:
            where = f"task {self.task_id}"
            if self.annotation_id is not None:
                where += f", annotation {self.annotation_id}"
            if self.line is not None:
                where += f" (line {self.line})"
        else:
            where = "file" if self.line is None else f"line {self.line}"
        return where + (f" [{self.field}]" if self.field else "")

    def __str__(self) -> str:
        tail = f" (value: {self.value_preview})" if self.value_preview is not None else ""
        return f"{self.where}: {self.message}{tail}"


@dataclass(frozen=True)
class ParsedLabels:
    path: str
    sha256: str  # of every byte of the file ("" when it could not be opened)
    format: str | None  # one of al_core.labels.limits.FORMATS; None when not even that could be told
    rows: tuple[LabelRow, ...]  # empty whenever errors is not: a bad file is rejected whole
    errors: tuple[LabelError, ...]
    n_cancelled: int  # Label Studio annotations cancelled (the Skip button): each is a skip row
    decisions: tuple[dict, ...]  # Label Studio tasks with several answers: who answered what (all kept)
    n_records: int = 0  # data records read (valid or not; Label Studio: tasks, or export rows)
    n_duplicates: int = 0  # rows repeating an earlier (image, annotator, label) of the file, counted once
    errors_dropped: int = 0  # errors beyond MAX_ERRORS_KEPT, counted but not kept
    warnings: tuple[LabelError, ...] = ()  # problems that do not reject the file (its rows are applied)
    warnings_dropped: int = 0
    n_empty: int = 0  # Label Studio annotations submitted without a choice: ignored, each with a warning
    n_drafts: int = 0  # Label Studio drafts (never submitted): not answers
    n_unanswered: int = 0  # Label Studio tasks without an answer (drafts only, or none: download_all_tasks)
    users: Mapping[str, str] = field(default_factory=dict)  # Label Studio user id -> email, found in the file

    @property
    def ok(self) -> bool:
        """No error, and something was read: an answer, or Label Studio tasks whose answers were all ignored
        (empty, drafts) and said so."""
        return (
            not self.errors
            and not self.errors_dropped
            and (len(self.rows) > 0 or bool(self.warnings) or self.n_drafts > 0 or self.n_unanswered > 0)
        )

    @property
    def n_errors(self) -> int:
        return len(self.errors) + self.errors_dropped

    @property
    def n_warnings(self) -> int:
        return len(self.warnings) + self.warnings_dropped

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
            "n_empty": self.n_empty,
            "n_drafts": self.n_drafts,
            "n_unanswered": self.n_unanswered,
            "n_decisions": len(self.decisions),
            "n_errors": self.n_errors,
            "n_warnings": self.n_warnings,
        }


@dataclass
class ReadStats:
    """What reading one file found besides its rows, errors and warnings (filled by the format's reader)."""

    format: str | None
    n_records: int = 0
    n_cancelled: int = 0
    n_empty: int = 0
    n_drafts: int = 0
    n_unanswered: int = 0
    decisions: list[dict] = field(default_factory=list)
    users: dict[str, str] = field(default_factory=dict)  # Label Studio user id -> email


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
    """The errors and warnings of one file: the first MAX_ERRORS_KEPT of each are kept, further ones only counted."""

    def __init__(self) -> None:
        self.items: list[LabelError] = []
        self.dropped = 0
        self.warnings: list[LabelError] = []
        self.warnings_dropped = 0

    def add(
        self, line: int | None, field: str | None, message: str, value=None, *, task_id=None, annotation_id=None
    ) -> None:
        """An error: the file is rejected."""
        if len(self.items) < MAX_ERRORS_KEPT:
            self.items.append(LabelError(line, field, message, preview(value), _id(task_id), _id(annotation_id)))
        else:
            self.dropped += 1

    def warn(
        self, line: int | None, field: str | None, message: str, value=None, *, task_id=None, annotation_id=None
    ) -> None:
        """A warning: reported with the file, which is applied all the same."""
        if len(self.warnings) < MAX_ERRORS_KEPT:
            self.warnings.append(LabelError(line, field, message, preview(value), _id(task_id), _id(annotation_id)))
        else:
            self.warnings_dropped += 1

    @property
    def count(self) -> int:
        return len(self.items) + self.dropped


def _id(v) -> str | None:
    """A Label Studio id as text (an int, a string), or None when it is neither."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int):
        return str(v)
    return v if isinstance(v, str) and v else None
