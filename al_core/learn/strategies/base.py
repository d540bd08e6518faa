"""What every selection strategy shares: the base class, the result, seeding and ranking helpers.

Vocabulary (``docs/algorithms.md``): ``N`` pool size, ``D`` feature
dimension, ``K`` number of classes (``n_classes``), ``B`` budget, ``features``
(N x D float32), ``labeled`` (indices already labelled), ``labels`` (their
classes, integers in [0, K)), ``pred_probs`` (N x K class probabilities).

Every strategy has one call, :meth:`Strategy.select`::

    select(features, labeled, labels, budget, *, n_classes, seed, probe=None, candidates=None)

and returns a :class:`SelectionResult`. The *pool* a strategy picks from is
``candidates`` (default: every row) minus ``labeled``, in ascending index
order; ties are broken by that order (the smallest index wins). The inputs are
checked by :mod:`al_core.learn.strategies.validation` and reach the strategy as a
:class:`~al_core.learn.strategies.context.SelectionContext`; the errors are in
:mod:`al_core.learn.strategies.errors`.

Strategies follow scikit-learn's estimator conventions (:mod:`al_core.learn.params`):
their parameters are the keyword arguments of ``__init__``, which only stores them;
:meth:`Strategy.validate_params` checks them when ``select`` runs (and when
:func:`~al_core.learn.strategies.get_strategy` builds one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from al_core.learn.params import Params
from al_core.learn.probe import Probe
from al_core.learn.strategies.context import SelectionContext
from al_core.learn.strategies.validation import validate

__all__ = [
    "SelectionResult",
    "Strategy",
    "derived_rng",
    "derived_seed",
    "random_fill",
    "top_b",
]


# ---------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class SelectionResult:
    """The chosen rows, in selection order, and one score per chosen row.

    ``indices``: int64 array of distinct row indices into ``features``.
    ``scores``: float64 array of the same length; its meaning is documented
    by each strategy (NaN where the strategy has none for that pick).
    Both arrays are read-only.
    """

    indices: np.ndarray
    scores: np.ndarray

    def __post_init__(self):
        indices = np.array(self.indices, dtype=np.int64).reshape(-1)
        scores = np.array(self.scores, dtype=np.float64).reshape(-1)
        if indices.shape != scores.shape:
            raise ValueError(f"{indices.shape[0]} indices but {scores.shape[0]} scores")
        indices.setflags(write=False)
        scores.setflags(write=False)
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "scores", scores)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __eq__(self, other) -> bool:
        if not isinstance(other, SelectionResult):
            return NotImplemented
        return np.array_equal(self.indices, other.indices) and np.array_equal(self.scores, other.scores, equal_nan=True)

    __hash__ = None  # arrays: not hashable


# ------------------------------------------------------------------- seeding
def derived_seed(seed: int, stream: int) -> int:
    """A 32-bit seed for one named random stream of a strategy (stable across runs)."""
    return int(np.random.SeedSequence([int(seed), int(stream)]).generate_state(1, np.uint32)[0])


def derived_rng(seed: int, stream: int) -> np.random.Generator:
    """A numpy Generator for one named random stream of a strategy."""
    return np.random.default_rng([int(seed), int(stream)])


# ------------------------------------------------------------------ ranking
def top_b(key: np.ndarray, b: int, *, largest: bool) -> np.ndarray:
    """Positions of the ``b`` best keys, best first; ties: the smallest position first.

    Uses a partition, so it costs O(n + b log b), not a full sort.
    """
    k = np.asarray(key, dtype=np.float64)
    if largest:
        k = -k
    n = k.shape[0]
    if b <= 0:
        return np.empty(0, dtype=np.int64)
    if b >= n:
        return np.lexsort((np.arange(n), k)).astype(np.int64)[:b]
    kth = np.partition(k, b - 1)[b - 1]
    cand = np.flatnonzero(k <= kth) if not np.isnan(kth) else np.arange(n)
    order = np.lexsort((cand, k[cand]))
    return cand[order[:b]].astype(np.int64)


# -------------------------------------------------------------------- strategy
class Strategy(Params):
    """Base class: checks in :meth:`select`, the work in :meth:`_select`.

    Subclasses set ``name``, ``needs_labels`` (and ``uses_probe``), take their
    parameters as keyword arguments of ``__init__`` (stored unchanged by
    ``self._store_params(locals())``), check them in :meth:`validate_params` and
    implement ``_select(ctx)`` returning (indices, scores).
    """

    name: ClassVar[str] = ""
    needs_labels: ClassVar[bool] = False
    uses_probe: ClassVar[bool] = False

    def validate_params(self) -> None:
        """Raise InvalidParameterError naming an invalid parameter (none by default)."""

    def select(
        self,
        features,
        labeled,
        labels,
        budget,
        *,
        n_classes,
        seed,
        probe: Probe | None = None,
        candidates=None,
    ) -> SelectionResult:
        """Choose ``budget`` distinct unlabelled rows (within ``candidates`` when given).

        Raises a :class:`~al_core.learn.strategies.errors.SelectionError` subclass on
        invalid input or parameters. See the class docstring for the meaning of the scores.
        """
        self.validate_params()
        ctx = validate(
            self, features, labeled, labels, budget, n_classes=n_classes, seed=seed, probe=probe, candidates=candidates
        )
        if ctx.budget == 0:
            return SelectionResult(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))
        indices, scores = self._select(ctx)
        indices = np.asarray(indices, dtype=np.int64)
        # internal invariants (cheap): B distinct rows of the pool
        if indices.shape[0] != ctx.budget or np.unique(indices).shape[0] != ctx.budget:
            raise AssertionError(f"{self.name}: selected {indices.shape[0]} rows, budget {ctx.budget}")
        return SelectionResult(indices, scores)

    def _select(self, ctx: SelectionContext) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError


def random_fill(ctx: SelectionContext, chosen: np.ndarray, count: int, stream: int) -> np.ndarray:
    """``count`` uniform random pool rows not in ``chosen`` (seeded by ctx.seed and ``stream``)."""
    if count <= 0:
        return np.empty(0, dtype=np.int64)
    rest = ctx.pool[~np.isin(ctx.pool, chosen)]
    rng = derived_rng(ctx.seed, stream)
    return rest[rng.choice(rest.shape[0], size=count, replace=False)].astype(np.int64)
