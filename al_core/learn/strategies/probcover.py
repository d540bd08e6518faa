"""probcover: greedy maximum coverage of delta-balls (Yehuda et al. 2022).

Exact up to PROBCOVER_EXACT_MAX_ROWS rows (the default); above it, a sampled
approximation whose agreement with the exact method is measured in
docs/benchmarks.md ("ProbCover at a million rows"). See
:class:`ProbCoverStrategy`; the graphs and distances are
:mod:`al_core.learn.strategies.probcover_graph`'s.
"""

from __future__ import annotations

import numpy as np

from al_core.learn.kmeans import kmeans
from al_core.learn.points import Points
from al_core.learn.strategies.base import Strategy, derived_rng, random_fill
from al_core.learn.strategies.context import SelectionContext
from al_core.learn.strategies.errors import InvalidParameterError
from al_core.learn.strategies.probcover_graph import (
    RadiusGraph,
    cut_graph,
    dots_to_sq_distances,
    graph_pass,
    nearest_other_label_sq_distances,
    radius_graph,
    sample_nearest_other_label_sq_distances,
)
from al_core.learn.strategies.validation import check_int

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
    rows = (
        np.arange(n)
        if n <= PURITY_GUESS_ROWS
        else np.sort(derived_rng(seed, _STREAM_SAMPLE + 2).choice(n, size=PURITY_GUESS_ROWS, replace=False))
    )
    guess, guessed = search_delta(sample_nearest_other_label_sq_distances(Points(x), sorted_labels, rows), threshold)
    # every purity of the guessed path far (> GUESS_SURE_SE standard errors) from the
    # threshold: the exact search takes the same path; keep no products (4 B per edge)
    se = np.sqrt(threshold * (1.0 - threshold) / rows.shape[0])
    sure = rows.shape[0] == n or all(abs(p - threshold) > GUESS_SURE_SE * se for _, p in guessed)
    up_ptr, up_idx, up_dot, best = graph_pass(x, guess, sorted_labels, keep_dots=not sure)
    delta, evaluated = search_delta(dots_to_sq_distances(best), threshold)
    info = {"delta_guess": guess, "passes": 1}
    if delta == guess or (delta < guess and up_dot is not None):
        if delta < guess:
            up_ptr, up_idx = cut_graph(up_ptr, up_idx, up_dot, delta)
        del up_dot
    else:
        del up_ptr, up_idx, up_dot
        up_ptr, up_idx, _, _ = graph_pass(x, delta)
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

    Exact (N <= ``exact_max_rows``, or ``approximate=False``):
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

    Approximate (N > ``exact_max_rows`` by default, or ``approximate=True``):
    the same steps on samples, because the exact graph outgrows memory (see
    PROBCOVER_EXACT_MAX_ROWS): (1) pseudo-labels by k-means on every row, as in
    the exact method; (2) each radius's purity estimated on
    ``purity_sample_rows`` uniform rows, each with its exact nearest-other-label
    distance against every row; (3) the graph and the greedy coverage on
    ``graph_sample_rows`` rows (every labelled row, then uniform other rows,
    seeded; if fewer than B candidates landed in it, more candidates are
    added): picks come from the sampled candidates and coverage is counted on
    the sample. Agreement with the exact method is measured in
    docs/benchmarks.md.

    Parameters (stored by the constructor, checked by :meth:`validate_params`):
    ``delta`` (None: searched), ``purity_threshold``, ``approximate`` ("auto",
    True, False), ``exact_max_rows``, ``graph_sample_rows``,
    ``purity_sample_rows`` (defaults: the module's named constants).

    Memory (exact): the normalised features (N x D float32) plus the graph
    (8 B per undirected edge).

    Scores: the number of points (of the sample, in approximate mode) newly
    covered by the pick (0 for the random fill). After a call, ``last_info_``
    holds the radius, the mode, the graph's rows and edges, and the purities
    evaluated.
    """

    name = "probcover"
    needs_labels = False

    def __init__(
        self,
        *,
        delta: float | None = None,
        purity_threshold: float = 0.95,
        approximate="auto",
        exact_max_rows: int = PROBCOVER_EXACT_MAX_ROWS,
        graph_sample_rows: int = PROBCOVER_SAMPLE_ROWS,
        purity_sample_rows: int = PURITY_SAMPLE_ROWS,
    ):
        self._store_params(locals())

    def validate_params(self) -> None:
        delta = self.delta
        if delta is not None and not (isinstance(delta, (int, float, np.floating)) and delta > 0):
            raise InvalidParameterError(f"delta must be a positive number or None, got {delta!r}")
        if not 0.0 < float(self.purity_threshold) <= 1.0:
            raise InvalidParameterError(f"purity_threshold must be in (0, 1], got {self.purity_threshold!r}")
        if self.approximate not in ("auto", True, False):
            raise InvalidParameterError(f"approximate must be 'auto', True or False, got {self.approximate!r}")
        check_int("exact_max_rows", self.exact_max_rows, minimum=0)
        check_int("graph_sample_rows", self.graph_sample_rows, minimum=1)
        check_int("purity_sample_rows", self.purity_sample_rows, minimum=1)

    def is_approximate(self, n_rows: int) -> bool:
        return n_rows > self.exact_max_rows if self.approximate == "auto" else bool(self.approximate)

    def radius(self, x: np.ndarray, n_classes: int, seed: int) -> float:
        """delta for the L2-normalised features x (the given one, or the exact purity search)."""
        if self.delta is not None:
            return float(self.delta)
        k = min(n_classes, x.shape[0])
        pseudo = kmeans(x, k, seed=seed).labels
        r2 = nearest_other_label_sq_distances(x, pseudo)
        return search_delta(r2, float(self.purity_threshold))[0]

    def sampled_radius(self, points: Points, n_classes: int, seed: int) -> tuple[float, dict]:
        """(delta, info) with each purity estimated on ``purity_sample_rows`` rows (approximate mode)."""
        if self.delta is not None:
            return float(self.delta), {}
        n = len(points)
        k = min(n_classes, n)
        pseudo = kmeans(points, k, seed=seed).labels
        rng = derived_rng(seed, _STREAM_SAMPLE)
        rows = np.sort(rng.choice(n, size=min(int(self.purity_sample_rows), n), replace=False))
        r2 = sample_nearest_other_label_sq_distances(points, pseudo, rows)
        delta, evaluated = search_delta(r2, float(self.purity_threshold))
        return delta, {"purity_evaluated": evaluated, "purity_sample_rows": int(rows.shape[0])}

    def _select(self, ctx: SelectionContext):
        self.last_info_ = {}
        if self.is_approximate(ctx.n_rows):
            chosen, gains = self._select_sampled(ctx)
        else:
            chosen, gains = self._select_exact(ctx)
        fill = random_fill(ctx, chosen, ctx.budget - chosen.shape[0], _STREAM_FILL)
        return np.concatenate([chosen, fill]), np.concatenate([gains, np.zeros(fill.shape[0])])

    def _select_exact(self, ctx: SelectionContext) -> tuple[np.ndarray, np.ndarray]:
        """Greedy coverage on the graph of every row."""
        n = ctx.n_rows
        # rows in pseudo-label order (a permutation; ties and the result use the original indices)
        if self.delta is None:
            pseudo = kmeans(Points(ctx.features, normalize=True), min(ctx.n_classes, n), seed=ctx.seed).labels
            order = np.argsort(pseudo, kind="stable").astype(np.int64)
        else:
            order = np.arange(n, dtype=np.int64)
        x = Points(ctx.features, order, normalize=True).materialize()
        if self.delta is None:
            graph, delta, evaluated, info = graph_with_radius_search(
                x, pseudo[order], ctx.seed, float(self.purity_threshold)
            )
            self.last_info_.update(info, purity_evaluated=evaluated)
        else:
            delta = float(self.delta)
            graph = radius_graph(x, delta)
        del x
        pos = np.empty(n, dtype=np.int64)
        pos[order] = np.arange(n, dtype=np.int64)
        pickable = np.zeros(n, dtype=bool)
        pickable[pos[ctx.pool]] = True
        local, gains = greedy_coverage(graph, pos[ctx.labeled], pickable, ctx.budget, tie_key=order)
        self.last_info_.update(delta=delta, approximate=False, graph_rows=n, edges=graph.n_edges)
        return order[local], gains

    def _graph_sample(self, ctx: SelectionContext, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(rows, in_pool): every labelled row, then ``graph_sample_rows`` uniform others in all
        (at least B of them candidates), and which of the sampled others are candidates."""
        labeled = np.sort(ctx.labeled)
        is_labeled = np.zeros(ctx.n_rows, dtype=bool)
        is_labeled[labeled] = True
        rest = np.flatnonzero(~is_labeled)  # every other row counts for coverage, as in the exact method
        room = max(int(self.graph_sample_rows) - labeled.shape[0], 0)
        sampled = np.sort(rng.choice(rest, size=min(room, rest.shape[0]), replace=False))
        in_pool = np.isin(sampled, ctx.pool, assume_unique=True)
        short = ctx.budget - int(in_pool.sum())
        if short > 0:  # too few candidates landed in the sample: add some
            extra = rng.choice(np.setdiff1d(ctx.pool, sampled), size=short, replace=False)
            sampled = np.sort(np.concatenate([sampled, extra]))
            in_pool = np.isin(sampled, ctx.pool, assume_unique=True)
        return np.concatenate([labeled, sampled]), in_pool  # local positions: labelled first

    def _select_sampled(self, ctx: SelectionContext) -> tuple[np.ndarray, np.ndarray]:
        """Greedy coverage on the graph of a sample of the rows (approximate mode)."""
        delta, info = self.sampled_radius(Points(ctx.features, normalize=True), ctx.n_classes, ctx.seed)
        self.last_info_.update(info)
        rows, in_pool = self._graph_sample(ctx, derived_rng(ctx.seed, _STREAM_SAMPLE + 1))
        n_labeled = rows.shape[0] - in_pool.shape[0]
        x = Points(ctx.features, rows, normalize=True).materialize()
        graph = radius_graph(x, delta)
        del x
        pickable = np.concatenate([np.zeros(n_labeled, dtype=bool), in_pool])
        local, gains = greedy_coverage(graph, np.arange(n_labeled), pickable, ctx.budget, tie_key=rows)
        self.last_info_.update(delta=delta, approximate=True, graph_rows=int(rows.shape[0]), edges=graph.n_edges)
        return rows[local], gains
