"""Label Studio: the reader of its JSON export, and the writers of its labelling config and import tasks.

Reading (``parse_label_studio``): an array of tasks, each with ``data.image_id``
and ``annotations``; cancelled annotations are counted and ignored, and a task
with several live annotations is resolved by RESOLUTION_RULE (the package
docstring, ``al_core.labels``, states the whole contract). Writing:
``label_studio_config`` is the labelling interface (one single choice among the
classes and the skip label) and ``label_studio_tasks`` the import tasks of one
proposed batch, whose ``data.image_id`` the reader reads back.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import quoteattr

from al_core.labels.limits import MAX_JSON_DEPTH, PREVIEW_CHARS
from al_core.labels.results import ErrorCollector
from al_core.labels.rows import RowValidator
from al_core.labels.strict_json import BAD, DECODER, JSON_WS, json_str, json_type, too_deep

RESOLUTION_RULE = (
    "most recently updated annotation wins: max of (updated_at, else created_at; then annotation id); "
    "an annotation with neither time is older than any dated one"
)
_OLDEST = _dt.datetime.min.replace(tzinfo=_dt.UTC)


# -- reading ----------------------------------------------------------------------------
def _ls_time(v) -> _dt.datetime | None:
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


def _ls_annotator(v, line: int, field: str, errs: ErrorCollector):
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)  # Label Studio user id
    if isinstance(v, dict):
        email = v.get("email")
        if isinstance(email, str) and email.strip():
            return email
        uid = v.get("id")
        if isinstance(uid, int) and not isinstance(uid, bool):
            return str(uid)
    errs.add(line, field, f"completed_by must be a user id, an email or a user object, got {json_type(v)}", v)
    return BAD


def _ls_result(result, line: int, field: str, errs: ErrorCollector):
    """(label, note) of one annotation's result list, or BAD."""
    if not isinstance(result, list):
        errs.add(line, field, f"result must be a list, got {json_type(result)}", result)
        return BAD
    choices, texts = [], []
    for k, item in enumerate(result):
        if not isinstance(item, dict):
            errs.add(line, f"{field}[{k}]", f"a result must be an object, got {json_type(item)}", item)
            return BAD
        kind = item.get("type")
        if kind == "choices":
            choices.append((k, item))
        elif kind == "textarea":
            texts.append((k, item))
    if not choices:
        errs.add(line, field, "no 'choices' result: the annotation holds no label")
        return BAD
    if len(choices) > 1:
        errs.add(line, field, f"{len(choices)} 'choices' results: one single-choice classification is expected")
        return BAD
    k, item = choices[0]
    value = item.get("value")
    got = value.get("choices") if isinstance(value, dict) else None
    if not isinstance(got, list) or len(got) != 1:
        n = f"{len(got)} choices" if isinstance(got, list) else f"{json_type(got)}"
        errs.add(line, f"{field}[{k}].value.choices", f"must be a list of exactly one label, got {n}", got)
        return BAD
    label = got[0]
    if not isinstance(label, str):
        errs.add(line, f"{field}[{k}].value.choices", f"a label must be a string, got {json_type(label)} "
                 "(not converted)", label)
        return BAD
    note_parts = []
    for k, item in texts:
        value = item.get("value")
        t = value.get("text") if isinstance(value, dict) else None
        t = [t] if isinstance(t, str) else t
        if not isinstance(t, list) or not all(isinstance(x, str) for x in t):
            errs.add(line, f"{field}[{k}].value.text", "must be a list of strings", t)
            return BAD
        note_parts.extend(t)
    return label, ("\n".join(note_parts) if note_parts else None)


def _ls_task(task, idx: int, line: int, rows: RowValidator, errs: ErrorCollector) -> tuple[int, dict | None]:
    """Validate one task; add its row. Returns (cancelled annotations, decision or None)."""
    if not isinstance(task, dict):
        errs.add(line, None, f"task #{idx + 1}: a task must be a JSON object, got {json_type(task)}", task)
        return 0, None
    tid = task.get("id")
    name = f"task #{idx + 1}" + (f" (id {tid})" if isinstance(tid, int | str) and not isinstance(tid, bool) else "")
    before = errs.count
    data = task.get("data")
    iid = BAD
    if not isinstance(data, dict):
        errs.add(line, "data", f"{name}: 'data' must be an object, got {json_type(data)}", data)
    else:
        iid = json_str(data, "image_id", line, errs, required=True, field="data.image_id")
    anns = task.get("annotations", BAD)
    if anns is BAD:
        errs.add(line, "annotations", f"{name}: no 'annotations' list (only Label Studio's JSON export is read, "
                 "not JSON-MIN or CSV)")
        return 0, None
    if not isinstance(anns, list):
        errs.add(line, "annotations", f"{name}: 'annotations' must be a list, got {json_type(anns)}", anns)
        return 0, None
    n_cancelled = 0
    live = []
    for j, ann in enumerate(anns):
        f = f"annotations[{j}]"
        if not isinstance(ann, dict):
            errs.add(line, f, f"{name}: an annotation must be an object, got {json_type(ann)}", ann)
            continue
        wc = ann.get("was_cancelled", False)
        if wc is None:
            wc = False
        if not isinstance(wc, bool):
            errs.add(line, f + ".was_cancelled", f"{name}: must be true or false, got {json_type(wc)}", wc)
            continue
        if wc:
            n_cancelled += 1
            continue
        aid = ann.get("id")
        if not isinstance(aid, int) or isinstance(aid, bool):
            errs.add(line, f + ".id", f"{name}: an annotation id must be an integer, got {json_type(aid)}", aid)
            continue
        times = {}
        for key in ("updated_at", "created_at"):
            try:
                times[key] = _ls_time(ann.get(key))
            except (TypeError, ValueError) as e:
                errs.add(line, f"{f}.{key}", f"{name}: {key} {e}", ann.get(key))
                times[key] = BAD
        if BAD in times.values():
            continue
        annotator = _ls_annotator(ann.get("completed_by"), line, f + ".completed_by", errs)
        res = _ls_result(ann.get("result"), line, f + ".result", errs)
        if annotator is BAD or res is BAD:
            continue
        label, note = res
        when = times["updated_at"] or times["created_at"]
        live.append({"id": aid, "when": when, "label": label, "annotator": annotator, "note": note, "field": f})
    ids = [a["id"] for a in live]
    if len(set(ids)) != len(ids):
        errs.add(line, "annotations", f"{name}: the same annotation id appears twice", ids)
    if errs.count > before or iid is BAD:
        return n_cancelled, None
    if not live:
        return n_cancelled, None  # nothing but cancelled annotations (or none): no row
    winner = max(live, key=lambda a: (a["when"] or _OLDEST, a["id"]))
    others = [a for a in live if a is not winner]
    for a in others:  # overridden annotations must hold valid labels too
        rows.check_label(line, a["label"], a["field"] + ".result")
    wf = winner["field"]
    rows.add(line, iid, winner["label"], winner["annotator"], str(winner["id"]), winner["note"],
             fields={"image_id": "data.image_id", "label": wf + ".result", "annotator": wf + ".completed_by",
                     "annotation_id": wf + ".id", "note": wf + ".result"})
    if not others:
        return n_cancelled, None
    iso = lambda t: t.isoformat() if t else None
    return n_cancelled, {
        "task_id": tid if isinstance(tid, int | str) and not isinstance(tid, bool) else None,
        "image_id": iid.strip(),
        "line": line,
        "rule": RESOLUTION_RULE,
        "chosen_annotation_id": str(winner["id"]),
        "chosen_label": winner["label"].strip(),
        "chosen_annotator": winner["annotator"],
        "chosen_time": iso(winner["when"]),
        "others": [
            {"annotation_id": str(a["id"]), "label": a["label"].strip(), "annotator": a["annotator"],
             "time": iso(a["when"])}
            for a in sorted(others, key=lambda a: (a["when"] or _OLDEST, a["id"]), reverse=True)
        ],
        "n_cancelled": n_cancelled,
    }


def parse_label_studio(text: str, rows: RowValidator, errs: ErrorCollector) -> tuple[int, int, list[dict]]:
    """Walk the top-level array task by task (each decoded alone); (tasks, cancelled, decisions)."""
    n_tasks = n_cancelled = 0
    decisions: list[dict] = []
    line, line_pos = 1, 0
    rows.json_text = True

    def line_at(pos: int) -> int:
        nonlocal line, line_pos
        line += text.count("\n", line_pos, pos)
        line_pos = pos
        return line

    pos = JSON_WS.match(text).end()
    if text[pos: pos + 1] != "[":  # pragma: no cover - format detection guarantees it
        errs.add(1, None, "a Label Studio export must be a JSON array of tasks")
        return 0, 0, decisions
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
                errs.add(line_at(rest), None, "malformed JSON: extra data after the array",
                         text[rest: rest + PREVIEW_CHARS])
            break
        start_line = line_at(pos)
        try:
            task, end = DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            errs.add(e.lineno, None, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}",
                     text[e.pos: e.pos + PREVIEW_CHARS])
            break
        except RecursionError:
            errs.add(start_line, None, f"task #{n_tasks + 1}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
            break
        except ValueError as e:  # duplicate key, integer with too many digits
            errs.add(start_line, None, f"task #{n_tasks + 1}: malformed JSON: {e}")
            break
        n_tasks += 1
        if too_deep(text, pos, end, MAX_JSON_DEPTH - 1):  # the enclosing array is one level
            errs.add(start_line, None, f"task #{n_tasks}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
        else:
            c, decision = _ls_task(task, n_tasks - 1, start_line, rows, errs)
            n_cancelled += c
            if decision is not None:
                decisions.append(decision)
        del task
        pos = JSON_WS.match(text, end).end()
        if text[pos: pos + 1] == ",":
            pos += 1
            expect_value = True
            nxt = JSON_WS.match(text, pos).end()
            if text[nxt: nxt + 1] == "]":
                errs.add(line_at(nxt), None, "malformed JSON: trailing comma before ']'")
                break
        elif text[pos: pos + 1] == "]":
            expect_value = False
        elif pos >= len(text):
            errs.add(line_at(pos), None, "malformed JSON: the array is not closed (missing ']')")
            break
        else:
            errs.add(line_at(pos), None, "malformed JSON: expected ',' or ']' after a task",
                     text[pos: pos + PREVIEW_CHARS])
            break
    return n_tasks, n_cancelled, decisions


# -- writing ----------------------------------------------------------------------------
def label_studio_config(classes: Sequence[str], skip_label: str) -> str:
    """The labelling config (XML): the image and one single choice among ``classes`` and ``skip_label``."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in [*classes, skip_label])
    return ("<View>\n  <Image name=\"image\" value=\"$image\"/>\n"
            "  <Choices name=\"label\" toName=\"image\" choice=\"single\" showInline=\"true\">\n"
            f"{choices}\n  </Choices>\n</View>\n")


def label_studio_tasks(round_: int, strategy: str, ids: Sequence[str], scores: Sequence[float],
                       paths: Mapping[str, str], url_template: str) -> list[dict]:
    """The import tasks of batch ``round_``, in rank order (rank 1 first).

    Each task's ``data`` holds ``image`` (``url_template`` formatted with
    ``{path}``, ``{image_id}`` and ``{name}``, the file name of the path),
    ``image_id``, ``round``, ``rank``, ``score`` (None for a NaN score) and
    ``strategy``.
    """
    tasks = []
    for rank, (iid, sc) in enumerate(zip(ids, scores, strict=True), 1):
        url = url_template.format(path=paths[iid], image_id=iid, name=os.path.basename(paths[iid]))
        tasks.append({"data": {"image": url, "image_id": iid, "round": round_, "rank": rank,
                               "score": None if math.isnan(sc) else sc, "strategy": strategy}})
    return tasks
