"""Scale-out (docs/scale-out.md): embedding shards as Dagster partitions, and a job that
fans them out over an executor (multiprocess locally, Dask on a cluster).

- ``embedding_shards``: one static partition per shard (the first SHARD_HEX_DIGITS
  hex digits of the image id, stable as images are added). Materialising a
  partition embeds the shard's ok images that have no vector for the current
  config and writes part files + manifests; it never writes DuckDB (it reads it,
  read-only, for its work list). The parts stay invisible until the single
  writer commits them: the ``embeddings`` asset (al_assets/ingest.py) commits
  every pending part first, so a backfill of this asset followed by
  ``embeddings`` works on any executor.
- ``embed_shards_job`` / ``embed_shards_dask_job``: one run = plan (reader) ->
  one step per shard (any worker, no DuckDB; each step is recorded as a
  materialisation of ``embedding_shards`` <shard>) -> commit (the single writer;
  recorded as a materialisation of ``embeddings``, whose JSON value the
  labelling loop reads: config_id, backbone, dim). A Dagster run covers one
  partition of a partitioned asset, so the fan-out inside one run is a job of
  ops; the shards are the same partitions and the same code (al_core.ingest.shards).
- ``embed_shards_dask_job`` runs every step on a Dask cluster: the scheduler
  address comes from the run config, by default from $AL_DASK_SCHEDULER. The
  plan and commit steps carry ``dagster-dask/resource_requirements:
  {"CATALOGUE": 1}``: start the worker that sits beside the DuckDB file with
  ``--resources CATALOGUE=1`` (and only that one); shard steps go anywhere.
"""

import functools
import json
import time

import dagster as dg
from pydantic import Field

from al_assets.jobs import INGEST_MAX_RUNTIME_S
from al_core.ingest.shards import all_shards
from resources.backbone import BackboneResource
from resources.shards import dask_executor
from resources.store import StoreResource

SCALE_GROUP = "scale_out"
SHARD_KEYS = all_shards()
shard_partitions = dg.StaticPartitionsDefinition(SHARD_KEYS)

DASK_SCHEDULER_ENV = "AL_DASK_SCHEDULER"
WRITER_RESOURCE = "CATALOGUE"
WRITER_TAGS = {"dagster-dask/resource_requirements": json.dumps({WRITER_RESOURCE: 1})}


@functools.lru_cache(maxsize=2)
def _backbone(name: str, image_size: int, weights_path: str | None, device: str | None):
    from al_core.models.backbones import load_backbone

    return load_backbone(name, project_image_size=image_size, weights_path=weights_path, device=device)


def load_backbone_cached(res: BackboneResource):
    """The backbone, loaded once per worker process (a Dask worker runs many shard steps)."""
    return _backbone(res.name, res.image_size, res.weights_path, res.device)


def _shard_metadata(summary: dict) -> dict:
    return {
        "shard": summary["shard"],
        "config_id": summary["config_id"],
        "planned": summary["n_planned"],
        "already_written": summary["n_already_written"],
        "embedded_now": summary["n_embedded"],
        "failed": summary["n_failed"],
        "parts_written": len(summary["parts"]),
        "images_per_s": dg.MetadataValue.float(round(summary["images_per_s"], 1)),
        "seconds": dg.MetadataValue.float(round(summary["seconds"], 2)),
        "worker": dg.MetadataValue.json(summary["worker"]),
    }


class ShardConfig(dg.Config):
    source: str | None = Field(default=None, description="only images of this scanned root / manifest "
                                                         "(default: every ok image of the catalogue)")


@dg.asset(
    partitions_def=shard_partitions,
    group_name=SCALE_GROUP,
    kinds={"pytorch", "parquet"},
    deps=["raw_images"],
    description="Vectors of one shard of image ids, written as part files; committed by `embeddings`.",
)
def embedding_shards(context: dg.AssetExecutionContext, config: ShardConfig, store: StoreResource,
                     backbone: BackboneResource) -> dg.MaterializeResult:
    from al_core.ingest.shards import embed_shard, plan_shards

    shard = context.partition_key
    s = store.get()
    bb = load_backbone_cached(backbone)
    items = plan_shards(s, bb.config_id, source=config.source, shards=[shard])[shard]  # DuckDB read-only
    summary = embed_shard(s.vectors_loc, bb, shard, items, batch_size=backbone.batch_size,
                          progress=context.log.info)
    return dg.MaterializeResult(metadata=_shard_metadata(summary) | {"committed": False})


# ---------------------------------------------------------------------------- the fan-out job
class PlanConfig(dg.Config):
    source: str | None = Field(default=None, description="only images of this scanned root / manifest "
                                                         "(default: every ok image of the catalogue)")


@dg.op(out=dg.Out(io_manager_key="shard_io_manager"), tags=WRITER_TAGS)
def plan_embedding_shards(context: dg.OpExecutionContext, config: PlanConfig, store: StoreResource,
                          backbone: BackboneResource) -> dict:
    """Work list per shard (catalogue read-only), written beside the vectors for the workers."""
    from al_core.catalogue.store import now
    from al_core.ingest.shards import plan_shards, write_plans

    started = now()
    s = store.get()
    bb = load_backbone_cached(backbone)
    plans = plan_shards(s, bb.config_id, source=config.source)
    files = write_plans(s.vectors_loc, bb.config_id, plans)
    n = sum(files["counts"].values())
    context.log.info(f"plan {files['plan_id']}: {n} images to embed in {len(files['files'])} of {len(plans)} shards")
    cfg = dict(bb.config)
    cfg["dim"] = int(bb.feature_dim)
    from al_core.ingest.shards import worker_identity

    return files | {"worker": worker_identity(), "backbone": bb.name, "dim": int(bb.feature_dim), "dtype": bb.dtype,
                    "config": cfg, "source": config.source, "started_at": started.isoformat()}


def _make_shard_op(shard: str):
    @dg.op(name=f"embed_shard_{shard}", out=dg.Out(io_manager_key="shard_io_manager"),
           ins={"plan": dg.In(dict)})
    def _embed_shard(context: dg.OpExecutionContext, plan: dict, store: StoreResource,
                     backbone: BackboneResource) -> dict:
        from al_core.ingest.shards import embed_shard, read_plan

        t0 = time.perf_counter()
        loc = store.get().vectors_loc  # no DuckDB here: the plan and the parts are files
        items = read_plan(loc, plan["files"].get(shard))
        if items:
            bb = load_backbone_cached(backbone)
            if bb.config_id != plan["config_id"]:
                raise dg.Failure(f"this worker's backbone config {bb.config_id} is not the plan's "
                                 f"{plan['config_id']}: the workers must run the same project file")
            summary = embed_shard(loc, bb, shard, items, batch_size=backbone.batch_size, progress=context.log.info)
        else:
            from al_core.ingest.shards import worker_identity

            summary = {"shard": shard, "config_id": plan["config_id"], "n_planned": 0, "n_already_written": 0,
                       "n_embedded": 0, "n_failed": 0, "failures": [], "parts": [], "embed_seconds": 0.0,
                       "seconds": time.perf_counter() - t0, "images_per_s": 0.0, "worker": worker_identity()}
        summary.pop("config", None)
        # the commit step reads the summaries from here: dagster-dask's fan-in of values skips sources the
        # orchestrator's known state does not list (every one of them), so the commit waits on Nothing inputs
        loc.put_json(shard_summary_rel(plan, shard), summary)
        context.log_event(dg.AssetMaterialization(
            asset_key="embedding_shards", partition=shard,
            metadata=_shard_metadata(summary) | {"committed": False, "plan_id": plan["plan_id"]}))
        return summary

    return _embed_shard


SHARD_OPS = [_make_shard_op(h) for h in SHARD_KEYS]


def shard_summary_rel(plan: dict, shard: str) -> str:
    from al_core.ingest.shards import PLANS_DIR

    return f"{plan['config_id']}/{PLANS_DIR}/{plan['plan_id']}/summary-{shard}.json"


@dg.op(tags=WRITER_TAGS, ins={"plan": dg.In(dict), "shards_done": dg.In(dg.Nothing)})
def commit_embedding_shards(context: dg.OpExecutionContext, plan: dict, store: StoreResource) -> None:
    """The single writer: every written part of the config into the catalogue, one transaction."""
    import datetime as _dt

    from al_core.ingest.shards import commit_pending, record_sharded_run, remove_plan, worker_identity

    s = store.get()
    config_id = plan["config_id"]
    missing = [h for h in SHARD_KEYS if not s.vectors_loc.exists(shard_summary_rel(plan, h))]
    if missing:
        raise dg.Failure(f"shard steps {missing} left no summary for plan {plan['plan_id']}")
    summaries = [s.vectors_loc.read_json(shard_summary_rel(plan, h)) for h in SHARD_KEYS]
    committed = commit_pending(s, config_id, run_id=context.run.run_id)
    run = record_sharded_run(s, run_id=context.run.run_id, config_id=config_id, config=plan["config"],
                             summaries=summaries, started_at=_dt.datetime.fromisoformat(plan["started_at"]))
    remove_plan(s.vectors_loc, config_id, plan["plan_id"])
    workers = sorted({json.dumps(x["worker"], sort_keys=True) for x in summaries if x["n_embedded"]})
    value = {
        "config_id": config_id,
        "backbone": plan["backbone"],
        "dim": plan["dim"],
        "dtype": plan["dtype"],
        "device": str(plan["config"].get("device")),
        "source": plan.get("source"),
        "n_embedded": run["n_embedded"],
        "n_skipped": run["n_total"] - committed["rows_committed"],
        "n_failed": run["n_failed"],
        "failures": [f for x in summaries for f in x["failures"]][:20],
        "n_total": run["n_total"],
        "images_per_s": run["n_embedded"] / run["wall_seconds"] if run["wall_seconds"] > 0 else 0.0,
        "seconds": run["wall_seconds"],
        "run_id": context.run.run_id,
        "sharded": {"plan_id": plan["plan_id"], "planned_by": plan.get("worker"), "committed_by": worker_identity(),
                    "commit": committed, "worker_seconds": run["worker_seconds"],
                    "workers": [json.loads(w) for w in workers],
                    "shards": {x["shard"]: {"n_embedded": x["n_embedded"], "worker": x["worker"]}
                               for x in summaries if x["n_planned"]}},
    }
    s.put_asset_output("embeddings", "", context.run.run_id, value)  # what StoreJsonIOManager stores for the loop
    context.log.info(f"committed {committed['parts_committed']} parts ({committed['rows_committed']} vectors; "
                     f"{committed['rows_duplicate']} duplicates dropped) of {config_id}; {run['n_total']} in all")
    context.log_event(dg.AssetMaterialization(
        asset_key="embeddings",
        metadata={"config_id": config_id, "backbone": plan["backbone"], "feature_dim": plan["dim"],
                  "embedded_now": run["n_embedded"], "failed": run["n_failed"], "vectors_total": run["n_total"],
                  "parts_committed": committed["parts_committed"], "duplicates_dropped": committed["rows_duplicate"],
                  "workers": len(workers), "images_per_s": dg.MetadataValue.float(round(value["images_per_s"], 1)),
                  "sharded_run": True}))


def build_embed_shards_job(name: str, executor_def=None, config: dict | None = None, description: str = ""):
    @dg.job(name=name, executor_def=executor_def, config=config,
            tags={"al/writes": "true", "dagster/max_runtime": str(INGEST_MAX_RUNTIME_S)}, description=description)
    def _job():
        plan = plan_embedding_shards()
        commit_embedding_shards(plan, shards_done=[op(plan) for op in SHARD_OPS])

    return _job


embed_shards_job = build_embed_shards_job(
    "embed_shards_job",
    description="Plan, embed every shard in its own step (multiprocess executor), commit in one transaction.",
)

embed_shards_dask_job = build_embed_shards_job(
    "embed_shards_dask_job",
    executor_def=dask_executor,
    config={"execution": {"config": {"cluster": {"existing": {"address": {"env": DASK_SCHEDULER_ENV}}}}}},
    description=f"embed_shards_job on a Dask cluster (scheduler: ${DASK_SCHEDULER_ENV}); plan and commit run on "
                f"the worker started with --resources {WRITER_RESOURCE}=1.",
)
