"""probcover: greedy maximum coverage of delta-balls (Yehuda et al. 2022).

Exact up to PROBCOVER_EXACT_MAX_ROWS rows (the default); above it, a sampled
approximation whose agreement with the exact method is measured in
docs/benchmarks.md ("ProbCover at a million rows"). See
:class:`ProbCoverStrategy`.
"""

from __future__ import annotations

import numpy as np
import torch

from al_core.learn.kmeans import Points, kmeans
from al_core.learn.strategies.base import InvalidParameterError, SelectionContext, Strategy, derived_rng, random_fill

# Square tile of the all-pairs passes (radius search, graph); only tiles on or
# above the diagonal are computed (the dot product is symmetric): 4096 x 4096
# x 4 B = 64 MB of dot products plus a 16 MB boolean mask per tile.
PROBCOVER_TILE_ROWS = 4096

# Largest number of rows run exactly by default (``approximate="auto"``). The
# exact method costs two all-pairs passes, N^2 D flops each (at N = 100,000 and
# D = 768: about 40 s per pass on the 2-core build machine), and its graph
# grows as N x (points per ball), which itself grows with N: on the benchmark's
# clustered data about 550 neighbours per point at 100,000 rows, so 10x that at
# 1,000,000 rows (~5.5e9 edges, 22 GB of int32 indices: beyond any memory goal).
PROBCOVER_EXACT_MAX_ROWS = 200_000

# Approximate mode, 1: rows of the graph sample (all labelled rows, then
# uniform pool rows). The graph is built exactly on the sample (the same cost
# as an exact run at this many rows); coverage is counted on the sample, an
# unbiased estimate of the coverage of the whole pool.
PROBCOVER_SAMPLE_ROWS = 100_000

# Approximate mode, 2: rows whose exact nearest-other-pseudo-label distance
# (against every row, N x D per row) estimates the purity of each radius of
# the search: 4096 x 1,000,000 x 768 x 2 flops = 6.3e12 at N = 1M (~35 s
# here); standard error of a purity near 0.95: sqrt(0.95 x 0.05 / 4096) = 0.34 %.
PURITY_SAMPLE_ROWS = 4096

# Binary search of the radius (specification): start, first step, evaluations.
DELTA_START = 0.5
DELTA_FIRST_STEP = 0.25
DELTA_EVALUATIONS = 6

# Exact mode: rows whose exact nearest-other-label distances (against every
# row: 2048 x N x D x 2 flops, 3e11 at N = 100,000) guess delta before the
# single all-pairs pass; a wrong guess costs a second pass, never a wrong graph.
PURITY_GUESS_ROWS = 2048
GUESS_SURE_SE = 5.0

_STREAM_FILL = 7
_STREAM_SAMPLE = 8


def _tiles(n: int):
    """(i0, i1, j0, j1) for every tile on or above the diagonal, the last partial ones included."""
    t = PROBCOVER_TILE_ROWS
    for i0 in range(0, n, t):
        for j0 in range(i0, n, t):
            yield i0, min(i0 + t, n), j0, min(j0 + t, n)


def _label_bounds(sorted_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels present, start of each one's segment, end) for labels sorted ascending."""
    change = np.flatnonzero(np.diff(sorted_labels)) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [sorted_labels.shape[0]]]).astype(np.int64)
    return starts, ends


def _mask_same_label(g: torch.Tensor, starts, ends, i0, i1, j0, j1) -> None:
    """Set to -inf the entries of tile g (rows i0:i1, columns j0:j1) whose row and
    column share a label, for rows sorted by label (segments [starts, ends))."""
    lo = np.searchsorted(ends, max(i0, j0), side="right")
    for s, e in zip(starts[lo:], ends[lo:]):
        if s >= min(i1, j1):
            break
        r0, r1 = max(s, i0), min(e, i1)
        c0, c1 = max(s, j0), min(e, j1)
        if r0 < r1 and c0 < c1:
            g[r0 - i0 : r1 - i0, c0 - j0 : c1 - j0] = float("-inf")


def _sorted_nearest_other_label_best_dots(xs: np.ndarray, sorted_labels: np.ndarray) -> np.ndarray:
    """For rows sorted by label: the largest dot product of each row with a row of
    another label (-inf if none). The same-label pairs of a tile are then a few
    rectangles, masked by slicing (no N x N or tile-sized comparison)."""
    n = xs.shape[0]
    starts, ends = _label_bounds(sorted_labels)
    best = torch.full((n,), float("-inf"))
    with torch.inference_mode():
        xt = torch.from_numpy(np.ascontiguousarray(xs, dtype=np.float32))
        for i0, i1, j0, j1 in _tiles(n):
            g = torch.mm(xt[i0:i1], xt[j0:j1].t())
            _mask_same_label(g, starts, ends, i0, i1, j0, j1)
            torch.maximum(best[i0:i1], g.max(dim=1).values, out=best[i0:i1])
            torch.maximum(best[j0:j1], g.max(dim=0).values, out=best[j0:j1])
    return best.numpy()


def _dots_to_sq_distances(best: np.ndarray) -> np.ndarray:
    b = best.astype(np.float64)
    return np.where(np.isneginf(b), np.inf, np.maximum(2.0 - 2.0 * b, 0.0))


def nearest_other_label_sq_distances(x: np.ndarray, pseudo: np.ndarray) -> np.ndarray:
    """Squared distance of each L2-normalised row to the nearest row with another
    pseudo-label (inf if none), computed as 2 - 2 x_i . x_j.

    A point's delta-ball is pure (holds only its own pseudo-label) exactly when
    this distance is at least delta^2.
    """
    pseudo = np.asarray(pseudo)
    order = np.argsort(pseudo, kind="stable")
    r2 = np.empty(x.shape[0], dtype=np.float64)
    r2[order] = _dots_to_sq_distances(_sorted_nearest_other_label_best_dots(x[order], pseudo[order]))
    return r2


def sample_nearest_other_label_sq_distances(points: Points, pseudo: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The same distance for the rows ``rows`` only, each against every row of
    ``points`` (L2-normalised): exact for those rows, len(rows) x N x D work."""
    q = torch.from_numpy(points.take(rows))
    q_lab = torch.from_numpy(np.asarray(pseudo)[rows])
    best = torch.full((rows.shape[0],), float("-inf"))
    lab = torch.from_numpy(np.asarray(pseudo))
    with torch.inference_mode():
        for start, block in points.blocks(PROBCOVER_TILE_ROWS):
            g = torch.mm(q, torch.from_numpy(block).t())
            g.masked_fill_(q_lab[:, None] == lab[None, start : start + block.shape[0]], float("-inf"))
            torch.maximum(best, g.max(dim=1).values, out=best)
    return _dots_to_sq_distances(best.numpy())


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


class RadiusGraph:
    """The symmetric delta-graph (self edges implied) as two CSR halves:
    ``upper`` (i -> j, j > i) and ``lower`` (i -> j, j < i), int32 columns.

    Memory: 2 x 4 B per undirected edge plus 2 x 8 B per row (no N x N matrix,
    no global sort: each row block's edges are already in column order, and the
    lower half is a counting-sort transpose).
    """

    def __init__(self, n: int, up_ptr: np.ndarray, up_idx: np.ndarray):
        self.n = n
        self.up_ptr, self.up_idx = up_ptr, up_idx
        self._lo: tuple[np.ndarray, np.ndarray] | None = None

    def _lower(self) -> tuple[np.ndarray, np.ndarray]:
        """The lower half (the transpose of the upper one), built on first use:
        scipy's CSR -> CSC conversion is a counting sort in C++ (1 B of dummy
        data per edge, no int64 sort keys), and leaves each row's columns ascending."""
        if self._lo is None:
            from scipy import sparse

            nnz = self.up_idx.shape[0]
            # int32 row pointers when they fit, else scipy upcasts the column indices to int64 (a copy)
            ptr = self.up_ptr.astype(self.up_idx.dtype) if nnz < np.iinfo(self.up_idx.dtype).max else self.up_ptr
            upper = sparse.csr_matrix((np.ones(nnz, dtype=np.int8), self.up_idx, ptr), shape=(self.n, self.n))
            lower = upper.tocsc()
            del upper
            self._lo = (lower.indptr.astype(np.int64), lower.indices)
        return self._lo

    @property
    def lo_ptr(self) -> np.ndarray:
        return self._lower()[0]

    @property
    def lo_idx(self) -> np.ndarray:
        return self._lower()[1]

    @property
    def n_edges(self) -> int:
        """Directed edges i -> j, i != j (twice the undirected edges)."""
        return int(2 * self.up_idx.shape[0])

    def degrees(self) -> np.ndarray:
        """Neighbours of each row, itself included."""
        return np.diff(self.up_ptr) + np.diff(self.lo_ptr) + 1

    def uncovered_degrees(self, covered: np.ndarray) -> np.ndarray:
        """For each row, how many of its neighbours (itself included) are not covered:
        segment sums over the edge lists (1 B per edge in flight, no neighbour list copy)."""
        u = (~covered).view(np.uint8)
        deg = u.astype(np.int64)
        for ptr, idx in ((self.up_ptr, self.up_idx), (self.lo_ptr, self.lo_idx)):
            deg += _segment_sums(ptr, u[idx])
        return deg

    def neighbours_of(self, rows: np.ndarray) -> np.ndarray:
        """Concatenated neighbour lists of ``rows`` (each row itself included)."""
        rows = np.asarray(rows, dtype=np.int64)
        return np.concatenate(
            [_gather(self.up_ptr, self.up_idx, rows), _gather(self.lo_ptr, self.lo_idx, rows), rows]
        )


def _segment_sums(indptr: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sum of ``values[indptr[i]:indptr[i + 1]]`` for every row i (0 for an empty row)."""
    n = indptr.shape[0] - 1
    out = np.zeros(n, dtype=np.int64)
    nonempty = np.flatnonzero(np.diff(indptr) > 0)
    if nonempty.size:
        # consecutive non-empty rows' starts bound each segment (empty rows hold nothing)
        out[nonempty] = np.add.reduceat(values, indptr[nonempty], dtype=np.int64)
    return out


def _gather(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    if rows.size == 0:
        return np.empty(0, dtype=np.int64)
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    total = int(lengths.sum())
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return indices[offsets + np.arange(total)].astype(np.int64)


def _graph_pass(
    x: np.ndarray, delta: float, sorted_labels: np.ndarray | None = None, keep_dots: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """One all-pairs pass over tiles on or above the diagonal.

    Always: the upper half of the delta-graph (x_i . x_j > 1 - delta^2 / 2,
    j > i) as (indptr, int32 columns), built one row block at a time, each
    block's edges already in column order (no global sort). With
    ``keep_dots``: each edge's dot product too (float32), so that the graph of
    any smaller radius can be cut from it exactly. With ``sorted_labels`` (rows
    sorted by label): also each row's largest dot product with a row of
    another label (the radius search's input), from the same products.
    """
    n = x.shape[0]
    idx_dtype = np.int32 if n < 2**31 else np.int64
    dot_min = 1.0 - 0.5 * delta * delta
    up_counts = np.zeros(n, dtype=np.int64)
    parts: list[np.ndarray] = []
    dot_parts: list[np.ndarray] = []
    best = None
    if sorted_labels is not None:
        starts, ends = _label_bounds(sorted_labels)
        best = torch.full((n,), float("-inf"))
    t = PROBCOVER_TILE_ROWS
    with torch.inference_mode():
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        for i0 in range(0, n, t):
            i1 = min(i0 + t, n)
            rows_parts, cols_parts, dots = [], [], []
            for j0 in range(i0, n, t):
                j1 = min(j0 + t, n)
                g = torch.mm(xt[i0:i1], xt[j0:j1].t())
                close = g > dot_min
                if i0 == j0:
                    close = torch.triu(close, diagonal=1)  # i < j only; self edges implied
                ii, jj = torch.nonzero(close, as_tuple=True)
                del close
                if ii.numel():
                    rows_parts.append(ii.to(torch.int32).numpy())
                    cols_parts.append((jj + j0).to(torch.int32).numpy().astype(idx_dtype, copy=False))
                    if keep_dots:
                        dots.append(g[ii, jj].numpy())
                if best is not None:
                    _mask_same_label(g, starts, ends, i0, i1, j0, j1)
                    torch.maximum(best[i0:i1], g.amax(dim=1), out=best[i0:i1])
                    torch.maximum(best[j0:j1], g.amax(dim=0), out=best[j0:j1])
                del g
            if rows_parts:
                r = np.concatenate(rows_parts)
                o = np.argsort(r, kind="stable")  # row order; columns stay ascending within a row
                parts.append(np.concatenate(cols_parts)[o])
                if keep_dots:
                    dot_parts.append(np.concatenate(dots)[o])
                up_counts[i0:i1] = np.bincount(r, minlength=i1 - i0)
    up_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(up_counts, out=up_ptr[1:])
    up_idx = np.concatenate(parts) if parts else np.empty(0, dtype=idx_dtype)
    parts.clear()  # one copy at a time: columns, then products
    up_dot = None
    if keep_dots:
        up_dot = np.concatenate(dot_parts) if dot_parts else np.empty(0, dtype=np.float32)
        dot_parts.clear()
    return up_ptr, up_idx, up_dot, (None if best is None else best.numpy())


def _cut(up_ptr: np.ndarray, up_idx: np.ndarray, up_dot: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """The upper half of the graph of a smaller radius, from the edges and dot products of a larger one."""
    keep = up_dot > 1.0 - 0.5 * delta * delta  # the comparison radius_graph makes, on the same products
    n = up_ptr.shape[0] - 1
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(up_ptr))
    counts = np.bincount(rows[keep], minlength=n)
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return ptr, up_idx[keep]


def radius_graph(x: np.ndarray, delta: float) -> RadiusGraph:
    """Edges i - j with ||x_i - x_j|| < delta for L2-normalised rows x, i.e.
    x_i . x_j > 1 - delta^2 / 2 (computed from the dot products)."""
    up_ptr, up_idx, _, _ = _graph_pass(x, delta)
    return RadiusGraph(x.shape[0], up_ptr, up_idx)


def graph_with_radius_search(
    x: np.ndarray, sorted_labels: np.ndarray, seed: int, threshold: float
) -> tuple[RadiusGraph, float, list, dict]:
    """The exact radius search and graph in (usually) one all-pairs pass, for rows sorted by label.

    A guess of delta from the exact nearest-other-label distances of
    PURITY_GUESS_ROWS rows comes first; the pass then keeps the edges of the
    guessed radius with their dot products while it computes every row's
    nearest-other-label distance. The exact delta follows from those; if it is
    below the guess, its graph is cut from the kept edges (the same
    comparison on the same products as a separate pass); otherwise a second
    pass builds it. Either way the result is the exact method's. When every
    purity on the guessed path is more than GUESS_SURE_SE standard errors from
    the threshold the products are not kept (a wrong guess then costs a pass).
    """
    n = x.shape[0]
    rows = np.arange(n) if n <= PURITY_GUESS_ROWS else np.sort(
        derived_rng(seed, _STREAM_SAMPLE + 2).choice(n, size=PURITY_GUESS_ROWS, replace=False))
    guess, guessed = search_delta(sample_nearest_other_label_sq_distances(Points(x), sorted_labels, rows), threshold)
    # every purity of the guessed path far (> GUESS_SURE_SE standard errors) from the
    # threshold: the exact search takes the same path; keep no products (4 B per edge)
    se = np.sqrt(threshold * (1.0 - threshold) / rows.shape[0])
    sure = rows.shape[0] == n or all(abs(p - threshold) > GUESS_SURE_SE * se for _, p in guessed)
    up_ptr, up_idx, up_dot, best = _graph_pass(x, guess, sorted_labels, keep_dots=not sure)
    delta, evaluated = search_delta(_dots_to_sq_distances(best), threshold)
    info = {"delta_guess": guess, "passes": 1}
    if delta == guess or (delta < guess and up_dot is not None):
        if delta < guess:
            up_ptr, up_idx = _cut(up_ptr, up_idx, up_dot, delta)
        del up_dot
    else:
        del up_ptr, up_idx, up_dot
        up_ptr, up_idx, _, _ = _graph_pass(x, delta)
        info["passes"] = 2
    return RadiusGraph(n, up_ptr, up_idx), delta, evaluated, info


def greedy_coverage(
    graph: RadiusGraph, covered_by: np.ndarray, pickable: np.ndarray, budget: int, tie_key: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy maximum coverage: rows covered by ``covered_by`` are covered first;
    then up to ``budget`` times the pickable row with the most uncovered
    neighbours (ties: smallest ``tie_key``, default the row number) is taken and
    its ball covered. Stops early when no pick covers anything new.
    Returns (picks, newly covered count of each pick)."""
    n = graph.n
    covered = np.zeros(n, dtype=bool)
    covered[graph.neighbours_of(covered_by)] = True
    degree = graph.uncovered_degrees(covered)
    pickable = pickable.copy()
    chosen, gains = [], []
    for _ in range(budget):
        key = np.where(pickable, degree, -1)
        best = int(key.max())
        if best <= 0:
            break
        tied = np.flatnonzero(key == best)
        i = int(tied[0] if tie_key is None else tied[np.argmin(tie_key[tied])])
        chosen.append(i)
        gains.append(float(best))
        pickable[i] = False
        nbrs = graph.neighbours_of([i])
        newly = np.unique(nbrs[~covered[nbrs]])
        covered[newly] = True
        degree -= np.bincount(graph.neighbours_of(newly), minlength=n)
    return np.asarray(chosen, dtype=np.int64), np.asarray(gains, dtype=np.float64)


class ProbCoverStrategy(Strategy):
    """ProbCover (seed or query strategy); never reads ground-truth labels.

    Exact (N <= PROBCOVER_EXACT_MAX_ROWS, or ``approximate=False``):
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

    Approximate (N > PROBCOVER_EXACT_MAX_ROWS by default, or
    ``approximate=True``): the same steps on samples, because the exact graph
    outgrows memory (see PROBCOVER_EXACT_MAX_ROWS): (1) pseudo-labels by
    k-means on every row, as in the exact method; (2) each radius's purity
    estimated on PURITY_SAMPLE_ROWS uniform rows, each with its exact
    nearest-other-label distance against every row; (3) the graph and the
    greedy coverage on PROBCOVER_SAMPLE_ROWS rows (every labelled row, then
    uniform other rows, seeded; if fewer than B candidates landed in it, more
    candidates are added): picks come from the sampled candidates and coverage
    is counted on the sample. Agreement with the exact method is
    measured in docs/benchmarks.md.

    Memory (exact): the normalised features (N x D float32) plus the graph
    (8 B per undirected edge).

    Scores: the number of points (of the sample, in approximate mode) newly
    covered by the pick (0 for the random fill).
    """

    name = "probcover"
    needs_labels = False

    def __init__(self, *, delta: float | None = None, purity_threshold: float = 0.95, approximate="auto"):
        if delta is not None and not (isinstance(delta, (int, float, np.floating)) and delta > 0):
            raise InvalidParameterError(f"delta must be a positive number or None, got {delta!r}")
        if not 0.0 < float(purity_threshold) <= 1.0:
            raise InvalidParameterError(f"purity_threshold must be in (0, 1], got {purity_threshold!r}")
        if approximate not in ("auto", True, False):
            raise InvalidParameterError(f"approximate must be 'auto', True or False, got {approximate!r}")
        self.delta = None if delta is None else float(delta)
        self.purity_threshold = float(purity_threshold)
        self.approximate = approximate
        self.last_info_: dict = {}

    def get_params(self):
        return {"delta": self.delta, "purity_threshold": self.purity_threshold, "approximate": self.approximate}

    def is_approximate(self, n_rows: int) -> bool:
        return n_rows > PROBCOVER_EXACT_MAX_ROWS if self.approximate == "auto" else bool(self.approximate)

    def radius(self, x: np.ndarray, n_classes: int, seed: int) -> float:
        """delta for the L2-normalised features x (the given one, or the exact purity search)."""
        if self.delta is not None:
            return self.delta
        k = min(n_classes, x.shape[0])
        pseudo = kmeans(x, k, seed=seed).labels
        r2 = nearest_other_label_sq_distances(x, pseudo)
        delta, evaluated = search_delta(r2, self.purity_threshold)
        self.last_info_["purity_evaluated"] = evaluated
        return delta

    def sampled_radius(self, points: Points, n_classes: int, seed: int) -> float:
        """delta with each purity estimated on PURITY_SAMPLE_ROWS rows (approximate mode)."""
        if self.delta is not None:
            return self.delta
        n = len(points)
        k = min(n_classes, n)
        pseudo = kmeans(points, k, seed=seed).labels
        rng = derived_rng(seed, _STREAM_SAMPLE)
        rows = np.sort(rng.choice(n, size=min(PURITY_SAMPLE_ROWS, n), replace=False))
        r2 = sample_nearest_other_label_sq_distances(points, pseudo, rows)
        delta, evaluated = search_delta(r2, self.purity_threshold)
        self.last_info_["purity_evaluated"] = evaluated
        self.last_info_["purity_sample_rows"] = int(rows.shape[0])
        return delta

    def _select(self, ctx: SelectionContext):
        self.last_info_ = {}
        n = ctx.n_rows
        if not self.is_approximate(n):
            # rows in pseudo-label order (a permutation; ties and the result use the original indices)
            if self.delta is None:
                pseudo = kmeans(Points(ctx.features, normalize=True), min(ctx.n_classes, n), seed=ctx.seed).labels
                order = np.argsort(pseudo, kind="stable").astype(np.int64)
            else:
                order = np.arange(n, dtype=np.int64)
            x = Points(ctx.features, order, normalize=True).materialize()
            if self.delta is None:
                graph, delta, evaluated, info = graph_with_radius_search(
                    x, pseudo[order], ctx.seed, self.purity_threshold)
                self.last_info_.update(info, purity_evaluated=evaluated)
            else:
                delta = self.delta
                graph = radius_graph(x, delta)
            del x
            pos = np.empty(n, dtype=np.int64)
            pos[order] = np.arange(n, dtype=np.int64)
            pickable = np.zeros(n, dtype=bool)
            pickable[pos[ctx.pool]] = True
            local, gains = greedy_coverage(graph, pos[ctx.labeled], pickable, ctx.budget, tie_key=order)
            chosen = order[local]
            self.last_info_.update(delta=delta, approximate=False, graph_rows=n, edges=graph.n_edges)
        else:
            delta = self.sampled_radius(Points(ctx.features, normalize=True), ctx.n_classes, ctx.seed)
            rng = derived_rng(ctx.seed, _STREAM_SAMPLE + 1)
            labeled = np.sort(ctx.labeled)
            is_labeled = np.zeros(n, dtype=bool)
            is_labeled[labeled] = True
            rest = np.flatnonzero(~is_labeled)  # every other row counts for coverage, as in the exact method
            room = max(PROBCOVER_SAMPLE_ROWS - labeled.shape[0], 0)
            sampled = np.sort(rng.choice(rest, size=min(room, rest.shape[0]), replace=False))
            in_pool = np.isin(sampled, ctx.pool, assume_unique=True)
            short = ctx.budget - int(in_pool.sum())
            if short > 0:  # too few candidates landed in the sample: add some
                extra = rng.choice(np.setdiff1d(ctx.pool, sampled), size=short, replace=False)
                sampled = np.sort(np.concatenate([sampled, extra]))
                in_pool = np.isin(sampled, ctx.pool, assume_unique=True)
            rows = np.concatenate([labeled, sampled])  # local positions: labelled first
            x = Points(ctx.features, rows, normalize=True).materialize()
            graph = radius_graph(x, delta)
            del x
            pickable = np.concatenate([np.zeros(labeled.shape[0], dtype=bool), in_pool])
            local, gains = greedy_coverage(
                graph, np.arange(labeled.shape[0]), pickable, ctx.budget, tie_key=rows
            )
            chosen = rows[local]
            self.last_info_.update(delta=delta, approximate=True, graph_rows=int(rows.shape[0]), edges=graph.n_edges)
        fill = random_fill(ctx, chosen, ctx.budget - chosen.shape[0], _STREAM_FILL)
        return np.concatenate([chosen, fill]), np.concatenate([gains, np.zeros(fill.shape[0])])
