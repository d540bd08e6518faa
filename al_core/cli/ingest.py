"""`al ingest`: scan an image folder (or manifest) and embed every new image, without Dagster.

It does what the ``embeddings`` asset does (al_core.ingest.commit.embed_into_catalogue: shard parts committed
first, then what is missing embedded) and records the same value for it (``EMBEDDINGS_ASSET``), so the inbox
sensor proposes the seed batch from the catalogue whichever path made the vectors."""

import argparse
import sys

from al_core.cli.common import add_config_option, run_with_store
from al_core.ingest.scan import ImageRootError

EMBEDDINGS_ASSET = "embeddings"  # the asset key whose value StoreJsonIOManager reads for seed_pool's input


def main(argv: list[str]) -> int:
    ap = add_config_option(argparse.ArgumentParser(prog="al ingest", description=__doc__))
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--images", help="image root folder (default: images.root of the project file)")
    src.add_argument("--manifest", help="CSV with a `path` column instead of a folder")
    ap.add_argument("--backbone", help="default: backbone.name")
    ap.add_argument("--image-size", type=int, help="default: backbone.image_size")
    ap.add_argument("--weights", help="local weights file for the backbone")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--no-embed", action="store_true", help="scan only")
    args = ap.parse_args(argv)
    return run_with_store(
        "al ingest",
        args.config,
        lambda cfg, store: _ingest(args, cfg, store),
        creates_database=True,
        usage_errors=(ImageRootError,),
    )


def _ingest(args, cfg, store) -> None:
    setting, where = "--images", " (on the command line)"
    if not args.images and not args.manifest:
        args.images, args.manifest = (
            (str(cfg.image_root) if cfg.image_root else None),
            (str(cfg.manifest) if cfg.manifest else None),
        )
        setting, where = "images.root", f" (in {cfg.source_file or 'the defaults: no project file'})"
        if not args.images and not args.manifest:
            raise ImageRootError(
                f"no images to scan: set images.root (or images.manifest) in "
                f"{cfg.source_file or 'the project file (al init writes one)'}, or give --images"
            )
    args.backbone = args.backbone or cfg.backbone.name
    args.image_size = args.image_size or cfg.backbone.image_size
    args.weights = args.weights or cfg.backbone.weights_path
    args.batch_size = args.batch_size or cfg.backbone.batch_size

    from al_core.cli.progress import TerminalProgress
    from al_core.cli.status import print_summary, summary
    from al_core.ingest.scan import require_images, scan

    shown = TerminalProgress(sys.stderr)  # a progress bar on a terminal, lines in a pipe
    log = shown.say
    if args.manifest:
        r = scan(store, manifest=args.manifest, ground_truth_from_folders=False, progress=log)
    else:
        r = scan(store, root=args.images, progress=log, root_setting=setting, root_where=where)
    log(
        f"scan: {r.n_files} files, {r.n_new} new, {r.n_changed} changed, {r.n_unchanged} unchanged, "
        f"{r.n_missing} missing, {r.n_corrupt} corrupt ({r.seconds:.1f} s)"
    )
    if not args.manifest:
        require_images(r, setting, where)  # recorded; a root with no usable image is an error, not a success
    if not args.no_embed:
        from al_core.ingest.commit import embed_into_catalogue
        from al_core.models.backbones import load_backbone

        bb = load_backbone(args.backbone, project_image_size=args.image_size, weights_path=args.weights)
        try:
            res = embed_into_catalogue(
                store,
                bb,
                source=r.source,
                run_id=None,
                batch_size=args.batch_size,
                progress=log,
                on_progress=shown.embedding,
                progress_interval_s=shown.interval_s,
            )
        finally:
            shown.close()
        store.put_asset_output(EMBEDDINGS_ASSET, "", None, res.as_dict())  # what the embeddings asset stores
        log(f"embedded {res.n_embedded} images ({res.n_failed} failed) at {res.images_per_s:.1f} images/s")
    print_summary(summary(store))
