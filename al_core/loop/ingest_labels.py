"""Ingesting label files: validate them, apply them in one transaction, then move them out of the inbox.

``ingest_label_files`` runs these steps (each a function below):

1. ``_read_and_validate``, outside the write lock (the slow part): hash every
   file and validate it with ``validation_inputs``; bytes already ingested are
   not parsed again.
2. In one write transaction, against what is committed then:
   ``_label_round`` (the round the labels go into), ``_Ledger.read`` (the
   deliveries so far, the current labels, the proposed images), ``_decide`` per
   file (already committed, duplicate, rejected or accepted: the outcome goes
   into a ``_Plan``), and ``_write`` (the plan's rows).
3. After the commit: ``_write_error_reports`` and ``_move_files`` (to
   inbox/accepted/ or inbox/rejected/).
4. ``_readiness``: whether the open batch is now answered, so the run goes on.

``ingest_round_labels`` is the ``round_labels`` step around it (outbox repair, CLI requests).
"""

import datetime as _dt
import functools
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from al_core.catalogue import labels as labels_q
from al_core.catalogue import now
from al_core.catalogue import quality as quality_q
from al_core.catalogue import rounds as rounds_q
from al_core.catalogue.labels import INGESTED_STATUSES, LABEL_ROW_COLUMNS, LabelFileRecord
from al_core.config import ProjectConfig
from al_core.faults import fault_point  # named SIGKILL points (tests/test_reliability.py)
from al_core.files.hashing import FILE_PREFIX_CHARS, sha256_file
from al_core.loop.errors import LoopError
from al_core.loop.inbox import ACCEPTED_FOLDER, EVAL_FOLDER, REJECTED_FOLDER, validation_inputs
from al_core.loop.outbox import repair_outbox
from al_core.loop.requests import finish_request, stale_close_request
from al_core.loop.state import answered, is_answered, loop_state

Log = Callable[[str], None]


@dataclass
class FileOutcome:
    name: str
    sha256: str
    status: str  # accepted | duplicate | rejected | already_committed
    reason: str | None = None
    n_rows: int = 0
    n_applied: int = 0
    n_unproposed: int = 0
    n_skips: int = 0
    stored_path: str | None = None
    is_eval: bool = False


@dataclass
class IngestReport:
    round: int  # the round the labels were recorded in (the loop's, when the run was requested for an older one)
    files: list[FileOutcome]
    answered: int = 0
    proposed: int = 0
    open_round: int | None = None
    ready: bool = False
    requested_round: int | None = None  # set when the run was requested for an older round (a stale request)
    resumed: bool = False  # ready because no batch is open although the budget is not spent (an interrupted round)

    @property
    def counts(self) -> dict:
        c: dict = {}
        for f in self.files:
            c[f.status] = c.get(f.status, 0) + 1
        return c

    def as_dict(self) -> dict:
        return {"round": self.round, "files": [asdict(f) for f in self.files], "counts": self.counts,
                "answered": self.answered, "proposed": self.proposed, "open_round": self.open_round,
                "ready": self.ready, "labels_applied": sum(f.n_applied for f in self.files if not f.is_eval),
                "requested_round": self.requested_round, "resumed": self.resumed}


# ----------------------------------------------------------------------------- the steps' records
@dataclass
class _Delivery:
    """A label file as read and validated before the write lock."""

    path: Path
    sha256: str
    parsed: object | None  # ParsedLabels; None when its bytes were already ingested (not parsed again)

    @property
    def is_eval(self) -> bool:
        return self.path.parent.name == EVAL_FOLDER


@dataclass
class _Ledger:
    """What is committed, read inside the write transaction, and kept up to date as the files are decided."""

    history: dict  # sha256 -> [(status, stored_path, original_name)], oldest first
    current: dict  # image_id -> current label
    proposed: set  # every image proposed in a batch
    answers: dict = field(default_factory=dict)  # (image_id, annotator or '-') -> that annotator's latest answer
    current_by: dict = field(default_factory=dict)  # image_id -> annotator of the current label ('-': unnamed)
    awaiting: set = field(default_factory=set)  # images asked to be labelled again, not answered since

    @classmethod
    def read(cls, con) -> "_Ledger":
        return cls(labels_q.label_file_history(con), labels_q.current_label_by_image(con),
                   rounds_q.proposed_image_ids(con), quality_q.latest_answers(con),
                   quality_q.current_annotator_by_image(con), quality_q.awaiting_relabel_ids(con))

    def is_vote(self, image_id: str, annotator: str | None, label: str) -> bool:
        """A repeat of the current label that is a second annotator's vote: both named, different, and not this
        annotator's latest answer already (an unnamed row may be anyone's: never a second vote)."""
        by = self.current_by.get(image_id, "-")
        return (annotator is not None and by != "-" and annotator != by
                and self.answers.get((image_id, annotator)) != label)


@dataclass
class _Plan:
    """What the transaction writes, and what is done with the files once it has committed."""

    label_round: int
    received_at: object
    run_id: str | None
    records: list[LabelFileRecord] = field(default_factory=list)
    columns: dict = field(default_factory=lambda: {c: [] for c in LABEL_ROW_COLUMNS})  # training label rows
    eval_rows: list[tuple[str, str]] = field(default_factory=list)
    moves: list[tuple[Path, Path]] = field(default_factory=list)
    error_reports: list[tuple[object, Path]] = field(default_factory=list)

    def record(self, d: _Delivery, file_id: str, dest: Path, status: str, reason: str | None, *, fmt=None,
               n_rows=0, n_applied=0, n_unproposed=0, n_skips=0) -> None:
        """A label_files row for delivery ``d``, and its move to ``dest`` after the commit."""
        self.records.append(LabelFileRecord(file_id, d.sha256, d.path.name, str(dest), fmt, status, reason, n_rows,
                                            n_applied, n_unproposed, n_skips, d.is_eval, self.received_at,
                                            self.label_round, self.run_id))
        self.moves.append((d.path, dest))


def _dest(folder: Path, name: str, sha: str) -> Path:
    """Where an ingested file is stored: ``STAMP-SHAPREFIX-NAME`` (UTC seconds, FILE_PREFIX_CHARS of its sha256)."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
    return folder / f"{stamp}-{sha[:FILE_PREFIX_CHARS]}-{name}"


# ----------------------------------------------------------------------------- 1. read and validate
def _read_and_validate(store, files: Sequence, validate: Callable, log: Log) -> list[_Delivery]:
    with store.connect(read_only=True, view=False) as con:
        ingested = labels_q.ingested_shas(con)
    out = []
    for f in files:
        path = Path(f)
        if not path.is_file():
            log(f"{path.name}: gone before ingestion (already moved by an earlier run?)")
            continue
        sha = sha256_file(path)
        parsed = None
        if sha not in ingested:
            parsed = validate(path)
            if parsed.sha256 and parsed.sha256 != sha:
                log(f"{path.name}: changed while being read; left in the inbox for the next run")
                continue
        out.append(_Delivery(path, sha, parsed))
    return out


# ----------------------------------------------------------------------------- 2. decide, inside the transaction
def _label_round(con, cfg: ProjectConfig, round_: int, report: IngestReport, log: Log) -> int:
    """The round the labels go into: ``round_``, or the loop's when an earlier run went on (a stale request)."""
    label_round = max(round_, loop_state(con, cfg).label_round)
    if label_round != round_:
        report.requested_round = round_
        log(f"this run was requested for round {round_}, but the loop is at round {label_round} now "
            f"(an earlier run went on): labels are recorded in round {label_round}, nothing else is done")
    report.round = label_round
    return label_round


def _decide(d: _Delivery, ledger: _Ledger, plan: _Plan, cfg: ProjectConfig, validate: Callable,
            log: Log) -> FileOutcome | None:
    """What delivery ``d`` changes, added to ``plan``; None when the file is gone."""
    if not d.path.exists():
        log(f"{d.path.name}: gone (moved by another run meanwhile); nothing applied")
        return None
    hist = ledger.history.get(d.sha256, [])
    stored = _committed_not_moved(hist, d.path.name)
    if stored is not None:
        plan.moves.append((d.path, Path(stored)))
        return FileOutcome(d.path.name, d.sha256, "already_committed",
                           "rows were committed before a crash; file moved now", stored_path=stored, is_eval=d.is_eval)
    if any(h[0] in INGESTED_STATUSES for h in hist):
        return _as_duplicate(d, hist, ledger, plan, cfg, log)
    parsed = d.parsed if d.parsed is not None else validate(d.path)  # (bytes ingested outside, gone since: cannot be)
    if not parsed.ok:
        return _as_rejected(d, parsed, plan, cfg, log)
    return _as_accepted(d, parsed, ledger, plan, cfg, log)


def _committed_not_moved(hist: list, name: str) -> str | None:
    """The stored path of an earlier delivery of these bytes under this name whose rows were committed but whose
    file was never moved (a crash between the commit and the move), or None."""
    return next((stored for status, stored, original in hist if status in ("accepted", "rejected") and stored
                 and not Path(stored).exists() and original == name), None)


def _as_duplicate(d: _Delivery, hist: list, ledger: _Ledger, plan: _Plan, cfg: ProjectConfig,
                  log: Log) -> FileOutcome:
    dest = _dest(cfg.inbox / ACCEPTED_FOLDER, d.path.name, d.sha256)
    first = next(h for h in hist if h[0] in ("accepted", "retracted"))
    reason = f"same bytes as {first[2]!r}, already ingested"
    plan.record(d, uuid.uuid4().hex, dest, "duplicate", reason)
    ledger.history.setdefault(d.sha256, []).append(("duplicate", str(dest), d.path.name))
    log(f"{d.path.name}: duplicate of {first[2]!r}; nothing applied")
    return FileOutcome(d.path.name, d.sha256, "duplicate", reason, stored_path=str(dest), is_eval=d.is_eval)


def _as_rejected(d: _Delivery, parsed, plan: _Plan, cfg: ProjectConfig, log: Log) -> FileOutcome:
    dest = _dest(cfg.inbox / REJECTED_FOLDER, d.path.name, d.sha256)
    errs = parsed.errors or ()
    reason = f"{parsed.n_errors} error(s); first: " + (
        f"line {errs[0].line}: {errs[0].message}" if errs else "no label rows")
    plan.record(d, uuid.uuid4().hex, dest, "rejected", reason, fmt=parsed.format, n_rows=parsed.n_records)
    plan.error_reports.append((parsed, dest.with_name(dest.name + ".errors.json")))
    log(f"{d.path.name}: REJECTED, nothing applied: {reason}")
    return FileOutcome(d.path.name, d.sha256, "rejected", reason, parsed.n_records, stored_path=str(dest),
                       is_eval=d.is_eval)


def _as_accepted(d: _Delivery, parsed, ledger: _Ledger, plan: _Plan, cfg: ProjectConfig, log: Log) -> FileOutcome:
    dest = _dest(cfg.inbox / ACCEPTED_FOLDER, d.path.name, d.sha256)
    file_id = uuid.uuid4().hex
    if d.is_eval:
        n_applied, n_unprop, n_skip = _apply_eval(parsed, plan), 0, 0
    else:
        n_applied, n_unprop, n_skip = _apply_training(parsed, d.sha256, file_id, ledger, plan)
    plan.record(d, file_id, dest, "accepted", None, fmt=parsed.format, n_rows=len(parsed.rows), n_applied=n_applied,
                n_unproposed=n_unprop, n_skips=n_skip)
    ledger.history.setdefault(d.sha256, []).append(("accepted", str(dest), d.path.name))
    log(f"{d.path.name}: accepted, {n_applied} labels applied ({n_unprop} for images never proposed, "
        f"{n_skip} skips)")
    return FileOutcome(d.path.name, d.sha256, "accepted", None, len(parsed.rows), n_applied, n_unprop, n_skip,
                       str(dest), d.is_eval)


def _apply_eval(parsed, plan: _Plan) -> int:
    """Labels of a file in inbox/eval/: they label the evaluation set (skips change nothing)."""
    rows = [(row.image_id, row.label) for row in parsed.rows if not row.is_skip]
    plan.eval_rows += rows
    return len(rows)


def _apply_training(parsed, sha: str, file_id: str, ledger: _Ledger, plan: _Plan) -> tuple[int, int, int]:
    """Training labels: every row that changes an image's current label, a second named annotator's vote for it
    (``_Ledger.is_vote``), and every answer to a request to label again. Returns (applied, unproposed, skips)."""
    n_applied = n_unprop = n_skip = 0
    cols = plan.columns
    for row in parsed.rows:
        if (ledger.current.get(row.image_id) == row.label and row.image_id not in ledger.awaiting
                and not ledger.is_vote(row.image_id, row.annotator, row.label)):
            continue  # already this label: applying it again would count it twice
        ledger.answers[(row.image_id, row.annotator or "-")] = row.label
        ledger.current_by[row.image_id] = row.annotator or "-"
        ledger.awaiting.discard(row.image_id)
        was_proposed = row.image_id in ledger.proposed
        n_unprop += not was_proposed
        n_skip += row.is_skip
        for c, v in zip(LABEL_ROW_COLUMNS, (row.image_id, row.label, row.is_skip, was_proposed, sha, file_id,
                                            row.annotation_id, row.annotator, row.line, row.note), strict=True):
            cols[c].append(v)
        ledger.current[row.image_id] = row.label
        n_applied += 1
    return n_applied, n_unprop, n_skip


def _write(con, plan: _Plan) -> None:
    """The plan's rows: label_files, then the label rows (in two halves around a fault point), then eval labels."""
    labels_q.insert_label_files(con, plan.records)
    n = len(plan.columns["image_id"])
    if n:
        first = labels_q.next_label_id(con)
        labels_q.insert_labels(con, plan.columns, 0, n // 2, first, plan.received_at, plan.label_round)
        fault_point("labels.mid_insert")
        labels_q.insert_labels(con, plan.columns, n // 2, n, first + n // 2, plan.received_at, plan.label_round)
    labels_q.set_eval_labels(con, plan.eval_rows, plan.received_at)


# ----------------------------------------------------------------------------- 3. after the commit
def _write_error_reports(plan: _Plan) -> None:
    from al_core.labels import write_error_report

    for parsed, dest in plan.error_reports:
        write_error_report(parsed, dest)


def _move_files(plan: _Plan, log: Log) -> None:
    for src, dst in plan.moves:
        if not src.exists():  # moved meanwhile by another run that committed the same bytes: nothing to do
            log(f"{src.name}: already moved by another run")
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dst))


# ----------------------------------------------------------------------------- 4. is the batch answered?
def _readiness(store, cfg: ProjectConfig, report: IngestReport, log: Log) -> None:
    with store.connect(read_only=True, view=False) as con:
        st = loop_state(con, cfg)
        report.open_round = st.open_round
        if st.open_round is not None:
            report.answered, report.proposed = answered(con, st.open_round)
            report.ready = is_answered(cfg, report.answered, report.proposed)
        elif st.last_round is not None and not st.budget_spent:
            # no open batch although the budget is not spent: a run stopped between closing batch
            # last_round and proposing the next one; this round owes it
            report.ready = report.resumed = True
            log(f"no open batch and the budget is not spent: round {report.round} proposes the batch it owes")
    if report.requested_round is not None:
        report.ready = report.resumed = False  # a stale run does nothing more; a run for the current round will


def ingest_label_files(store, cfg: ProjectConfig, files: Sequence[str | os.PathLike], *, round_: int,
                       classes: Sequence[str] | None = None, run_id: str | None = None,
                       log: Log | None = None) -> IngestReport:
    """Validate and apply label files in one transaction, then move them to accepted/ or rejected/.

    A file with any error is rejected whole (nothing applied) with a
    ``.errors.json`` report beside it. The same bytes delivered again are
    recorded as a duplicate and change nothing. A row that repeats an image's
    current label adds nothing (so a file delivered in halves applies each label
    once), unless it is a second named annotator's agreeing vote or an answer to
    a request to label the image again.

    Files are read and validated before the write lock is taken, against
    ``validation_inputs`` (``classes`` overrides its classes); what each one
    changes is decided inside the write transaction against what is committed
    then, so two runs (or two processes) never apply a label twice. Files are
    moved only after the commit; a file whose rows were committed by a run that
    died before moving it is recognised (``already_committed``) and moved without
    applying anything twice. Labels go into the round the loop is at when they
    are committed: ``round_`` is a floor, and a run requested for an older round
    (queued behind the run that closed it) reports it in ``requested_round`` and
    is never ``ready``.
    """
    from al_core.labels import parse_label_file

    log = log or (lambda m: None)
    project_classes, known = validation_inputs(cfg, store)
    validate = functools.partial(parse_label_file, classes=project_classes if classes is None else classes,
                                 known_image_ids=known, skip_label=cfg.labels.skip_label)
    deliveries = _read_and_validate(store, files, validate, log)
    report = IngestReport(round=round_, files=[])
    with store.transaction() as con:
        plan = _Plan(_label_round(con, cfg, round_, report, log), now(), run_id)
        ledger = _Ledger.read(con)
        for d in deliveries:
            outcome = _decide(d, ledger, plan, cfg, validate, log)
            if outcome is not None:
                report.files.append(outcome)
        _write(con, plan)
    fault_point("labels.after_commit")
    _write_error_reports(plan)
    _move_files(plan, log)
    _readiness(store, cfg, report, log)
    return report


# ----------------------------------------------------------------------------- the round_labels step
@dataclass
class RoundLabels:
    """What the ``round_labels`` step did: the ingestion, and whether the open batch is closed by hand."""

    report: IngestReport
    force_close: bool  # `al round next`: close the open batch whatever its answered share
    repaired_outbox: list[str]  # batch CSVs written because a run had stopped before writing them

    def as_dict(self) -> dict:
        return self.report.as_dict() | {"force_close": self.force_close}


def ingest_round_labels(store, cfg: ProjectConfig, round_: int, files: Sequence[str | os.PathLike], *,
                        force_close: bool = False, request_id: str | None = None, run_id: str | None = None,
                        log: Log | None = None, warn: Log | None = None) -> RoundLabels:
    """The ``round_labels`` step of round ``round_`` >= 1: repair the outbox, ingest ``files``, serve a CLI request.

    ``force_close`` (a ``close_round`` request) holds only for a run of the
    current round, and only while the batch the request named is still open.
    The request ``request_id``, if any, is marked done by ``run_id``.
    """
    log, warn = log or (lambda m: None), warn or log or (lambda m: None)
    if round_ < 1:
        raise LoopError("labels belong to rounds >= 1 (round 0 is the seed pool)")
    repaired = repair_outbox(store, cfg, cfg.class_names(store))
    for path in repaired:
        warn(f"outbox: wrote {path}, missing although its batch was committed")
    rep = ingest_label_files(store, cfg, files, round_=round_, run_id=run_id, log=log)
    force = bool(force_close) and rep.requested_round is None
    if force and request_id and (asked := stale_close_request(store, request_id, rep.open_round)) is not None:
        warn(f"`al round next` asked to close batch {asked}, which an earlier run closed: nothing to close")
        force = False
    if request_id:
        finish_request(store, request_id, run_id)
    return RoundLabels(rep, force, repaired)
