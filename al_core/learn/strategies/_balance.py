"""Per-predicted-class quotas at the representative choice of a k-means pick (the ``class_balance`` extension).

docs/algorithms.md ("Extension: class balance"): the clustering is the
unchanged k-means of :func:`~al_core.learn.strategies._cluster.cluster_representatives`
(same points, k and seed); only the choice of one point per cluster changes.
The B slots are shared among the predicted classes by water-filling towards an
even labelled set (:func:`class_quotas`); clusters are visited in the same order
(size, largest first) and each takes its member nearest the centroid whose
predicted class still has quota, else (no member has) the nearest member once
every quota-respecting choice is made.
"""

from __future__ import annotations

import numpy as np

from al_core.learn.kmeans import kmeans
from al_core.learn.points import Points

__all__ = ["balanced_representatives", "class_quotas"]


def class_quotas(labelled_counts: np.ndarray, available: np.ndarray, budget: int) -> np.ndarray:
    """Slots per class (int64 K, summing to at most ``budget``): one at a time to the class with the fewest labels
    plus slots so far (ties: the lower class), among classes with a predicted candidate left (``available``)."""
    have = np.asarray(labelled_counts, dtype=np.int64).copy()
    left = np.asarray(available, dtype=np.int64).copy()
    quota = np.zeros_like(have)
    for _ in range(int(budget)):
        open_ = np.flatnonzero(left > 0)
        if open_.size == 0:
            break
        c = open_[np.argmin(have[open_])]  # argmin: the first (lowest class) of the ties
        quota[c] += 1
        have[c] += 1
        left[c] -= 1
    return quota


def balanced_representatives(
    points: Points, k: int, seed: int, predicted: np.ndarray, labelled_counts: np.ndarray
) -> np.ndarray:
    """Local positions of k representatives, one per k-means cluster, within per-predicted-class quotas.

    ``predicted``: the probe's class of every point; ``labelled_counts``: training labels per class (length K).
    Returns positions in cluster order by size (largest first; ties: cluster order), as
    cluster_representatives does.
    """
    predicted = np.asarray(predicted, dtype=np.int64)
    n_classes = max(int(np.asarray(labelled_counts).shape[0]), int(predicted.max()) + 1 if predicted.size else 0)
    counts = np.zeros(n_classes, dtype=np.int64)
    counts[: len(labelled_counts)] = labelled_counts
    quota = class_quotas(counts, np.bincount(predicted, minlength=n_classes), k)
    res = kmeans(points, k, seed=seed)
    sizes = np.bincount(res.labels, minlength=k)
    clusters = np.lexsort((np.arange(k), -sizes))
    by_cluster = np.lexsort((np.arange(res.labels.shape[0]), res.sq_distances, res.labels))  # cluster, distance
    starts = np.searchsorted(res.labels[by_cluster], np.arange(k + 1))
    chosen = np.full(k, -1, dtype=np.int64)
    taken = np.zeros(res.labels.shape[0], dtype=bool)
    for slot, c in enumerate(clusters):  # first pass: the nearest member of a class with quota left
        members = by_cluster[starts[c] : starts[c + 1]]
        fits = members[quota[predicted[members]] > 0]
        if fits.size:
            chosen[slot] = fits[0]
            taken[fits[0]] = True
            quota[predicted[fits[0]]] -= 1
    for slot, c in enumerate(clusters):  # second pass: clusters without such a member take their nearest one
        if chosen[slot] >= 0:
            continue
        members = by_cluster[starts[c] : starts[c + 1]]
        free = members[~taken[members]]
        if free.size == 0:  # an empty cluster: the unchosen point farthest from its centroid
            order = np.lexsort((np.arange(taken.shape[0]), -res.sq_distances))
            free = order[~taken[order]]
        chosen[slot] = free[0]
        taken[free[0]] = True
    return chosen
