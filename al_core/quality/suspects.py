"""Suspected label errors: out-of-fold predicted probabilities of the probe, scored with cleanlab.

Every labelled image gets a predicted probability vector from a probe that did
not see its label: the labelled set is split into ``CV_FOLDS`` folds
(scikit-learn's ``StratifiedKFold``, shuffled by the seed; ``KFold`` when no
class has as many labels as folds), the standard probe
(:class:`al_core.learn.probe.Probe`, K outputs whatever classes a fold holds) is
trained on the other folds and predicts the held-out one. cleanlab then scores
each given label against these ``pred_probs``:

- ``quality``: :func:`cleanlab.rank.get_label_quality_scores` (``self_confidence``:
  the out-of-fold probability of the given label; low = suspicious);
- ``is_issue``: :func:`cleanlab.filter.find_label_issues` (confident learning,
  ``prune_by_noise_rate``);
- ``suggested``: the class of highest out-of-fold probability.

Suspects are the issues, lowest quality first (:meth:`LabelQuality.suspects`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CV_FOLDS",
    "MIN_LABELS",
    "LabelQuality",
    "assess_labels",
    "fold_splits",
    "out_of_fold_pred_probs",
    "rank_labels",
]

# Folds of the cross-validation: CV_FOLDS probe fits per assessment, each on (k-1)/k of the labels
# (measured on the 2-core build machine under load: ~3 s a fit for 200 labels x 1280, so ~15 s a round).
CV_FOLDS = 5
# Fewer labels than this: no assessment (two folds, each training on at least two labels).
MIN_LABELS = 4
QUALITY_METHOD = "self_confidence"  # cleanlab.rank.get_label_quality_scores's method
ISSUE_FILTER = "prune_by_noise_rate"  # cleanlab.filter.find_label_issues's filter_by


def fold_splits(labels: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs of a shuffled k-fold split of ``labels``, stratified when a class has at least k
    labels; k = min(n_folds, len(labels) // 2), so every training part holds at least half the labels."""
    from sklearn.model_selection import KFold, StratifiedKFold

    labels = np.asarray(labels)
    k = min(int(n_folds), labels.shape[0] // 2)
    if k < 2:
        raise ValueError(f"a cross-validation needs at least {MIN_LABELS} labels, got {labels.shape[0]}")
    if np.bincount(labels).max() >= k:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=int(seed))
    else:
        splitter = KFold(n_splits=k, shuffle=True, random_state=int(seed))
    with warnings.catch_warnings():  # "the least populated class has only n members": expected with few labels
        warnings.simplefilter("ignore", UserWarning)
        return [(tr, te) for tr, te in splitter.split(np.zeros((labels.shape[0], 1)), labels)]


def _default_probe(n_classes: int, seed: int):
    from al_core.learn.probe import Probe

    return Probe(n_classes, seed=seed)


def out_of_fold_pred_probs(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    n_folds: int = CV_FOLDS,
    seed: int = 0,
    make_probe: Callable[[int, int], object] | None = None,
) -> tuple[np.ndarray, int]:
    """(pred_probs, folds): L x K float64 probabilities, each row from a probe trained without that row.

    ``make_probe(n_classes, seed)`` builds the estimator of each fold (default: the standard probe), seeded
    ``seed + fold``; it must have ``fit(features, labels)`` and ``predict_proba(features)``.
    """
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    make = make_probe or _default_probe
    splits = fold_splits(labels, n_folds, seed)
    out = np.empty((labels.shape[0], int(n_classes)), dtype=np.float64)
    for f, (tr, te) in enumerate(splits):
        probe = make(int(n_classes), int(seed) + f).fit(features[tr], labels[tr])
        out[te] = probe.predict_proba(features[te])
    out /= out.sum(axis=1, keepdims=True)  # float32 softmax rows, summed again in float64 for cleanlab
    return out, len(splits)


@dataclass(frozen=True)
class LabelQuality:
    """cleanlab's assessment of L given labels (all arrays of length L, in the order of the labels)."""

    labels: np.ndarray  # the given labels
    pred_probs: np.ndarray  # L x K out-of-fold probabilities
    quality: np.ndarray  # label quality score in [0, 1], low = suspicious
    is_issue: np.ndarray  # bool: cleanlab's find_label_issues flags it
    suggested: np.ndarray  # class of highest out-of-fold probability
    n_folds: int

    @property
    def order(self) -> np.ndarray:
        """Positions by ascending quality (ties: position): rank 1 first."""
        return np.lexsort((np.arange(self.quality.shape[0]), self.quality))

    def suspects(self, top: int | None = None) -> np.ndarray:
        """Positions of the label issues, lowest quality first (at most ``top``)."""
        o = self.order
        o = o[self.is_issue[o]]
        return o if top is None else o[:top]

    @property
    def n_issues(self) -> int:
        return int(self.is_issue.sum())


def rank_labels(labels: np.ndarray, pred_probs: np.ndarray, n_folds: int = 0) -> LabelQuality:
    """cleanlab's label quality scores and label issues of ``labels`` against ``pred_probs`` (N x K)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    with warnings.catch_warnings():  # "may not flag all label issues in class k, too few examples": by design
        warnings.simplefilter("ignore", UserWarning)
        quality = np.asarray(get_label_quality_scores(labels, pred_probs, method=QUALITY_METHOD), dtype=np.float64)
        # n_jobs=1: cleanlab would otherwise fork a process pool (a forked child of a threaded process can hang)
        issue = np.asarray(find_label_issues(labels, pred_probs, filter_by=ISSUE_FILTER, n_jobs=1), dtype=bool)
    return LabelQuality(labels, pred_probs, quality, issue, pred_probs.argmax(axis=1).astype(np.int64), int(n_folds))


def assess_labels(features: np.ndarray, labels: np.ndarray, n_classes: int, **cv) -> LabelQuality:
    """Out-of-fold probabilities (:func:`out_of_fold_pred_probs`, whose keyword arguments ``cv`` are: ``n_folds``,
    ``seed``, ``make_probe``) and cleanlab's ranking (:func:`rank_labels`)."""
    pred_probs, k = out_of_fold_pred_probs(features, labels, n_classes, **cv)
    return rank_labels(labels, pred_probs, k)
