"""random: B pool rows uniformly without replacement."""

from __future__ import annotations

import numpy as np

from al_core.learn.strategies.base import Strategy
from al_core.learn.strategies.context import SelectionContext


class RandomStrategy(Strategy):
    """Uniform random sampling without replacement (seed or query strategy).

    Scores: NaN (random has none). The same pool and seed give the same
    indices byte for byte (numpy ``default_rng(seed)`` over the pool in
    ascending index order).
    """

    name = "random"
    needs_labels = False

    def _select(self, ctx: SelectionContext):
        rng = np.random.default_rng(ctx.seed)
        picks = rng.choice(ctx.pool.shape[0], size=ctx.budget, replace=False)
        return ctx.pool[picks], np.full(ctx.budget, np.nan)
