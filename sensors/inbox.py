"""The inbox sensor: label files in, one round run out.

It only reads: one short read-only look at the database (retried briefly on a
lock; a busy database skips the tick) and the inbox folder
(``al_core.loop.inbox.look_at_inbox``). It validates the pending files with
``parse_label_file`` against ``validation_inputs``, the same function and the
same inputs as the round run and `al labels check`, logs what it finds, and
requests one run for all files pending at that tick (the run validates again,
applies the good ones and rejects the bad ones, writing both down).
It also launches the seed round once embeddings exist, and turns CLI requests
(`al round next`, `al labels retry`) into runs with new run keys.

With ``sensor.ingest_before_round`` (default true), a tick that requests a
round first checks whether the image source changed since its last scan
(``al_core.ingest.freshness.ingest_decision``: a fingerprint of the scanner's
own listing, no file opened; only at such a tick). Only then, or when the check
cannot tell, is an ``ingest_job`` run queued before the round run; the decision
is logged and recorded in the tags ``al/ingest_before`` and ``al/ingest_check``.

Every entry of the inbox is accounted for at every tick (``survey_inbox``):
refused entries (a link, FIFO or folder with a label-file name, a name that is
not UTF-8) get a run that records and sets them aside; files still being
written and entries that are not label files are named in the tick's log and
skip reason, so the sensor never says the inbox is empty while something is
in it. A tick reads at most SENSOR_READ_BUDGET_BYTES of label files.

Dagster launches a run key once. So that a fault that clears (an outbox that
was read-only, a project file fixed) is followed by a successful run without a
person, every request carries its key in the ``al/request_key`` tag; when the
runs with that key have all ended and the same work is still wanted, the
request is made again under ``KEY-aN`` (N: the runs so far) once
``retry_wait_s(N)`` has passed since the last one ended (RETRY_BACKOFF_S,
doubling, at most RETRY_BACKOFF_MAX_S). A fault that clears is therefore
followed by a new run within RETRY_BACKOFF_MAX_S + ``sensor.interval_s``
(plus the queue ahead of it).

``build_inbox_sensor(cfg)`` builds it from the project config the code location
loaded (its tick interval is ``sensor.interval_s``); each tick reads the project
file through the ``project`` resource, as the runs it requests do.
"""

import time

import dagster as dg

from al_assets.jobs import INGEST_MAX_RUNTIME_S, RUN_MAX_RUNTIME_S, ingest_job, round_job, seed_job
from al_assets.loop import rounds_partitions
from al_assets.runs import IN_FLIGHT, is_in_flight
from al_core.config import ConfigError, ProjectConfig
from al_core.files.hashing import FILE_PREFIX_CHARS
from resources.project import ProjectResource

SENSOR_NAME = "inbox_sensor"
SENSOR_LOCK_TIMEOUT_S = 2.0  # a sensor tick never waits long for the writer: it tries again next tick
REQUEST_KEY_TAG = "al/request_key"  # the run key a request was first made under (its later attempts share it)
# Waiting before the same work is requested again after its runs ended (failed, or succeeded without doing it):
# 30 s, then doubling up to 300 s. A cost of at most one extra run per wait while a fault lasts.
RETRY_BACKOFF_S = 30.0
RETRY_BACKOFF_MAX_S = 300.0
__all__ = ["RUN_MAX_RUNTIME_S", "build_inbox_sensor", "retry_wait_s"]


def retry_wait_s(n_runs: int) -> float:
    """Seconds to wait after the ``n_runs``-th run for one piece of work ended before requesting it again."""
    return min(RETRY_BACKOFF_S * 2 ** max(n_runs - 1, 0), RETRY_BACKOFF_MAX_S)


def _round_run_in_flight(context) -> bool:
    """Whether a round run is queued or running (it will see whatever the sensor sees now)."""
    try:
        statuses = [dg.DagsterRunStatus[s] for s in IN_FLIGHT]
        return context.instance.get_runs_count(dg.RunsFilter(job_name=round_job.name, statuses=statuses)) > 0
    except Exception:  # no instance (a bare sensor context): nothing can be in flight
        return False


def _tags(extra: dict | None = None) -> dict:
    # al/writes: the run writes the catalogue; dagster.yaml's tag limit keeps such runs one at a time
    return {"al/trigger": "round", "al/writes": "true", "dagster/max_runtime": str(RUN_MAX_RUNTIME_S), **(extra or {})}


def _round_request(run_key: str, partition: str, run_config: dict, tags: dict) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key,
        job_name=round_job.name,
        partition_key=partition,
        run_config={"ops": {"round_labels": {"config": run_config}}},
        tags=_tags(tags),
    )


def _log_validation(context, view) -> None:
    from al_core.files.safe import printable_name

    for f in view.files:
        name, sha = printable_name(f.path.name), f.sha256[:FILE_PREFIX_CHARS]
        parsed = f.parsed
        if parsed is None:
            context.log.warning(f"inbox: {name}: {f.note}")
        elif parsed.ok:
            warned = (
                f", {parsed.n_warnings} warning(s); first: {printable_name(str(parsed.warnings[0]))}"
                if parsed.warnings
                else ""
            )
            context.log.info(f"inbox: {name} ({sha}) valid, {len(parsed.rows)} rows{warned}")
        else:
            first = parsed.errors[0] if parsed.errors else None
            context.log.warning(
                f"inbox: {name} ({sha}) INVALID, will be rejected whole: {len(parsed.errors)} error(s)"
                + (f"; {first.where}: {printable_name(first.message)}" if first else "")
            )
    for r in view.survey.refused:
        context.log.warning(
            f"inbox: {r.name} REFUSED, never read: {r.reason}; the run records it and moves it into rejected/"
        )
    for note in view.survey.notes:
        context.log.warning(f"inbox: {note}")
    if (others := view.survey.describe()) and not view.survey.refused:
        context.log.info(f"inbox: {others}")


def _ended_at(record) -> float:
    return record.end_time or record.update_timestamp.timestamp()


def _attempt(context, req: dg.RunRequest) -> tuple[dg.RunRequest | None, str | None]:
    """(the request to make now under its key or a new attempt's, or None; why not, or None) for ``req``."""
    key = req.run_key
    tagged = req.with_replaced_attrs(tags={**(req.tags or {}), REQUEST_KEY_TAG: key})
    try:
        records = context.instance.get_run_records(dg.RunsFilter(tags={REQUEST_KEY_TAG: key}))
    except Exception:  # no instance (a bare sensor context): nothing ran before
        return tagged, None
    if not records:
        return tagged, None
    if any(is_in_flight(r.dagster_run) for r in records):
        return None, f"{key}: a run for it is queued, running or about to be retried"
    last = max(records, key=_ended_at)
    waited, wait = time.time() - _ended_at(last), retry_wait_s(len(records))
    if waited < wait:
        return None, (
            f"{key}: its last run ({last.dagster_run.status.value}) ended {waited:.0f} s ago and the work "
            f"is still owed; requesting it again in {wait - waited:.0f} s"
        )
    context.log.warning(
        f"{key}: {len(records)} run(s) ended ({last.dagster_run.status.value} last) and the work is "
        f"still owed: requesting attempt {len(records)}"
    )
    return tagged.with_replaced_attrs(run_key=f"{key}-a{len(records)}"), None


def _attempts(context, requests: list[dg.RunRequest]) -> tuple[list[dg.RunRequest], list[str]]:
    out, held = [], []
    for req in requests:
        made, why = _attempt(context, req)
        if made is not None:
            out.append(made)
        if why:
            held.append(why)
    return out, held


def _requests_for(view, partition: str) -> list[dg.RunRequest]:
    """One run for the pending files, and one per open CLI request."""
    db_id, out = view.database_id, []
    if view.files or view.survey.refused:
        # n_label_files is part of the key: a file delivered again after an ingestion gets a new key (the daemon
        # never launches a key twice), while a tick before the ingestion repeats the key (no double run). The run
        # records and sets aside the refused entries it finds itself.
        out.append(
            _round_request(
                f"{db_id}-labels-r{partition}-f{view.n_label_files}-{view.files_digest()}",
                partition,
                {"files": [str(f.path) for f in view.files]},
                {"al/files": str(len(view.files)), "al/refused": str(len(view.survey.refused))},
            )
        )
    for request_id, kind, arg in view.requests:
        if kind == "close_round":
            out.append(
                _round_request(
                    f"{db_id}-request-{request_id}",
                    partition,
                    {"files": [], "force_close": True, "request_id": request_id},
                    {"al/request": request_id},
                )
            )
        elif kind == "retry_file":
            out.append(
                _round_request(
                    f"{db_id}-request-{request_id}",
                    partition,
                    {"files": [arg], "request_id": request_id},
                    {"al/request": request_id},
                )
            )
    return out


def _pull_from_label_studio(context, cfg: ProjectConfig) -> None:
    """label_studio.pull_in_sensor: new annotations written into the inbox first (seen by this tick's look, once
    settled); a failure is a warning, never a stopped sensor."""
    from al_core.loop.labelstudio_sync import pull_if_configured

    if (done := pull_if_configured(cfg)) is not None:
        (context.log.info if done[0] else context.log.warning)(done[1])


def _with_ingest_if_needed(context, cfg: ProjectConfig, run_requests: list[dg.RunRequest]) -> list[dg.RunRequest]:
    """``run_requests`` with an ``ingest_job`` run queued first when the image source changed since its last scan
    (al_core.ingest.freshness: checked here, only when a round is about to be requested), so new images are
    scanned and embedded before the next proposal; the decision is logged and tagged on every request."""
    from al_core.catalogue import open_store
    from al_core.ingest.freshness import ingest_decision

    decision = ingest_decision(open_store(cfg, lock_timeout_s=SENSOR_LOCK_TIMEOUT_S), cfg)
    context.log.info(f"{decision.reason} (checked in {decision.seconds:.3f} s)")
    tags = decision.as_tags()
    out = [r.with_replaced_attrs(tags={**(r.tags or {}), **tags}) for r in run_requests]
    if decision.needed:  # queued first: the one-writer queue runs it before the round
        ingest = dg.RunRequest(
            run_key=f"ingest-before-{run_requests[0].run_key}",
            job_name=ingest_job.name,
            tags={
                "al/trigger": "round",
                "al/writes": "true",
                "dagster/max_runtime": str(INGEST_MAX_RUNTIME_S),
                **tags,
            },
        )
        out.insert(0, ingest)
    return out


def _evaluate(context: dg.SensorEvaluationContext, project: ProjectResource):
    from al_core.catalogue import StoreError, open_store
    from al_core.loop.inbox import ValidationUnavailable, look_at_inbox

    try:
        cfg = project.load()
    except ConfigError as e:  # the runs would fail too: nothing is started until the file is fixed
        return dg.SkipReason(f"the project file cannot be used, nothing is started until it is fixed: {e}")
    if not cfg.db_path.exists():
        return dg.SkipReason(f"no database yet at {cfg.db_path}: run `al ingest` (or the ingest job) first")
    _pull_from_label_studio(context, cfg)
    try:
        view = look_at_inbox(open_store(cfg, lock_timeout_s=SENSOR_LOCK_TIMEOUT_S), cfg)
    except StoreError as e:
        return dg.SkipReason(f"database busy or unreadable, trying again next tick: {e}")
    except ValidationUnavailable as e:  # the database, or the class list label files are checked against
        return dg.SkipReason(f"label files cannot be validated now, trying again next tick: {e}")

    if view.state.last_round is None:
        if not view.has_embeddings:
            return dg.SkipReason(
                "waiting for embeddings: run `al ingest` (or materialise ingest_job); the seed batch "
                "is proposed at the next tick after"
            )
        seed, held = _attempts(
            context,
            [
                dg.RunRequest(
                    run_key=f"{view.database_id}-seed-round-0", job_name=seed_job.name, partition_key="0", tags=_tags()
                )
            ],
        )
        if not seed:
            return dg.SkipReason("; ".join(held))
        return dg.SensorResult(
            run_requests=seed, dynamic_partitions_requests=[rounds_partitions.build_add_request(["0"])]
        )

    partition = str(view.state.label_round)
    _log_validation(context, view)
    run_requests = _requests_for(view, partition)
    if not run_requests and view.pending:
        # nothing delivered, but the loop owes work (a run stopped half-way: killed, or queued behind another)
        if _round_run_in_flight(context):
            return dg.SkipReason(f"loop owes {view.pending}; a round run is queued or running and will see it")
        context.log.warning(
            f"inbox empty but the loop owes {view.pending}: requesting a run to resume round {partition}"
        )
        run_requests.append(
            _round_request(
                f"{view.database_id}-resume-{view.pending}-f{view.n_label_files}",
                partition,
                {"files": []},
                {"al/resume": view.pending},
            )
        )
    run_requests, held = _attempts(context, run_requests)
    if not run_requests:
        others = view.survey.describe()
        return dg.SkipReason(
            "; ".join(held)
            if held
            else (f"nothing to ingest in {cfg.inbox}: {others}" if others else f"inbox {cfg.inbox} is empty")
        )
    if cfg.sensor.ingest_before_round:
        run_requests = _with_ingest_if_needed(context, cfg, run_requests)
    return dg.SensorResult(
        run_requests=run_requests, dynamic_partitions_requests=[rounds_partitions.build_add_request([partition])]
    )


def build_inbox_sensor(cfg: ProjectConfig) -> dg.SensorDefinition:
    """The inbox sensor of the project ``cfg``: a tick every ``sensor.interval_s`` seconds, running by default."""

    @dg.sensor(
        name=SENSOR_NAME,
        jobs=[ingest_job, round_job, seed_job],
        minimum_interval_seconds=int(cfg.sensor.interval_s),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Starts a round run when label files land in the inbox",
    )
    def inbox_sensor(context: dg.SensorEvaluationContext, project: ProjectResource):
        return _evaluate(context, project)

    return inbox_sensor
