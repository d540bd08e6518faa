"""The inputs of a select call, checked one validator per input (cleanlab's style).

Each ``check_*`` function takes one input (and what it is checked against), returns it in
its canonical form (int64 indices, float32 features, ...) or raises a
:class:`~al_core.learn.strategies.errors.SelectionError` subclass naming the problem and
the expected form. :func:`validate` runs them in a fixed order and builds the
:class:`~al_core.learn.strategies.context.SelectionContext` of the call.
"""

from __future__ import annotations

import numpy as np
import torch

from al_core.learn.probe import Probe
from al_core.learn.strategies import errors
from al_core.learn.strategies.context import SelectionContext
from al_core.learn.tensors import as_tensor

__all__ = [
    "FINITE_CHECK_ROWS",
    "MAX_SEED",
    "check_budget",
    "check_features",
    "check_finite",
    "check_indices",
    "check_int",
    "check_labels",
    "check_labels_present",
    "check_probe",
    "pool_of",
    "validate",
]

# Rows per block of the NaN / infinity check: 65536 x 768 x 4 B = 192 MB read per
# product with a vector of ones, 65536 x 4 B of row sums.
FINITE_CHECK_ROWS = 65536

# Largest seed accepted: k-means's random state (numpy RandomState, as
# scikit-learn's) takes seeds in [0, 2**32).
MAX_SEED = 2**32 - 1


def check_int(name: str, value, *, minimum: int, maximum: int | None = None) -> int:
    """An integer (not a bool) in [minimum, maximum]; InvalidParameterError otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise errors.InvalidParameterError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"[{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise errors.InvalidParameterError(f"{name} must be {bound}, got {value}")
    return value


def check_finite(features: np.ndarray) -> None:
    """No NaN or infinity in ``features``, checked in blocks of FINITE_CHECK_ROWS rows.

    Each block's row sums come from one matrix-vector product with a vector of ones (about
    1.8x faster here than ``np.isfinite`` over the block: 125 against 219 ms per 262,144 x 768,
    near one read of the rows): a NaN or an infinity in a row makes its sum NaN or infinite.
    Only rows whose sum is not finite (which a sum overflowing float32 can also make) are then
    checked element by element.
    """
    n, d = features.shape
    if features.dtype != np.float32 or n == 0 or not features.flags.c_contiguous:
        if not np.isfinite(features).all():
            bad = int(np.flatnonzero(~np.isfinite(features).all(axis=1))[0])
            raise errors.InvalidFeaturesError(f"features contain NaN or infinite values (first at row {bad})")
        return
    ones = torch.ones(d, dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, n, FINITE_CHECK_ROWS):
            block = features[start : start + FINITE_CHECK_ROWS]
            sums = torch.mv(as_tensor(block), ones)
            suspect = torch.nonzero(~torch.isfinite(sums)).flatten().numpy()
            if suspect.size:
                really = suspect[~np.isfinite(block[suspect]).all(axis=1)]
                if really.size:
                    raise errors.InvalidFeaturesError(
                        f"features contain NaN or infinite values (first at row {start + int(really[0])})"
                    )


def check_features(features) -> np.ndarray:
    """A finite numeric N x D array with N, D >= 1, as float32 (a memory map stays one when float32)."""
    if not isinstance(features, np.ndarray):
        features = np.asarray(features)
    if features.ndim != 2:
        raise errors.InvalidFeaturesError(f"features must be a 2-D array (N x D), got shape {features.shape}")
    if not (np.issubdtype(features.dtype, np.floating) or np.issubdtype(features.dtype, np.integer)):
        raise errors.InvalidFeaturesError(f"features must be numeric, got dtype {features.dtype}")
    if features.dtype != np.float32:
        features = np.asarray(features, dtype=np.float32)
    n_rows, dim = features.shape
    if n_rows == 0:
        raise errors.EmptyPoolError("features has no rows: the pool is empty")
    if dim == 0:
        raise errors.InvalidFeaturesError("features has no columns (D = 0)")
    check_finite(features)
    return features


def check_indices(name: str, values, n_rows: int) -> np.ndarray:
    """Distinct integer row indices in [0, n_rows), as int64 (order kept)."""
    arr = np.asarray(values)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.ndim != 1:
        raise errors.InvalidIndicesError(f"{name} must be a 1-D array of row indices, got shape {arr.shape}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise errors.InvalidIndicesError(f"{name} must hold integer row indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n_rows:
        raise errors.InvalidIndicesError(f"{name} must lie in [0, N={n_rows}), got values in [{lo}, {hi}]")
    uniq, counts = np.unique(arr, return_counts=True)
    if uniq.shape[0] != arr.shape[0]:
        dup = uniq[counts > 1]
        raise errors.DuplicateIndexError(
            f"{name} holds {arr.shape[0] - uniq.shape[0]} duplicated indices (e.g. {dup[:5].tolist()})"
        )
    return arr


def _is_integral(labels: np.ndarray) -> bool:
    if labels.dtype == bool:
        return False
    if np.issubdtype(labels.dtype, np.integer):
        return True
    return bool(np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0))


def check_labels(labels, labeled: np.ndarray, n_classes: int) -> np.ndarray:
    """One integer class in [0, n_classes) per labeled index, as int64 (None: no labels)."""
    arr = np.empty(0, dtype=np.int64) if labels is None else np.asarray(labels)
    if arr.size == 0:
        arr = np.empty(0, dtype=np.int64)
    elif arr.ndim != 1:
        raise errors.InvalidLabelsError(f"labels must be 1-D, got shape {arr.shape}")
    elif not _is_integral(arr):
        raise errors.InvalidLabelsError(f"labels must be integers in [0, n_classes), got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.shape[0] != labeled.shape[0]:
        raise errors.InvalidLabelsError(
            f"labels must have one entry per labeled index: {arr.shape[0]} labels for {labeled.shape[0]} labeled"
        )
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= n_classes:
            raise errors.InvalidLabelsError(
                f"labels must lie in [0, n_classes={n_classes}), got values in [{lo}, {hi}]"
            )
    return arr


def check_labels_present(strategy, labeled: np.ndarray) -> None:
    """A strategy that trains a probe (``needs_labels``) gets at least one labelled row."""
    if strategy.needs_labels and labeled.shape[0] == 0:
        raise errors.LabelsRequiredError(
            f"strategy {strategy.name!r} needs labelled points (it trains a probe); it cannot be a seed strategy"
        )


def pool_of(candidates, labeled: np.ndarray, n_rows: int) -> np.ndarray:
    """The rows to pick from, ascending: ``candidates`` (checked; default every row) minus ``labeled``."""
    is_labeled = np.zeros(n_rows, dtype=bool)
    is_labeled[labeled] = True
    if candidates is None:
        return np.flatnonzero(~is_labeled).astype(np.int64)
    cand = np.sort(check_indices("candidates", candidates, n_rows))
    return cand[~is_labeled[cand]]


def check_budget(budget: int, pool: np.ndarray) -> None:
    """At most as many picks as the pool holds (an empty pool allows only budget 0)."""
    if budget > 0 and pool.shape[0] == 0:
        raise errors.EmptyPoolError("no unlabelled candidate left to select from (the pool is empty)")
    if budget > pool.shape[0]:
        raise errors.BudgetTooLargeError(f"budget {budget} exceeds the {pool.shape[0]} unlabelled candidates")


def check_probe(probe, n_classes: int, dim: int) -> None:
    """None, or a fitted Probe for n_classes classes and D = dim features."""
    if probe is None:
        return
    if not isinstance(probe, Probe) or probe.model_ is None:
        raise errors.InvalidParameterError("probe must be a fitted al_core.learn.probe.Probe")
    if probe.n_classes != n_classes:
        raise errors.InvalidParameterError(f"probe has {probe.n_classes} classes but n_classes={n_classes}")
    if probe.dim_ != dim:
        raise errors.InvalidParameterError(f"probe expects D={probe.dim_} features but features have D={dim}")


def validate(strategy, features, labeled, labels, budget, *, n_classes, seed, probe, candidates) -> SelectionContext:
    """Every input of ``strategy.select(...)`` through its validator, in this order; the call's context."""
    n_classes = check_int("n_classes", n_classes, minimum=1)
    seed = check_int("seed", seed, minimum=0, maximum=MAX_SEED)
    budget = check_int("budget", budget, minimum=0)
    features = check_features(features)
    labeled = check_indices("labeled", [] if labeled is None else labeled, features.shape[0])
    labels = check_labels(labels, labeled, n_classes)
    check_labels_present(strategy, labeled)
    pool = pool_of(candidates, labeled, features.shape[0])
    check_budget(budget, pool)
    check_probe(probe, n_classes, features.shape[1])
    return SelectionContext(
        features=features,
        labeled=labeled,
        labels=labels,
        budget=budget,
        n_classes=n_classes,
        seed=seed,
        pool=pool,
        probe=probe,
    )
