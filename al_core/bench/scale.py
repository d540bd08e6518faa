"""`al bench scale select|embed ...`: how far one machine goes, and the plan beyond it.

al bench scale select --n 1000000 --dim 768 --json OUT
    N synthetic vectors (K clustered classes) written through the store as
    sharded part files (16 parts per 131,072-row write, as workers write
    them) and as one .npy in the same row order; a probe trained on 1,000
    labels; then, each in a fresh child process (time and VmHWM of that
    process alone): dropquery and margin (al_core.learn.strategies.get_strategy)
    on the matrix read from the .npy, from the sharded store
    (Store.load_embeddings), on a sub-sampled pool (some shards only:
    al_core.bench._scale_select.load_shards), and sharded candidate generation with
    one global diversity step (al_core.bench._scale_select.sharded_*). Agreement of
    each against the full selection is computed at the end.

al bench scale embed --images 2000 --image-size 128 --workers 1 2 --json OUT
    embed_shards_dask_job with 1 and with 2 Dask workers on 127.0.0.1 (same
    images, one run each); runs al_assets.tools.bench_scale in a child process
    (it drives Dagster, which al_core never imports).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from al_core.bench import emit

CHUNK = 131072  # rows per store write: 16 parts of 8,192 rows (a worker's FLUSH_ROWS)
CONFIG = "bench-scale"

_CHILD = r"""
import json, sys, time
import numpy as np
args = json.loads(sys.argv[1])
t_all = time.perf_counter()
from al_core.learn.probe import Probe
from al_core.catalogue.store import Store
from al_core.learn.strategies import get_strategy
w = args["dir"]
labeled = np.load(w + "/labeled.npy")
labels = np.load(w + "/labels.npy")
probe = Probe.load(w + "/probe.safetensors")
store = Store(w + "/w.duckdb")
out = {"mode": args["mode"], "strategy": args["strategy"], "seed": args["seed"]}
tag = args["mode"] + "-" + args["strategy"] + args.get("suffix", "")
t = time.perf_counter()
if args["mode"] == "npy":
    x = np.load(w + "/x.npy")
elif args["mode"] == "npy-mmap":
    x = np.load(w + "/x.npy", mmap_mode="r")
elif args["mode"] == "store":
    x = store.load_embeddings(args["config"]).features
elif args["mode"] == "subsample":
    from al_core.bench._scale_select import load_shards
    ids_sub, x = load_shards(store, args["config"], args["shards"])
    pos = np.searchsorted(np.load(w + "/ids.npy"), ids_sub)  # rows of the full matrix
    in_sub = np.isin(labeled, pos)
    local = np.searchsorted(pos, labeled[in_sub])
out["load_s"] = time.perf_counter() - t
t = time.perf_counter()
if args["mode"] == "sharded":
    from al_core.bench import _scale_select as scale_select
    ids_all = np.load(w + "/ids.npy")
    excl = set(ids_all[labeled].tolist())
    if args["strategy"] == "margin":
        sel_ids, _ = scale_select.sharded_margin(store, args["config"], probe, args["budget"], exclude=excl)
        extra = {}
    else:
        r = scale_select.sharded_dropquery(
            store, args["config"], probe, args["budget"], seed=args["seed"], exclude=excl
        )
        sel_ids = r["ids"]
        extra = {"candidates": np.searchsorted(ids_all, r["candidate_ids"]), "threshold": r["threshold"]}
    sel = np.searchsorted(ids_all, sel_ids)
else:
    extra = {}
    if args["strategy"] == "dropquery":
        from al_core.learn.strategies.dropquery import DropQueryStrategy, candidate_threshold, disagreement_histogram
        spy = {}
        orig = DropQueryStrategy.mismatch
        def mismatch(self, ctx):
            m = orig(self, ctx)
            spy["m"], spy["pool"] = m, ctx.pool
            return m
        DropQueryStrategy.mismatch = mismatch
    if args["mode"] == "subsample":
        res = get_strategy(args["strategy"]).select(x, local, labels[in_sub], args["budget"], n_classes=args["k"],
                                                   seed=args["seed"], probe=probe)
        sel = pos[res.indices]
    else:
        res = get_strategy(args["strategy"]).select(x, labeled, labels, args["budget"], n_classes=args["k"],
                                                   seed=args["seed"], probe=probe)
        sel = res.indices
    if args["strategy"] == "dropquery":
        hist = disagreement_histogram(spy["m"], 3)
        thr = candidate_threshold(hist, args["budget"], 25)
        cand = spy["pool"][spy["m"] > thr]
        extra = {"candidates": pos[cand] if args["mode"] == "subsample" else cand, "threshold": int(thr)}
out["select_s"] = time.perf_counter() - t
if args["strategy"] == "margin" and tag == "npy-margin":  # every row's margin, for ranks (not timed)
    from al_core.learn.strategies.uncertainty import _blockwise_scores, _margin
    np.save(w + "/margin_all.npy", _blockwise_scores(probe, x, _margin).astype(np.float32))
np.save(w + f"/sel-{tag}.npy", np.asarray(sel, np.int64))
if "candidates" in extra:
    np.save(w + f"/cand-{tag}.npy", np.asarray(extra["candidates"], np.int64))
    out["threshold"] = extra["threshold"]
    out["n_candidates"] = int(len(extra["candidates"]))
out["total_s"] = time.perf_counter() - t_all
out["peak_rss_mb"] = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
print(json.dumps(out))
"""


def _child(args: dict) -> dict:
    r = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(args)], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"child {args['mode']}/{args['strategy']} failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def make_data(
    work: Path, n: int, d: int, k: int, n_labels: int, seed: int, spread: float, modes: int = 8, mode_scale: float = 0.5
) -> dict:
    """The sharded store and the .npy (same rows, ascending image id), labels, and the probe.

    Each of the k classes is a mixture of ``modes`` Gaussian modes (centre: the class
    centre x ``spread`` plus ``mode_scale`` x N(0, I)), unit isotropic noise: some
    structure for a diversity step to cover, classes that overlap for the probe."""
    from al_core.catalogue.store import Store
    from al_core.learn.probe import Probe

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    ids = np.array([hashlib.sha256(f"scale-{i}".encode()).hexdigest() for i in range(n)], dtype=object)
    order = np.argsort(ids.astype(str), kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    np.save(work / "ids.npy", ids[order].astype("U64"))  # fixed-width strings: no pickle
    centers = rng.standard_normal((k, d)).astype(np.float32) * spread
    mode_centers = (
        np.repeat(centers, modes, axis=0) + rng.standard_normal((k * modes, d)).astype(np.float32) * mode_scale
    )
    mode = rng.integers(0, k * modes, n)
    y = mode // modes
    y_sorted = np.empty(n, dtype=np.int64)
    y_sorted[rank] = y
    store = Store(work / "w.duckdb")
    store.register_embedding_config(CONFIG, {"backbone": "synthetic", "dim": d, "preprocessing": {}})
    npy = np.lib.format.open_memmap(work / "x.npy", mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, CHUNK):
        e = min(n, s + CHUNK)
        x = mode_centers[mode[s:e]] + rng.standard_normal((e - s, d), dtype=np.float32)
        store.write_embeddings(CONFIG, ids[s:e].tolist(), x)
        npy[rank[s:e]] = x
        del x
    npy.flush()
    del npy
    labeled = np.sort(rng.choice(n, n_labels, replace=False))
    x_lab = np.load(work / "x.npy", mmap_mode="r")[labeled]
    probe = Probe(k, seed=seed).fit(np.ascontiguousarray(x_lab), y_sorted[labeled])
    probe.save(work / "probe.safetensors")
    np.save(work / "labeled.npy", labeled)
    np.save(work / "labels.npy", y_sorted[labeled])
    np.save(work / "y.npy", y_sorted)
    n_parts = store.fetch("SELECT count(*) FROM embedding_parts")[0][0]
    return {
        "seconds": time.perf_counter() - t0,
        "parts": int(n_parts),
        "store_bytes": sum(p.stat().st_size for p in store.vectors_dir.rglob("*.parquet")),
        "npy_bytes": (work / "x.npy").stat().st_size,
    }


def _coverage(z_cand: np.ndarray, z_sel: np.ndarray) -> tuple[float, float]:
    """(mean, max) over candidates of the distance to the nearest selected point (unit vectors)."""
    import torch

    a = torch.from_numpy(z_cand)
    b = torch.from_numpy(z_sel)
    dmin = torch.cdist(a, b).min(dim=1).values
    return float(dmin.mean()), float(dmin.max())


def agreement(work: Path, budget: int, sub_fraction: float, seed: int) -> dict:
    """How the sub-sampled and the sharded selections compare with the full one."""
    from al_core.learn.probe import Probe

    x = np.load(work / "x.npy", mmap_mode="r")
    probe = Probe.load(work / "probe.safetensors")
    sel = {p.stem[len("sel-") :]: np.load(p) for p in work.glob("sel-*.npy")}
    cand = {p.stem[len("cand-") :]: np.load(p) for p in work.glob("cand-*.npy")}
    out: dict = {}
    y = np.load(work / "y.npy")
    rows = np.sort(np.random.default_rng(seed + 7).choice(len(y), min(20000, len(y)), replace=False))
    out["probe_accuracy_20k_rows"] = float((probe.predict(np.ascontiguousarray(x[rows])) == y[rows]).mean())

    def overlap(a, b):
        return len(set(a.tolist()) & set(b.tolist())) / budget

    # margin: the same rows from every full source; ranks of the sub-sample's picks in the full pool
    full = sel["npy-margin"]
    margins = np.load(work / "margin_all.npy")
    labeled = np.load(work / "labeled.npy")
    pool_mask = np.ones(len(margins), bool)
    pool_mask[labeled] = False
    pool_m = np.sort(margins[pool_mask])
    m = {"store_equals_npy": bool(np.array_equal(sel["store-margin"], full))}
    for name in ("subsample-margin", "sharded-margin"):
        if name in sel:
            pct = np.searchsorted(pool_m, margins[sel[name]], side="left") / len(pool_m) * 100
            m[name] = {
                "overlap_with_full": overlap(sel[name], full),
                "expected_overlap_if_uniform": sub_fraction if name.startswith("sub") else 1.0,
                "pick_rank_percentile_median": float(np.median(pct)),
                "pick_rank_percentile_max": float(pct.max()),
                "mean_margin": float(margins[sel[name]].mean()),
            }
    m["full_pick_rank_percentile_max"] = float((np.searchsorted(pool_m, margins[full]) / len(pool_m) * 100).max())
    m["full_mean_margin"] = float(margins[full].mean())
    out["margin"] = m

    # dropquery: candidate sets and the diversity step's coverage of the full candidate set
    full = sel["npy-dropquery"]
    c_full = cand["npy-dropquery"]
    rng = np.random.default_rng(seed)
    c_eval = np.sort(rng.choice(c_full, min(20000, len(c_full)), replace=False))
    z = probe.embed(np.ascontiguousarray(x[c_eval]))
    z /= np.linalg.norm(z, axis=1, keepdims=True)

    def zs(rows):
        e = probe.embed(np.ascontiguousarray(x[np.sort(rows)]))
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    cov_full = _coverage(z, zs(full))
    rand = np.sort(rng.choice(c_full, budget, replace=False))
    cov_rand = _coverage(z, zs(rand))
    ids_sorted = np.load(work / "ids.npy")
    d = {
        "store_equals_npy": bool(np.array_equal(np.sort(sel["store-dropquery"]), np.sort(full))),
        "n_candidates_full": int(len(c_full)),
        "coverage_full": {"mean": cov_full[0], "max": cov_full[1]},
        "coverage_random_candidates": {
            "mean": cov_rand[0],
            "max": cov_rand[1],
            "ratio_mean": cov_rand[0] / cov_full[0],
        },
    }
    for name in ("npy-dropquery-seed1", "subsample-dropquery", "sharded-dropquery"):
        if name not in sel:
            continue
        c = cand[name]
        if name.startswith("sub"):
            shards = {ids_sorted[i][0] for i in c}
            ref = np.array([i for i in c_full if ids_sorted[i][0] in shards])
        else:
            ref = c_full
        inter = len(set(c.tolist()) & set(ref.tolist()))
        cov = _coverage(z, zs(sel[name]))
        d[name] = {
            "n_candidates": int(len(c)),
            "n_full_candidates_in_its_pool": int(len(ref)),
            "candidate_jaccard": inter / len(set(c.tolist()) | set(ref.tolist())),
            "candidate_recall": inter / max(1, len(ref)),
            "overlap_with_full": overlap(sel[name], full),
            "coverage": {"mean": cov[0], "max": cov[1]},
            "coverage_ratio_mean": cov[0] / cov_full[0],
            "coverage_ratio_max": cov[1] / cov_full[1],
            # share of the diversity step's gain over B random candidates that is kept
            "diversity_gain_kept": (cov_rand[0] - cov[0]) / (cov_rand[0] - cov_full[0]),
        }
    out["dropquery"] = d
    return out


def select_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="al bench scale select")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spread", type=float, default=0.06, help="class-centre scale (smaller: more overlap)")
    ap.add_argument("--modes", type=int, default=8, help="Gaussian modes per class")
    ap.add_argument("--mode-scale", type=float, default=0.5, help="spread of the modes around their class centre")
    # not the first shards: their rows are the first rows of the full matrix, so the probe's block-seeded
    # dropout masks would be the very masks of the full run there (agreement inflated)
    ap.add_argument("--sub-shards", default="7,c", help="shards of the sub-sampled pool (2 of 16: 1/8 of it)")
    ap.add_argument("--dir", help="work folder (default: a temporary folder, removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--skip", default="", help="comma-separated runs to skip, e.g. npy-mmap")
    ap.add_argument("--json", help="also write the JSON result here")
    args = ap.parse_args(argv)

    work = Path(args.dir or tempfile.mkdtemp(prefix="al-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    from al_core.catalogue.store import SHARD_HEX_DIGITS

    sub = [s for s in args.sub_shards.split(",") if s]
    sub_fraction = len(sub) / 16**SHARD_HEX_DIGITS
    result = {
        "n": args.n,
        "dim": args.dim,
        "classes": args.classes,
        "labels": args.labels,
        "budget": args.budget,
        "spread": args.spread,
        "modes": args.modes,
        "mode_scale": args.mode_scale,
        "sub_shards": sub,
        "sub_fraction": sub_fraction,
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
    }
    try:
        if not (work / "probe.safetensors").exists():
            result["data"] = make_data(
                work, args.n, args.dim, args.classes, args.labels, args.seed, args.spread, args.modes, args.mode_scale
            )
            print(json.dumps({"data": result["data"]}), file=sys.stderr, flush=True)
        runs = []
        for mode in ("npy", "store", "npy-mmap", "subsample", "sharded"):
            for strategy in ("margin", "dropquery"):
                name = f"{mode}-{strategy}"
                if name in args.skip.split(",") or mode in args.skip.split(","):
                    continue
                r = _child(
                    {
                        "mode": mode,
                        "strategy": strategy,
                        "dir": str(work),
                        "config": CONFIG,
                        "budget": args.budget,
                        "k": args.classes,
                        "seed": args.seed,
                        "shards": sub,
                    }
                )
                runs.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
        if "seed" not in args.skip.split(","):
            # the noise floor: the full dropquery with another seed (other dropout masks, k-means start)
            r = _child(
                {
                    "mode": "npy",
                    "strategy": "dropquery",
                    "dir": str(work),
                    "config": CONFIG,
                    "suffix": "-seed1",
                    "budget": args.budget,
                    "k": args.classes,
                    "seed": args.seed + 1,
                    "shards": sub,
                }
            )
            runs.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
        result["runs"] = runs
        result["agreement"] = agreement(work, args.budget, sub_fraction, args.seed)
        result["loadavg_end"] = os.getloadavg()
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    emit(result, args.json)
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] == "select":
        return select_main(argv[1:])
    if argv[0] == "embed":
        return subprocess.call([sys.executable, "-m", "al_assets.tools.bench_scale", *argv[1:]])
    print(f"al bench scale: unknown part {argv[0]!r}; select or embed", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
