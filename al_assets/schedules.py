"""Scheduled retraining (off unless `schedule.retrain_cron` is set in the project file)."""

import dagster as dg

from al_assets.jobs import retrain_job
from al_core.config import load_config
from resources.project import ProjectResource
from al_core.catalogue import open_store


def _cron() -> str | None:
    try:
        return load_config().schedule.retrain_cron
    except Exception:
        return None


_CRON = _cron()


@dg.schedule(job=retrain_job, cron_schedule=_CRON or "0 3 * * *",
             default_status=dg.DefaultScheduleStatus.RUNNING if _CRON else dg.DefaultScheduleStatus.STOPPED,
             description="Retrain the latest round's probe on every label and re-evaluate it")
def retrain_schedule(context: dg.ScheduleEvaluationContext, project: ProjectResource):
    from al_core.catalogue.store import StoreError

    cfg = project.load()
    try:
        rows = open_store(cfg).fetch("SELECT max(round) FROM probes")
    except StoreError as e:
        return dg.SkipReason(f"database not readable now: {e}")
    latest = rows[0][0] if rows else None
    if latest is None:
        return dg.SkipReason("no probe trained yet")
    return dg.RunRequest(run_key=f"retrain-{latest}-{context.scheduled_execution_time.isoformat()}",
                         partition_key=str(latest), tags={"al/trigger": "schedule"})
