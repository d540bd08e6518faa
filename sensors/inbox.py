"""The inbox sensor: label files in, one round run out.

It only reads: a short read-only look at the database (retried briefly on a
lock; a busy database skips the tick) and the inbox folder. It validates the
pending files with exactly the code `al labels check` runs, logs what it finds,
and requests one run for all files pending at that tick (the run validates
again, applies the good ones and rejects the bad ones, writing both down).
It also launches the seed round once embeddings exist, and turns CLI requests
(`al round next`, `al labels retry`) into runs with new run keys.
"""

import hashlib

import dagster as dg

from al_assets.jobs import ingest_job, round_job, seed_job
from al_assets.loop import rounds_partitions
from al_core.config import load_config
from resources.project import ProjectResource

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


def _interval() -> int:
    try:
        return int(load_config().sensor.interval_s)
    except Exception:  # a broken project file must not break the code location: the tick reports it
        return 30


def _tags(extra: dict | None = None) -> dict:
    # al/writes: the run writes the catalogue; dagster.yaml's tag limit keeps such runs one at a time
    return {"al/trigger": "round", "al/writes": "true", "dagster/max_runtime": str(RUN_MAX_RUNTIME_S),
            **(extra or {})}


@dg.sensor(jobs=[ingest_job, round_job, seed_job], minimum_interval_seconds=_interval(),
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Starts a round run when label files land in the inbox")
def inbox_sensor(context: dg.SensorEvaluationContext, project: ProjectResource):
    from al_core.labels import parse_label_file
    from al_core.loop.rounds import list_inbox, loop_state, pending_work
    from al_core.catalogue import StoreError, open_store
    from al_core.catalogue.store import sha256_file

    cfg = project.load()
    store = open_store(cfg, lock_timeout_s=SENSOR_LOCK_TIMEOUT_S)
    if not cfg.db_path.exists():
        return dg.SkipReason(f"no database yet at {cfg.db_path}: run the ingest job first")
    try:
        with store.connect(read_only=True, view=False) as con:
            state = loop_state(con, cfg)
            has_embeddings = con.execute(
                "SELECT count(*) FROM asset_outputs WHERE asset_key = 'embeddings'").fetchone()[0] > 0
            known = {r[0] for r in con.execute(
                "SELECT DISTINCT image_id FROM image_paths WHERE status = 'ok'").fetchall()}
            classes = cfg.class_names(None) if cfg.classes else tuple(r[0] for r in con.execute(
                "SELECT DISTINCT class_name FROM ground_truth ORDER BY 1").fetchall())
            db_id = (con.execute("SELECT value FROM schema_info WHERE key = 'database_id'").fetchone() or ["db"])[0][:8]
            requests = con.execute(
                "SELECT request_id, kind, arg FROM requests WHERE done_at IS NULL ORDER BY created_at").fetchall()
            # part of every run key: a file delivered again after an ingestion gets a new key (the daemon
            # never launches a key twice), while a tick before the ingestion repeats the key (no double run)
            n_seen = con.execute("SELECT count(*) FROM label_files").fetchone()[0]
            pending = pending_work(con, cfg)
    except StoreError as e:
        return dg.SkipReason(f"database busy or unreadable, trying again next tick: {e}")

    if state.last_round is None:
        if not has_embeddings:
            return dg.SkipReason("waiting for embeddings (run ingest_job)")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"{db_id}-seed-round-0", job_name=seed_job.name, partition_key="0",
                                        tags=_tags())],
            dynamic_partitions_requests=[rounds_partitions.build_add_request(["0"])])

    partition = str(state.label_round)
    files = list_inbox(cfg.inbox, cfg.sensor.settle_s) + list_inbox(cfg.inbox / "eval", cfg.sensor.settle_s)
    run_requests = []
    if files:
        digest = hashlib.sha256()
        for f in files:
            sha = sha256_file(f)
            digest.update(f"{f}\0{sha}\n".encode())
            parsed = parse_label_file(f, classes=classes, known_image_ids=known, skip_label=cfg.labels.skip_label)
            if parsed.ok:
                context.log.info(f"inbox: {f.name} ({sha[:12]}) valid, {len(parsed.rows)} rows")
            else:
                first = parsed.errors[0] if parsed.errors else None
                context.log.warning(
                    f"inbox: {f.name} ({sha[:12]}) INVALID, will be rejected whole: {len(parsed.errors)} error(s)"
                    + (f"; line {first.line}: {first.message}" if first else ""))
        run_requests.append(dg.RunRequest(
            run_key=f"{db_id}-labels-r{partition}-f{n_seen}-{digest.hexdigest()[:20]}", job_name=round_job.name,
            partition_key=partition,
            run_config={"ops": {"round_labels": {"config": {"files": [str(f) for f in files]}}}},
            tags=_tags({"al/files": str(len(files))})))
    for request_id, kind, arg in requests:
        if kind == "close_round":
            run_requests.append(dg.RunRequest(
                run_key=f"{db_id}-request-{request_id}", job_name=round_job.name, partition_key=partition,
                run_config={"ops": {"round_labels": {"config": {
                    "files": [], "force_close": True, "request_id": request_id}}}},
                tags=_tags({"al/request": request_id})))
        elif kind == "retry_file":
            run_requests.append(dg.RunRequest(
                run_key=f"{db_id}-request-{request_id}", job_name=round_job.name, partition_key=partition,
                run_config={"ops": {"round_labels": {"config": {"files": [arg], "request_id": request_id}}}},
                tags=_tags({"al/request": request_id})))
    if not run_requests and pending:
        # nothing delivered, but the loop owes work (a run stopped half-way: killed, or queued behind another)
        if _round_run_in_flight(context):
            return dg.SkipReason(f"loop owes {pending}; a round run is queued or running and will see it")
        context.log.warning(f"inbox empty but the loop owes {pending}: requesting a run to resume round {partition}")
        run_requests.append(dg.RunRequest(
            run_key=f"{db_id}-resume-{pending}-f{n_seen}", job_name=round_job.name, partition_key=partition,
            run_config={"ops": {"round_labels": {"config": {"files": []}}}},
            tags=_tags({"al/resume": pending})))
    if not run_requests:
        return dg.SkipReason(f"inbox {cfg.inbox} is empty")
    if cfg.sensor.ingest_before_round:
        # queued first, so new images in the image root are scanned and embedded before the next proposal
        run_requests.insert(0, dg.RunRequest(run_key=f"ingest-before-{run_requests[0].run_key}",
                                             job_name=ingest_job.name,
                                             tags={"al/trigger": "round", "al/writes": "true"}))
    return dg.SensorResult(run_requests=run_requests,
                           dynamic_partitions_requests=[rounds_partitions.build_add_request([partition])])
