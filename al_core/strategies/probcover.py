"""probcover: greedy maximum coverage of delta-balls (Yehuda et al. 2022)."""

from __future__ import annotations

import numpy as np
import torch

from al_core.kmeans import Points, kmeans
from al_core.strategies.base import InvalidParameterError, SelectionContext, Strategy, random_fill

# Square distance tile of the all-pairs passes (radius search, graph): only
# tiles on or above the diagonal are computed (distances are symmetric), each
# 4096 x 4096 x 4 B = 64 MB (plus a boolean mask of 16 MB).
PROBCOVER_TILE_ROWS = 4096

# Binary search of the radius (specification): start, first step, evaluations.
DELTA_START = 0.5
DELTA_FIRST_STEP = 0.25
DELTA_EVALUATIONS = 6

_STREAM_FILL = 7


def _tiles(n: int):
    """(i0, i1, j0, j1) for every tile on or above the diagonal, the last partial ones included."""
    t = PROBCOVER_TILE_ROWS
    for i0 in range(0, n, t):
        for j0 in range(i0, n, t):
            yield i0, min(i0 + t, n), j0, min(j0 + t, n)


def _tile_sq_dist(xt: torch.Tensor, x_sq: torch.Tensor, i0, i1, j0, j1) -> torch.Tensor:
    d2 = torch.addmm(x_sq[None, j0:j1], xt[i0:i1], xt[j0:j1].t(), beta=1.0, alpha=-2.0)
    d2 += x_sq[i0:i1, None]
    return d2.clamp_(min=0.0)


def nearest_other_label_sq_distances(x: np.ndarray, pseudo: np.ndarray) -> np.ndarray:
    """Squared distance of each row to the nearest row with another pseudo-label (inf if none).

    A point's delta-ball is pure (holds only its own pseudo-label) exactly when
    this distance is at least delta^2.
    """
    n = x.shape[0]
    r2 = torch.full((n,), float("inf"))
    with torch.inference_mode():
        xt = torch.from_numpy(x)
        x_sq = torch.einsum("ij,ij->i", xt, xt)
        lab = torch.from_numpy(pseudo)
        for i0, i1, j0, j1 in _tiles(n):
            d2 = _tile_sq_dist(xt, x_sq, i0, i1, j0, j1)
            d2.masked_fill_(lab[i0:i1, None] == lab[None, j0:j1], float("inf"))
            torch.minimum(r2[i0:i1], d2.min(dim=1).values, out=r2[i0:i1])
            torch.minimum(r2[j0:j1], d2.min(dim=0).values, out=r2[j0:j1])
    return r2.numpy()


def purity(r2: np.ndarray, delta: float) -> float:
    """Share of points whose open delta-ball holds only their own pseudo-label."""
    return float(np.mean(r2.astype(np.float64) >= delta * delta))


def search_delta(r2: np.ndarray, threshold: float = 0.95) -> tuple[float, list[tuple[float, float]]]:
    """The specification's binary search on [0, 1]; returns (delta, [(delta, purity), ...])."""
    delta, step = DELTA_START, DELTA_FIRST_STEP
    evaluated = []
    for _ in range(DELTA_EVALUATIONS):
        p = purity(r2, delta)
        evaluated.append((delta, p))
        delta = delta + step if p >= threshold else delta - step
        step /= 2
    passing = [d for d, p in evaluated if p >= threshold]
    return (max(passing) if passing else min(d for d, _ in evaluated)), evaluated


def radius_graph(x: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr int64, indices int32/int64) of the edges i -> j with ||x_i - x_j|| < delta,
    self included; symmetric, built from tiles on or above the diagonal."""
    n = x.shape[0]
    idx_dtype = np.int32 if n < 2**31 else np.int64
    src_parts, dst_parts = [], []
    d2_max = delta * delta
    with torch.inference_mode():
        xt = torch.from_numpy(x)
        x_sq = torch.einsum("ij,ij->i", xt, xt)
        for i0, i1, j0, j1 in _tiles(n):
            close = _tile_sq_dist(xt, x_sq, i0, i1, j0, j1) < d2_max
            if i0 == j0:
                close = torch.triu(close, diagonal=1)  # i < j only; self edges added below
            ii, jj = torch.nonzero(close, as_tuple=True)
            if ii.numel():
                src_parts.append((ii + i0).numpy().astype(idx_dtype))
                dst_parts.append((jj + j0).numpy().astype(idx_dtype))
    self_idx = np.arange(n, dtype=idx_dtype)
    src = np.concatenate(src_parts + dst_parts + [self_idx])
    dst = np.concatenate(dst_parts + src_parts + [self_idx])
    del src_parts, dst_parts
    order = np.argsort(src, kind="stable")
    indices = dst[order]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return indptr, indices


def _neighbours_of(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Concatenated neighbour lists of ``rows``."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return np.empty(0, dtype=indices.dtype)
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    total = int(lengths.sum())
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return indices[offsets + np.arange(total)]


class ProbCoverStrategy(Strategy):
    """ProbCover (seed or query strategy); never reads ground-truth labels.

    L2-normalised raw features of every row. Radius delta: the given ``delta``,
    or the specification's binary search on [0, 1] (start 0.5, step 0.25
    halving, 6 evaluations, up when purity >= 0.95, else down; the largest
    evaluated value with purity >= 0.95, else the smallest evaluated), purity
    being the share of points whose delta-ball holds only their own k-means
    pseudo-label (k = n_classes, random_state = seed). Graph: i -> j when
    ||x_i - x_j|| < delta (self included), built in tiles, stored sparse (CSR).
    Every point covered by a labelled point is removed; then B times the
    candidate with the most uncovered neighbours is taken (ties: smallest
    index) and its ball marked covered. When no candidate covers anything new,
    uniform random candidates fill the budget.

    Memory: the normalised features (N x D) plus the graph (O(edges)).

    Scores: the number of points newly covered by the pick (0 for the random
    fill).
    """

    name = "probcover"
    needs_labels = False

    def __init__(self, *, delta: float | None = None, purity_threshold: float = 0.95):
        if delta is not None and not (isinstance(delta, (int, float, np.floating)) and delta > 0):
            raise InvalidParameterError(f"delta must be a positive number or None, got {delta!r}")
        if not 0.0 < float(purity_threshold) <= 1.0:
            raise InvalidParameterError(f"purity_threshold must be in (0, 1], got {purity_threshold!r}")
        self.delta = None if delta is None else float(delta)
        self.purity_threshold = float(purity_threshold)

    def get_params(self):
        return {"delta": self.delta, "purity_threshold": self.purity_threshold}

    def radius(self, x: np.ndarray, n_classes: int, seed: int) -> float:
        """delta for the L2-normalised features x (the given one, or the purity search)."""
        if self.delta is not None:
            return self.delta
        k = min(n_classes, x.shape[0])
        pseudo = kmeans(x, k, seed=seed).labels
        r2 = nearest_other_label_sq_distances(x, pseudo)
        return search_delta(r2, self.purity_threshold)[0]

    def _select(self, ctx: SelectionContext):
        x = Points(ctx.features, normalize=True).materialize()
        delta = self.radius(x, ctx.n_classes, ctx.seed)
        indptr, indices = radius_graph(x, delta)
        del x
        n = ctx.n_rows
        covered = np.zeros(n, dtype=bool)
        covered[_neighbours_of(indptr, indices, ctx.labeled)] = True
        # degree = number of uncovered neighbours (every row has itself as a neighbour)
        degree = np.add.reduceat((~covered[indices]).astype(np.int64), indptr[:-1])
        pickable = np.zeros(n, dtype=bool)
        pickable[ctx.pool] = True
        chosen, scores = [], []
        for _ in range(ctx.budget):
            key = np.where(pickable, degree, -1)
            i = int(np.argmax(key))  # ties: smallest index
            if key[i] <= 0:
                break
            chosen.append(i)
            scores.append(float(degree[i]))
            pickable[i] = False
            nbrs = _neighbours_of(indptr, indices, [i])
            newly = nbrs[~covered[nbrs]]
            covered[newly] = True
            degree -= np.bincount(_neighbours_of(indptr, indices, newly), minlength=n)
        chosen_arr = np.asarray(chosen, dtype=np.int64)
        fill = random_fill(ctx, chosen_arr, ctx.budget - chosen_arr.shape[0], _STREAM_FILL)
        return np.concatenate([chosen_arr, fill]), np.concatenate([np.asarray(scores), np.zeros(fill.shape[0])])
