"""k-means with the reference semantics, on torch, in blocks of bounded memory.

Reference semantics (``docs/algorithms.md``): scikit-learn
``KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=100, tol=1e-4,
random_state=seed)``. This module re-implements that algorithm on torch
(matrix products for the distances, which is where the time goes) so that the
distance work runs in blocks of bounded memory and so that points can be
normalised block by block instead of copied whole:

- init: scikit-learn's greedy k-means++ (first centre uniform, then
  ``2 + int(log k)`` candidates drawn proportional to the squared distance to
  the nearest chosen centre, keep the candidate that lowers the potential most);
- Lloyd iterations as scikit-learn's ``lloyd_iter_chunked_dense``: an empty
  cluster is relocated to the point farthest from its centre; stop when the
  labels no longer change (strict convergence) or when the total squared centre
  shift is at most ``tol * mean(var(X, axis=0))``; then one more assignment so
  that the labels match the final centres.

The random stream is numpy's (seeded by ``seed``), not scikit-learn's, so the
clusters are not byte-identical to scikit-learn's; the tests hold the final
inertia to at most 1 % above scikit-learn's on the same data and seed, and
``docs/benchmarks.md`` ("k-means and nearest neighbours: library choice") has
the measured comparison with scikit-learn and faiss.

Subsampling: at or below ``SUBSAMPLE_ABOVE`` points k-means runs on every
point, exactly as the reference. Above it the centres are trained on a seeded
uniform sample of ``max(SUBSAMPLE_ABOVE, TRAIN_POINTS_PER_CLUSTER * k)``
points (faiss's default is the same 256 points per centroid); every point is
still assigned to its nearest centre at the end, and the returned inertia is
over all points. The measured inertia cost is in docs/benchmarks.md.

Nothing here builds an N x N matrix: distances are computed in the tiles of
:mod:`al_core.learn.neighbours` (at most ``TILE_ELEMENTS`` float32 values each).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from al_core.learn.neighbours import row_sq_norms, tile_rows
from al_core.learn.points import BLOCK_ROWS, Points, as_points
from al_core.learn.tensors import as_tensor, map_blocks, torch_threads

# k-means uses every point up to this many (the reference semantics exactly);
# above it, it trains on a seeded uniform sample of
# max(SUBSAMPLE_ABOVE, TRAIN_POINTS_PER_CLUSTER * k) points. At D = 768 a
# sample of 65,536 is 192 MB; with k = 500 (typiclust's cap) 128,000 is 375 MB.
SUBSAMPLE_ABOVE = 65_536
TRAIN_POINTS_PER_CLUSTER = 256

# Rows per block of the assignment and update steps, which run block by block on
# worker threads (al_core.learn.tensors.map_blocks): 4096 x 768 x 4 B = 12 MB of points
# plus 4096 x k x 4 B of products (1.6 MB at k = 100), small enough to stay in cache
# between the product, the argmin and the update (capped at tile_rows(k) for large k).
ASSIGN_ROWS = 4096

# numpy seed-sequence entry of the subsampling stream (kept apart from k-means++'s)
_SUBSAMPLE_STREAM = 0x5AB5

__all__ = [
    "ASSIGN_ROWS",
    "SUBSAMPLE_ABOVE",
    "TRAIN_POINTS_PER_CLUSTER",
    "KMeansResult",
    "kmeans",
    "kmeans_plusplus",
    "nearest_to_centroids",
    "train_size",
]


@dataclass(frozen=True)
class KMeansResult:
    """Outcome of :func:`kmeans` (positions are local to the points given)."""

    centroids: np.ndarray  # k x D float32
    labels: np.ndarray  # n int64, cluster of each point
    sq_distances: np.ndarray  # n float32, squared distance of each point to its centroid (_final_assign)
    inertia: float  # sum of sq_distances
    n_iter: int  # Lloyd iterations run
    n_train: int  # points the centroids were trained on (n unless subsampled)


def _assign_rows(k: int) -> int:
    return max(1, min(ASSIGN_ROWS, BLOCK_ROWS, tile_rows(k)))


def _assign(
    x: torch.Tensor, centers: torch.Tensor, x_sq: torch.Tensor, *, with_sums: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Nearest centre of each row of x (first on ties), its squared distance (expanded form,
    clamped at 0) and, ``with_sums``, the float64 sum of the rows assigned to each centre.

    Blocks of _assign_rows(k) rows on worker threads; the sums are each block's float32
    partial sums added in block order, so nothing depends on the number of workers.
    """
    n, d = x.shape
    k = centers.shape[0]
    labels = torch.empty(n, dtype=torch.int64)
    d2 = torch.empty(n, dtype=torch.float32)
    c_sq = row_sq_norms(centers)
    ct = centers.t()
    rows = _assign_rows(k)

    def block(_: int, start: int) -> torch.Tensor | None:
        xb = x[start : start + rows]
        stop = start + xb.shape[0]
        prod = torch.addmm(c_sq, xb, ct, beta=1.0, alpha=-2.0)  # |c|^2 - 2 x.c
        best, arg = prod.min(dim=1)
        labels[start:stop] = arg
        torch.add(best, x_sq[start:stop], out=d2[start:stop]).clamp_(min=0.0)
        if not with_sums:
            return None
        return torch.zeros(k, d, dtype=torch.float32).index_add_(0, arg, xb)

    partials = map_blocks(block, range(0, n, rows))
    sums = None
    if with_sums:
        sums = torch.zeros(k, d, dtype=torch.float64)
        for part in partials:
            sums += part
    return labels, d2, sums


def kmeans_plusplus(x: np.ndarray, k: int, random_state: np.random.RandomState) -> np.ndarray:
    """Indices of k initial centres by scikit-learn's greedy k-means++ (``_kmeans_plusplus``).

    Draws from ``random_state`` exactly the numbers scikit-learn draws (a
    ``RandomState(seed)`` gives scikit-learn's initial centres, up to rounding
    in the distances), with unit sample weights in float32 as scikit-learn has.
    ``x`` should be centred (scikit-learn subtracts the mean first).
    """
    n = x.shape[0]
    xt = as_tensor(x)
    x_sq = row_sq_norms(xt).double().numpy()
    n_local_trials = 2 + int(np.log(k))
    weights = np.ones(n, dtype=np.float32)
    centers = np.empty(k, dtype=np.int64)
    centers[0] = int(random_state.choice(n, p=weights / weights.sum()))

    rows = _assign_rows(n_local_trials)

    def sq_dist_to(ids: np.ndarray) -> np.ndarray:  # len(ids) x n, float32 as scikit-learn's
        cand = xt[torch.from_numpy(ids)]
        c_sq = x_sq[ids][:, None]
        out = np.empty((ids.shape[0], n), dtype=np.float32)

        def block(_: int, start: int) -> None:  # one pass over x, block by block
            prod = torch.mm(cand, xt[start : start + rows].t()).numpy()
            dist = x_sq[None, start : start + prod.shape[1]] - 2.0 * prod + c_sq
            np.maximum(dist, 0.0, out=out[:, start : start + prod.shape[1]], casting="same_kind")

        map_blocks(block, range(0, n, rows))
        return out

    closest = sq_dist_to(centers[:1])[0]
    current_pot = closest @ weights
    for c in range(1, k):
        rand_vals = random_state.uniform(size=n_local_trials) * current_pot
        cand = np.searchsorted(np.cumsum(weights * closest), rand_vals)
        np.clip(cand, None, n - 1, out=cand)
        dist = sq_dist_to(cand)
        np.minimum(closest, dist, out=dist)
        pots = dist @ weights
        best = int(np.argmin(pots))
        current_pot = pots[best]
        closest = dist[best]
        centers[c] = cand[best]
    return centers


def _lloyd(x: torch.Tensor, centers: torch.Tensor, *, max_iter: int, tol: float) -> tuple[torch.Tensor, int]:
    """scikit-learn's Lloyd loop (chunked dense) on x from the given centres."""
    n, d = x.shape
    k = centers.shape[0]
    # tolerance as scikit-learn's _tolerance: tol * mean per-feature variance
    var = _blocked_var(x, _blocked_mean(x))
    tol_abs = float(var.mean()) * tol
    labels_old = torch.full((n,), -1, dtype=torch.int64)
    x_sq = row_sq_norms(x)
    n_iter = 0
    for it in range(max_iter):
        n_iter = it + 1
        labels, d2, sums = _assign(x, centers, x_sq, with_sums=True)
        counts = torch.bincount(labels, minlength=k).double()
        empty = torch.nonzero(counts == 0).flatten()
        if empty.numel():
            # relocate each empty cluster to a point far from its centre
            # (scikit-learn's _relocate_empty_clusters_dense; ties by index)
            far = _top_far(d2.numpy(), int(empty.numel()))
            for e, p in zip(empty.tolist(), far.tolist()):
                old = int(labels[p])
                sums[old] -= x[p].double()
                counts[old] -= 1
                sums[e] = x[p].double()
                counts[e] = 1
        new_centers = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centers.double()).float()
        shift = float(((new_centers - centers).double() ** 2).sum())
        centers = new_centers
        if torch.equal(labels, labels_old):  # strict convergence
            break
        if shift <= tol_abs:
            break
        labels_old = labels
    # the caller re-assigns every point to the final centres (scikit-learn's last E-step)
    return centers, n_iter


def _blocked_mean(x: torch.Tensor) -> torch.Tensor:
    """Column means in float64, block by block (numpy's float64 reduction: about 10x torch's here)."""
    xn = x.numpy()
    total = np.zeros(x.shape[1], dtype=np.float64)
    for start in range(0, x.shape[0], BLOCK_ROWS):
        total += np.add.reduce(xn[start : start + BLOCK_ROWS], axis=0, dtype=np.float64)
    return torch.from_numpy(total / x.shape[0])


def _blocked_var(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Column variances (biased), block by block around ``mean``: float32 sums per block, added
    in float64 (they only set the tolerance, tol x their mean)."""
    xn = x.numpy()
    m = mean.numpy().astype(np.float32)
    total = np.zeros(x.shape[1], dtype=np.float64)
    diff = np.empty((min(BLOCK_ROWS, x.shape[0]), x.shape[1]), dtype=np.float32)
    for start in range(0, x.shape[0], BLOCK_ROWS):
        block = diff[: min(BLOCK_ROWS, x.shape[0] - start)]
        np.subtract(xn[start : start + BLOCK_ROWS], m, out=block)
        total += np.einsum("ij,ij->j", block, block)  # float32 per block, float64 across blocks
    return torch.from_numpy(total / x.shape[0])


def _top_far(d2: np.ndarray, m: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """The m points of largest d2 (largest first, ties by smallest index), skipping ``exclude``."""
    key = d2.astype(np.float64)
    if exclude is not None and exclude.size:
        key = key.copy()
        key[exclude] = -np.inf
    order = np.lexsort((np.arange(key.shape[0]), -key))
    return order[:m]


def _expanded_error_bound(dim: int) -> float:
    """Factor f such that the float32 expanded form |x|^2 - 2 x.c + |c|^2 is within
    f * (|x|^2 + |c|^2) of the exact squared distance (recursive-summation worst case: each of
    the three D-term sums is off by at most D * eps times the sum of its terms' magnitudes,
    2 |x.c| <= |x|^2 + |c|^2, and three roundings combine them)."""
    eps = float(np.finfo(np.float32).eps)
    return (2 * dim + 4) * eps


def _final_assign(points: Points, centers: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of every point (first on ties), and the squared distance to it.

    Blocks of _assign_rows(k) points on worker threads, each gathered (and transformed) into
    that worker's own buffers: no allocation per block, no copy of the points. Past the gather
    and transform, a block costs its product, its minimum and its rows' squared norms: the
    distance of a point is the expanded form the product gives (clamped at 0), within
    ``_expanded_error_bound(D) * (|x|^2 + |c|^2)`` of the exact
    one. The exact distance (the difference, squared and summed, which the expanded form's
    cancellation would lose for small distances) is computed afterwards only for the points
    whose rank or size that rounding could change: every point whose distance minus its bound is
    at most the smallest distance plus bound in its cluster (so the member nearest each centroid,
    which :func:`nearest_to_centroids` picks, is decided on exact distances), every point whose
    distance is below its bound, and every point when a cluster is left empty (the farthest
    points fill it).
    """
    n = len(points)
    k = centers.shape[0]
    labels = np.empty(n, dtype=np.int64)
    d2 = np.empty(n, dtype=np.float32)
    bound = np.empty(n, dtype=np.float32)
    rows = _assign_rows(k)
    c_sq = row_sq_norms(centers)
    ct = centers.t()
    factor = _expanded_error_bound(points.dim)
    local = threading.local()

    def block(_: int, start: int) -> None:
        if not hasattr(local, "points"):
            local.points = np.empty((rows, points.dim), dtype=np.float32)
        stop = min(start + rows, n)
        xb = as_tensor(points.block_into(start, stop, local.points))
        prod = torch.addmm(c_sq, xb, ct, beta=1.0, alpha=-2.0)  # |c|^2 - 2 x.c
        best, lab = prod.min(dim=1)  # (torch.argmin: 5x the time here)
        x_sq = row_sq_norms(xb)
        labels[start:stop] = lab.numpy()
        torch.add(best, x_sq, out=torch.from_numpy(d2[start:stop])).clamp_(min=0.0)
        torch.mul(torch.add(x_sq, c_sq[lab]), factor, out=torch.from_numpy(bound[start:stop]))

    map_blocks(block, range(0, n, rows))
    _exact_where_needed(points, centers, labels, d2, bound)
    return labels, d2


def _exact_where_needed(
    points: Points, centers: torch.Tensor, labels: np.ndarray, d2: np.ndarray, bound: np.ndarray
) -> None:
    """Replace ``d2`` by the exact squared distance (in place) for the points of
    :func:`_final_assign`'s docstring, block by block."""
    k = centers.shape[0]
    if np.bincount(labels, minlength=k).min() == 0:
        redo = np.arange(labels.shape[0])
    else:
        top = np.full(k, np.inf, dtype=np.float32)
        np.minimum.at(top, labels, d2 + bound)  # no member of the cluster is exactly nearer than this
        redo = np.flatnonzero((d2 - bound <= top[labels]) | (d2 <= bound))
    rows = _assign_rows(k)
    local = threading.local()

    def block(_: int, start: int) -> None:
        if not hasattr(local, "diff"):
            local.diff = torch.empty((rows, points.dim), dtype=torch.float32)
        idx = redo[start : start + rows]
        xb = torch.from_numpy(points.take(idx))
        diff = local.diff[: idx.shape[0]]
        torch.index_select(centers, 0, torch.from_numpy(labels[idx]), out=diff)
        diff.sub_(xb)
        d2[idx] = row_sq_norms(diff).numpy()

    map_blocks(block, range(0, redo.shape[0], rows))


def train_size(n: int, k: int, subsample_above: int | None = None) -> int:
    """Number of points k-means trains on for n points and k clusters."""
    above = SUBSAMPLE_ABOVE if subsample_above is None else subsample_above
    if n <= above:
        return n
    return min(n, max(above, TRAIN_POINTS_PER_CLUSTER * k))


def kmeans(
    points: Points | np.ndarray,
    k: int,
    *,
    seed: int,
    max_iter: int = 100,
    tol: float = 1e-4,
    subsample_above: int | None = None,
) -> KMeansResult:
    """k-means with scikit-learn's semantics (k-means++, n_init=1, Lloyd) on ``points``.

    ``points``: a float32 n x D array or a :class:`Points` view. Requires
    1 <= k <= n. Above ``subsample_above`` (default SUBSAMPLE_ABOVE) points
    the centroids are trained on a seeded uniform sample of :func:`train_size`
    points (see the module docstring); every point is then assigned to its
    nearest centroid.
    """
    pts = as_points(points)
    n = len(pts)
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= number of points, got k={k} for {n} points")
    m = train_size(n, k, subsample_above)
    if m < n:
        # a stream of its own, so that RandomState(seed) below stays scikit-learn's
        sub_rng = np.random.default_rng([seed, _SUBSAMPLE_STREAM])
        train_idx = np.sort(sub_rng.choice(n, size=m, replace=False))
        train = pts.take(train_idx)
    else:
        train = pts.materialize()
    # one torch thread here: the products run on map_blocks' workers; the rest are small
    # operations that a second OpenMP thread only slows down on a shared machine
    with torch.inference_mode(), torch_threads(1):
        # centre the training points (as scikit-learn does) for accurate distances: in place
        # when they are already our own copy, else into one (at most train_size(n, k) x D)
        mean = _blocked_mean(as_tensor(np.ascontiguousarray(train, dtype=np.float32))).float().numpy()
        own = train.dtype == np.float32 and train.flags.writeable and not np.shares_memory(train, pts.features)
        train = np.subtract(train, mean, out=train) if own else np.subtract(train, mean, dtype=np.float32)
        xt = as_tensor(train)
        init = kmeans_plusplus(train, k, np.random.RandomState(seed))
        centers = xt[torch.from_numpy(init)].clone()
        centers, n_iter = _lloyd(xt, centers, max_iter=max_iter, tol=tol)
        n_train = int(train.shape[0])
        del xt, train
        centers += torch.from_numpy(mean)
        labels, d2 = _final_assign(pts, centers)
    return KMeansResult(
        centroids=centers.numpy(),
        labels=labels,
        sq_distances=d2,
        inertia=float(d2.astype(np.float64).sum()),
        n_iter=n_iter,
        n_train=n_train,
    )


def nearest_to_centroids(result: KMeansResult) -> tuple[np.ndarray, np.ndarray]:
    """One point per cluster: the member nearest its centroid (ties: smallest position).

    Returns (positions, sq_distances), both of length k, in cluster order. A
    cluster left empty takes the not-yet-chosen point farthest from its own
    centroid (largest ``sq_distances``; ties: smallest position), clusters
    being filled in cluster order.
    """
    labels, d2 = result.labels, result.sq_distances
    k = result.centroids.shape[0]
    n = labels.shape[0]
    order = np.lexsort((np.arange(n), d2, labels))  # by cluster, then distance, then position
    sorted_labels = labels[order]
    first = np.ones(n, dtype=bool)
    first[1:] = sorted_labels[1:] != sorted_labels[:-1]
    chosen = np.full(k, -1, dtype=np.int64)
    chosen[sorted_labels[first]] = order[first]
    empty = np.flatnonzero(chosen < 0)
    if empty.size:
        far = _top_far(d2, empty.size, exclude=chosen[chosen >= 0])
        chosen[empty] = far
    return chosen, d2[chosen].astype(np.float64)
