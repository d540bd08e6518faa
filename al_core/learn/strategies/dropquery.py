"""dropquery: the study's method (as coded): dropout disagreement, then one per k-means cluster."""

from __future__ import annotations

import numpy as np

from al_core.learn.points import Points
from al_core.learn.strategies._balance import balanced_representatives
from al_core.learn.strategies._cluster import cluster_representatives
from al_core.learn.strategies.base import Strategy, derived_seed, random_fill
from al_core.learn.strategies.context import SelectionContext
from al_core.learn.strategies.errors import InvalidParameterError
from al_core.learn.strategies.validation import check_int

_STREAM_DROPOUT = 1
_STREAM_FILL = 5


def disagreement_histogram(mismatch: np.ndarray, n_passes: int) -> np.ndarray:
    """Counts of points with 0..M disagreeing passes: always length M + 1
    (even when no point reaches M disagreements)."""
    return np.bincount(mismatch, minlength=n_passes + 1)[: n_passes + 1]


def candidate_threshold(hist: np.ndarray, budget: int, factor: int) -> int:
    """The disagreement threshold t (candidates: mismatch > t).

    Starts at floor(M / 2) (M = 3: at least 2 of 3 passes disagree) and is lowered
    by one while there are fewer than ``factor * budget`` candidates and t > 0.
    """
    n_passes = hist.shape[0] - 1
    t = n_passes // 2
    while t > 0 and int(hist[t + 1 :].sum()) < factor * budget:
        t -= 1
    return t


class DropQueryStrategy(Strategy):
    """DropQuery (Gupte et al. 2024), as coded in the study.

    1. clean prediction y of every pool point; 2. M = 3 predictions under input
    dropout p = 0.75 (fresh masks, survivors scaled by 1/(1-p)); 3. mismatch =
    number of passes whose prediction differs from y; 4. candidates: mismatch > 1,
    the threshold lowered by one while there are fewer than 25 B candidates and
    it is above 0; 5. at least B candidates: k-means (k = B) on the L2-normalised
    probe embeddings of the candidates only, the candidate nearest each centroid
    (order: cluster size, largest first); 6. otherwise every candidate (most
    disagreements first, ties by index) then uniform random pool rows up to B.

    Scores: the number of dropout passes that disagreed with the clean
    prediction (mismatch, 0..M), for every pick including the random fill.

    ``class_balance`` (an extension, off by default: docs/algorithms.md): step 5
    takes from each cluster the nearest candidate whose predicted class still has
    a quota (al_core.learn.strategies._balance); the clustering is unchanged.
    """

    name = "dropquery"
    needs_labels = True
    uses_probe = True

    def __init__(self, *, n_passes: int = 3, candidate_factor: int = 25, class_balance: bool = False):
        self._store_params(locals())

    def validate_params(self) -> None:
        check_int("n_passes", self.n_passes, minimum=1)
        check_int("candidate_factor", self.candidate_factor, minimum=1)
        if not isinstance(self.class_balance, bool | np.bool_):
            raise InvalidParameterError(f"class_balance must be true or false, got {self.class_balance!r}")

    def mismatch(self, ctx: SelectionContext) -> np.ndarray:
        """Disagreement count of every pool row (pool order)."""
        probe = ctx.get_probe()
        x, sel = ctx.pool_features()
        return probe.dropout_disagreement(x, int(self.n_passes), derived_seed(ctx.seed, _STREAM_DROPOUT))[sel]

    def _select(self, ctx: SelectionContext):
        probe = ctx.get_probe()
        mismatch = self.mismatch(ctx)
        hist = disagreement_histogram(mismatch, int(self.n_passes))
        t = candidate_threshold(hist, ctx.budget, int(self.candidate_factor))
        cand = np.flatnonzero(mismatch > t)
        if cand.shape[0] >= ctx.budget:
            # the candidates' embeddings, computed from the features only where k-means reads
            # them (its training sample, then block by block): no candidates x D matrix
            mean, inv_std = probe.embedding_normalization
            z = Points(ctx.features, ctx.pool[cand], normalize=True, shift=mean.numpy(), scale=inv_std.numpy())
            if self.class_balance:
                pos = balanced_representatives(
                    z,
                    ctx.budget,
                    ctx.seed,
                    probe.predict(ctx.features[ctx.pool[cand]]),
                    np.bincount(ctx.labels, minlength=ctx.n_classes),
                )
            else:
                pos, _ = cluster_representatives(z, ctx.budget, ctx.seed)
            picked = cand[pos]
            return ctx.pool[picked], mismatch[picked].astype(np.float64)
        order = cand[np.lexsort((cand, -mismatch[cand]))]
        fill = random_fill(ctx, ctx.pool[order], ctx.budget - order.shape[0], _STREAM_FILL)
        fill_pos = np.searchsorted(ctx.pool, fill)
        indices = np.concatenate([ctx.pool[order], fill])
        scores = np.concatenate([mismatch[order], mismatch[fill_pos]]).astype(np.float64)
        return indices, scores
