"""Dask worker preload: ``dask worker tcp://... --preload al_assets.tools.dask_preload``.

Imports the code location and loads the project's backbone once, when the worker
starts, so that its first shard step does not spend ~10 s importing Dagster,
torch and the weights while the other workers take every shard. The worker runs
with the same project file ($AL_CONFIG) and $DAGSTER_HOME as the launching side.
"""

import logging

log = logging.getLogger("al_assets.tools.dask_preload")


def dask_setup(worker=None):
    import time

    t0 = time.perf_counter()
    from al_assets.definitions import build_defs
    from al_assets.shards import load_backbone_cached
    from al_core.config import load_config

    cfg = load_config()
    defs = build_defs(cfg)
    defs.resolve_job_def("embed_shards_dask_job")
    load_backbone_cached(defs.resources["backbone"])
    log.info("al-pipeline preloaded in %.1f s (%s)", time.perf_counter() - t0, cfg.source_file)
