"""The one Definitions object of the code location (kept thin).

The project file (al.yaml, or $AL_CONFIG; al_core.config) is read and checked
once, here, and everything that depends on it is built from that one load: the
resources, the inbox sensor's interval and the retraining schedule's cron. A
broken project file fails the code location with the one-line message of
``ConfigError`` (file, key, problem), never silently with defaults.
"""

import dagster as dg

from al_assets import checks, ingest, loop, shards
from al_assets.jobs import ingest_job, retrain_job, round_job, seed_job
from al_assets.schedules import build_retrain_schedule
from al_assets.shards import embed_shards_dask_job, embed_shards_job
from al_core.config import ProjectConfig
from resources.backbone import BackboneResource
from resources.project import ProjectResource, load_project
from resources.shards import ShardJsonIOManager
from resources.store import StoreJsonIOManager, StoreResource
from sensors.inbox import build_inbox_sensor


def build_resources(cfg: ProjectConfig) -> dict:
    store = StoreResource(
        db_path=str(cfg.db_path), vectors_dir=str(cfg.vectors_location), lock_timeout_s=cfg.store_cfg.lock_timeout_s
    )
    return {
        "store": store,
        "store_io_manager": StoreJsonIOManager(store=store),
        "shard_io_manager": ShardJsonIOManager(store=store),  # JSON files beside the vectors (no DuckDB, no pickle)
        "backbone": BackboneResource(
            name=cfg.backbone.name,
            image_size=cfg.backbone.image_size,
            weights_path=cfg.backbone.weights_path,
            batch_size=cfg.backbone.batch_size,
        ),
        "project": ProjectResource(config_path=cfg.source_file),
    }


def build_defs(cfg: ProjectConfig) -> dg.Definitions:
    return dg.Definitions(
        assets=dg.load_assets_from_modules([ingest, loop, shards]),
        asset_checks=dg.load_asset_checks_from_modules([checks]),
        jobs=[ingest_job, seed_job, round_job, retrain_job, embed_shards_job, embed_shards_dask_job],
        sensors=[build_inbox_sensor(cfg)],
        schedules=[build_retrain_schedule(cfg)],
        resources=build_resources(cfg),
    )


def reconstructable_dask_job():
    """embed_shards_dask_job with the resources of the current project file ($AL_CONFIG), for
    ``dg.execute_job(dg.reconstructable(reconstructable_dask_job), instance)``: every Dask
    worker rebuilds it from its own $AL_CONFIG."""
    return build_defs(load_project()).resolve_job_def("embed_shards_dask_job")


def reconstructable_local_job():
    """embed_shards_job (multiprocess executor), as reconstructable_dask_job."""
    return build_defs(load_project()).resolve_job_def("embed_shards_job")


defs = build_defs(load_project())
