"""Scheduled retraining (off unless `schedule.retrain_cron` is set in the project file)."""

import dagster as dg

from al_assets.jobs import retrain_job
from al_core.config import ProjectConfig
from resources.store import StoreResource

UNSET_CRON = "0 3 * * *"  # shown (stopped) in the UI when the project file sets no retrain_cron


def build_retrain_schedule(cfg: ProjectConfig) -> dg.ScheduleDefinition:
    """The retraining schedule, with the cron of the project config the code location loaded."""
    cron = cfg.schedule.retrain_cron

    @dg.schedule(
        job=retrain_job,
        cron_schedule=cron or UNSET_CRON,
        name="retrain_schedule",
        default_status=dg.DefaultScheduleStatus.RUNNING if cron else dg.DefaultScheduleStatus.STOPPED,
        description="Retrain the latest round's probe on every label and re-evaluate it",
    )
    def retrain_schedule(context: dg.ScheduleEvaluationContext, store: StoreResource):
        from al_core.catalogue import StoreError
        from al_core.catalogue.probes import latest_probed_round

        try:
            with store.get().connect(read_only=True, view=False) as con:
                latest = latest_probed_round(con)
        except StoreError as e:
            return dg.SkipReason(f"database not readable now: {e}")
        if latest is None:
            return dg.SkipReason("no probe trained yet")
        return dg.RunRequest(
            run_key=f"retrain-{latest}-{context.scheduled_execution_time.isoformat()}",
            partition_key=str(latest),
            tags={"al/trigger": "schedule"},
        )

    return retrain_schedule
