"""`al ingest`: scan an image folder (or manifest) and embed every new image, without Dagster."""

import argparse
import sys

from al_core.settings import DEFAULT_BACKBONE, DEFAULT_BATCH_SIZE, DEFAULT_IMAGE_SIZE, Paths


def main(argv: list[str]) -> int:
    p = Paths.from_env()
    ap = argparse.ArgumentParser(prog="al ingest", description=__doc__)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--images", default=str(p.image_root), help="image root folder (default %(default)s)")
    src.add_argument("--manifest", help="CSV with a `path` column instead of a folder")
    ap.add_argument("--db", default=str(p.db_path))
    ap.add_argument("--backbone", default=DEFAULT_BACKBONE)
    ap.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    ap.add_argument("--weights", help="local weights file for the backbone")
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--no-embed", action="store_true", help="scan only")
    args = ap.parse_args(argv)

    from al_core.images import scan
    from al_core.status_cli import print_summary, summary
    from al_core.store import Store

    store = Store(args.db, p.vectors_dir if args.db == str(p.db_path) else None)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.manifest:
        r = scan(store, manifest=args.manifest, ground_truth_from_folders=False, progress=log)
    else:
        r = scan(store, root=args.images, progress=log)
    log(f"scan: {r.n_files} files, {r.n_new} new, {r.n_changed} changed, {r.n_unchanged} unchanged, "
        f"{r.n_missing} missing, {r.n_corrupt} corrupt ({r.seconds:.1f} s)")
    if not args.no_embed:
        from al_core.backbones import load_backbone
        from al_core.ingest import embed_missing

        bb = load_backbone(args.backbone, image_size=args.image_size if args.backbone == "efficientnet_lite0" else None,
                           weights_path=args.weights)
        res = embed_missing(store, bb, source=r.source, batch_size=args.batch_size, progress=log)
        log(f"embedded {res['n_embedded']} images ({res['n_failed']} failed) at {res['images_per_s']:.1f} images/s")
    print_summary(summary(store))
    return 0
