"""The stabilising-predictions stop rule (Bloodgood and Vijay-Shanker, 2009, "A method for stopping active
learning based on stabilizing predictions and the need for user-adjustable stopping").

A fixed *stop set* (a seeded sample of STOP_SET_SIZE images of the unlabelled pool, drawn once) is
predicted by every round's probe. The agreement of two successive probes on it is Cohen's kappa
(scikit-learn's ``cohen_kappa_score``); the rule suggests stopping at the first round whose kappa, and
the kappas of the ``window - 1`` rounds before it, are all at least ``threshold`` (the paper's 0.99 and
a window of 3 are the defaults: ``selection.stop_kappa``, ``selection.stop_window``).

Round r's kappa compares probe r with probe r - 1, so when the predictions stop changing after probe s
(probe s + 1 predicts what probe s did, and so on), kappas s + 1, s + 2, ... are 1 and the rule fires at
round s + window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

STOP_SET_SIZE = 2000  # images (the paper's size); each probe's predictions on it: 2,000 rows (~100 KB) per round
STOP_SET_SALT = 14  # mixed into selection.seed, so the stop set is not the seed strategy's random draw


def draw_stop_set(candidates: Sequence[str], seed: int, size: int = STOP_SET_SIZE) -> list[str]:
    """``size`` ids (all when fewer) drawn without replacement from ``candidates`` (sorted first, so the
    draw depends only on the set and ``seed``); returned sorted."""
    ids = sorted(set(candidates))
    if len(ids) <= size:
        return ids
    rng = np.random.default_rng([int(seed), STOP_SET_SALT])
    return sorted(ids[i] for i in rng.choice(len(ids), size=size, replace=False))


def kappa(before: Sequence, after: Sequence) -> float:
    """Cohen's kappa of two prediction vectors of the same images; 1.0 when they are identical (kappa is
    undefined, 0/0, when both predict one single class)."""
    from sklearn.metrics import cohen_kappa_score

    a, b = np.asarray(before), np.asarray(after)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two prediction vectors of the same non-zero length, got {a.shape} and {b.shape}")
    if np.array_equal(a, b):
        return 1.0
    return float(cohen_kappa_score(a, b))


def paired_kappa(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[float | None, int]:
    """(kappa on the images both probes predicted, their number); (None, 0) when they share none."""
    common = sorted(before.keys() & after.keys())
    if not common:
        return None, 0
    return kappa([before[i] for i in common], [after[i] for i in common]), len(common)


@dataclass(frozen=True)
class StopDecision:
    """The rule's verdict after the last round: ``fired_round`` (None: not yet), the kappas it looked at,
    and a one-line ``reason`` in plain words."""

    stop: bool
    fired_round: int | None
    threshold: float
    window: int
    last_kappa: float | None
    stable_rounds: int  # the last rounds in a row at or above the threshold
    reason: str


def first_firing(kappas: Sequence[float | None], threshold: float, window: int) -> int | None:
    """The first index i such that kappas[i - window + 1 .. i] are all >= threshold (None entries break a
    run), or None."""
    run = 0
    for i, k in enumerate(kappas):
        run = run + 1 if k is not None and np.isfinite(k) and k >= threshold else 0
        if run >= window:
            return i
    return None


def decide(kappa_by_round: Mapping[int, float | None], threshold: float, window: int) -> StopDecision:
    """The stop rule on ``{round: kappa with the round before}`` (rounds in order; a missing round breaks
    a run of stable rounds)."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    rounds = sorted(kappa_by_round)
    series: list[float | None] = []
    index_round: list[int] = []
    for r in range(rounds[0], rounds[-1] + 1) if rounds else []:
        series.append(kappa_by_round.get(r))
        index_round.append(r)
    i = first_firing(series, threshold, window)
    stable = 0
    for k in reversed(series):
        if k is None or not np.isfinite(k) or k < threshold:
            break
        stable += 1
    last = next((k for k in reversed(series) if k is not None), None)
    if i is not None:
        r = index_round[i]
        reason = (
            f"the model's predictions have stopped changing: agreement (Cohen's kappa) between successive "
            f"rounds at or above {threshold:g} for {window} rounds in a row (since round {r - window + 1})"
        )
        return StopDecision(True, r, threshold, window, last, stable, reason)
    if last is None:
        reason = "no two successive rounds to compare yet"
    else:
        reason = (
            f"the model's predictions still change: agreement with the round before {last:.3f}; the rule "
            f"wants at least {threshold:g} for {window} rounds in a row ({stable} so far)"
        )
    return StopDecision(False, None, threshold, window, last, stable, reason)
