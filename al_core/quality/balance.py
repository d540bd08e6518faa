"""Class balance of a round: training labels per class, the probe's predicted share of each class on the pool,
and the imbalance warnings.

A class is flagged when it has no training label, or when it holds fewer than
``floor`` x an even share of the labels (``floor * L / K``; the setting
``quality.class_floor``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ClassBalance", "class_balance"]


@dataclass(frozen=True)
class ClassBalance:
    classes: tuple[str, ...]
    label_counts: tuple[int, ...]  # training labels per class
    predicted_share: tuple[float, ...]  # share of the pool the probe predicts as each class (0 without a pool)
    floor: float
    warnings: tuple[str, ...]

    def as_dict(self) -> dict:
        return {
            "label_counts": dict(zip(self.classes, self.label_counts, strict=True)),
            "predicted_share": dict(zip(self.classes, self.predicted_share, strict=True)),
            "floor": self.floor,
            "warnings": list(self.warnings),
        }


def class_balance(
    classes: Sequence[str], labels: np.ndarray, pool_predictions: np.ndarray, floor: float
) -> ClassBalance:
    """``labels``: the training labels (class indices); ``pool_predictions``: the probe's class of every pool
    image (indices); ``floor``: the share of an even split under which a class is flagged."""
    k = len(classes)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=k)[:k]
    pred = np.bincount(np.asarray(pool_predictions, dtype=np.int64), minlength=k)[:k]
    share = pred / pred.sum() if pred.sum() else np.zeros(k)
    n = int(counts.sum())
    even = n / k if k else 0.0
    warnings = []
    for c, name in enumerate(classes):
        if counts[c] == 0:
            warnings.append(
                f"class {name!r} has no training label yet (the probe predicts it for {share[c]:.1%} of the pool)"
            )
        elif counts[c] < floor * even:
            warnings.append(
                f"class {name!r} has {counts[c]} of {n} training labels, under {floor:g} x an even "
                f"share ({even:.1f}); the probe predicts it for {share[c]:.1%} of the pool"
            )
    return ClassBalance(
        tuple(classes), tuple(int(x) for x in counts), tuple(float(x) for x in share), float(floor), tuple(warnings)
    )
