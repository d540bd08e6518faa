"""What every selection strategy shares: the result, the errors, validation, helpers.

Vocabulary (``../shared/docs/algorithms.md``): ``N`` pool size, ``D`` feature
dimension, ``K`` number of classes (``n_classes``), ``B`` budget, ``features``
(N x D float32), ``labeled`` (indices already labelled), ``labels`` (their
classes, integers in [0, K)), ``pred_probs`` (N x K class probabilities).

Every strategy has one call, :meth:`Strategy.select`::

    select(features, labeled, labels, budget, *, n_classes, seed, probe=None, candidates=None)

and returns a :class:`SelectionResult`. The *pool* a strategy picks from is
``candidates`` (default: every row) minus ``labeled``, in ascending index
order; ties are broken by that order (the smallest index wins).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from al_core.learn.kmeans import _as_tensor
from al_core.learn.probe import Probe

__all__ = [
    "SelectionResult",
    "SelectionError",
    "InvalidFeaturesError",
    "InvalidIndicesError",
    "DuplicateIndexError",
    "InvalidLabelsError",
    "EmptyPoolError",
    "BudgetTooLargeError",
    "LabelsRequiredError",
    "InvalidParameterError",
    "Strategy",
    "SelectionContext",
    "top_b",
    "derived_seed",
    "derived_rng",
    "FINITE_CHECK_ROWS",
    "DENSE_POOL_FRACTION",
    "EMBED_BLOCK_ROWS",
    "PRODUCT_BLOCK_ROWS",
    "PoolEmbeddings",
]

# Rows per block of the NaN / infinity check: 65536 x 768 x (4 B read + 1 B
# flag) = 240 MB at most in flight (about 0.6 s per 1,000,000 x 768).
FINITE_CHECK_ROWS = 65536

# When the pool holds at least this share of the rows, probe inference runs over
# every row (contiguous blocks, no copy) and the pool's rows are taken from the
# small N x K (or N) outputs; below it the pool's rows are gathered once into a
# copy of at most DENSE_POOL_FRACTION x N x D.
DENSE_POOL_FRACTION = 0.5

# Rows per block when gathering the pool's embeddings: 16384 x 768 x 4 B = 48 MB
# (the gathered features plus their embedding); also the reused embedding buffer
# of PoolEmbeddings.blocks (48 MB).
EMBED_BLOCK_ROWS = 16384

# Rows per block of the products z . v computed from the features
# (PoolEmbeddings.dot): 4096 x 768 x 4 B = 12 MB of centred rows, reused, small
# enough to stay in cache between the subtraction and the product. Measured on
# one shared core at 200,000 x 768: 110-185 ms per pass with 4096 rows, 280 ms
# with 16384 (a product with a stored embedding matrix: 60-75 ms).
PRODUCT_BLOCK_ROWS = 4096

# Largest seed accepted: k-means's random state (numpy RandomState, as
# scikit-learn's) takes seeds in [0, 2**32).
MAX_SEED = 2**32 - 1


# ---------------------------------------------------------------------- errors
class SelectionError(ValueError):
    """Invalid input to a selection strategy."""


class InvalidFeaturesError(SelectionError):
    """features is not a finite 2-D numeric array."""


class InvalidIndicesError(SelectionError):
    """labeled or candidates are not valid row indices."""


class DuplicateIndexError(InvalidIndicesError):
    """An index appears twice in labeled or in candidates."""


class InvalidLabelsError(SelectionError):
    """labels do not match labeled or lie outside [0, n_classes)."""


class EmptyPoolError(SelectionError):
    """No row to pick from (no features, or every candidate already labelled)."""


class BudgetTooLargeError(SelectionError):
    """The budget exceeds the number of unlabelled candidates."""


class LabelsRequiredError(SelectionError):
    """A strategy that needs labels was called with none."""


class InvalidParameterError(SelectionError):
    """A strategy parameter, the budget, n_classes, seed or probe is invalid."""


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
        return np.array_equal(self.indices, other.indices) and np.array_equal(
            self.scores, other.scores, equal_nan=True
        )

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


# ---------------------------------------------------------------- validation
def _as_int_index_array(name: str, values, n_rows: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.ndim != 1:
        raise InvalidIndicesError(f"{name} must be a 1-D array of row indices, got shape {arr.shape}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidIndicesError(f"{name} must hold integer row indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n_rows:
        raise InvalidIndicesError(f"{name} must lie in [0, N={n_rows}), got values in [{lo}, {hi}]")
    uniq, counts = np.unique(arr, return_counts=True)
    if uniq.shape[0] != arr.shape[0]:
        dup = uniq[counts > 1]
        raise DuplicateIndexError(
            f"{name} holds {arr.shape[0] - uniq.shape[0]} duplicated indices (e.g. {dup[:5].tolist()})"
        )
    return arr


def _check_finite(features: np.ndarray) -> None:
    n = features.shape[0]
    for start in range(0, n, FINITE_CHECK_ROWS):
        block = features[start : start + FINITE_CHECK_ROWS]
        finite = np.isfinite(block)
        if not finite.all():
            bad = start + int(np.flatnonzero(~finite.all(axis=1))[0])
            raise InvalidFeaturesError(f"features contain NaN or infinite values (first at row {bad})")


def _as_int(name: str, value, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidParameterError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"[{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise InvalidParameterError(f"{name} must be {bound}, got {value}")
    return value


@dataclass
class SelectionContext:
    """Validated inputs of one select call."""

    features: np.ndarray  # N x D float32
    labeled: np.ndarray  # int64, as given (order kept)
    labels: np.ndarray  # int64, one per labeled
    budget: int
    n_classes: int
    seed: int
    pool: np.ndarray  # int64, ascending: candidates (or all rows) minus labeled
    probe: Probe | None

    @property
    def n_rows(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def get_probe(self) -> Probe:
        """The given probe, or the standard probe trained on features[labeled], labels."""
        if self.probe is None:
            x = np.asarray(self.features[self.labeled], dtype=np.float32)
            self.probe = Probe(self.n_classes, seed=self.seed).fit(x, self.labels)
        return self.probe

    def pool_features(self) -> tuple[np.ndarray, np.ndarray | slice]:
        """(X, sel): run row-wise inference on X, then take ``[sel]`` to get the pool's rows.

        X is ``features`` itself when the pool covers at least
        DENSE_POOL_FRACTION of the rows, else a gathered copy of the pool's rows.
        """
        n = self.pool.shape[0]
        if n == self.n_rows:
            return self.features, slice(None)
        if n >= DENSE_POOL_FRACTION * self.n_rows:
            return self.features, self.pool
        return np.asarray(self.features[self.pool], dtype=np.float32), slice(None)

    def pool_embeddings(self, probe: Probe, rows: np.ndarray | None = None) -> np.ndarray:
        """Probe embeddings of ``rows`` (default: the pool), float32, gathered block by block."""
        rows = self.pool if rows is None else rows
        out = np.empty((rows.shape[0], self.dim), dtype=np.float32)
        # every row in ascending order: plain slices, no gather
        contiguous = rows.shape[0] == self.n_rows and bool(np.all(rows[1:] > rows[:-1]))
        for start in range(0, rows.shape[0], EMBED_BLOCK_ROWS):
            stop = min(start + EMBED_BLOCK_ROWS, rows.shape[0])
            block = self.features[start:stop] if contiguous else self.features[rows[start:stop]]
            out[start:stop] = probe.embed(np.asarray(block, dtype=np.float32))
        return out

    def embedding_view(self, probe: Probe) -> "PoolEmbeddings":
        """The pool's probe embeddings, computed block by block (no N x D embedding matrix)."""
        return PoolEmbeddings(self, probe)


class PoolEmbeddings:
    """The probe embeddings z = (x - mean) * inv_std of the pool's rows (positions
    0..n-1 in pool order), never held as an N x D matrix.

    As in :meth:`SelectionContext.pool_features`: when the pool covers at least
    DENSE_POOL_FRACTION of the rows, every pass reads ``features`` in contiguous
    blocks (no copy; a memory map stays a memory map) and centres each block on
    the fly, rows outside the pool being dropped from the results; below it the
    pool's rows are gathered once into a copy (at most DENSE_POOL_FRACTION x N x D,
    the copy pool_features makes) that is centred in place.

    Embedding blocks (:meth:`blocks`, :meth:`rows`) are bit for bit
    :meth:`Probe.embed`'s: the same subtraction, then the same multiplication.
    Products (:meth:`dot`) are computed as z . v = (x - mean) . (inv_std * v):
    centring first rounds each element once, so every term is as accurate as
    with z itself, at the cost of one subtraction per element and pass (about
    twice the time of a product with a stored z). The purely algebraic
    x . w - mean . w (w = inv_std * v), which needs no subtraction, is not
    used: with features that carry a large common offset (non-negative ReLU
    features, any dimension whose mean is large against its standard
    deviation) its two float32 sums are large and nearly equal, and their
    difference loses the digits that distances between nearby points depend
    on (test_products_are_centred_first_no_cancellation).
    """

    def __init__(self, ctx: SelectionContext, probe: Probe):
        self._mean, self._inv_std = probe.embedding_normalization
        self._features = ctx.features
        self._pool = ctx.pool
        self.n = int(ctx.pool.shape[0])
        self.dim = ctx.dim
        x, sel = ctx.pool_features()
        self._sel = sel
        if x is ctx.features:
            self._centred = None  # dense: computed per block from the features
            self._source_rows = ctx.n_rows
        else:
            # our own gathered copy: centre it in place, block by block
            self._centred = x
            self._source_rows = self.n
            xt = _as_tensor(x)
            with torch.inference_mode():
                for start in range(0, self.n, EMBED_BLOCK_ROWS):
                    xt[start : start + EMBED_BLOCK_ROWS].sub_(self._mean)
        self._product_buf: torch.Tensor | None = None
        self._source_out: np.ndarray | None = None

    def _feature_block(self, start: int, stop: int) -> torch.Tensor:
        return _as_tensor(np.asarray(self._features[start:stop], dtype=np.float32))

    def blocks(self):
        """(start, z) for consecutive blocks of pool positions: z (float32 tensor,
        rows x D) holds the embeddings of positions start..start+rows-1. z is a
        reused buffer (EMBED_BLOCK_ROWS x D), valid until the next step."""
        # (no grad mode set here: a generator's context would leak into its caller)
        block_rows = EMBED_BLOCK_ROWS
        buf = torch.empty((min(block_rows, self._source_rows), self.dim), dtype=torch.float32)
        if self._centred is not None:
            ct = _as_tensor(self._centred)
            for start in range(0, self.n, block_rows):
                blk = buf[: min(block_rows, self.n - start)]
                torch.mul(ct[start : start + block_rows], self._inv_std, out=blk)
                yield start, blk
            return
        everything = isinstance(self._sel, slice)
        pos = 0  # first pool position not yet yielded
        for start in range(0, self._source_rows, block_rows):
            stop = min(start + block_rows, self._source_rows)
            if everything:
                local = None
            else:
                end = int(np.searchsorted(self._pool, stop))
                if end == pos:
                    continue
                local = torch.from_numpy(self._pool[pos:end] - start)
            blk = buf[: stop - start]
            torch.sub(self._feature_block(start, stop), self._mean, out=blk)
            blk.mul_(self._inv_std)
            if local is None:
                yield start, blk
            else:
                yield pos, blk[local]
                pos = end

    def rows(self, positions) -> np.ndarray:
        """The embeddings of the given pool positions, a new float32 array (len x D)."""
        positions = np.asarray(positions, dtype=np.int64)
        if self._centred is not None:
            out = self._centred[positions]
            with torch.inference_mode():
                _as_tensor(out).mul_(self._inv_std)
            return out
        out = np.asarray(self._features[self._pool[positions]], dtype=np.float32)
        with torch.inference_mode():
            ot = _as_tensor(out)
            ot.sub_(self._mean)
            ot.mul_(self._inv_std)
        return out

    def dot(self, v, out: np.ndarray) -> np.ndarray:
        """out[p] = z_p . v for every pool position p (``out``: float32, length n),
        as (x_p - mean) . (inv_std * v), in blocks of PRODUCT_BLOCK_ROWS rows."""
        block_rows = PRODUCT_BLOCK_ROWS
        with torch.inference_mode():
            w = torch.as_tensor(np.asarray(v, dtype=np.float32)).mul(self._inv_std)
            if self._centred is not None:
                ct, ot = _as_tensor(self._centred), torch.from_numpy(out)
                for start in range(0, self.n, block_rows):
                    torch.mv(ct[start : start + block_rows], w, out=ot[start : start + block_rows])
                return out
            everything = isinstance(self._sel, slice)
            if everything:
                target = out
            else:  # every row's product, then the pool's
                if self._source_out is None:
                    self._source_out = np.empty(self._source_rows, dtype=np.float32)
                target = self._source_out
            if self._product_buf is None or self._product_buf.shape[0] != min(block_rows, self._source_rows):
                self._product_buf = torch.empty((min(block_rows, self._source_rows), self.dim), dtype=torch.float32)
            tt = torch.from_numpy(target)
            for start in range(0, self._source_rows, block_rows):
                stop = min(start + block_rows, self._source_rows)
                blk = self._product_buf[: stop - start]
                torch.sub(self._feature_block(start, stop), self._mean, out=blk)
                torch.mv(blk, w, out=tt[start:stop])
            if not everything:
                np.take(target, self._sel, out=out)
        return out


def validate(
    strategy: "Strategy",
    features,
    labeled,
    labels,
    budget,
    *,
    n_classes,
    seed,
    probe,
    candidates,
) -> SelectionContext:
    """Check every input of a select call; raise a SelectionError subclass naming the problem."""
    n_classes = _as_int("n_classes", n_classes, minimum=1)
    seed = _as_int("seed", seed, minimum=0, maximum=MAX_SEED)
    budget = _as_int("budget", budget, minimum=0)

    if not isinstance(features, np.ndarray):
        features = np.asarray(features)
    if features.ndim != 2:
        raise InvalidFeaturesError(f"features must be a 2-D array (N x D), got shape {features.shape}")
    if not (np.issubdtype(features.dtype, np.floating) or np.issubdtype(features.dtype, np.integer)):
        raise InvalidFeaturesError(f"features must be numeric, got dtype {features.dtype}")
    if features.dtype != np.float32:
        features = np.asarray(features, dtype=np.float32)
    n_rows, dim = features.shape
    if n_rows == 0:
        raise EmptyPoolError("features has no rows: the pool is empty")
    if dim == 0:
        raise InvalidFeaturesError("features has no columns (D = 0)")
    _check_finite(features)

    labeled = _as_int_index_array("labeled", [] if labeled is None else labeled, n_rows)
    if labels is None:
        labels_arr = np.empty(0, dtype=np.int64)
    else:
        labels_arr = np.asarray(labels)
        if labels_arr.size == 0:
            labels_arr = np.empty(0, dtype=np.int64)
        elif labels_arr.ndim != 1:
            raise InvalidLabelsError(f"labels must be 1-D, got shape {labels_arr.shape}")
        elif labels_arr.dtype == bool or not (
            np.issubdtype(labels_arr.dtype, np.integer)
            or (np.issubdtype(labels_arr.dtype, np.floating) and np.all(np.mod(labels_arr, 1) == 0))
        ):
            raise InvalidLabelsError(f"labels must be integers in [0, n_classes), got dtype {labels_arr.dtype}")
        labels_arr = labels_arr.astype(np.int64)
    if labels_arr.shape[0] != labeled.shape[0]:
        raise InvalidLabelsError(
            f"labels must have one entry per labeled index: {labels_arr.shape[0]} labels for {labeled.shape[0]} labeled"
        )
    if labels_arr.size:
        lo, hi = int(labels_arr.min()), int(labels_arr.max())
        if lo < 0 or hi >= n_classes:
            raise InvalidLabelsError(f"labels must lie in [0, n_classes={n_classes}), got values in [{lo}, {hi}]")

    if strategy.needs_labels and labeled.shape[0] == 0:
        raise LabelsRequiredError(
            f"strategy {strategy.name!r} needs labelled points (it trains a probe); it cannot be a seed strategy"
        )

    is_labeled = np.zeros(n_rows, dtype=bool)
    is_labeled[labeled] = True
    if candidates is None:
        pool = np.flatnonzero(~is_labeled).astype(np.int64)
    else:
        cand = _as_int_index_array("candidates", candidates, n_rows)
        cand = np.sort(cand)
        pool = cand[~is_labeled[cand]]
    if budget > 0 and pool.shape[0] == 0:
        raise EmptyPoolError("no unlabelled candidate left to select from (the pool is empty)")
    if budget > pool.shape[0]:
        raise BudgetTooLargeError(f"budget {budget} exceeds the {pool.shape[0]} unlabelled candidates")

    if probe is not None:
        if not isinstance(probe, Probe) or probe.model_ is None:
            raise InvalidParameterError("probe must be a fitted al_core.learn.probe.Probe")
        if probe.n_classes != n_classes:
            raise InvalidParameterError(f"probe has {probe.n_classes} classes but n_classes={n_classes}")
        if probe.dim_ != dim:
            raise InvalidParameterError(f"probe expects D={probe.dim_} features but features have D={dim}")

    return SelectionContext(
        features=features,
        labeled=labeled,
        labels=labels_arr,
        budget=budget,
        n_classes=n_classes,
        seed=seed,
        pool=pool,
        probe=probe,
    )


# -------------------------------------------------------------------- strategy
class Strategy:
    """Base class: validation in :meth:`select`, the work in :meth:`_select`.

    Subclasses set ``name``, ``needs_labels`` and implement ``_select(ctx)``
    returning (indices, scores). Parameters are keyword arguments of the
    constructor, validated there.
    """

    name: ClassVar[str] = ""
    needs_labels: ClassVar[bool] = False
    uses_probe: ClassVar[bool] = False

    def get_params(self) -> dict:
        return {}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

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

        Raises a :class:`SelectionError` subclass on invalid input. See the
        class docstring for the meaning of the scores.
        """
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
