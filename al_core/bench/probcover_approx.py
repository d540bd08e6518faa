"""ProbCover's sampled approximation against the exact method: `al bench probcover_approx`.

    al bench probcover_approx --n 200000 --exact --json data/bench/probcover-approx-200k.json
    al bench probcover_approx --n 1000000 --json data/bench/probcover-approx-1m.json

Same synthetic data as `al bench select` (clustered float32 features in a
memory-mapped .npy, the same labelled rows). Runs ProbCover with
``approximate=True`` (the default above PROBCOVER_EXACT_MAX_ROWS; the sample sizes
from --graph-sample-rows / --purity-sample-rows, passed as the strategy's parameters), with
``approximate=False`` when ``--exact`` is given, and a seeded random batch as
the baseline, then measures on every row of the data:

- delta: the approximation's against the exact one; and the purity of the
  approximation's delta re-estimated on an independent sample of rows (exact
  nearest-other-label distances against every row);
- coverage: the share of all N rows within delta of a labelled or picked row
  (the quantity ProbCover maximises), for each pick set, computed exactly; the
  approximation's share of the exact method's gain over random;
- overlap: picks in common with the exact method.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time

import numpy as np

from al_core.bench import emit
from al_core.bench.select import add_pool_options, labelled_rows, pool_record, write_features

# Rows per block of the exact coverage check: 16384 x 768 x 4 B = 48 MB of
# features, plus 16384 x (L + B) x 4 B of dot products (72 MB at L + B = 1,100).
COVERAGE_BLOCK_ROWS = 16384


def coverage(features: np.ndarray, centres: np.ndarray, delta: float) -> float:
    """Share of rows of ``features`` (L2-normalised on the fly) within ``delta`` of a row in ``centres``."""
    import torch

    from al_core.learn.points import Points

    pts = Points(features, normalize=True)
    c = torch.from_numpy(pts.take(np.asarray(centres, dtype=np.int64)))
    dot_min = 1.0 - 0.5 * delta * delta
    covered = 0
    with torch.inference_mode():
        for _, block in pts.blocks(COVERAGE_BLOCK_ROWS):
            covered += int((torch.mm(torch.from_numpy(block), c.t()).amax(dim=1) > dot_min).sum())
    return covered / features.shape[0]


def independent_purity(features: np.ndarray, n_classes: int, seed: int, delta: float, rows: int) -> dict:
    """Purity at ``delta`` on ``rows`` uniform rows drawn apart from the strategy's own sample."""
    from al_core.learn.kmeans import kmeans
    from al_core.learn.points import Points
    from al_core.learn.strategies.probcover import purity
    from al_core.learn.strategies.probcover_graph import sample_nearest_other_label_sq_distances

    pts = Points(features, normalize=True)
    pseudo = kmeans(pts, n_classes, seed=seed).labels
    sample = np.sort(np.random.default_rng([seed, 99]).choice(features.shape[0], size=rows, replace=False))
    r2 = sample_nearest_other_label_sq_distances(pts, pseudo, sample)
    p = purity(r2, delta)
    return {"rows": rows, "purity": round(p, 5), "standard_error": round(float(np.sqrt(p * (1 - p) / rows)), 5)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="al bench probcover_approx", description=__doc__.split("\n\n")[0])
    add_pool_options(ap, n=200_000)
    ap.add_argument("--exact", action="store_true", help="also run the exact method (N^2 D work; its graph in memory)")
    ap.add_argument("--purity-rows", type=int, default=4096, help="rows of the independent purity check")
    ap.add_argument(
        "--graph-sample-rows",
        type=int,
        default=None,
        help="graph_sample_rows of the approximation (default: PROBCOVER_SAMPLE_ROWS)",
    )
    ap.add_argument(
        "--purity-sample-rows",
        type=int,
        default=None,
        help="purity_sample_rows of the approximation (default: PURITY_SAMPLE_ROWS)",
    )
    ap.add_argument("--workdir", default=None, help="where the .npy goes (kept; reused when its shape matches)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import tempfile

    from al_core.learn.strategies import get_strategy
    from al_core.learn.strategies.probcover import PROBCOVER_SAMPLE_ROWS, PURITY_SAMPLE_ROWS

    samples = {
        "graph_sample_rows": args.graph_sample_rows or PROBCOVER_SAMPLE_ROWS,
        "purity_sample_rows": args.purity_sample_rows or PURITY_SAMPLE_ROWS,
    }

    tmp = None
    workdir = args.workdir
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="al-bench-probcover-")
        workdir = tmp.name
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "features.npy")
    ids_path = os.path.join(workdir, "ids.npy")
    spec = [args.n, args.dim, args.classes, args.seed]
    spec_path = os.path.join(workdir, "spec.json")
    reuse = os.path.exists(path) and os.path.exists(ids_path) and os.path.exists(spec_path)
    if reuse:
        with open(spec_path) as fh:
            reuse = json.load(fh) == spec
    if not reuse:
        ids = write_features(path, args.n, args.dim, args.classes, args.seed)
        np.save(ids_path, ids)
        with open(spec_path, "w") as fh:
            json.dump(spec, fh)
    ids = np.load(ids_path)
    features = np.load(path, mmap_mode="r")
    labeled = labelled_rows(args)  # the labelled rows of `al bench select`
    labels = ids[labeled]

    out: dict = pool_record("al bench probcover_approx", argv, args) | {**samples, "runs": {}}
    picks: dict[str, np.ndarray] = {}
    modes = [("approximate", True)] + ([("exact", False)] if args.exact else [])
    for name, approximate in modes:
        s = get_strategy("probcover", approximate=approximate, **samples)
        t0 = time.perf_counter()
        res = s.select(features, labeled, labels, args.budget, n_classes=args.classes, seed=args.seed)
        secs = time.perf_counter() - t0
        picks[name] = res.indices
        info = {k: v for k, v in s.last_info_.items() if k != "purity_evaluated"}
        info["purity_evaluated"] = [[d, round(p, 5)] for d, p in s.last_info_.get("purity_evaluated", [])]
        out["runs"][name] = {"seconds": round(secs, 1), **info, "gain_sum": float(np.sum(res.scores))}
        print(f"{name}: {secs:.1f} s, delta {info['delta']}, edges {info['edges']}", file=sys.stderr, flush=True)
    picks["random"] = (
        get_strategy("random")
        .select(features, labeled, labels, args.budget, n_classes=args.classes, seed=args.seed)
        .indices
    )
    delta = out["runs"]["exact" if args.exact else "approximate"]["delta"]
    out["coverage_delta"] = delta
    cov = {}
    cov["labelled_only"] = coverage(features, labeled, delta)
    for name, idx in picks.items():
        cov[name] = coverage(features, np.concatenate([labeled, idx]), delta)
    out["coverage"] = {k: round(v, 6) for k, v in cov.items()}
    if args.exact:
        gain_exact = cov["exact"] - cov["random"]
        out["approx_share_of_exact_gain_over_random"] = (
            round((cov["approximate"] - cov["random"]) / gain_exact, 4) if gain_exact > 0 else None
        )
        out["approx_coverage_over_exact"] = round(cov["approximate"] / cov["exact"], 5)
        out["picks_in_common_with_exact"] = int(np.intersect1d(picks["approximate"], picks["exact"]).shape[0])
        out["delta_equal"] = out["runs"]["approximate"]["delta"] == out["runs"]["exact"]["delta"]
    t0 = time.perf_counter()
    out["independent_purity_at_approx_delta"] = independent_purity(
        features, args.classes, args.seed, out["runs"]["approximate"]["delta"], args.purity_rows
    )
    out["independent_purity_seconds"] = round(time.perf_counter() - t0, 1)
    out["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    emit(out, args.json)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
