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

import dagster as dg
from pydantic import Field

from al_assets.failures import one_line_failures
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
    source: str | None = Field(
        default=None,
        description="only images of this scanned root / manifest (default: every ok image of the catalogue)",
    )


@dg.asset(
    partitions_def=shard_partitions,
    group_name=SCALE_GROUP,
    kinds={"pytorch", "parquet"},
    deps=["raw_images"],
    description="Vectors of one shard of image ids, written as part files; committed by `embeddings`.",
)
def embedding_shards(
    context: dg.AssetExecutionContext, config: ShardConfig, store: StoreResource, backbone: BackboneResource
) -> dg.MaterializeResult:
    from al_core.ingest.shards import embed_shard_of_catalogue

    summary = embed_shard_of_catalogue(
        store.get(),
        load_backbone_cached(backbone),
        context.partition_key,
        source=config.source,
        batch_size=backbone.batch_size,
        progress=context.log.info,
    )  # DuckDB read-only
    return dg.MaterializeResult(metadata=_shard_metadata(summary) | {"committed": False})


# ---------------------------------------------------------------------------- the fan-out job
class PlanConfig(dg.Config):
    source: str | None = Field(
        default=None,
        description="only images of this scanned root / manifest (default: every ok image of the catalogue)",
    )


@dg.op(out=dg.Out(io_manager_key="shard_io_manager"), tags=WRITER_TAGS)
def plan_embedding_shards(
    context: dg.OpExecutionContext, config: PlanConfig, store: StoreResource, backbone: BackboneResource
) -> dict:
    """Work list per shard (catalogue read-only), written beside the vectors for the workers."""
    from al_core.ingest.shards import plan_run

    plan = plan_run(store.get(), load_backbone_cached(backbone), source=config.source)
    context.log.info(
        f"plan {plan['plan_id']}: {sum(plan['counts'].values())} images to embed in "
        f"{len(plan['files'])} of {len(plan['counts'])} shards"
    )
    return plan


def _make_shard_op(shard: str):
    @dg.op(name=f"embed_shard_{shard}", out=dg.Out(io_manager_key="shard_io_manager"), ins={"plan": dg.In(dict)})
    def _embed_shard(
        context: dg.OpExecutionContext, plan: dict, store: StoreResource, backbone: BackboneResource
    ) -> dict:
        from al_core.ingest.shards import ShardError, embed_planned_shard

        # no DuckDB here: the plan and the parts are files. The commit step reads the summary from beside
        # the plan: dagster-dask's fan-in of values skips sources the orchestrator's known state does not
        # list (every one of them), so the commit waits on Nothing inputs
        try:
            summary = embed_planned_shard(
                store.get().vectors_loc,
                plan,
                shard,
                lambda: load_backbone_cached(backbone),
                batch_size=backbone.batch_size,
                progress=context.log.info,
            )
        except ShardError as e:
            raise dg.Failure(str(e)) from e
        context.log_event(
            dg.AssetMaterialization(
                asset_key="embedding_shards",
                partition=shard,
                metadata=_shard_metadata(summary) | {"committed": False, "plan_id": plan["plan_id"]},
            )
        )
        return summary

    return _embed_shard


SHARD_OPS = [_make_shard_op(h) for h in SHARD_KEYS]


@dg.op(tags=WRITER_TAGS, ins={"plan": dg.In(dict), "shards_done": dg.In(dg.Nothing)})
def commit_embedding_shards(context: dg.OpExecutionContext, plan: dict, store: StoreResource) -> None:
    """The single writer: every written part of the config into the catalogue, one transaction."""
    from al_core.ingest.commit import commit_planned_run
    from al_core.ingest.shards import ShardError

    s = store.get()
    try:
        with one_line_failures():  # a damaged part: one line naming it and `al verify --repair`
            summary = commit_planned_run(s, plan, context.run.run_id)
    except ShardError as e:
        raise dg.Failure(str(e)) from e
    s.put_asset_output("embeddings", "", context.run.run_id, summary.as_dict())  # what StoreJsonIOManager stores
    committed = summary.sharded["commit"]
    context.log.info(
        f"committed {committed['parts_committed']} parts ({committed['rows_committed']} vectors; "
        f"{committed['rows_duplicate']} duplicates dropped) of {summary.config_id}; "
        f"{summary.n_total} in all"
    )
    context.log_event(
        dg.AssetMaterialization(
            asset_key="embeddings",
            metadata={
                "config_id": summary.config_id,
                "backbone": summary.backbone,
                "feature_dim": summary.dim,
                "embedded_now": summary.n_embedded,
                "failed": summary.n_failed,
                "vectors_total": summary.n_total,
                "parts_committed": committed["parts_committed"],
                "duplicates_dropped": committed["rows_duplicate"],
                "workers": len(summary.sharded["workers"]),
                "images_per_s": dg.MetadataValue.float(round(summary.images_per_s, 1)),
                "sharded_run": True,
            },
        )
    )


def build_embed_shards_job(name: str, executor_def=None, config: dict | None = None, description: str = ""):
    @dg.job(
        name=name,
        executor_def=executor_def,
        config=config,
        tags={"al/writes": "true", "dagster/max_runtime": str(INGEST_MAX_RUNTIME_S)},
        description=description,
    )
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
