"""Classification metrics of a probe on labelled images, from one confusion matrix.

The same numbers as scikit-learn's ``accuracy_score``, ``balanced_accuracy_score``,
``recall_score(labels=range(K), average=None, zero_division=0)``,
``f1_score(average="macro", zero_division=0)`` (its default labels: the classes labelled or predicted, so a class
added to the list with no evaluation image and no prediction does not count as an F1 of 0) and
``confusion_matrix(labels=range(K))`` (tests/test_metrics.py holds them equal), computed with
numpy: importing ``sklearn.metrics`` cost 2.0-2.3 s on the build machine, paid by every round
run that evaluates a probe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ClassificationMetrics", "classification_metrics", "confusion_matrix"]


def confusion_matrix(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """K x K counts (int64): row = true class, column = predicted class."""
    labels = np.asarray(labels, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    if labels.shape != pred.shape:
        raise ValueError(f"labels and predictions differ in shape: {labels.shape} against {pred.shape}")
    for name, v in (("labels", labels), ("predictions", pred)):
        if v.size and (v.min() < 0 or v.max() >= n_classes):
            raise ValueError(f"{name} must lie in [0, {n_classes})")
    return np.bincount(labels * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


@dataclass(frozen=True)
class ClassificationMetrics:
    accuracy: float
    balanced_accuracy: float  # mean recall over the classes present in the labels
    macro_f1: float  # mean F1 over the classes labelled or predicted (a class neither labelled nor predicted: no F1)
    per_class_recall: np.ndarray  # K floats (0 for a class with no labelled image)
    confusion: np.ndarray  # K x K int64


def classification_metrics(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> ClassificationMetrics:
    """Accuracy, balanced accuracy, macro F1, per-class recall and the confusion matrix (at least one label)."""
    cm = confusion_matrix(labels, pred, n_classes)
    n = int(cm.sum())
    if n == 0:
        raise ValueError("metrics need at least one labelled image")
    tp = np.diag(cm).astype(np.float64)
    true = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    recall = np.divide(tp, true, out=np.zeros(n_classes), where=true > 0)
    f1_denominator = 2 * tp + (predicted - tp) + (true - tp)
    f1 = np.divide(2 * tp, f1_denominator, out=np.zeros(n_classes), where=f1_denominator > 0)
    return ClassificationMetrics(
        accuracy=float(tp.sum() / n),
        balanced_accuracy=float(recall[true > 0].mean()),
        macro_f1=float(f1[(true > 0) | (predicted > 0)].mean()),
        per_class_recall=recall,
        confusion=cm,
    )
