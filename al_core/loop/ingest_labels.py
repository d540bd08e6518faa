"""Ingesting label files (long: one delivery's four steps, read top-down in the order they run).

Validate them, apply them in one transaction, then move them out of the inbox.

``ingest_label_files`` runs these steps (each a function below):

1. ``read_and_validate`` (al_core.loop.deliveries), outside the write lock
   (the slow part): open every file without following a link
   (``al_core.files.safe.open_regular``), hash it from that descriptor and
   validate it with ``validation_inputs``; bytes already ingested are not parsed
   again; a file over MAX_FILE_BYTES, and an entry that is not a regular file
   (swapped for a link after the sensor's look), is refused unread.
2. In one write transaction, against what is committed then:
   ``_label_round`` (the round the labels go into), ``_Ledger.read`` (the
   deliveries so far, and the label history's ``AnswerLedger``), ``_decide`` per
   file (already committed, duplicate, rejected or accepted: the outcome goes
   into a ``_Plan``; an accepted file's new answers are chosen by
   ``al_core.loop.label_history.add_answers``; the Label Studio users' emails
   the files show are recorded first), and ``_write`` (the plan's rows, the
   label policy).
3. After the commit (al_core.loop.deliveries): ``write_error_reports`` (a
   rejected file's errors, an accepted file's warnings) and ``move_files`` (to
   inbox/accepted/ or inbox/rejected/, made real folders before the transaction
   by ``safe_folders``; a move never replaces a file and never follows a link).
4. ``_readiness``: whether the open batch is now answered, so the run goes on,
   and where the labelling stands (``label_history.labelling_state``:
   disagreements, disputes queued for adjudication, skips, missing answers).

``ingest_round_labels`` is the ``round_labels`` step around it (outbox repair, CLI requests).
"""

import functools
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from al_core.catalogue import labels as labels_q
from al_core.catalogue import now
from al_core.catalogue.labels import INGESTED_STATUSES, LABEL_ROW_COLUMNS, LabelFileRecord
from al_core.config import ProjectConfig
from al_core.faults import fault_point  # named SIGKILL points (tests/test_reliability.py)
from al_core.loop import label_history
from al_core.loop.deliveries import (
    Delivery,
    committed_not_moved,
    move_files,
    move_refused,
    read_and_validate,
    refusal_report,
    safe_folders,
    stored_path,
    write_error_reports,
)
from al_core.loop.errors import LoopError
from al_core.loop.inbox import (
    ACCEPTED_FOLDER,
    ERROR_REPORT_SUFFIX,
    REJECTED_FOLDER,
    Refused,
    survey_inbox,
    validation_inputs,
)
from al_core.loop.outbox import repair_outbox
from al_core.loop.requests import finish_request, stale_close_request
from al_core.loop.state import answered, is_answered, loop_state

Log = Callable[[str], None]
WARNING_REPORT_SUFFIX = ".warnings.json"  # beside an accepted file with warnings (in inbox/accepted/)


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
    n_repeats: int = 0  # answers already in the label history (a cumulative export, a rewritten file)
    n_warnings: int = 0  # problems that did not reject the file (its .warnings.json report lists them)
    warnings: list[str] = field(default_factory=list)  # the first few


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
    labelling: dict = field(default_factory=dict)  # label_history.labelling_state after the commit

    @property
    def counts(self) -> dict:
        c: dict = {}
        for f in self.files:
            c[f.status] = c.get(f.status, 0) + 1
        return c

    def as_dict(self) -> dict:
        return {
            "round": self.round,
            "files": [asdict(f) for f in self.files],
            "counts": self.counts,
            "answered": self.answered,
            "proposed": self.proposed,
            "open_round": self.open_round,
            "ready": self.ready,
            "labels_applied": sum(f.n_applied for f in self.files if not f.is_eval),
            "requested_round": self.requested_round,
            "resumed": self.resumed,
            "labelling": self.labelling,
        }


# ----------------------------------------------------------------------------- the steps' records
@dataclass
class _Ledger:
    """What is committed, read inside the write transaction, and kept up to date as the files are decided."""

    history: dict  # sha256 -> [(status, stored_path, original_name, is_eval)], oldest first
    answers: label_history.AnswerLedger  # the label history's current answers, proposals, annotators

    @classmethod
    def read(cls, con) -> "_Ledger":
        return cls(labels_q.label_file_history(con), label_history.AnswerLedger.read(con))


@dataclass
class _Plan:
    """What the transaction writes, and what is done with the files once it has committed."""

    label_round: int
    received_at: object
    run_id: str | None
    records: list[LabelFileRecord] = field(default_factory=list)
    columns: dict = field(default_factory=lambda: {c: [] for c in LABEL_ROW_COLUMNS})  # training label rows
    eval_rows: list[tuple[str, str]] = field(default_factory=list)
    moves: list[tuple[Path, Path, str | None]] = field(default_factory=list)  # (from, to, file_id to update)
    error_reports: list[tuple[object, Path]] = field(default_factory=list)
    taken: set = field(default_factory=set)  # destinations chosen in this plan

    def record(
        self,
        d: Delivery,
        file_id: str,
        dest: Path,
        status: str,
        reason: str | None,
        *,
        fmt=None,
        n_rows=0,
        n_applied=0,
        n_unproposed=0,
        n_skips=0,
        n_warnings=0,
        move: bool = True,
    ) -> None:
        """A label_files row for delivery ``d``, and (``move``) its move to ``dest`` after the commit."""
        self.records.append(
            LabelFileRecord(
                file_id,
                d.sha256,
                d.name,
                str(dest),
                fmt,
                status,
                reason,
                n_rows,
                n_applied,
                n_unproposed,
                n_skips,
                d.is_eval,
                self.received_at,
                self.label_round,
                self.run_id,
                n_warnings,
            )
        )
        if move:
            self.moves.append((d.path, dest, file_id))

    def dest(self, folder: Path, name: str, sha: str) -> Path:
        """A free name in ``folder`` for an ingested file (``deliveries.stored_path``), none chosen in this plan."""
        return stored_path(folder, name, sha, self.taken)


# ----------------------------------------------------------------------------- 2. decide, inside the transaction
def _label_round(con, cfg: ProjectConfig, round_: int, report: IngestReport, log: Log) -> int:
    """The round the labels go into: ``round_``, or the loop's when an earlier run went on (a stale request)."""
    label_round = max(round_, loop_state(con, cfg).label_round)
    if label_round != round_:
        report.requested_round = round_
        log(
            f"this run was requested for round {round_}, but the loop is at round {label_round} now "
            f"(an earlier run went on): labels are recorded in round {label_round}, nothing else is done"
        )
    report.round = label_round
    return label_round


def _decide(
    d: Delivery, ledger: _Ledger, plan: _Plan, cfg: ProjectConfig, validate: Callable, log: Log
) -> FileOutcome | None:
    """What delivery ``d`` changes, added to ``plan``; None when the file is gone."""
    if not os.path.lexists(d.path):
        log(f"{d.name}: gone (moved by another run meanwhile); nothing applied")
        return None
    hist = ledger.history.get(d.sha256, [])
    stored = committed_not_moved(hist, d)
    if stored is not None:
        plan.moves.append((d.path, Path(stored), None))
        return FileOutcome(
            d.name,
            d.sha256,
            "already_committed",
            "rows were committed before a crash; file moved now",
            stored_path=stored,
            is_eval=d.is_eval,
        )
    if any(h[0] in INGESTED_STATUSES for h in hist):
        return _as_duplicate(d, hist, ledger, plan, cfg, log)
    parsed = d.parsed if d.parsed is not None else validate(d.path)  # (bytes ingested outside, gone since: cannot be)
    if not parsed.ok:
        return _as_rejected(d, parsed, plan, cfg, log)
    return _as_accepted(d, parsed, ledger, plan, cfg, log)


def _as_duplicate(d: Delivery, hist: list, ledger: _Ledger, plan: _Plan, cfg: ProjectConfig, log: Log) -> FileOutcome:
    dest = plan.dest(cfg.inbox / ACCEPTED_FOLDER, d.path.name, d.sha256)
    first = next(h for h in hist if h[0] in ("accepted", "retracted"))
    reason = f"same bytes as {first[2]!r}, already ingested"
    plan.record(d, uuid.uuid4().hex, dest, "duplicate", reason)
    ledger.history.setdefault(d.sha256, []).append(("duplicate", str(dest), d.name, d.is_eval))
    log(f"{d.name}: duplicate of {first[2]!r}; nothing applied")
    return FileOutcome(d.name, d.sha256, "duplicate", reason, stored_path=str(dest), is_eval=d.is_eval)


def _as_rejected(d: Delivery, parsed, plan: _Plan, cfg: ProjectConfig, log: Log) -> FileOutcome:
    dest = plan.dest(cfg.inbox / REJECTED_FOLDER, d.path.name, d.sha256)
    errs = parsed.errors or ()
    reason = f"{parsed.n_errors} error(s); first: " + (
        f"{errs[0].where}: {errs[0].message}" if errs else "no label rows"
    )
    plan.record(d, uuid.uuid4().hex, dest, "rejected", reason, fmt=parsed.format, n_rows=parsed.n_records)
    plan.error_reports.append((parsed, dest.with_name(dest.name + ERROR_REPORT_SUFFIX)))
    log(f"{d.name}: REJECTED, nothing applied: {reason}")
    return FileOutcome(d.name, d.sha256, "rejected", reason, parsed.n_records, stored_path=str(dest), is_eval=d.is_eval)


def _as_refused(r: Refused, stored: Path, plan: _Plan, log: Log) -> FileOutcome:
    """An entry that was not read (a link, FIFO, folder, a name that is not UTF-8, a file over the size limit),
    already moved as it is to ``stored`` (``deliveries.move_refused``): recorded as rejected with its reason, an
    error report beside it."""
    d = Delivery(r.path, "", None, r.is_eval)
    reason = f"not read: {r.reason}"
    plan.record(d, uuid.uuid4().hex, stored, "rejected", reason, move=False)
    plan.error_reports.append((refusal_report(r, reason), stored.with_name(stored.name + ERROR_REPORT_SUFFIX)))
    log(f"{r.name}: REFUSED, nothing read: {r.reason}; moved as it is to {REJECTED_FOLDER}/{stored.name}")
    return FileOutcome(r.name, "", "rejected", reason, stored_path=str(stored), is_eval=r.is_eval)


def _as_accepted(d: Delivery, parsed, ledger: _Ledger, plan: _Plan, cfg: ProjectConfig, log: Log) -> FileOutcome:
    dest = plan.dest(cfg.inbox / ACCEPTED_FOLDER, d.path.name, d.sha256)
    file_id = uuid.uuid4().hex
    if d.is_eval:
        added = label_history.Added(applied=_apply_eval(parsed, plan))
    else:
        added = label_history.add_answers(parsed, d.sha256, file_id, ledger.answers, plan.columns, plan.received_at)
    warnings = label_history.warnings_of(parsed)
    reason = f"{parsed.n_warnings} warning(s); first: {warnings[0]}" if warnings else None
    plan.record(
        d,
        file_id,
        dest,
        "accepted",
        reason,
        fmt=parsed.format,
        n_rows=len(parsed.rows),
        n_applied=added.applied,
        n_unproposed=added.unproposed,
        n_skips=added.skips,
        n_warnings=parsed.n_warnings,
    )
    if parsed.n_warnings:
        plan.error_reports.append((parsed, dest.with_name(dest.name + WARNING_REPORT_SUFFIX)))
    ledger.history.setdefault(d.sha256, []).append(("accepted", str(dest), d.name, d.is_eval))
    log(
        f"{d.name}: accepted, {added.applied} labels applied ({added.unproposed} for images never proposed, "
        f"{added.skips} skips, {added.repeats} already in the history)"
        + (f"; {parsed.n_warnings} warning(s), first: {warnings[0]}" if warnings else "")
    )
    return FileOutcome(
        d.name,
        d.sha256,
        "accepted",
        reason,
        len(parsed.rows),
        added.applied,
        added.unproposed,
        added.skips,
        str(dest),
        d.is_eval,
        added.repeats,
        parsed.n_warnings,
        warnings,
    )


def _apply_eval(parsed, plan: _Plan) -> int:
    """Labels of a file in inbox/eval/: they label the evaluation set (skips change nothing)."""
    rows = [(row.image_id, row.label) for row in parsed.rows if not row.is_skip]
    plan.eval_rows += rows
    return len(rows)


def _write(con, plan: _Plan, cfg: ProjectConfig) -> None:
    """The plan's rows: label_files, then the label rows (in two halves around a fault point), then eval labels
    and the label policy the views apply."""
    labels_q.insert_label_files(con, plan.records)
    n = len(plan.columns["image_id"])
    if n:
        first = labels_q.next_label_id(con)
        labels_q.insert_labels(con, plan.columns, 0, n // 2, first, plan.received_at, plan.label_round)
        fault_point("labels.mid_insert")
        labels_q.insert_labels(con, plan.columns, n // 2, n, first + n // 2, plan.received_at, plan.label_round)
    labels_q.set_eval_labels(con, plan.eval_rows, plan.received_at)
    labels_q.set_label_policy(con, cfg.labels.policy, plan.received_at)


# ----------------------------------------------------------------------------- 4. is the batch answered?
def _readiness(store, cfg: ProjectConfig, report: IngestReport, log: Log) -> None:
    with store.connect(read_only=True, view=False) as con:
        st = loop_state(con, cfg)
        report.open_round = st.open_round
        if st.open_round is not None:
            report.answered, report.proposed = answered(con, st.open_round)
            report.ready = is_answered(cfg, report.answered, report.proposed)
        elif st.last_round is not None and not st.stop_reason:
            # no open batch although the budget is not spent: a run stopped between closing batch
            # last_round and proposing the next one; this round owes it
            report.ready = report.resumed = True
            log(f"no open batch and the budget is not spent: round {report.round} proposes the batch it owes")
        report.labelling = label_history.labelling_state(con, report.round, st.open_round)
    if report.requested_round is not None:
        report.ready = report.resumed = False  # a stale run does nothing more; a run for the current round will


def ingest_label_files(
    store,
    cfg: ProjectConfig,
    files: Sequence[str | os.PathLike],
    *,
    round_: int,
    classes: Sequence[str] | None = None,
    run_id: str | None = None,
    log: Log | None = None,
    refused: Sequence[Refused] = (),
    warn: Log | None = None,
) -> IngestReport:
    """Validate and apply label files in one transaction, then move them to accepted/ or rejected/.

    A file with any error is rejected whole (nothing applied) with a
    ``.errors.json`` report beside it; a file with warnings only (an empty
    Label Studio annotation, an annotator answering one image twice) is applied
    with a ``.warnings.json`` report beside it. The same bytes delivered again
    are recorded as a duplicate and change nothing. An answer already in the
    label history adds nothing (``label_history.add_answers``: so cumulative
    exports and a file delivered in halves apply each answer once).

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

    Entries that are never read (``refused``, from ``survey_inbox``, and any file
    found not to be a regular file when it is opened, or over MAX_FILE_BYTES) are
    moved into inbox/rejected/ as they are, then recorded as rejected with their
    reason (one that cannot be moved is left and not recorded). A path that is
    not a file of the inbox or of inbox/eval/ is not read at all. A file keeps
    its kind: one delivered into inbox/eval/ is recorded ``is_eval`` wherever it
    goes.
    """
    from al_core.labels import parse_label_file

    log = log or (lambda m: None)
    warn = warn or log
    project_classes, known = validation_inputs(cfg, store)
    validate = functools.partial(
        parse_label_file,
        classes=project_classes if classes is None else classes,
        known_image_ids=known,
        skip_label=cfg.labels.skip_label,
        root=cfg.inbox,
    )
    safe_folders(cfg, warn)
    deliveries, unread = read_and_validate(store, cfg, files, validate, log)
    unread += [r for r in refused if r.path not in {u.path for u in unread}]
    taken: set = set()
    set_aside = move_refused(unread, cfg, taken, warn)  # nothing of them is read: moved first, then recorded
    report = IngestReport(round=round_, files=[])
    with store.transaction() as con:
        plan = _Plan(_label_round(con, cfg, round_, report, log), now(), run_id, taken=taken)
        label_history.record_users(con, [d.parsed for d in deliveries], plan.received_at)
        ledger = _Ledger.read(con)
        for d in deliveries:
            outcome = _decide(d, ledger, plan, cfg, validate, log)
            if outcome is not None:
                report.files.append(outcome)
        for r, stored in set_aside:
            report.files.append(_as_refused(r, stored, plan, warn))
        _write(con, plan, cfg)
    fault_point("labels.after_commit")
    write_error_reports(plan.error_reports, cfg, warn)
    move_files(store, plan.moves, cfg, log, warn)
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


def ingest_round_labels(
    store,
    cfg: ProjectConfig,
    round_: int,
    files: Sequence[str | os.PathLike],
    *,
    force_close: bool = False,
    request_id: str | None = None,
    run_id: str | None = None,
    log: Log | None = None,
    warn: Log | None = None,
) -> RoundLabels:
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
    refused = survey_inbox(cfg.inbox, cfg.sensor.settle_s).refused
    rep = ingest_label_files(store, cfg, files, round_=round_, run_id=run_id, log=log, refused=refused, warn=warn)
    force = bool(force_close) and rep.requested_round is None
    if force and request_id and (asked := stale_close_request(store, request_id, rep.open_round)) is not None:
        warn(f"`al round next` asked to close batch {asked}, which an earlier run closed: nothing to close")
        force = False
    if request_id:
        finish_request(store, request_id, run_id)
    return RoundLabels(rep, force, repaired)
