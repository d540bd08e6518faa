"""Label Studio's row-shaped exports: JSON_MIN, CSV and TSV (one row per annotation, the task data flattened in).

Label Studio 1.23 writes, for every annotation that is not cancelled, the task's data keys and ``id`` (the task
id), the choice under the ``<Choices>`` name (CHOICES_NAME, ``label``: a string for one choice), ``annotator``
(the user id), ``annotation_id``, ``created_at``, ``updated_at`` and ``lead_time``; with ``download_all_tasks``,
also one row per task without an annotation. CSV and TSV hold the same rows as text: a header of the column names,
comma- or tab-separated (the TSV export is named ``.csv`` too), RFC 4180 quoting, an empty cell for a missing value.

- a row with a choice is an answer (the annotator by user id; the ingest looks the email up);
- a row with an annotation id and no choice is an empty annotation: ignored, with a warning naming the task and
  the annotation;
- a row with neither is a task without an answer (a draft, or an unlabelled task): counted (``n_unanswered``);
- skipped tasks are absent from these exports (Label Studio leaves cancelled annotations out): the JSON export and
  the target-storage files carry skips.

Recognised by content (al_core.labels.parse): a JSON array whose first element has ``annotation_id`` and no
``annotations`` (JSON_MIN); a first line naming every column of LS_SIGNATURE, split by tabs or commas (TSV, CSV).
Other columns are the task's data, not read. A CSV of the project's own columns is read by csv_reader, strictly.
"""

from __future__ import annotations

import csv

from al_core.labels.csv_reader import csv_rows
from al_core.labels.label_studio import CHOICES_NAME
from al_core.labels.ls_tasks import ANSWER_RULE, ls_time, read_task, warn_empty
from al_core.labels.reader import LineReader
from al_core.labels.results import ErrorCollector, ReadStats
from al_core.labels.rows import RowValidator
from al_core.labels.strict_json import BAD, json_type, walk_array

# The columns Label Studio adds to every CSV / TSV / JSON_MIN row (its converter's annotation fields).
LS_SIGNATURE = ("id", "annotation_id", "annotator", "created_at", "updated_at", "lead_time")
TABLE_FORMATS = {"\t": "label_studio_tsv", ",": "label_studio_csv"}


def ls_table_delimiter(first_line: str) -> str | None:
    """The delimiter of a Label Studio CSV / TSV export whose header is ``first_line`` (tab, comma), or None when
    the line is not such a header."""
    for delim in TABLE_FORMATS:
        if delim not in first_line:
            continue
        try:
            names = {c.strip() for c in next(csv.reader([first_line.rstrip("\r\n")], delimiter=delim))}
        except (csv.Error, StopIteration):
            continue
        if set(LS_SIGNATURE) <= names:
            return delim
    return None


def _int_id(v, line: int, field: str, errs: ErrorCollector, *, text: bool, **ids):
    """A Label Studio id (an integer; CSV: its digits) as text; None when missing; BAD after reporting."""
    if v is None or (text and v.strip() == ""):
        return None
    if text and v.strip().isdigit() and v.strip().isascii():
        return v.strip()
    if not text and isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    errs.add(line, field, f"{field} must be an integer, got {'text' if text else json_type(v)}", v, **ids)
    return BAD


def _choice(v, line: int, errs: ErrorCollector, *, text: bool, **ids):
    """The choice of a row: a label, None (no choice), or BAD after reporting."""
    if text:
        return v if v.strip() else None
    if isinstance(v, dict) and set(v) == {"choices"}:
        v = v["choices"]
    if isinstance(v, list):
        if not v:
            return None
        if len(v) == 1 and isinstance(v[0], str):
            return v[0]
    if v is None or isinstance(v, str):
        return v
    errs.add(line, CHOICES_NAME, f"{CHOICES_NAME} must be one label, got {json_type(v)}", v, **ids)
    return BAD


class _Rows:
    """The rows of one export: each checked, added as an answer, and grouped by task for ``decisions``."""

    def __init__(self, rows: RowValidator, errs: ErrorCollector, st: ReadStats) -> None:
        self.rows, self.errs, self.st = rows, errs, st
        self.by_task: dict[str, list[dict]] = {}

    def add(self, get, line: int, *, text: bool) -> None:
        """One row; ``get(column)`` its value (None when absent; CSV: the cell's text, '' when empty)."""
        errs, rows = self.errs, self.rows
        before = errs.count
        tid = _int_id(get("id"), line, "id", errs, text=text)
        aid = _int_id(get("annotation_id"), line, "annotation_id", errs, text=text, task_id=None if tid is BAD else tid)
        ids = {"task_id": None if tid is BAD else tid, "annotation_id": None if aid is BAD else aid}
        iid = get("image_id")
        if iid is None or (not text and not isinstance(iid, str)):
            errs.add(
                line,
                "image_id",
                "missing 'image_id': the task was not imported from al-pipeline's outbox"
                if iid is None
                else f"image_id must be a string, got {json_type(iid)} (not converted)",
                iid,
                **ids,
            )
        label = _choice(get(CHOICES_NAME), line, errs, text=text, **ids)
        who = get("annotator")
        if text:
            who = who.strip() or None if who is not None else None
        elif isinstance(who, int) and not isinstance(who, bool):
            who = str(who)
        elif who is not None and not isinstance(who, str):
            errs.add(line, "annotator", f"annotator must be a user id, got {json_type(who)}", who, **ids)
        times = {}
        for key in ("updated_at", "created_at"):
            v = get(key)
            try:
                times[key] = ls_time(None if text and not (v or "").strip() else v)
            except (TypeError, ValueError) as e:
                errs.add(line, key, f"{key} {e}", v, **ids)
        lead = get("lead_time")
        ok_s, seconds = (
            rows.seconds_text(line, lead, "lead_time", **ids)
            if text
            else rows.seconds_number(line, lead, "lead_time", **ids)
        )
        if errs.count > before or not ok_s:
            return
        if aid is None and label is None:
            self.st.n_unanswered += 1
            return
        if label is None:
            warn_empty(errs, self.st, line, CHOICES_NAME, **ids)
            return
        when = times["updated_at"] or times["created_at"]
        if rows.add(
            line,
            iid,
            label,
            who,
            aid,
            None,
            task_id=tid,
            annotated_at=when,
            seconds=seconds,
            seconds_source=None if seconds is None else "lead_time",
            fields={"label": CHOICES_NAME},
        ):
            task = self.by_task.setdefault(tid, {"image_id": iid.strip(), "line": line, "answers": []})
            task["answers"].append(
                {
                    "annotation_id": aid,
                    "label": label.strip(),
                    "annotator": who,
                    "time": when.isoformat() if when else None,
                    "cancelled": False,
                }
            )

    def finish(self) -> None:
        """A ``decisions`` entry for every task with several answers (Label Studio writes the newest first)."""
        for tid, task in self.by_task.items():
            if len(task["answers"]) > 1:
                self.st.decisions.append({"task_id": tid, **task, "rule": ANSWER_RULE})


def parse_ls_array(text: str, rows: RowValidator, errs: ErrorCollector, st: ReadStats) -> None:
    """A JSON array from Label Studio: its JSON export (tasks with ``annotations``) or JSON_MIN (rows with
    ``annotation_id``), told apart by the first element."""
    rows.json_text = True
    flat = _Rows(rows, errs, st)

    def on_item(item, i: int, line: int) -> None:
        if (
            st.format == "label_studio"
            and i == 0
            and isinstance(item, dict)
            and "annotation_id" in item
            and "annotations" not in item
        ):
            st.format = "label_studio_min"
        if st.format == "label_studio_min":
            if not isinstance(item, dict):
                errs.add(line, None, f"row #{i + 1}: a JSON_MIN row must be a JSON object, got {json_type(item)}", item)
                return
            flat.add(item.get, line, text=False)
        else:
            read_task(item, i, line, rows, errs, st)

    st.n_records = walk_array(text, errs, "task", on_item)
    flat.finish()


def parse_ls_table(reader: LineReader, delimiter: str, rows: RowValidator, errs: ErrorCollector, st: ReadStats) -> None:
    """Label Studio's CSV or TSV export (``delimiter`` from ls_table_delimiter)."""
    st.format = TABLE_FORMATS[delimiter]
    flat = _Rows(rows, errs, st)
    cr = csv.reader(reader.lines(), delimiter=delimiter, strict=True)

    def read_header(line: int, cells: list[str]) -> dict[str, int] | None:
        header = {c.strip(): i for i, c in enumerate(cells)}
        if "image_id" in header:
            return header
        errs.add(
            line,
            "header",
            "a Label Studio export without an image_id column: its tasks were not "
            "imported from al-pipeline's outbox (round-NNNN.label-studio.json)",
            delimiter.join(cells),
        )
        return None

    for line, header, cells in csv_rows(reader, cr, errs, st.format[-3:].upper(), read_header):
        st.n_records += 1
        if len(cells) != len(header):
            errs.add(line, None, f"expected {len(header)} cells, got {len(cells)}", delimiter.join(cells))
            continue
        flat.add(dict(zip(header, (cells[i] for i in header.values()), strict=True)).get, line, text=True)
    flat.finish()
