"""In-process active-learning simulation (no Dagster): the study's protocol.

Round 0: the seed strategy picks ``budget_per_round`` points from the pool
with no labels (the study: B = K). Each later round: the query strategy picks
``budget_per_round`` more, given the probe of the previous round. After every
round the oracle's labels (``targets``) of everything picked so far train the
standard probe from scratch (``al_core.learn.probe.Probe``, seeded) and its accuracy
is measured on the test set, which is never part of the pool.

The study's protocol: K classes, ``budget_per_round=K``, 20 labelled-set sizes
K, 2K, ..., 20K (``rounds=19``: round 0 plus 19 query rounds), seeds 1, 10,
100, 1000, 10000, with ``seed_strategy="centroid"`` (the study's
recommendation) or ``"random"``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from al_core.learn.probe import Probe
from al_core.learn.strategies import Strategy, get_strategy
from al_core.learn.strategies.errors import SelectionError

__all__ = ["SimulationResult", "run_simulation", "round_seed", "study_seeds", "area_under_curve", "compare_strategies"]


@dataclass(frozen=True)
class SimulationResult:
    """Outcome of :func:`run_simulation` (rounds + 1 entries in each tuple/array).

    ``accuracy[r]``: test accuracy of the probe trained on every label after
    round r (round 0 = the seed pool). ``labeled[r]``: every labelled pool index
    after round r, in labelling order (so ``labeled[r][:len(labeled[r-1])] ==
    labeled[r-1]``). ``selected[r]``: the indices picked in round r, and
    ``scores[r]`` their strategy scores.
    """

    accuracy: np.ndarray
    labeled: tuple[np.ndarray, ...]
    selected: tuple[np.ndarray, ...]
    scores: tuple[np.ndarray, ...]
    seed_strategy: str
    query_strategy: str
    seed: int

    @property
    def n_labeled(self) -> np.ndarray:
        return np.array([len(x) for x in self.labeled], dtype=np.int64)


def round_seed(seed: int, round_index: int) -> int:
    """The seed of round ``round_index`` (strategy and probe), derived from the run's seed."""
    return int(np.random.SeedSequence([int(seed), int(round_index)]).generate_state(1, np.uint32)[0])


def _resolve(strategy: str | Strategy) -> tuple[Strategy, str]:
    if isinstance(strategy, Strategy):
        return strategy, strategy.name
    return get_strategy(strategy), str(strategy)


def run_simulation(
    features: np.ndarray,
    targets: np.ndarray,
    test_features: np.ndarray,
    test_targets: np.ndarray,
    *,
    n_classes: int,
    seed_strategy: str | Strategy,
    query_strategy: str | Strategy,
    budget_per_round: int,
    rounds: int,
    seed: int,
    candidates: np.ndarray | None = None,
    progress: Callable[[int, float, int], None] | None = None,
    on_probe: Callable[[int, Probe, np.ndarray], None] | None = None,
) -> SimulationResult:
    """Simulate ``rounds`` query rounds after the seed round; return accuracy after each.

    ``targets`` are the pool's true classes in [0, n_classes) (the oracle);
    strategies only ever see the labels of points already picked.
    ``candidates`` restricts every pick to those pool indices. ``progress``,
    when given, is called after each round as ``progress(round, accuracy,
    n_labeled)``. ``on_probe``, when given, is called with ``(round, probe,
    labeled)`` once each round's probe is trained (it must not modify them;
    al_core.bench.value reads the probe's predictions on a stop set). Every
    random choice derives from ``seed`` (:func:`round_seed`), so a run is
    reproducible.
    """
    features = np.asarray(features)
    targets = np.asarray(targets).astype(np.int64)
    test_features = np.asarray(test_features, dtype=np.float32)
    test_targets = np.asarray(test_targets).astype(np.int64)
    if features.ndim != 2 or targets.shape != (features.shape[0],):
        raise SelectionError(f"targets must hold one class per pool row: {targets.shape} for features {features.shape}")
    if test_features.ndim != 2 or test_features.shape[1] != features.shape[1]:
        raise SelectionError(f"test features must be M x {features.shape[1]}, got {test_features.shape}")
    if test_targets.shape != (test_features.shape[0],) or test_targets.shape[0] == 0:
        raise SelectionError("test_targets must hold one class per test row (and the test set must not be empty)")
    for name, t in (("targets", targets), ("test_targets", test_targets)):
        if t.size and (t.min() < 0 or t.max() >= n_classes):
            raise SelectionError(f"{name} must lie in [0, n_classes={n_classes})")
    if not isinstance(rounds, (int, np.integer)) or rounds < 0:
        raise SelectionError(f"rounds must be a non-negative integer, got {rounds!r}")
    if not isinstance(budget_per_round, (int, np.integer)) or budget_per_round < 1:
        raise SelectionError(f"budget_per_round must be a positive integer, got {budget_per_round!r}")
    pool_size = features.shape[0] if candidates is None else np.unique(np.asarray(candidates)).shape[0]
    needed = (rounds + 1) * budget_per_round
    if needed > pool_size:
        raise SelectionError(
            f"{rounds + 1} rounds of {budget_per_round} need {needed} points but the pool has {pool_size}"
        )

    seed_strat, seed_name = _resolve(seed_strategy)
    query_strat, query_name = _resolve(query_strategy)
    labeled = np.empty(0, dtype=np.int64)
    accuracy = np.empty(rounds + 1, dtype=np.float64)
    history, selected, scores = [], [], []
    probe: Probe | None = None
    for r in range(rounds + 1):
        rseed = round_seed(seed, r)
        strategy = seed_strat if r == 0 else query_strat
        result = strategy.select(
            features,
            labeled,
            targets[labeled],
            budget_per_round,
            n_classes=n_classes,
            seed=rseed,
            probe=probe,
            candidates=candidates,
        )
        labeled = np.concatenate([labeled, result.indices])
        probe = Probe(n_classes, seed=rseed).fit(np.asarray(features[labeled], dtype=np.float32), targets[labeled])
        accuracy[r] = float(np.mean(probe.predict(test_features) == test_targets))
        if on_probe is not None:
            on_probe(r, probe, labeled)
        history.append(labeled.copy())
        selected.append(result.indices.copy())
        scores.append(result.scores.copy())
        if progress is not None:
            progress(r, float(accuracy[r]), int(labeled.shape[0]))
    return SimulationResult(
        accuracy=accuracy,
        labeled=tuple(history),
        selected=tuple(selected),
        scores=tuple(scores),
        seed_strategy=seed_name,
        query_strategy=query_name,
        seed=int(seed),
    )


# ----------------------------------------------------------------------------- comparing strategies
STUDY_SEED_BASE = 10  # the study's seeds are 1, 10, 100, ... (powers of this base)


def study_seeds(n: int) -> list[int]:
    """The study's seeds: 1, 10, 100, ... (n of them)."""
    return [STUDY_SEED_BASE**i for i in range(n)]


def area_under_curve(labels: Sequence[float], accuracy: Sequence[float]) -> float:
    """Mean accuracy over the label range: trapezoid area divided by the label span (the single accuracy
    for one point or a zero span; NaN for none)."""
    x = np.asarray(labels, dtype=np.float64)
    y = np.asarray(accuracy, dtype=np.float64)
    if len(y) == 0:
        return float("nan")
    if len(y) == 1 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def compare_strategies(
    features: np.ndarray,
    targets: np.ndarray,
    test_features: np.ndarray,
    test_targets: np.ndarray,
    *,
    n_classes: int,
    seed_strategy: str,
    query_strategies: Sequence[str],
    budget_per_round: int,
    rounds: int,
    seeds: Sequence[int],
    progress: Callable[[str, int, int, float, int], None] | None = None,
    finished: Callable[[str, int, SimulationResult], None] | None = None,
) -> dict[str, dict]:
    """:func:`run_simulation` for every query strategy and seed; the summary of each strategy over the seeds.

    Returns ``{strategy: {"accuracy_per_round": mean over seeds,
    "std_per_round": population std, "labels_per_round", "seeds",
    "accuracy_per_seed": one list per seed, "area_under_curve": of the mean
    curve}}``, strategies in the given order. ``progress(strategy, seed, round,
    accuracy, n_labeled)`` is called after every round, ``finished(strategy,
    seed, result)`` after every run.
    """
    per: dict[str, dict] = {}
    for name in query_strategies:
        accs: list[list[float]] = []
        labels_per_round: list[int] = []
        for seed in seeds:
            res = run_simulation(
                features,
                targets,
                test_features,
                test_targets,
                n_classes=n_classes,
                seed_strategy=seed_strategy,
                query_strategy=name,
                budget_per_round=budget_per_round,
                rounds=rounds,
                seed=seed,
                progress=None if progress is None else functools.partial(progress, name, seed),
            )
            accs.append([float(a) for a in res.accuracy])
            labels_per_round = [int(n) for n in res.n_labeled]
            if finished is not None:
                finished(name, seed, res)
        a = np.asarray(accs)
        mean = a.mean(axis=0)
        per[name] = {
            "accuracy_per_round": [float(x) for x in mean],
            "std_per_round": [float(x) for x in a.std(axis=0)],
            "labels_per_round": labels_per_round,
            "seeds": list(seeds),
            "accuracy_per_seed": accs,
            "area_under_curve": area_under_curve(labels_per_round, mean),
        }
    return per
