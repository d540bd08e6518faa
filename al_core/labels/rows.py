"""The row validator every format shares: image ids, labels, inert text fields, one answer per annotator and image.

Several answers for one image are all kept (each annotator's answer counts; al_core.catalogue.label_views says
how they make the training label). The same annotator answering one image twice in one file: the same label is a
duplicate, counted once; two different labels are both kept with a warning, and the label history keeps the later
one as their answer (by annotation time, else by position in the file).
"""

from __future__ import annotations

import math
import re
from collections.abc import Container, Sequence

from al_core.labels.limits import IMAGE_ID_LEN, MAX_FIELD_CHARS
from al_core.labels.results import ErrorCollector, LabelRow

ID_RE = re.compile(r"[0-9a-f]{64}")
# a `seconds` cell: a plain non-negative decimal number
SECONDS_RE = re.compile(r"([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
HEX_ANY_CASE = re.compile(r"[0-9a-fA-F]{64}")


def bad_id_reason(v: str) -> str:
    if "/" in v or "\\" in v or v.startswith((".", "~")) or (len(v) > 1 and v[1] == ":"):
        why = "it looks like a path"
    elif len(v) != IMAGE_ID_LEN:
        why = f"it is {len(v)} characters long"
    elif HEX_ANY_CASE.fullmatch(v):
        why = "it has uppercase hex digits"
    else:
        why = "it has characters other than 0-9 a-f"
    return f"image_id must be the image's sha256: exactly 64 lowercase hex characters ({why})"


def text_problem(v: str) -> str | None:
    if "\x00" in v:
        return "contains a NUL character"
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired surrogate (\\ud800-\\udfff escape)"
    return None


class RowValidator:
    """Validates candidate rows and keeps the good ones, one per image."""

    def __init__(self, classes: Sequence[str], known: Container[str], skip_label: str, errs: ErrorCollector):
        self.classes = {c: c for c in classes}  # canonical objects: one string per class in memory
        self.lower = {c.lower(): c for c in classes}
        self.class_list = tuple(classes)
        self.known = known
        self.skip = skip_label
        self.errs = errs
        self.rows: list[LabelRow] = []
        self.seen: dict[tuple[str, str | None], LabelRow] = {}  # (image, annotator) -> their latest row
        self.n_duplicates = 0
        self.annotators: dict[str, str] = {}
        # JSON strings may hold \u0000 or lone-surrogate escapes; CSV text was checked as bytes already.
        self.json_text = False

    def check_label(self, line: int, label: str, field: str = "label", **ids) -> str | None:
        lab = label.strip()
        if not lab:
            self.errs.add(line, field, "missing label", **ids)
            return None
        if lab == self.skip:
            return self.skip
        c = self.classes.get(lab)
        if c is not None:
            return c
        hint = ""
        if lab.lower() in self.lower:
            hint = f"; labels are case-sensitive: did you mean {self.lower[lab.lower()]!r}?"
        elif lab.lower() == self.skip.lower():
            hint = f"; labels are case-sensitive: did you mean the skip label {self.skip!r}?"
        elif len(self.class_list) <= 20:
            hint = f"; classes: {', '.join(self.class_list)} (or the skip label {self.skip!r})"
        self.errs.add(line, field, f"label is not a class of this project{hint}", label, **ids)
        return None

    def check_id(self, line: int, image_id: str, field: str = "image_id", **ids) -> str | None:
        iid = image_id.strip()
        if not iid:
            self.errs.add(line, field, "missing image_id", **ids)
            return None
        if not ID_RE.fullmatch(iid):
            self.errs.add(line, field, bad_id_reason(iid), image_id, **ids)
            return None
        if iid not in self.known:
            self.errs.add(line, field, "unknown image_id: no image with this sha256 in the store", iid, **ids)
            return None
        return iid

    def text(self, line: int, value: str | None, field: str, **ids) -> tuple[bool, str | None]:
        """An optional inert text field: (ok, value or None)."""
        if value is None:
            return True, None
        problem = text_problem(value)
        if problem:
            self.errs.add(line, field, f"{field} {problem}", value, **ids)
            return False, None
        v = value.strip()
        if len(v) > MAX_FIELD_CHARS:
            self.errs.add(line, field, f"{field} is {len(v)} characters long; the limit is {MAX_FIELD_CHARS}", v, **ids)
            return False, None
        return True, (v or None)

    def seconds_text(self, line: int, value: str | None, field: str = "seconds", **ids) -> tuple[bool, float | None]:
        """A `seconds` cell (CSV): empty, or a non-negative decimal number (SECONDS_RE) that is finite."""
        v = (value or "").strip()
        if not v:
            return True, None
        x = float(v) if SECONDS_RE.fullmatch(v) else math.nan
        if not math.isfinite(x):
            self.errs.add(line, field, f"{field} must be a number of seconds (0 or more, such as 12.5)", value, **ids)
            return False, None
        return True, x

    def seconds_number(self, line: int, value, field: str = "seconds", **ids) -> tuple[bool, float | None]:
        """A JSON time in seconds (`seconds`, Label Studio's lead_time): null, or a finite number >= 0 (never a
        string: not converted)."""
        if value is None:
            return True, None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            self.errs.add(line, field, f"{field} must be a number of seconds (0 or more) or null", value, **ids)
            return False, None
        return True, float(value)

    def add(
        self,
        line: int,
        image_id: str,
        label: str,
        annotator: str | None = None,
        annotation_id: str | None = None,
        note: str | None = None,
        fields: dict[str, str] | None = None,
        *,
        task_id: str | None = None,
        annotated_at=None,
        seconds: float | None = None,
        seconds_source: str | None = None,
    ) -> bool:
        """Validate one row and keep it (once per image, annotator and label). ``fields`` renames fields in
        error reports."""
        iid = image_id.strip()
        lab = label.strip()
        # Fast path (the common case): a known id, a class (or skip) label, short clean texts.
        if (
            not self.json_text
            and ID_RE.fullmatch(iid)
            and iid in self.known
            and (lab in self.classes or lab == self.skip)
            and (annotator is None or len(annotator) <= MAX_FIELD_CHARS)
            and (annotation_id is None or len(annotation_id) <= MAX_FIELD_CHARS)
            and (note is None or len(note) <= MAX_FIELD_CHARS)
        ):
            lab = self.classes.get(lab, self.skip)
            annotator = annotator.strip() or None if annotator is not None else None
            annotation_id = annotation_id.strip() or None if annotation_id is not None else None
            note = note.strip() or None if note is not None else None
        else:
            fn = (lambda k: fields.get(k, k)) if fields else (lambda k: k)
            ids = {"task_id": task_id, "annotation_id": annotation_id}
            for fld, v in (("image_id", image_id), ("label", label)):
                problem = text_problem(v)
                if problem:
                    self.errs.add(line, fn(fld), f"{fld} {problem}", v, **ids)
                    return False
            iid = self.check_id(line, image_id, fn("image_id"), **ids)
            lab = self.check_label(line, label, fn("label"), **ids)
            ok_a, annotator = self.text(line, annotator, fn("annotator"), **ids)
            ok_i, annotation_id = self.text(line, annotation_id, fn("annotation_id"), **ids)
            ok_n, note = self.text(line, note, fn("note"), **ids)
            if iid is None or lab is None or not (ok_a and ok_i and ok_n):
                return False
        key = (iid, annotator)
        prev = self.seen.get(key)
        if prev is not None:
            if prev.label == lab:
                self.n_duplicates += 1
                return True
            who = f"annotator {annotator!r}" if annotator is not None else "an unnamed annotator"
            self.errs.warn(
                line,
                fields.get("label", "label") if fields else "label",
                f"image {iid}: {who} answered {lab!r} here and {prev.label!r} at {_where(prev)}: both are "
                "kept, and only their later answer counts (by annotation time, else by position in the "
                "file)",
                label,
                task_id=task_id,
                annotation_id=annotation_id,
            )
        if annotator is not None:  # a file has few annotators: one string object each
            annotator = self.annotators.setdefault(annotator, annotator)
        row = LabelRow(
            line,
            iid,
            lab,
            lab == self.skip,
            annotator,
            annotation_id,
            note,
            task_id,
            annotated_at,
            seconds,
            seconds_source,
        )
        self.rows.append(row)
        self.seen[key] = row
        return True


def _where(row: LabelRow) -> str:
    if row.task_id is not None:
        return f"task {row.task_id}" + (f", annotation {row.annotation_id}" if row.annotation_id else "")
    return f"line {row.line}"
