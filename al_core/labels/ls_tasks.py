"""Label Studio's task-shaped files: the JSON export (an array of tasks) and its two target-storage files.

A task holds ``id``, ``data`` (``data.image_id`` names the image; the rest is the batch's task data) and
``annotations``. Every annotation is read as one answer (ANSWER_RULE, al_core.labels.label_studio):

- submitted with one choice: a row (a class, or the skip label when the annotator chose it);
- cancelled (``was_cancelled``: Label Studio's *Skip* button): a skip row, whatever its result (``n_cancelled``);
- submitted without a choice (``result: []``: the API allows it): ignored, with a warning that names the task and
  the annotation (``n_empty``); the rest of the file is applied;
- drafts (a task's ``drafts``) are never answers (``n_drafts``); a task with no answer is counted
  (``n_unanswered``).

Each row carries the annotation's id, its task's id, its time (``updated_at``, else ``created_at``, in UTC) and
Label Studio's ``lead_time`` (seconds spent). The annotator is the user's email when ``completed_by`` is a user
object (target-storage files), else the user id as text (the JSON export); ``ReadStats.users`` collects the
id -> email pairs a file shows.

A target storage (a Local Files export storage pointed at the inbox) writes one JSON object per file
(``parse_ls_object``): a task as above (``<task id>.json``, with ``FUTURE_SAVE_TASK_TO_STORAGE``), or one
annotation with its task nested under ``task`` (Label Studio's default, a file named by the annotation id).
"""

from __future__ import annotations

import datetime as _dt

from al_core.labels.results import ErrorCollector, ReadStats
from al_core.labels.rows import RowValidator
from al_core.labels.strict_json import BAD, decode_document, json_str, json_type, walk_array

EMPTY = object()  # an annotation submitted without a choice
ANSWER_RULE = (
    "every annotation is an answer, kept with its annotator: each annotator's latest answer (updated_at, else "
    "created_at) counts, and labels.policy makes the training label of the image from them"
)
_OLDEST = _dt.datetime.min.replace(tzinfo=_dt.UTC)


def ls_time(v) -> _dt.datetime | None:
    """A Label Studio time (ISO 8601; no zone: UTC) as an aware UTC datetime; TypeError / ValueError if bad."""
    if v is None:
        return None
    if not isinstance(v, str):
        raise TypeError(f"must be an ISO 8601 string or null, got {json_type(v)}")
    try:
        t = _dt.datetime.fromisoformat(v.strip())
    except ValueError:
        raise ValueError("is not an ISO 8601 time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t.astimezone(_dt.UTC)


def ls_annotator(v, line: int, field: str, errs: ErrorCollector, st: ReadStats, **ids):
    """The annotator of ``completed_by``: an email, a user id as text, or None; BAD after reporting."""
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)  # Label Studio user id
    if isinstance(v, dict):
        uid, email = v.get("id"), v.get("email")
        uid = str(uid) if isinstance(uid, int) and not isinstance(uid, bool) else None
        if isinstance(email, str) and email.strip():
            if uid is not None:
                st.users[uid] = email.strip()
            return email
        if uid is not None:
            return uid
    errs.add(line, field, f"completed_by must be a user id, an email or a user object, got {json_type(v)}", v, **ids)
    return BAD


def _ls_result(result, line: int, field: str, errs: ErrorCollector, **ids):
    """(label, note) of one annotation's result list; EMPTY when it holds no choice; BAD after reporting."""
    if not isinstance(result, list):
        errs.add(line, field, f"result must be a list, got {json_type(result)}", result, **ids)
        return BAD
    choices, texts = [], []
    for k, item in enumerate(result):
        if not isinstance(item, dict):
            errs.add(line, f"{field}[{k}]", f"a result must be an object, got {json_type(item)}", item, **ids)
            return BAD
        kind = item.get("type")
        if kind == "choices":
            choices.append((k, item))
        elif kind == "textarea":
            texts.append((k, item))
    if len(choices) > 1:
        errs.add(line, field, f"{len(choices)} 'choices' results: one single-choice classification is expected", **ids)
        return BAD
    if not choices:
        return EMPTY
    k, item = choices[0]
    value = item.get("value")
    got = value.get("choices") if isinstance(value, dict) else None
    if isinstance(got, list) and not got:
        return EMPTY
    if not isinstance(got, list) or len(got) != 1:
        n = f"{len(got)} choices" if isinstance(got, list) else f"{json_type(got)}"
        errs.add(line, f"{field}[{k}].value.choices", f"must be a list of exactly one label, got {n}", got, **ids)
        return BAD
    label = got[0]
    if not isinstance(label, str):
        errs.add(
            line,
            f"{field}[{k}].value.choices",
            f"a label must be a string, got {json_type(label)} (not converted)",
            label,
            **ids,
        )
        return BAD
    note_parts = []
    for k, item in texts:
        value = item.get("value")
        t = value.get("text") if isinstance(value, dict) else None
        t = [t] if isinstance(t, str) else t
        if not isinstance(t, list) or not all(isinstance(x, str) for x in t):
            errs.add(line, f"{field}[{k}].value.text", "must be a list of strings", t, **ids)
            return BAD
        note_parts.extend(t)
    return label, ("\n".join(note_parts) if note_parts else None)


def warn_empty(errs: ErrorCollector, st: ReadStats, line: int, field: str, **ids) -> None:
    """The warning of an annotation submitted without a choice (ignored; the rest of the file is applied)."""
    st.n_empty += 1
    errs.warn(
        line,
        field,
        'empty annotation (submitted without a choice): ignored; required="true" on the '
        "labelling config's <Choices> makes Label Studio's editor refuse it",
        **ids,
    )


def _read_annotation(
    ann, j: int, line: int, name: str, tid, rows: RowValidator, errs: ErrorCollector, st: ReadStats
) -> dict | None:
    """One annotation of a task as an answer (a dict), or None (an error, or an empty annotation's warning)."""
    f = f"annotations[{j}]"
    if not isinstance(ann, dict):
        errs.add(line, f, f"{name}: an annotation must be an object, got {json_type(ann)}", ann, task_id=tid)
        return None
    aid = ann.get("id")
    ids = {"task_id": tid, "annotation_id": aid}
    if not isinstance(aid, int) or isinstance(aid, bool):
        errs.add(
            line, f + ".id", f"{name}: an annotation id must be an integer, got {json_type(aid)}", aid, task_id=tid
        )
        return None
    wc = ann.get("was_cancelled", False)
    wc = False if wc is None else wc
    if not isinstance(wc, bool):
        errs.add(line, f + ".was_cancelled", f"{name}: must be true or false, got {json_type(wc)}", wc, **ids)
        return None
    times = {}
    for key in ("updated_at", "created_at"):
        try:
            times[key] = ls_time(ann.get(key))
        except (TypeError, ValueError) as e:
            errs.add(line, f"{f}.{key}", f"{name}: {key} {e}", ann.get(key), **ids)
            times[key] = BAD
    ok_s, seconds = rows.seconds_number(line, ann.get("lead_time"), f + ".lead_time", **ids)
    annotator = ls_annotator(ann.get("completed_by"), line, f + ".completed_by", errs, st, **ids)
    if BAD in times.values() or not ok_s or annotator is BAD:
        return None
    if wc:
        st.n_cancelled += 1
        label, note = rows.skip, None
    else:
        res = _ls_result(ann.get("result"), line, f + ".result", errs, **ids)
        if res is BAD:
            return None
        if res is EMPTY:
            warn_empty(errs, st, line, f + ".result", **ids)
            return None
        label, note = res
    return {
        "id": aid,
        "when": times["updated_at"] or times["created_at"],
        "label": label,
        "annotator": annotator,
        "note": note,
        "seconds": seconds,
        "field": f,
        "cancelled": wc,
    }


def read_task(task, idx: int, line: int, rows: RowValidator, errs: ErrorCollector, st: ReadStats) -> None:
    """Validate one task and add a row per answer (the module docstring)."""
    if not isinstance(task, dict):
        errs.add(line, None, f"task #{idx + 1}: a task must be a JSON object, got {json_type(task)}", task)
        return
    raw_id = task.get("id")
    tid = raw_id if isinstance(raw_id, int | str) and not isinstance(raw_id, bool) else None
    name = f"task #{idx + 1}" + (f" (id {tid})" if tid is not None else "")
    before = errs.count
    data = task.get("data")
    iid = BAD
    if not isinstance(data, dict):
        errs.add(line, "data", f"{name}: 'data' must be an object, got {json_type(data)}", data, task_id=tid)
    else:
        iid = json_str(data, "image_id", line, errs, required=True, field="data.image_id", task_id=tid)
    drafts = task.get("drafts")
    if isinstance(drafts, list):
        st.n_drafts += len(drafts)
    anns = task.get("annotations", BAD)
    if anns is BAD:
        errs.add(
            line, "annotations", f"{name}: no 'annotations' list: not a task of Label Studio's JSON export", task_id=tid
        )
        return
    if not isinstance(anns, list):
        errs.add(line, "annotations", f"{name}: 'annotations' must be a list, got {json_type(anns)}", anns, task_id=tid)
        return
    answers = [a for j, ann in enumerate(anns) if (a := _read_annotation(ann, j, line, name, tid, rows, errs, st))]
    ids = [a["id"] for a in answers]
    if len(set(ids)) != len(ids):
        errs.add(line, "annotations", f"{name}: the same annotation id appears twice", ids, task_id=tid)
    if errs.count > before or iid is BAD:
        return
    if not answers:
        st.n_unanswered += 1
        return
    tid_text = None if tid is None else str(tid)
    for a in answers:
        wf = a["field"]
        rows.add(
            line,
            iid,
            a["label"],
            a["annotator"],
            str(a["id"]),
            a["note"],
            fields={
                "image_id": "data.image_id",
                "label": wf + ".result",
                "annotator": wf + ".completed_by",
                "annotation_id": wf + ".id",
                "note": wf + ".result",
            },
            task_id=tid_text,
            annotated_at=a["when"],
            seconds=a["seconds"],
            seconds_source=None if a["seconds"] is None else "lead_time",
        )
    if len(answers) > 1:
        iso = lambda t: t.isoformat() if t else None
        st.decisions.append(
            {
                "task_id": tid,
                "image_id": iid.strip(),
                "line": line,
                "rule": ANSWER_RULE,
                "answers": [
                    {
                        "annotation_id": str(a["id"]),
                        "label": a["label"].strip(),
                        "annotator": a["annotator"],
                        "time": iso(a["when"]),
                        "cancelled": a["cancelled"],
                    }
                    for a in sorted(answers, key=lambda a: (a["when"] or _OLDEST, a["id"]), reverse=True)
                ],
            }
        )


def parse_ls_tasks(text: str, rows: RowValidator, errs: ErrorCollector, st: ReadStats) -> None:
    """Label Studio's JSON export: walk the top-level array task by task (each decoded alone)."""
    rows.json_text = True
    st.n_records = walk_array(text, errs, "task", lambda task, i, line: read_task(task, i, line, rows, errs, st))


def parse_ls_object(text: str, rows: RowValidator, errs: ErrorCollector, st: ReadStats) -> None:
    """One target-storage file: a task (``label_studio_task``) or an annotation with its task
    (``label_studio_annotation``)."""
    rows.json_text = True
    doc = decode_document(text, errs)
    if doc is BAD:
        return
    st.n_records = 1
    if isinstance(doc, dict) and "annotations" in doc:
        st.format = "label_studio_task"
        read_task(doc, 0, 1, rows, errs, st)
    elif isinstance(doc, dict) and "result" in doc and "task" in doc:
        st.format = "label_studio_annotation"
        task = doc["task"]
        if not isinstance(task, dict):
            errs.add(
                1,
                "task",
                f"the annotation's 'task' must be an object, got {json_type(task)}",
                task,
                annotation_id=doc.get("id"),
            )
            return
        ann = {k: v for k, v in doc.items() if k != "task"}
        read_task({"id": task.get("id"), "data": task.get("data"), "annotations": [ann]}, 0, 1, rows, errs, st)
    else:
        errs.add(
            1,
            None,
            "a JSON object that is neither a Label Studio task (with 'annotations') nor one of its "
            "annotations (with 'result' and 'task'), as a target storage writes them; JSON lines hold one "
            "object per line",
        )


def is_ls_object(obj) -> bool:
    """Whether a one-line JSON object is a Label Studio target-storage file rather than a JSON lines row."""
    return isinstance(obj, dict) and ("annotations" in obj or ("result" in obj and "task" in obj))
