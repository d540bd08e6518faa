"""Agreement between annotators, and cleanlab's multi-annotator scores.

Input: votes, one (image_id, annotator, class) per annotator and image (the
annotator's latest answer), and the final label of each image (the one trained
on). :func:`agreement` computes:

- per image with two or more votes: the votes per class and the agreement, the
  share of agreeing annotator pairs (Fleiss' P_i: sum n_ij (n_ij - 1) / n (n - 1));
- per annotator pair with common images: Cohen's kappa over those images
  (:func:`sklearn.metrics.cohen_kappa_score` on the project's classes) and per
  class (the kappa of "class c or not" for both);
- Fleiss' kappa of the group (:func:`statsmodels.stats.inter_rater.fleiss_kappa`),
  over the images with the most common number m >= 2 of votes (Fleiss' kappa
  needs the same number of ratings per image; ``fleiss_m`` and
  ``fleiss_images`` say which);
- per annotator: the share of its votes equal to the final label.

Kappa is None where it is undefined (fewer than two common images, or one
class only: sklearn returns NaN there). :func:`consensus` and
:func:`active_learning_scores` wrap cleanlab's CROWDLAB consensus and ActiveLab
scores on an N x M matrix of votes (NaN: no vote).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np

__all__ = ["active_learning_scores", "agreement", "consensus", "vote_matrix"]

MIN_COMMON_IMAGES = 2  # a pair's kappa needs at least this many images both annotators labelled


def _kappa(a: Sequence, b: Sequence, labels=None) -> float | None:
    from sklearn.metrics import cohen_kappa_score

    if len(a) < MIN_COMMON_IMAGES:
        return None
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)  # sklearn's UndefinedMetricWarning: one class only (None)
        k = float(cohen_kappa_score(a, b, labels=labels))
    return None if math.isnan(k) else k


def _fleiss(per_image: dict[str, Counter], classes: Sequence[str]) -> tuple[float | None, int, int]:
    """(Fleiss' kappa, m, images) over the images with the most common number m >= 2 of votes."""
    from statsmodels.stats.inter_rater import fleiss_kappa

    sizes = Counter(sum(c.values()) for c in per_image.values() if sum(c.values()) >= 2)
    if not sizes:
        return None, 0, 0
    m = max(sizes, key=lambda s: (sizes[s], s))
    table = np.array([[c.get(k, 0) for k in classes] for c in per_image.values() if sum(c.values()) == m])
    if table.shape[0] < MIN_COMMON_IMAGES:
        return None, m, int(table.shape[0])
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        k = float(fleiss_kappa(table, method="fleiss"))
    return (None if math.isnan(k) else k), m, int(table.shape[0])


def agreement(votes: Sequence[tuple[str, str, str]], final: Mapping[str, str], classes: Sequence[str]) -> dict:
    """The agreement figures of the module docstring, as a dict (JSON-ready).

    Keys: n_images_multi (images with two or more votes), annotators, images (image_id, votes {class: n},
    n_votes, agreement, final), pairs (a, b, n_common, kappa, per_class {class: kappa}), fleiss_kappa, fleiss_m,
    fleiss_images, annotator_agreement {annotator: {n, agreement_with_final}}, overall_kappa (the mean of the
    pairs' kappas, weighted by common images; None without a pair).
    """
    classes = list(classes)
    by_image: dict[str, dict[str, str]] = defaultdict(dict)
    for iid, who, label in votes:
        by_image[iid][who] = label
    counts = {iid: Counter(v.values()) for iid, v in by_image.items()}
    images = []
    for iid, c in sorted(counts.items()):
        n = sum(c.values())
        if n < 2:
            continue
        images.append(
            {
                "image_id": iid,
                "votes": dict(sorted(c.items())),
                "n_votes": n,
                "agreement": sum(x * (x - 1) for x in c.values()) / (n * (n - 1)),
                "final": final.get(iid),
            }
        )
    annotators = sorted({who for v in by_image.values() for who in v})
    pairs = []
    for a, b in combinations(annotators, 2):
        common = sorted(iid for iid, v in by_image.items() if a in v and b in v)
        la, lb = [by_image[i][a] for i in common], [by_image[i][b] for i in common]
        per_class = {c: _kappa([x == c for x in la], [y == c for y in lb], labels=[False, True]) for c in classes}
        pairs.append(
            {"a": a, "b": b, "n_common": len(common), "kappa": _kappa(la, lb, labels=classes), "per_class": per_class}
        )
    fk, fm, fn = _fleiss({i: c for i, c in counts.items()}, classes)
    per_ann = {}
    for who in annotators:
        mine = [(iid, v[who]) for iid, v in by_image.items() if who in v and iid in final]
        agree = sum(lab == final[iid] for iid, lab in mine)
        per_ann[who] = {"n": len(mine), "agreement_with_final": agree / len(mine) if mine else None}
    weighted = [(p["kappa"], p["n_common"]) for p in pairs if p["kappa"] is not None]
    overall = (sum(k * n for k, n in weighted) / sum(n for _, n in weighted)) if weighted else None
    return {
        "n_images_multi": len(images),
        "annotators": annotators,
        "images": images,
        "pairs": pairs,
        "fleiss_kappa": fk,
        "fleiss_m": fm,
        "fleiss_images": fn,
        "annotator_agreement": per_ann,
        "overall_kappa": overall,
    }


def vote_matrix(votes: Sequence[tuple[str, str, int]], image_ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """(N x M float matrix of class indices, NaN where an annotator gave no vote; the M annotators) for the images
    ``image_ids`` in that order, from (image_id, annotator, class index) votes (votes of other images ignored)."""
    pos = {iid: i for i, iid in enumerate(image_ids)}
    annotators = sorted({who for iid, who, _ in votes if iid in pos})
    col = {who: j for j, who in enumerate(annotators)}
    m = np.full((len(image_ids), len(annotators)), np.nan)
    for iid, who, k in votes:
        if iid in pos:
            m[pos[iid], col[who]] = k
    return m, annotators


def consensus(matrix: np.ndarray, pred_probs: np.ndarray) -> dict:
    """cleanlab's CROWDLAB (``get_label_quality_multiannotator``): consensus_label (int N), consensus_quality
    (float N, low = unsure), annotator_quality {column: score}. Every row needs at least one vote."""
    from cleanlab.multiannotator import get_label_quality_multiannotator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = get_label_quality_multiannotator(matrix, np.asarray(pred_probs, np.float64), verbose=False)
    lq = r["label_quality"]
    return {
        "consensus_label": lq["consensus_label"].to_numpy().astype(np.int64),
        "consensus_quality": lq["consensus_quality_score"].to_numpy().astype(np.float64),
        "annotator_quality": {int(k): float(v) for k, v in r["annotator_stats"]["annotator_quality"].items()},
    }


def active_learning_scores(
    matrix: np.ndarray, pred_probs: np.ndarray, pred_probs_unlabeled: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab's ActiveLab scores (``get_active_learning_scores``) of the labelled rows (N x M votes, out-of-fold
    ``pred_probs``) and of the unlabelled ones, on one scale: the lowest are the most worth a (new) label."""
    from cleanlab.multiannotator import get_active_learning_scores

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = get_active_learning_scores(
            matrix,
            np.asarray(pred_probs, np.float64),
            None if pred_probs_unlabeled is None else np.asarray(pred_probs_unlabeled, np.float64),
        )
    return np.asarray(a, np.float64), np.asarray(b, np.float64)
