"""The label history: what a delivery's answers add to it, and where the labelling stands once they are in.

Every answer a file holds is kept, each with its annotator, task, time and time spent; the views of
al_core.catalogue.label_views then say which answers count and what the training label of an image is (the one
definition). Here, before the rows are written (``AnswerLedger``, ``add_answers``):

- the annotator: a Label Studio user id is written as the user's email when the ``annotators`` table knows it
  (``record_users`` records there the ids and emails the files of an ingestion show, before anything is decided,
  so a file naming a user by email and one naming them by id are one annotator);
- the window: the batch the answer responds to (the image's latest batch; -1 for an image never proposed);
- a repeat is not written again: an answer with an annotation time whose identical copy (image, annotator, window,
  label, annotation id, time) is stored, or an answer without a time that repeats its annotator's current label for
  the image. So cumulative exports, a target-storage file rewritten on every Submit and a file delivered in halves
  add each answer once, and an update (a new time, or a new label) is added and replaces the earlier answer;
- the time spent (``seconds``): Label Studio's lead_time or a ``seconds`` column as read, else the time between
  the batch's proposal and the delivery's arrival shared by the delivery's answers to that batch (the time an
  annotator can have spent on each of them at most, their sum the interval), recorded as an upper bound
  (``seconds_source`` 'upper_bound'; the ``label_times`` view reads the same); NULL for an image never proposed.
"""

import datetime as _dt
from dataclasses import dataclass

from al_core.catalogue import labels as labels_q
from al_core.catalogue import rounds as rounds_q
from al_core.catalogue.labels import LABEL_ROW_COLUMNS

NO_WINDOW = -1  # the window of an answer for an image never proposed (label_views' answer_window)
WARNINGS_SHOWN = 5  # warnings of a file quoted in the round's report (the file's report lists them all)


def _utc_naive(t: _dt.datetime | None) -> _dt.datetime | None:
    """A catalogue TIMESTAMP: UTC without a zone."""
    if t is None or t.tzinfo is None:
        return t
    return t.astimezone(_dt.UTC).replace(tzinfo=None)


_UNDATED = _dt.datetime.min


def _order(received_at, annotated_at) -> tuple:
    """An answer's place in time (label_views.ANSWER_ORDER): its delivery, then its annotation time (undated
    first)."""
    return received_at, annotated_at or _UNDATED


@dataclass
class AnswerLedger:
    """What is stored, read inside the write transaction and kept up to date as rows are added."""

    current: dict  # (image_id, annotator, window) -> (label, order key): each annotator's latest answer
    dated: set  # (image_id, annotator, window, label, annotation_id, annotated_at) of every dated answer
    proposals: dict  # image_id -> (latest batch round, its proposed_at)
    emails: dict  # Label Studio user id -> email

    @classmethod
    def read(cls, con) -> "AnswerLedger":
        current = {}
        for iid, annotator, window, label, received_at, at in labels_q.current_answers(con):
            current[(iid, annotator, int(window))] = (label, _order(received_at, at))
        return cls(
            current, labels_q.dated_answer_keys(con), rounds_q.latest_proposals(con), labels_q.annotator_emails(con)
        )

    def annotator(self, annotator: str | None, fmt: str | None) -> str | None:
        if annotator is not None and (fmt or "").startswith("label_studio"):
            return self.emails.get(annotator, annotator)
        return annotator


@dataclass
class Added:
    """What one file added: rows written, of them for images never proposed and skips, and repeats left out."""

    applied: int = 0
    unproposed: int = 0
    skips: int = 0
    repeats: int = 0


def add_answers(parsed, sha: str, file_id: str, ledger: AnswerLedger, columns: dict, received_at) -> Added:
    """Append the new answers of ``parsed`` (an accepted training file) to ``columns`` (LABEL_ROW_COLUMNS -> values)
    and to ``ledger``; the module docstring says what is new."""
    out = Added()
    bounded: dict[int, list[int]] = {}  # window -> positions in ``columns`` of this file's upper-bound times
    for row in parsed.rows:
        annotator = ledger.annotator(row.annotator, parsed.format)
        window, proposed_at = ledger.proposals.get(row.image_id, (NO_WINDOW, None))
        at = _utc_naive(row.annotated_at)
        key = (row.image_id, annotator, window)
        prev = ledger.current.get(key)
        dated_key = (row.image_id, annotator, window, row.label, row.annotation_id, at)
        if (dated_key in ledger.dated) if at is not None else (prev is not None and prev[0] == row.label):
            out.repeats += 1
            continue
        seconds, source = row.seconds, row.seconds_source
        if seconds is None and proposed_at is not None:
            seconds, source = max(0.0, (received_at - proposed_at).total_seconds()), "upper_bound"
            bounded.setdefault(window, []).append(len(columns["seconds"]))
        values = (
            row.image_id,
            row.label,
            row.is_skip,
            window != NO_WINDOW,
            sha,
            file_id,
            row.annotation_id,
            annotator,
            row.line,
            row.note,
            row.task_id,
            at,
            seconds,
            source,
        )
        for c, v in zip(LABEL_ROW_COLUMNS, values, strict=True):
            columns[c].append(v)
        order = _order(received_at, at)
        if prev is None or order >= prev[1]:
            ledger.current[key] = (row.label, order)
        if at is not None:
            ledger.dated.add(dated_key)
        out.applied += 1
        out.unproposed += window == NO_WINDOW
        out.skips += row.is_skip
    for positions in bounded.values():  # the interval shared by the delivery's answers to that batch
        for i in positions:
            columns["seconds"][i] /= len(positions)
    return out


def record_users(con, parsed_files, seen_at) -> None:
    """Record the Label Studio user id -> email pairs of the valid files about to be ingested."""
    users: dict[str, str] = {}
    for parsed in parsed_files:
        if parsed is not None and parsed.ok:
            users.update(parsed.users)
    known = labels_q.annotator_emails(con) if users else {}
    labels_q.record_annotators(con, {u: e for u, e in users.items() if known.get(u) != e}, "label file", seen_at)


def warnings_of(parsed) -> list[str]:
    """The first WARNINGS_SHOWN warnings of a file, as text (the file's report lists every one)."""
    return [str(w) for w in parsed.warnings[:WARNINGS_SHOWN]]


def labelling_state(con, label_round: int, open_round: int | None) -> dict:
    """Where the labelling stands after an ingestion: label_state_counts (disagreements, disputed, adjudication
    queue, skipped, the policy) and, with a batch open, its answered / skipped / disputed / unanswered images."""
    state = labels_q.label_state_counts(con, label_round)
    if open_round is not None:
        state["batch"] = rounds_q.batch_answer_summary(con, open_round)
    return state


def sync_policy(store, cfg) -> None:
    """Record ``labels.policy`` in the catalogue when it differs from the one the views apply (a short write)."""
    from al_core.catalogue import now

    with store.connect(read_only=True, view=False) as con:
        stored = labels_q.label_policy(con)
    if stored != cfg.labels.policy:
        with store.transaction() as con:
            labels_q.set_label_policy(con, cfg.labels.policy, now())
