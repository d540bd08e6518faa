"""Ingestion assets: raw_images -> embeddings.

Assets stay thin: read inputs, call al_core, write outputs and metadata. Heavy
imports (torch, timm) happen inside the bodies so the code location loads fast.
Each asset returns a small JSON summary (kept in DuckDB by StoreJsonIOManager)
that the next asset receives as its input: lineage goes through asset inputs.
"""

import dagster as dg
from pydantic import Field

from resources.backbone import BackboneResource
from resources.project import ProjectResource
from resources.store import StoreResource


class RawImagesConfig(dg.Config):
    """Where the images are (default: `images.root` / `images.manifest` of the project file)."""

    image_root: str | None = Field(default=None, description="folder of images (class sub-folders give ground truth)")
    manifest: str | None = Field(default=None, description="CSV with a `path` column (and optional `class`)")
    ground_truth_from_folders: bool = True


@dg.asset(group_name="ingest", kinds={"duckdb"}, io_manager_key="store_io_manager")
def raw_images(
    context: dg.AssetExecutionContext, config: RawImagesConfig, store: StoreResource, project: ProjectResource
) -> dg.Output[dict]:
    """Content-addressed image records (sha256 of the bytes) with a status per path."""
    from al_core.ingest.scan import scan

    cfg = project.load()
    manifest = config.manifest or (None if config.image_root else cfg.manifest)
    root = config.image_root or cfg.image_root
    if manifest:
        report = scan(store.get(), manifest=manifest, ground_truth_from_folders=False, progress=context.log.info)
    else:
        report = scan(store.get(), root=root,
                      ground_truth_from_folders=config.ground_truth_from_folders, progress=context.log.info)
    context.log.info(
        f"scan {report.scan_id}: {report.n_files} files, {report.n_new} new, {report.n_changed} changed, "
        f"{report.n_unchanged} unchanged, {report.n_missing} now missing, {report.n_corrupt} corrupt"
    )
    return dg.Output(
        report.as_dict(),
        metadata={
            "source": report.source,
            "files": report.n_files,
            "images_ok": dg.MetadataValue.int(report.n_images),
            "new": report.n_new,
            "changed": report.n_changed,
            "unchanged (not re-hashed)": report.n_unchanged,
            "missing": report.n_missing,
            "corrupt": report.n_corrupt,
            "seconds": dg.MetadataValue.float(round(report.seconds, 3)),
        },
    )


@dg.asset(group_name="ingest", kinds={"duckdb", "pytorch"}, io_manager_key="store_io_manager",
          deps=["embedding_shards"])
def embeddings(
    context: dg.AssetExecutionContext, raw_images: dict, store: StoreResource, backbone: BackboneResource
) -> dg.Output[dict]:
    """Frozen-backbone vectors for every ok image of the scanned source, keyed by embedding config.

    First commits the part files that `embedding_shards` partitions wrote (the single writer,
    one transaction; docs/scale-out.md), then embeds what is still missing in this process."""
    from al_core.ingest.pipeline import embed_missing
    from al_core.ingest.shards import commit_pending

    s, bb = store.get(), backbone.load()
    committed = commit_pending(s, bb.config_id, run_id=context.run.run_id)
    if committed["parts_committed"]:
        context.log.info(f"committed {committed['parts_committed']} shard parts ({committed['rows_committed']} vectors)")
    result = embed_missing(
        s, bb, source=raw_images["source"], batch_size=backbone.batch_size,
        progress=context.log.info,
    )
    result["committed_from_shards"] = committed["rows_committed"]
    return dg.Output(
        result,
        metadata={
            "config_id": result["config_id"],
            "backbone": result["backbone"],
            "feature_dim": result["dim"],
            "embedded_now": result["n_embedded"],
            "already_embedded": result["n_skipped"],
            "failed": result["n_failed"],
            "vectors_total": result["n_total"],
            "images_per_s": dg.MetadataValue.float(round(result["images_per_s"], 1)),
            "device": result["device"],
            "dtype": result["dtype"],
            "scan_id": raw_images["scan_id"],
        },
    )
