"""The near-duplicate pass, time and peak memory: `al bench near_duplicates`.

    al bench near_duplicates --n 100000 --dim 768 --methods exact,partitioned --json data/bench/quality-nd-100k.json
    al bench near_duplicates --n 1000000 --dim 768 --methods partitioned --json data/bench/quality-nd-1m.json
    al bench near_duplicates --features data/cache/cifar10_effnet_lite0_128.npz --methods exact,partitioned \\
        --threshold 0.95 --json data/bench/quality-nd-cifar10.json

Synthetic data (al_core.bench.select.write_features: ``--classes`` Gaussian
clusters, written once to a memory-mapped .npy in a temporary folder) with
``--planted`` pairs: a row overwritten by a copy of another plus noise of
relative size ``--noise`` (cosine about 1 / sqrt(1 + noise^2)). With
``--features NPZ``: its train and test features, nothing planted. Each method
runs in its own child process, which opens the .npy memory-mapped and times
``al_core.quality.duplicates.find_near_duplicates`` (its peak memory, VmHWM,
counts the feature pages it reads: N x D x 4 bytes of them; ``rss_before_mb`` is
the process before the call, Python and torch loaded). The JSON gives per
method the seconds, peak MB, pairs found, the recall of the planted pairs and,
when the exact method ran too, the recall against its pairs; with the load
average (1 minute) before and after each child, and the machine.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from al_core.bench import child_command
from al_core.bench.select import _vm_kb, write_features


def _plant(path: str, n_pairs: int, noise: float, seed: int) -> np.ndarray:
    """Overwrite ``n_pairs`` rows of the .npy with noisy copies of others; return the (i, j) pairs, i < j."""
    mm = np.load(path, mmap_mode="r+")
    n, d = mm.shape
    rng = np.random.default_rng([seed, 7])
    rows = rng.choice(n, size=2 * n_pairs, replace=False)
    src, dst = rows[:n_pairs], rows[n_pairs:]
    for s, t in zip(src, dst, strict=True):
        x = np.asarray(mm[s], dtype=np.float32)
        mm[t] = x + noise * np.linalg.norm(x) / np.sqrt(d) * rng.standard_normal(d).astype(np.float32)
    mm.flush()
    return np.stack([np.minimum(src, dst), np.maximum(src, dst)], axis=1)


def run_child(args: argparse.Namespace) -> int:
    from al_core.quality.duplicates import find_near_duplicates

    features = np.load(args.features, mmap_mode="r")
    import torch  # noqa: F401  (imported by the search; loaded here so that rss_before_mb includes it)

    rss_before = (_vm_kb("VmRSS") or 0) / 1024
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    pairs = find_near_duplicates(features, args.threshold, method=args.child, seed=args.seed)
    seconds = time.perf_counter() - t0
    np.save(args.result + ".pairs.npy", np.stack([pairs.i, pairs.j], axis=1))
    out = {
        "status": "ok",
        "seconds": round(seconds, 2),
        "peak_rss_mb": round((_vm_kb("VmHWM") or 0) / 1024, 1),
        "rss_before_mb": round(rss_before, 1),
        "n_pairs": len(pairs),
        "n_cells": pairs.n_cells,
        "load_1m_before": round(load_before, 2),
        "load_1m_after": round(os.getloadavg()[0], 2),
    }
    with open(args.result, "w") as fh:
        json.dump(out, fh)
    return 0


def _run(method: str, features: str, args, workdir: str) -> tuple[dict, np.ndarray | None]:
    result = os.path.join(workdir, f"{method}.json")
    cmd = child_command(
        "al_core.bench.near_duplicates", args, ("threshold", "seed"), child=method, features=features, result=result
    )
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0 or not os.path.exists(result):
        tail = (proc.stdout + proc.stderr)[-2000:]
        return {"status": "error", "returncode": proc.returncode, "output_tail": tail}, None
    with open(result) as fh:
        out = json.load(fh)
    out["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return out, np.load(result + ".pairs.npy")


def _recall(found: np.ndarray, want: np.ndarray, n: int) -> float | None:
    if want is None or len(want) == 0:
        return None
    key = lambda p: set((p[:, 0].astype(np.int64) * n + p[:, 1]).tolist())
    return round(len(key(found) & key(want)) / len(want), 4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="al bench near_duplicates", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--planted", type=int, default=1000, help="near-duplicate pairs planted in synthetic data")
    ap.add_argument("--noise", type=float, default=0.1, help="relative noise of a planted copy")
    ap.add_argument("--threshold", type=float, default=0.98)
    ap.add_argument("--methods", default="exact,partitioned")
    ap.add_argument("--features", default=None, help="an .npz with train_features / test_features instead")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=7200.0)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return run_child(args)

    workdir = args.workdir or tempfile.mkdtemp(prefix="al-bench-nd-")
    try:
        return _measure(args, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _measure(args, workdir: str) -> int:
    path = os.path.join(workdir, "features.npy")
    planted = None
    if args.features:
        z = np.load(args.features)
        x = np.concatenate([z["train_features"], z["test_features"]]).astype(np.float32)
        np.save(path, x)
        n, d, source = x.shape[0], x.shape[1], os.path.abspath(args.features)
        del x, z
    else:
        t = time.perf_counter()
        write_features(path, args.n, args.dim, args.classes, args.seed)
        planted = _plant(path, args.planted, args.noise, args.seed)
        n, d, source = args.n, args.dim, f"synthetic: {args.classes} clusters, {args.planted} planted pairs"
        print(f"wrote {n} x {d} in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    out = {
        "n": n,
        "dim": d,
        "threshold": args.threshold,
        "source": source,
        "features_mb": round(n * d * 4 / 2**20),
        "noise": None if args.features else args.noise,
        "methods": {},
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    found = {}
    for method in args.methods.split(","):
        r, pairs = _run(method, path, args, workdir)
        if pairs is not None:
            found[method] = pairs
            r["recall_planted"] = _recall(pairs, planted, n)
        out["methods"][method] = r
        print(f"{method}: {json.dumps(r)}", file=sys.stderr, flush=True)
    if "exact" in found:
        for method, pairs in found.items():
            out["methods"][method]["recall_vs_exact"] = _recall(pairs, found["exact"], n)
    text = json.dumps(out, indent=2)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
