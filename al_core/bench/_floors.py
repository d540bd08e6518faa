"""The floor of a strategy's dense work, measured in the process that runs it (`al bench select`).

A strategy's floor is the time its unavoidable dense work takes on this machine at this
moment: ``reads`` full reads of the feature matrix plus ``flops`` of matrix products, at the
read time and product throughput measured in the same process just before and just after
the selection (their mean), so that the ratio ``seconds / floor_seconds`` holds under any
background load:

- ``read_seconds``: one pass over the whole matrix (a product with a vector of ones per block
  of rows, on the library's worker threads: the validation's finite check does exactly this);
- ``gflops``: products of 4096 rows of the matrix by a D x max(K, B) matrix on the library's
  worker threads (:func:`al_core.learn.tensors.map_blocks`), the shape of the probe's
  inference, the dropout passes and the k-means assignment.

:data:`DENSE_WORK` gives each strategy's work as data: ``(reads, flops)`` from the sizes
(N rows, D, K, B, L labelled) and the k-means runs the strategy made (recorded by
:func:`record_kmeans`: points, training points, clusters, Lloyd iterations). A product of
m x d by d x k counts 2 m d k flops. What is counted, per strategy, is in its entry's note.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

FLOOR_PRODUCT_ROWS = 4096  # rows per product of the throughput measurement (4096 x 768 x 4 B = 12 MB)
FLOOR_PRODUCT_SECONDS = 0.5  # at least this long per throughput measurement
READ_BLOCK_ROWS = 65536  # rows per block of the read measurement (65536 x 768 x 4 B = 192 MB)
BALD_PASSES = 20  # the bald strategies' default dropout passes
DROPQUERY_PASSES = 3


@dataclass(frozen=True)
class Sizes:
    n: int  # rows of the matrix (pool + labelled)
    d: int
    k: int  # classes
    b: int  # budget
    labeled: int


def _kmeans_flops(call: dict) -> float:
    """k-means++ (2 + ln k candidates per centre, each a pass over the training points),
    Lloyd's assignments (one product per iteration) and the final assignment of every point."""
    m, k, d, n, it = call["n_train"], call["k"], call["dim"], call["n"], call["n_iter"]
    init = k * (2 + int(math.log(k))) * 2.0 * m * d
    return init + it * 2.0 * m * d * k + 2.0 * n * d * k


def _kmeans(calls: list[dict], s: Sizes) -> tuple[float, float]:
    """(reads, flops) of the recorded k-means runs: each reads its points once (a share of the
    matrix: ``n / N``), plus the products."""
    return sum(c["n"] / s.n for c in calls), sum(_kmeans_flops(c) for c in calls)


def _pass(s: Sizes, passes: int = 1) -> float:
    return passes * 2.0 * s.n * s.d * s.k


WorkFn = Callable[[Sizes, list[dict]], tuple[float, float]]


def _typiclust(s: Sizes, km: list[dict]) -> tuple[float, float]:
    reads, flops = _kmeans(km, s)
    if km:  # typicality: the visited clusters' (about B) all-pairs distances, clusters of N / k' rows
        k = km[0]["k"]
        flops += min(s.b, k) * 2.0 * (s.n / k) ** 2 * s.d
    return 1 + reads, flops


def _probcover(s: Sizes, km: list[dict]) -> tuple[float, float]:
    # every pass of the radius search / graph is all-pairs over its rows (every row, or the sample)
    reads, flops = _kmeans(km, s)
    from al_core.learn.strategies.probcover import PROBCOVER_EXACT_MAX_ROWS, PROBCOVER_SAMPLE_ROWS

    rows = s.n if s.n <= PROBCOVER_EXACT_MAX_ROWS else PROBCOVER_SAMPLE_ROWS
    return 1 + reads, flops + 2.0 * rows * rows * s.d


DENSE_WORK: dict[str, tuple[str, WorkFn]] = {
    "random": ("one read (the finite check); no product", lambda s, km: (1, 0.0)),
    "centroid": ("one read; k-means (k = B) on every row", lambda s, km: (1 + _kmeans(km, s)[0], _kmeans(km, s)[1])),
    "typiclust": ("one read; k-means (k = min(L + B, 500)); typicality in about B clusters", _typiclust),
    "probcover": (
        "one read; k-means (k = K) for the pseudo-labels; one all-pairs pass over the graph's rows",
        _probcover,
    ),
    "least_confidence": ("one read; one pass of the probe (N x D x K)", lambda s, km: (1, _pass(s))),
    "margin": ("one read; one pass of the probe (N x D x K)", lambda s, km: (1, _pass(s))),
    "entropy": ("one read; one pass of the probe (N x D x K)", lambda s, km: (1, _pass(s))),
    "bald": (f"one read; {BALD_PASSES} dropout passes", lambda s, km: (1, _pass(s, BALD_PASSES))),
    "power_bald": (f"one read; {BALD_PASSES} dropout passes", lambda s, km: (1, _pass(s, BALD_PASSES))),
    "dropquery": (
        f"one read; the clean and {DROPQUERY_PASSES} dropout passes; k-means (k = B) on the candidates",
        lambda s, km: (1 + _kmeans(km, s)[0], _pass(s, 1 + DROPQUERY_PASSES) + _kmeans(km, s)[1]),
    ),
    "coreset": (
        "one read; the pool's distances to the labelled rows (N x L x D); the picks not counted",
        lambda s, km: (1, 2.0 * s.n * s.labeled * s.d),
    ),
    "badge": (
        "one read per pick (z . z_i from the features) and one more; one pass of the probe",
        lambda s, km: (1 + s.b, _pass(s)),
    ),
    "alfa_mix": (
        "one read; the probe's pass, the gradients (N x K x D) and one mixed pass per anchor (K); "
        "k-means (k = B) on the candidates",
        lambda s, km: (1 + _kmeans(km, s)[0], _pass(s, 2 + s.k) + _kmeans(km, s)[1]),
    ),
}


def dense_work(name: str, s: Sizes, kmeans_calls: list[dict]) -> dict:
    """{"reads", "gflop", "note"} of strategy ``name`` (None for a strategy without an entry)."""
    if name not in DENSE_WORK:
        return {"reads": None, "gflop": None, "note": "no floor model"}
    note, fn = DENSE_WORK[name]
    reads, flops = fn(s, kmeans_calls)
    return {"reads": round(float(reads), 3), "gflop": round(flops / 1e9, 2), "note": note}


@contextlib.contextmanager
def record_kmeans():
    """Record every :func:`al_core.learn.kmeans.kmeans` call (n, n_train, k, dim, n_iter) made
    inside the block, by wrapping it where the strategies look it up."""
    import al_core.learn.kmeans as km_mod
    import al_core.learn.strategies._cluster as cluster_mod
    import al_core.learn.strategies.probcover as probcover_mod
    import al_core.learn.strategies.typiclust as typiclust_mod

    calls: list[dict] = []
    original = km_mod.kmeans

    def wrapped(points, k, **kw):
        res = original(points, k, **kw)
        calls.append(
            {
                "n": int(res.labels.shape[0]),
                "n_train": int(res.n_train),
                "k": int(k),
                "dim": int(res.centroids.shape[1]),
                "n_iter": int(res.n_iter),
            }
        )
        return res

    modules = (km_mod, cluster_mod, probcover_mod, typiclust_mod)
    for mod in modules:
        mod.kmeans = wrapped
    try:
        yield calls
    finally:
        for mod in modules:
            mod.kmeans = original


def measure(features: np.ndarray, n_cols: int) -> dict:
    """``read_seconds`` (one pass over ``features``) and ``gflops`` (products of
    FLOOR_PRODUCT_ROWS rows by D x n_cols on the library's worker threads), measured now."""
    import torch

    from al_core.learn.tensors import BLOCK_WORKERS, as_tensor, map_blocks

    n, d = features.shape
    ones = torch.ones(d, dtype=torch.float32)
    t0 = time.perf_counter()
    map_blocks(
        lambda _, s: torch.mv(as_tensor(np.asarray(features[s : s + READ_BLOCK_ROWS])), ones),
        range(0, n, READ_BLOCK_ROWS),
    )
    read_s = time.perf_counter() - t0
    rows = min(FLOOR_PRODUCT_ROWS, n)
    x = torch.from_numpy(np.ascontiguousarray(features[:rows], dtype=np.float32))
    w = torch.randn(d, n_cols, generator=torch.Generator().manual_seed(0))
    per_round = 4 * BLOCK_WORKERS
    done, t0 = 0, time.perf_counter()
    while True:
        map_blocks(lambda _, s: torch.mm(x, w), range(per_round))
        done += per_round
        elapsed = time.perf_counter() - t0
        if elapsed >= FLOOR_PRODUCT_SECONDS:
            break
    gflops = done * 2.0 * rows * d * n_cols / elapsed / 1e9
    return {"read_seconds": round(read_s, 6), "gflops": round(gflops, 2), "matrix_gb": round(n * d * 4 / 1e9, 3)}


def floor(work: dict, before: dict, after: dict) -> dict:
    """The floor in seconds from the work and the two measurements (their mean)."""
    read_s = (before["read_seconds"] + after["read_seconds"]) / 2
    gflops = (before["gflops"] + after["gflops"]) / 2
    if work["reads"] is None:
        return {"floor_seconds": None}
    seconds = work["reads"] * read_s + work["gflop"] / gflops
    return {
        "floor_seconds": round(seconds, 6),
        "floor_read_seconds": round(work["reads"] * read_s, 6),
        "floor_product_seconds": round(work["gflop"] / gflops, 6),
    }
