"""`al bench cifar_features`: CIFAR-10 features for the learning-curve benchmark.

    al bench cifar_features --root /tmp/cifar/cifar10_jpg --image-size 128 \\
        --out data/cache/cifar10_effnet_lite0_128.npz

Reads ROOT/{train,test}/<class>/<file>.jpg (the layout of
../shared/data/cifar10-jpg.tar.gz), embeds every image with the backbone
(default efficientnet_lite0) through `al_core.ingest.embed.embed_images`, and writes
one .npz with train_features, train_targets, test_features, test_targets,
class_names, plus train_files / test_files (paths relative to ROOT) and
config_json (the embedding config, config_id included). Written to a temporary
name, then renamed. Any undecodable image is an error (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png"}


def scan_split(root: Path, split: str) -> tuple[list[str], list[Path], list[int]]:
    d = root / split
    classes = sorted(p.name for p in d.iterdir() if p.is_dir())
    files, targets = [], []
    for ci, c in enumerate(classes):
        for p in sorted((d / c).iterdir()):
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                files.append(p)
                targets.append(ci)
    return classes, files, targets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="al bench cifar_features", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="folder holding train/ and test/ (class folders inside)")
    ap.add_argument("--out", required=True, help=".npz to write")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="at most this many images per split (smoke tests)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    import numpy as np

    from al_core.ingest.embed import embed_images
    from al_core.models.backbones import load_backbone

    root = Path(args.root)
    splits = {}
    class_names = None
    for split in ("train", "test"):
        classes, files, targets = scan_split(root, split)
        if class_names is None:
            class_names = classes
        elif classes != class_names:
            print(f"class folders differ between train and test: {class_names} vs {classes}", file=sys.stderr)
            return 2
        if args.limit:
            # keep every class: take the first `limit` in a class-interleaved order
            rank, counts = [], {}
            for t in targets:
                rank.append(counts.get(t, 0))
                counts[t] = rank[-1] + 1
            order = sorted(range(len(files)), key=lambda i: (rank[i], targets[i]))
            keep = sorted(order[: args.limit])
            files = [files[i] for i in keep]
            targets = [targets[i] for i in keep]
        if not files:
            print(f"no images under {root / split}", file=sys.stderr)
            return 2
        splits[split] = (files, targets)

    backbone = load_backbone(args.backbone, image_size=args.image_size)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    log(
        f"{args.backbone} at {backbone.image_size} px, config_id {backbone.config_id}, "
        f"{sum(len(f) for f, _ in splits.values())} images"
    )

    arrays: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for split, (files, targets) in splits.items():
        feats = np.empty((len(files), backbone.feature_dim), dtype=np.float32)
        items = list(enumerate(files))  # key = row index
        stream = embed_images(
            items,
            backbone,
            batch_size=args.batch_size,
            num_workers=args.workers,
            progress=lambda p, s=split: log(f"[{s}] {p}"),
            progress_interval_s=15.0,
        )
        seen = np.zeros(len(files), dtype=bool)
        for keys, vectors in stream:
            feats[keys] = vectors
            seen[keys] = True
        if stream.failures:
            for f in stream.failures[:10]:
                print(f"undecodable: {files[f.key]}: {f.error}", file=sys.stderr)
            print(f"{len(stream.failures)} images failed; nothing written", file=sys.stderr)
            return 1
        assert seen.all()
        arrays[f"{split}_features"] = feats
        arrays[f"{split}_targets"] = np.asarray(targets, dtype=np.int64)
        arrays[f"{split}_files"] = np.asarray([str(p.relative_to(root)) for p in files])
    arrays["class_names"] = np.asarray(class_names)
    config = dict(backbone.config, config_id=backbone.config_id)
    arrays["config_json"] = np.asarray(json.dumps(config, sort_keys=True))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out)
    seconds = time.perf_counter() - t0
    n = sum(len(f) for f, _ in splits.values())
    summary = {
        "out": str(out),
        "backbone": args.backbone,
        "config_id": backbone.config_id,
        "image_size": backbone.image_size,
        "train": list(arrays["train_features"].shape),
        "test": list(arrays["test_features"].shape),
        "classes": class_names,
        "seconds": round(seconds, 1),
        "images_per_s": round(n / seconds, 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
