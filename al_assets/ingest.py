"""Ingestion assets: raw_images -> embeddings -> near_duplicates.

Each asset makes one al_core call and adds metadata. Heavy imports (torch,
timm) happen inside the bodies so the code location loads fast. Each asset
returns a small JSON summary (kept in DuckDB by StoreJsonIOManager) that the
next asset receives as its input: lineage goes through asset inputs.
"""

import dagster as dg
from pydantic import Field

from al_assets.failures import one_line_failures
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
    from al_core.ingest.scan import scan_project

    with one_line_failures():
        report = scan_project(
            store.get(),
            project.load(),
            image_root=config.image_root,
            manifest=config.manifest,
            ground_truth_from_folders=config.ground_truth_from_folders,
            progress=context.log.info,
        )
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


# No dependency on the scale-out asset `embedding_shards` (group scale_out): a single-machine project never
# materialises it, and the UI must not show it as a blocker. What its partitions wrote is still committed here.
@dg.asset(group_name="ingest", kinds={"duckdb", "pytorch"}, io_manager_key="store_io_manager")
def embeddings(
    context: dg.AssetExecutionContext, raw_images: dict, store: StoreResource, backbone: BackboneResource
) -> dg.Output[dict]:
    """Frozen-backbone vectors for every ok image of the scanned source, keyed by embedding config.

    First commits any part files that `embedding_shards` partitions wrote (the single writer,
    one transaction; docs/scale-out.md: that asset is not an upstream dependency, so a project
    that never shards sees no blocker), then embeds what is still missing in this process.
    The value is an `al_core.ingest.pipeline.EmbeddingsSummary` as a dict."""
    from al_core.ingest.commit import embed_into_catalogue

    with one_line_failures():
        summary = embed_into_catalogue(
            store.get(),
            backbone.load(),
            source=raw_images["source"],
            run_id=context.run.run_id,
            batch_size=backbone.batch_size,
            progress=context.log.info,
        )
    return dg.Output(
        summary.as_dict(),
        metadata={
            "config_id": summary.config_id,
            "backbone": summary.backbone,
            "feature_dim": summary.dim,
            "embedded_now": summary.n_embedded,
            "already_embedded": summary.n_skipped,
            "failed": summary.n_failed,
            "vectors_total": summary.n_total,
            "images_per_s": dg.MetadataValue.float(round(summary.images_per_s, 1)),
            "device": summary.device,
            "dtype": summary.dtype,
            "scan_id": raw_images["scan_id"],
        },
    )


@dg.asset(group_name="ingest", kinds={"duckdb"}, io_manager_key="store_io_manager")
def near_duplicates(context: dg.AssetExecutionContext, embeddings: dict, project: ProjectResource) -> dg.Output[dict]:
    """Pairs of images whose embeddings are near-duplicates (cosine >= quality.near_duplicate_cosine), found again
    whenever the vectors or the threshold change; a batch never holds two of them (al_core.loop.batch_rules)."""
    from al_core.catalogue import open_store
    from al_core.loop import LoopError
    from al_core.loop.batch_rules import refresh_near_duplicates

    cfg = project.load()
    try:
        s = refresh_near_duplicates(open_store(cfg), cfg, embeddings["config_id"])
    except LoopError as e:  # a threshold that pairs everything: said here; the next proposal stops on it
        context.log.warning(str(e))
        s = {"error": str(e)}
    return dg.Output(
        s | {"config_id": embeddings["config_id"]},
        metadata={
            "pairs": s.get("n_pairs", -1),
            "method": s.get("method", ""),
            "computed_now": bool(s.get("computed")),
            "threshold": cfg.quality.near_duplicate_cosine,
            "error": s.get("error", ""),
        },
    )
