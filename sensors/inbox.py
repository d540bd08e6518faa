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

``build_inbox_sensor(cfg)`` builds it from the project config the code location
loaded (its tick interval is ``sensor.interval_s``); each tick reads the project
file through the ``project`` resource, as the runs it requests do.
"""

import dagster as dg

from al_assets.jobs import ingest_job, round_job, seed_job
from al_assets.loop import rounds_partitions
from al_core.config import ProjectConfig
from al_core.files.hashing import FILE_PREFIX_CHARS
from resources.project import ProjectResource

SENSOR_NAME = "inbox_sensor"
SENSOR_LOCK_TIMEOUT_S = 2.0  # a sensor tick never waits long for the writer: it tries again next tick
# A round run's time limit (tag dagster/max_runtime). A run whose process was killed together with the
# daemon (power loss) stays STARTED, and Dagster's default launcher cannot tell it is dead; run monitoring
# fails it once this has passed, so it cannot block the one-run queue for ever. A round takes minutes.
RUN_MAX_RUNTIME_S = 4 * 3600
IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def _round_run_in_flight(context) -> bool:
    """Whether a round run is queued or running (it will see whatever the sensor sees now)."""
    try:
        statuses = [dg.DagsterRunStatus[s] for s in IN_FLIGHT]
        return context.instance.get_runs_count(dg.RunsFilter(job_name=round_job.name, statuses=statuses)) > 0
    except Exception:  # no instance (a bare sensor context): nothing can be in flight
        return False


def _tags(extra: dict | None = None) -> dict:
    # al/writes: the run writes the catalogue; dagster.yaml's tag limit keeps such runs one at a time
    return {"al/trigger": "round", "al/writes": "true", "dagster/max_runtime": str(RUN_MAX_RUNTIME_S),
            **(extra or {})}


def _round_request(run_key: str, partition: str, run_config: dict, tags: dict) -> dg.RunRequest:
    return dg.RunRequest(run_key=run_key, job_name=round_job.name, partition_key=partition,
                         run_config={"ops": {"round_labels": {"config": run_config}}}, tags=_tags(tags))


def _log_validation(context, view) -> None:
    for f in view.files:
        parsed, sha = f.parsed, f.sha256[:FILE_PREFIX_CHARS]
        if parsed.ok:
            warned = f", {parsed.n_warnings} warning(s); first: {parsed.warnings[0]}" if parsed.warnings else ""
            context.log.info(f"inbox: {f.path.name} ({sha}) valid, {len(parsed.rows)} rows{warned}")
        else:
            first = parsed.errors[0] if parsed.errors else None
            context.log.warning(
                f"inbox: {f.path.name} ({sha}) INVALID, will be rejected whole: {len(parsed.errors)} error(s)"
                + (f"; {first.where}: {first.message}" if first else ""))


def _requests_for(view, partition: str) -> list[dg.RunRequest]:
    """One run for the pending files, and one per open CLI request."""
    db_id, out = view.database_id, []
    if view.files:
        # n_label_files is part of the key: a file delivered again after an ingestion gets a new key (the daemon
        # never launches a key twice), while a tick before the ingestion repeats the key (no double run)
        out.append(_round_request(f"{db_id}-labels-r{partition}-f{view.n_label_files}-{view.files_digest()}",
                                  partition, {"files": [str(f.path) for f in view.files]},
                                  {"al/files": str(len(view.files))}))
    for request_id, kind, arg in view.requests:
        if kind == "close_round":
            out.append(_round_request(f"{db_id}-request-{request_id}", partition,
                                      {"files": [], "force_close": True, "request_id": request_id},
                                      {"al/request": request_id}))
        elif kind == "retry_file":
            out.append(_round_request(f"{db_id}-request-{request_id}", partition,
                                      {"files": [arg], "request_id": request_id}, {"al/request": request_id}))
    return out


def _evaluate(context: dg.SensorEvaluationContext, project: ProjectResource):
    from al_core.catalogue import StoreError, open_store
    from al_core.loop.inbox import ValidationUnavailable, look_at_inbox

    cfg = project.load()
    if not cfg.db_path.exists():
        return dg.SkipReason(f"no database yet at {cfg.db_path}: run the ingest job first")
    try:
        view = look_at_inbox(open_store(cfg, lock_timeout_s=SENSOR_LOCK_TIMEOUT_S), cfg)
    except StoreError as e:
        return dg.SkipReason(f"database busy or unreadable, trying again next tick: {e}")
    except ValidationUnavailable as e:  # the database, or the class list label files are checked against
        return dg.SkipReason(f"label files cannot be validated now, trying again next tick: {e}")

    if view.state.last_round is None:
        if not view.has_embeddings:
            return dg.SkipReason("waiting for embeddings (run ingest_job)")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"{view.database_id}-seed-round-0", job_name=seed_job.name,
                                        partition_key="0", tags=_tags())],
            dynamic_partitions_requests=[rounds_partitions.build_add_request(["0"])])

    partition = str(view.state.label_round)
    _log_validation(context, view)
    run_requests = _requests_for(view, partition)
    if not run_requests and view.pending:
        # nothing delivered, but the loop owes work (a run stopped half-way: killed, or queued behind another)
        if _round_run_in_flight(context):
            return dg.SkipReason(f"loop owes {view.pending}; a round run is queued or running and will see it")
        context.log.warning(f"inbox empty but the loop owes {view.pending}: requesting a run to resume round "
                            f"{partition}")
        run_requests.append(_round_request(f"{view.database_id}-resume-{view.pending}-f{view.n_label_files}",
                                           partition, {"files": []}, {"al/resume": view.pending}))
    if not run_requests:
        return dg.SkipReason(f"inbox {cfg.inbox} is empty")
    if cfg.sensor.ingest_before_round:
        # queued first, so new images in the image root are scanned and embedded before the next proposal
        run_requests.insert(0, dg.RunRequest(run_key=f"ingest-before-{run_requests[0].run_key}",
                                             job_name=ingest_job.name,
                                             tags={"al/trigger": "round", "al/writes": "true"}))
    return dg.SensorResult(run_requests=run_requests,
                           dynamic_partitions_requests=[rounds_partitions.build_add_request([partition])])


def build_inbox_sensor(cfg: ProjectConfig) -> dg.SensorDefinition:
    """The inbox sensor of the project ``cfg``: a tick every ``sensor.interval_s`` seconds, running by default."""

    @dg.sensor(name=SENSOR_NAME, jobs=[ingest_job, round_job, seed_job],
               minimum_interval_seconds=int(cfg.sensor.interval_s), default_status=dg.DefaultSensorStatus.RUNNING,
               description="Starts a round run when label files land in the inbox")
    def inbox_sensor(context: dg.SensorEvaluationContext, project: ProjectResource):
        return _evaluate(context, project)

    return inbox_sensor
