"""k-means representatives shared by centroid, alfa_mix and dropquery."""

from __future__ import annotations

import numpy as np

from al_core.learn.kmeans import kmeans, nearest_to_centroids
from al_core.learn.points import Points


def cluster_representatives(points: Points, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means (reference semantics, k-means++ start, up to 100 iterations) on ``points``;
    from each cluster the member nearest its centroid.

    Returns (local positions, Euclidean distances to their centroids), one per
    cluster, ordered by cluster size (largest first; ties: cluster order).
    """
    res = kmeans(points, k, seed=seed)
    pos, d2 = nearest_to_centroids(res)
    sizes = np.bincount(res.labels, minlength=k)
    order = np.lexsort((np.arange(k), -sizes))
    return pos[order], np.sqrt(d2[order])
