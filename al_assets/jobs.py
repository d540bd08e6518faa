"""Jobs."""

import dagster as dg

from al_assets.loop import LOOP_GROUP

# Time limits (tag dagster/max_runtime) on every run that writes the catalogue. A run whose process was killed
# together with the daemon (power loss) stays STARTED, and Dagster's default launcher cannot tell it is dead;
# run monitoring fails it once its limit has passed, so it cannot block the one-run queue for ever.
RUN_MAX_RUNTIME_S = 4 * 3600  # a round or a retraining takes minutes
INGEST_MAX_RUNTIME_S = 24 * 3600  # scanning and embedding: ~100 images/s on a CPU, 1 M images in under 3 h

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups("ingest"),
    description="Scan the image root and embed every new image.",
    tags={"al/writes": "true", "dagster/max_runtime": str(INGEST_MAX_RUNTIME_S)},
)

# The loop's jobs run their steps in one process: the steps are sequential by
# nature (labels -> probe -> metrics / next batch) and every one writes to the
# single-writer DuckDB file; a process per step would add ~5 s of imports each.
seed_job = dg.define_asset_job(
    "seed_job",
    selection=dg.AssetSelection.assets("seed_pool"),
    description="Round 0: propose the seed pool.",
    tags={"al/writes": "true", "dagster/max_runtime": str(RUN_MAX_RUNTIME_S)},
    executor_def=dg.in_process_executor,
)

round_job = dg.define_asset_job(
    "round_job",
    selection=dg.AssetSelection.groups(LOOP_GROUP) - dg.AssetSelection.assets("seed_pool"),
    description="Ingest label files; when the batch is answered, train, evaluate and propose the next batch.",
    tags={"al/writes": "true", "dagster/max_runtime": str(RUN_MAX_RUNTIME_S)},
    executor_def=dg.in_process_executor,
)

retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.assets("probe", "eval_metrics"),
    description="Retrain the probe of the latest round on every label and re-evaluate it (new probe version).",
    tags={"al/writes": "true", "al/trigger": "schedule", "dagster/max_runtime": str(RUN_MAX_RUNTIME_S)},
    executor_def=dg.in_process_executor,
)
