"""`al bench kmeans`: this project's k-means against scikit-learn and faiss (docs/benchmarks.md).

``--compare-seeds 0,1,2`` compares only the final inertia with scikit-learn's per k-means seed.
"""

import argparse

import numpy as np

from al_core.bench import emit
from al_core.learn.kmeans import kmeans, train_size
from al_core.learn.neighbours import min_sq_distances
from al_core.learn.points import l2_normalize


def _bench_data(n: int, dim: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, dim)).astype(np.float32)
    x = centers[rng.integers(k, size=n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return l2_normalize(x)


def _compare_seeds(n: int, dim: int, k: int, data_seed: int, seeds: list[int]) -> dict:
    """Final inertia of this module and of scikit-learn for several k-means seeds on the same data."""
    import time

    from sklearn.cluster import KMeans

    x = _bench_data(n, dim, k, data_seed)
    out = {}
    for seed in seeds:
        t = time.perf_counter()
        ours = kmeans(x, k, seed=seed, subsample_above=n)
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        ref = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=100, tol=1e-4, random_state=seed).fit(x)
        t_ref = time.perf_counter() - t
        out[seed] = {
            "ours": round(ours.inertia, 2),
            "sklearn": round(float(ref.inertia_), 2),
            "ratio": round(ours.inertia / float(ref.inertia_), 4),
            "iterations": [ours.n_iter, int(ref.n_iter_)],
            "seconds": [round(t_ours, 1), round(t_ref, 1)],
        }
        print(seed, out[seed], flush=True)
    return {"n": n, "dim": dim, "k": k, "data_seed": data_seed, "seeds": out}


def _benchmark(n: int, dim: int, k: int, seed: int, n_refs: int, all_faiss: bool = False) -> dict:
    """Time this module's k-means against scikit-learn and faiss on the same data and seed.

    Data: ``k`` Gaussian clusters in ``dim`` dimensions, L2-normalised (like
    backbone embeddings), float32. Every library gets k-means++-or-its-default
    init, at most 100 iterations, one run; inertia is measured over all points.
    """
    import time

    import faiss
    from sklearn.cluster import KMeans
    from sklearn.metrics import pairwise_distances_argmin_min

    x = _bench_data(n, dim, k, seed)
    rng = np.random.default_rng([seed, 1])
    rows = {}

    def record(name, fn):
        t = time.perf_counter()
        inertia, n_iter = fn()
        rows[name] = {"seconds": round(time.perf_counter() - t, 2), "inertia": float(inertia), "n_iter": n_iter}
        print(name, rows[name], flush=True)

    def ours():
        r = kmeans(x, k, seed=seed)
        return r.inertia, r.n_iter

    def ours_full():
        r = kmeans(x, k, seed=seed, subsample_above=n)
        return r.inertia, r.n_iter

    def sk():
        r = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=100, tol=1e-4, random_state=seed).fit(x)
        return r.inertia_, int(r.n_iter_)

    def faiss_run(max_points):
        def run():
            fk = faiss.Kmeans(dim, k, niter=100, seed=seed, nredo=1, max_points_per_centroid=max_points)
            fk.train(x)
            d2, _ = fk.index.search(x, 1)
            return float(d2.astype(np.float64).sum()), 100

        return run

    record(f"al_core.learn.kmeans (torch, k-means++, trains on {train_size(n, k)} points)", ours)
    record("al_core.learn.kmeans (torch, k-means++, every point)", ours_full)
    record("scikit-learn KMeans (reference)", sk)
    record("faiss.Kmeans (its random init, default 256 points/centroid)", faiss_run(256))
    if all_faiss:
        record("faiss.Kmeans (its random init, every point)", faiss_run(n))

    refs = x[rng.choice(n, size=n_refs, replace=False)]
    nn = {}
    t = time.perf_counter()
    min_sq_distances(x, refs)
    nn["al_core.learn.kmeans.min_sq_distances (torch, blocked)"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    faiss.knn(x, refs, 1)
    nn["faiss.knn (exhaustive)"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    pairwise_distances_argmin_min(x, refs)
    nn["sklearn pairwise_distances_argmin_min"] = round(time.perf_counter() - t, 2)
    print(nn, flush=True)
    ref = rows["scikit-learn KMeans (reference)"]["inertia"]
    for r in rows.values():
        r["inertia_vs_sklearn"] = round(r["inertia"] / ref, 4)
    return {"n": n, "dim": dim, "k": k, "seed": seed, "kmeans": rows, "nearest_neighbour": {"n_refs": n_refs, **nn}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="k-means library comparison (docs/benchmarks.md)")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refs", type=int, default=1000, help="reference points of the nearest-neighbour timing")
    ap.add_argument("--faiss-every-point", action="store_true", help="also faiss without its subsampling")
    ap.add_argument("--compare-seeds", default="", help="e.g. 0,1,2,3,4: only ours vs scikit-learn per k-means seed")
    a = ap.parse_args(argv)
    if a.compare_seeds:
        seeds = [int(v) for v in a.compare_seeds.split(",")]
        emit(_compare_seeds(a.n, a.dim, a.k, a.seed, seeds), None, indent=2)
    else:
        emit(_benchmark(a.n, a.dim, a.k, a.seed, a.refs, a.faiss_every_point), None, indent=2)
    return 0
