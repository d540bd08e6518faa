"""typiclust: the most typical point of the least-covered clusters (Hacohen et al. 2022)."""

from __future__ import annotations

from collections import deque

import numpy as np

from al_core.learn.kmeans import kmeans
from al_core.learn.neighbours import mean_knn_sq_distances
from al_core.learn.points import Points
from al_core.learn.strategies.base import Strategy, random_fill
from al_core.learn.strategies.context import SelectionContext
from al_core.learn.strategies.validation import check_int

_STREAM_FILL = 6


def typicality(points: np.ndarray, k_nn: int = 20) -> np.ndarray:
    """1 / (mean squared distance to the k nearest other points + 1e-5), with
    k = min(k_nn, len(points) // 2)."""
    k = min(k_nn, points.shape[0] // 2)
    return 1.0 / (mean_knn_sq_distances(points, k) + 1e-5)


class TypiclustStrategy(Strategy):
    """TypiClust (seed or query strategy).

    L2-normalised raw features of every row; k-means (reference semantics,
    random_state = seed) with K' = min(|labeled| + B, 500) clusters; clusters of
    5 or fewer points are dropped; the others are visited round robin in the
    order (number of labelled members ascending, size descending, cluster
    order). In each visited cluster the unlabelled, not yet chosen candidate of
    highest typicality is taken (ties: smallest index), typicality being
    1 / (mean squared distance to its k nearest neighbours + 1e-5) with
    k = min(20, cluster size // 2), the neighbours taken among all members of
    the cluster. A cluster with no candidate left is skipped (the next one takes
    its turn); when every kept cluster is exhausted, uniform random pool rows
    fill the budget.

    Clustering and typicality use every row of ``features`` (the whole
    pool's density); only the picks are restricted to the unlabelled
    candidates.

    Scores: the typicality of the chosen point (NaN for the random fill).
    """

    name = "typiclust"
    needs_labels = False

    def __init__(self, *, max_clusters: int = 500, min_cluster_size: int = 5, k_nn: int = 20):
        self._store_params(locals())

    def validate_params(self) -> None:
        check_int("max_clusters", self.max_clusters, minimum=1)
        check_int("min_cluster_size", self.min_cluster_size, minimum=0)
        check_int("k_nn", self.k_nn, minimum=1)

    def _select(self, ctx: SelectionContext):
        n_rows = ctx.n_rows
        n_clusters = min(ctx.labeled.shape[0] + ctx.budget, int(self.max_clusters), n_rows)
        points = Points(ctx.features, normalize=True)
        res = kmeans(points, n_clusters, seed=ctx.seed)
        labels = res.labels
        sizes = np.bincount(labels, minlength=n_clusters)
        labeled_counts = np.bincount(labels[ctx.labeled], minlength=n_clusters)
        kept = np.flatnonzero(sizes > int(self.min_cluster_size))
        order = kept[np.lexsort((kept, -sizes[kept], labeled_counts[kept]))]
        members_sorted = np.argsort(labels, kind="stable")  # members of each cluster in index order
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        pickable = np.zeros(n_rows, dtype=bool)
        pickable[ctx.pool] = True

        queues: dict[int, deque[int]] = {}  # cluster -> its pickable members, best typicality first
        typ_of: dict[int, float] = {}
        chosen: list[int] = []
        scores: list[float] = []
        active = list(order)
        turn = 0
        while len(chosen) < ctx.budget and active:
            turn %= len(active)
            c = int(active[turn])
            if c not in queues:
                members = members_sorted[bounds[c] : bounds[c + 1]]
                typ = typicality(points.take(members), int(self.k_nn))
                cand = np.flatnonzero(pickable[members])
                ranked = cand[np.lexsort((members[cand], -typ[cand]))]
                queues[c] = deque(int(members[j]) for j in ranked)
                typ_of.update((int(members[j]), float(typ[j])) for j in ranked)
            q = queues[c]
            while q and not pickable[q[0]]:
                q.popleft()
            if not q:
                active.pop(turn)  # exhausted: the next cluster takes this turn
                continue
            i = q.popleft()
            pickable[i] = False
            chosen.append(i)
            scores.append(typ_of[i])
            turn += 1
        chosen_arr = np.asarray(chosen, dtype=np.int64)
        fill = random_fill(ctx, chosen_arr, ctx.budget - chosen_arr.shape[0], _STREAM_FILL)
        return np.concatenate([chosen_arr, fill]), np.concatenate([np.asarray(scores), np.full(fill.shape[0], np.nan)])
