"""`al bench embed`: the embedding pipeline against the bare model, in one run.

    al bench embed --backbone efficientnet_lite0 --images DIR --limit 2000 \\
        --image-size 128 --json OUT

- pipeline_images_per_s: decode + preprocess + forward + store write, through
  `al_core.ingest.embed.embed_images` (decoding overlapped with the forward pass), the
  vectors written with `Store.write_embeddings` into a temporary store the way
  `al_core.ingest.pipeline` does (buffered, one write of part files + one catalogue
  transaction per flush, the last flush timed too), or with --npy into a .npy
  file in a temporary directory.
- bare_images_per_s: the same model on the same images, already decoded and
  preprocessed into one tensor, same batch size: the forward pass alone.

Both are measured in the same process, interleaved: the images go in chunks of
--chunk, each chunk through the pipeline and the bare model back to back
(alternating which goes first), so that both see the same background load on a
shared machine; with --repeats > 1 the medians of the totals are reported.
Goal: pipeline >= 0.9 x bare.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from al_core.bench import emit

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def list_images(root: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Image files under root (recursive), sorted, at most `limit`."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            if os.path.splitext(fn)[1].lower() in IMAGE_EXTENSIONS:
                out.append(Path(dirpath) / fn)
    return out[:limit] if limit else out


class NpyWriter:
    """Stand-in store (when al_core.catalogue.store is not importable): a .npy file written batch by batch."""

    name = "npy file in a temporary directory (stand-in for the store), written batch by batch"

    def __init__(self, directory: str, n: int, dim: int):
        import numpy as np

        self.path = os.path.join(directory, "vectors.npy")
        self.arr = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=(n, dim))
        self.n = 0

    def write(self, keys, vectors) -> None:
        self.arr[self.n : self.n + len(keys)] = vectors
        self.n += len(keys)

    def flush(self) -> None:
        pass

    def close(self) -> int:
        self.arr.flush()
        del self.arr
        return os.path.getsize(self.path)


class StoreWriter:
    """The real store in a temporary directory, written as `al_core.ingest.pipeline` does:
    vectors buffered up to FLUSH_ROWS, then one Store.write_embeddings (a part
    file per shard + one catalogue transaction) per flush, and one at the end."""

    def __init__(self, directory: str, config_id: str, config: dict):
        from al_core.catalogue.store import Store

        try:
            from al_core.ingest.pipeline import FLUSH_ROWS
        except ImportError:
            FLUSH_ROWS = 8192
        self.flush_rows = FLUSH_ROWS
        self.name = (
            f"al_core.catalogue.store.Store.write_embeddings (temporary store), buffered {FLUSH_ROWS} rows per write"
        )

        self.store = Store(os.path.join(directory, "warehouse.duckdb"))
        self.config_id = config_id
        self.store.register_embedding_config(config_id, dict(config, dim=config["feature_dim"]))
        self.ids: list = []
        self.vecs: list = []

    def write(self, keys, vectors) -> None:
        self.ids.extend(keys)
        self.vecs.append(vectors)
        if len(self.ids) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        import numpy as np

        if self.ids:
            self.store.write_embeddings(self.config_id, self.ids, np.concatenate(self.vecs))
        self.ids, self.vecs = [], []

    def close(self) -> int:
        self.flush()
        return sum(p.stat().st_size for p in self.store.vectors_dir.rglob("*.parquet"))


def _file_sha256(path) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _bare(backbone, x, batch_size: int) -> float:
    t = time.perf_counter()
    for i in range(0, len(x), batch_size):
        backbone.forward(x[i : i + batch_size])
    return time.perf_counter() - t


def _pipeline_chunk(backbone, items, writer, batch_size, num_workers, backend, acc: dict) -> float:
    from al_core.ingest.embed import embed_images

    t = time.perf_counter()
    stream = embed_images(items, backbone, batch_size=batch_size, num_workers=num_workers, backend=backend)
    for keys, vectors in stream:
        tw = time.perf_counter()
        writer.write(keys, vectors)
        acc["store_write_s"] += time.perf_counter() - tw
    seconds = time.perf_counter() - t
    acc["images"] += stream.stats.images
    acc["failures"] += len(stream.failures)
    acc["forward_s"] += stream.stats.forward_s
    acc["wait_for_decode_s"] += stream.stats.wait_s
    acc["backend"] = stream.stats.backend
    acc["num_workers"] = stream.stats.num_workers
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="al bench embed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--images", required=True, help="folder of images (searched recursively)")
    ap.add_argument("--limit", type=int, default=2000)
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None, help="decoding workers (default: embed's default)")
    ap.add_argument("--backend", default="threads", choices=["threads", "processes", "serial"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--weights", default=None, help="local weights file")
    ap.add_argument("--random-weights", action="store_true", help="code-path check only")
    ap.add_argument("--repeats", type=int, default=1, help="alternate bare/pipeline this many times; medians")
    ap.add_argument("--chunk", type=int, default=500, help="images per interleaved pipeline/bare round")
    ap.add_argument("--npy", action="store_true", help="write to a .npy stand-in instead of the store")
    ap.add_argument("--json", default=None, help="write the result here too")
    args = ap.parse_args(argv)

    import torch

    from al_core.ingest.embed import decode_image, default_num_workers
    from al_core.models.backbones import load_backbone

    load_avg = os.getloadavg()
    paths = list_images(args.images, args.limit)
    if not paths:
        print(f"al bench embed: no images under {args.images}", file=sys.stderr)
        return 2
    backbone = load_backbone(
        args.backbone,
        image_size=args.image_size,
        weights_path=args.weights,
        device=args.device,
        random_weights=args.random_weights,
    )
    workers = default_num_workers() if args.workers is None else args.workers

    # The bare input: every image decoded and preprocessed into one tensor, untimed
    # for bare_images_per_s (its cost is reported apart, single-threaded). Image ids
    # (sha256 of the bytes, as the scan records them) are computed here, untimed;
    # byte-identical files are kept once.
    t = time.perf_counter()
    tensors, ok_items, seen = [], [], set()
    for p in paths:
        iid = _file_sha256(p)
        if iid in seen:
            continue
        try:
            tensors.append(backbone.transform(decode_image(p)))
        except Exception:
            continue
        seen.add(iid)
        ok_items.append((iid, str(p)))
    # the layout the pipeline hands the model (channels-last), so that neither side pays a copy the other does not
    x = torch.stack(tensors).contiguous(memory_format=torch.channels_last)
    del tensors
    decode_s = time.perf_counter() - t
    if str(backbone.device).startswith("cuda"):
        x = x.pin_memory()
    try:
        import al_core.catalogue.store  # noqa: F401

        use_store = not args.npy
    except ImportError:
        use_store = False

    backbone.forward(x[: args.batch_size])  # warm-up (allocators, kernels, lazy init)

    # Interleaved: the images go in chunks, each chunk through the pipeline and the
    # bare model back to back (alternating which goes first), so that both see the
    # same background load on a shared machine. Totals are summed per repeat.
    chunks = [ok_items[i : i + args.chunk] for i in range(0, len(ok_items), args.chunk)]
    starts = list(range(0, len(ok_items), args.chunk))
    bare_s, pipe_s, details = [], [], []
    for r in range(max(1, args.repeats)):
        acc = dict(images=0, failures=0, forward_s=0.0, wait_for_decode_s=0.0, store_write_s=0.0)
        tb = tp = 0.0
        with tempfile.TemporaryDirectory(prefix="al-bench-embed-") as tmp:
            if use_store:
                writer = StoreWriter(tmp, backbone.config_id, backbone.config)
            else:
                writer = NpyWriter(tmp, len(ok_items), backbone.feature_dim)
            for j, (chunk, start) in enumerate(zip(chunks, starts)):
                xb = x[start : start + len(chunk)]
                if (r + j) % 2 == 0:
                    tp += _pipeline_chunk(backbone, chunk, writer, args.batch_size, workers, args.backend, acc)
                    tb += _bare(backbone, xb, args.batch_size)
                else:
                    tb += _bare(backbone, xb, args.batch_size)
                    tp += _pipeline_chunk(backbone, chunk, writer, args.batch_size, workers, args.backend, acc)
            tw = time.perf_counter()
            size = writer.close()
            dt = time.perf_counter() - tw
            tp += dt
            acc["store_write_s"] += dt
            acc["store"] = writer.name
            acc["store_bytes"] = size
        bare_s.append(tb)
        pipe_s.append(tp)
        details.append(acc)
    n = len(ok_items)
    mid = sorted(range(len(pipe_s)), key=lambda i: pipe_s[i])[len(pipe_s) // 2]
    bare_ips = n / statistics.median(bare_s)
    pipe_ips = n / statistics.median(pipe_s)
    result = {
        "benchmark": "embed",
        "command": "al bench embed " + " ".join(argv if argv is not None else sys.argv[1:]),
        "backbone": args.backbone,
        "config_id": backbone.config_id,
        "image_size": backbone.image_size,
        "device": backbone.device,
        "dtype": backbone.dtype,
        "images": n,
        "skipped_undecodable_or_duplicate": len(paths) - n,
        "batch_size": args.batch_size,
        "pipeline_images_per_s": round(pipe_ips, 2),
        "bare_images_per_s": round(bare_ips, 2),
        "pipeline_over_bare": round(pipe_ips / bare_ips, 3),
        "goal_pipeline_over_bare": 0.9,
        "repeats": len(pipe_s),
        "chunk": args.chunk,
        "pipeline_seconds": [round(s, 3) for s in pipe_s],
        "bare_seconds": [round(s, 3) for s in bare_s],
        "pipeline_detail": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in details[mid].items()},
        "decode_preprocess_images_per_s_one_thread": round(n / decode_s, 1),
        "model_load_s": round(backbone.load_seconds, 2),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in load_avg],
        "machine": platform.platform(),
        "library_versions": backbone.config["library_versions"],
    }
    emit(result, args.json, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
