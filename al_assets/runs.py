"""Which runs of a Dagster instance are still going: queued, starting, running, cancelling, or failed with a
retry on its way (Dagster's run retries create the new run a moment after the failure)."""

import dagster as dg

IN_FLIGHT = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def is_in_flight(run) -> bool:
    """Whether ``run`` (a DagsterRun) is still going, or failed and about to be retried."""
    from dagster._core.storage.tags import AUTO_RETRY_RUN_ID_TAG, WILL_RETRY_TAG

    if run.status in {dg.DagsterRunStatus[s] for s in IN_FLIGHT}:
        return True
    return (
        run.status == dg.DagsterRunStatus.FAILURE
        and run.tags.get(WILL_RETRY_TAG) == "true"
        and run.tags.get(AUTO_RETRY_RUN_ID_TAG) is None
    )


def in_flight_runs(instance, filters: dg.RunsFilter | None = None) -> list:
    """The runs of ``instance`` (matching ``filters``) that are still going (``is_in_flight``)."""
    return [r for r in instance.get_runs(filters=filters) if is_in_flight(r)]
