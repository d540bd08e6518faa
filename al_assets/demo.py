"""`make demo`: the main job on the embedded defaults (the sample images).

Runs in process against the instance in $DAGSTER_HOME (set by the Makefile to
data/dagster_home), so the runs show up in `make ui` afterwards.
"""

import sys
import time

import dagster as dg


def main() -> int:
    from al_assets.definitions import defs
    from al_core.config import load_config
    from al_core.status_cli import print_summary, summary

    cfg = load_config()
    t0 = time.monotonic()
    print(f"al-pipeline demo: images from {cfg.image_root}, database {cfg.db_path}", flush=True)
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("ingest_job")
    result = job.execute_in_process(instance=instance)
    if not result.success:
        print("demo: the ingest job failed; see the log above", file=sys.stderr)
        return 1
    print(f"\ningest_job finished in {time.monotonic() - t0:.0f} s. The store now holds:", flush=True)
    print_summary(summary(cfg.store()))
    print("\nNext: `make ui` opens the Dagster UI on http://127.0.0.1:3000 (assets, runs, metadata).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
