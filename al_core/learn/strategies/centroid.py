"""centroid: one real point per k-means cluster (the study's seed-pool recommendation)."""

from __future__ import annotations

from al_core.learn.points import Points
from al_core.learn.strategies._cluster import cluster_representatives
from al_core.learn.strategies.base import Strategy
from al_core.learn.strategies.context import SelectionContext


class CentroidStrategy(Strategy):
    """k-means with k = B on the L2-normalised raw features of the pool
    (k-means++ start, up to 100 iterations, random_state = seed); from each
    cluster the member nearest its centroid.

    Order: clusters by size, largest first (ties: cluster order). Scores: the
    Euclidean distance (in L2-normalised feature space) of the chosen point to
    its cluster's centroid; lower = more central.
    """

    name = "centroid"
    needs_labels = False

    def _select(self, ctx: SelectionContext):
        points = Points(ctx.features, rows=ctx.pool, normalize=True)
        pos, dist = cluster_representatives(points, ctx.budget, ctx.seed)
        return ctx.pool[pos], dist
