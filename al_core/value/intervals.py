"""95 % intervals of a probe's metrics on the evaluation set, and of the gain between two probes.

- accuracy: the Wilson score interval of (correct, n) (scipy's ``binomtest(...).proportion_ci``);
- balanced accuracy and macro F1: a seeded percentile bootstrap over the evaluation images;
- the gain of one probe over another on the same images: a paired percentile bootstrap of the
  difference (both probes scored on each resample), for every metric.

The metrics are computed from confusion matrices exactly as al_core.loop.evaluation does with
scikit-learn: balanced accuracy is the mean recall over the classes present in the true labels;
macro F1 is the mean over all K classes of 2 TP / (2 TP + FP + FN), 0 for a class with no true and
no predicted image (``zero_division=0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95  # of every interval of the manager's page
BOOTSTRAP_RESAMPLES = 2000  # resamples of the evaluation set: 2000 x n_eval indices (500 images: 1 M, ~30 ms)
BOOTSTRAP_BLOCK_CELLS = 1 << 22  # indices drawn per block of resamples: 4 M x 8 B = 32 MB at most
METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


@dataclass(frozen=True)
class Interval:
    """A metric's value and its interval; ``method``: 'wilson' | 'bootstrap'."""

    value: float
    low: float
    high: float
    method: str


def wilson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a proportion: ``k`` successes out of ``n`` trials (n >= 1)."""
    from scipy.stats import binomtest

    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


# ----------------------------------------------------------------------------- metrics of confusion matrices
def confusions(y: np.ndarray, pred: np.ndarray, n_classes: int, idx: np.ndarray | None = None) -> np.ndarray:
    """Confusion matrices (rows: true class), shape (B, K, K): one per row of ``idx`` (B x n resampled
    positions), or (1, K, K) of the whole set when ``idx`` is None."""
    k2 = n_classes * n_classes
    codes = np.asarray(y, np.int64) * n_classes + np.asarray(pred, np.int64)
    if idx is None:
        return np.bincount(codes, minlength=k2).reshape(1, n_classes, n_classes)
    b = idx.shape[0]
    flat = codes[idx] + (np.arange(b, dtype=np.int64) * k2)[:, None]
    return np.bincount(flat.ravel(), minlength=b * k2).reshape(b, n_classes, n_classes)


def metrics_of(cm: np.ndarray) -> dict[str, np.ndarray]:
    """accuracy, balanced_accuracy, macro_f1 of each confusion matrix of ``cm`` (B x K x K): arrays of B, defined
    as al_core.learn.metrics defines them (macro F1 over the classes labelled or predicted)."""
    cm = np.asarray(cm, dtype=np.float64)
    diag = np.einsum("bii->bi", cm)
    true = cm.sum(axis=2)
    predicted = cm.sum(axis=1)
    n = true.sum(axis=1)
    present = true > 0
    recall = np.divide(diag, true, out=np.zeros_like(diag), where=present)
    denom = true + predicted
    f1 = np.divide(2 * diag, denom, out=np.zeros_like(diag), where=denom > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "accuracy": diag.sum(axis=1) / n,
            "balanced_accuracy": recall.sum(axis=1) / present.sum(axis=1),
            "macro_f1": f1.sum(axis=1) / (denom > 0).sum(axis=1),
        }  # the classes labelled or predicted


def _resample_blocks(n: int, n_classes: int, resamples: int, rng: np.random.Generator):
    per_block = max(1, BOOTSTRAP_BLOCK_CELLS // max(n, n_classes * n_classes))
    done = 0
    while done < resamples:
        b = min(per_block, resamples - done)
        yield rng.integers(0, n, size=(b, n))
        done += b


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(samples, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def bootstrap_metrics(
    y: Sequence[int],
    preds: Sequence[Sequence[int]],
    n_classes: int,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Every metric of each prediction vector of ``preds`` on the same ``resamples`` resamples of the
    evaluation images (drawn with replacement from ``seed``): one dict of arrays per prediction vector."""
    y = np.asarray(y, dtype=np.int64)
    preds = [np.asarray(p, dtype=np.int64) for p in preds]
    if y.size == 0:
        raise ValueError("no evaluation image to resample")
    rng = np.random.default_rng(seed)
    out: list[dict[str, list]] = [{m: [] for m in METRICS} for _ in preds]
    for idx in _resample_blocks(y.size, n_classes, resamples, rng):
        for acc, p in zip(out, preds, strict=True):
            for m, v in metrics_of(confusions(y, p, n_classes, idx)).items():
                acc[m].append(v)
    return [{m: np.concatenate(v) for m, v in acc.items()} for acc in out]


def metric_intervals(
    y: Sequence[int],
    pred: Sequence[int],
    n_classes: int,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict[str, Interval]:
    """The three metrics of one probe with their intervals: Wilson for accuracy, the bootstrap for the others."""
    y = np.asarray(y, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    point = {m: float(v[0]) for m, v in metrics_of(confusions(y, pred, n_classes)).items()}
    lo, hi = wilson_interval(int(np.sum(y == pred)), int(y.size), confidence)
    out = {"accuracy": Interval(point["accuracy"], lo, hi, "wilson")}
    boot = bootstrap_metrics(y, [pred], n_classes, resamples=resamples, seed=seed)[0]
    for m in ("balanced_accuracy", "macro_f1"):
        lo, hi = _percentiles(boot[m], confidence)
        out[m] = Interval(point[m], lo, hi, "bootstrap")
    return out


def gain_intervals(
    y: Sequence[int],
    pred_before: Sequence[int],
    pred_after: Sequence[int],
    n_classes: int,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> dict[str, Interval]:
    """Each metric's gain from ``pred_before`` to ``pred_after`` (same images, same true labels ``y``) with a
    paired bootstrap interval: both prediction vectors are scored on every resample."""
    y = np.asarray(y, dtype=np.int64)
    before, after = (metrics_of(confusions(y, p, n_classes)) for p in (pred_before, pred_after))
    b, a = bootstrap_metrics(y, [pred_before, pred_after], n_classes, resamples=resamples, seed=seed)
    out = {}
    for m in METRICS:
        lo, hi = _percentiles(a[m] - b[m], confidence)
        out[m] = Interval(float(after[m][0] - before[m][0]), lo, hi, "paired bootstrap")
    return out
