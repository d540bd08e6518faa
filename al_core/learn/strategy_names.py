"""The strategy names as data, readable without importing torch (outside the strategies package,
whose __init__ imports every strategy and torch).

The project file is validated with these names when it loads (al_core.config),
which must stay cheap: the code location never imports torch. The registry in
``al_core.learn.strategies`` is held equal to this table by
tests/test_strategies.py (``test_names_table_matches_the_registry``).
"""

# name -> whether the strategy needs labels (False: usable for the seed pool), in the specification's order
STRATEGY_NEEDS_LABELS: dict[str, bool] = {
    "random": False,
    "centroid": False,
    "typiclust": False,
    "probcover": False,
    "least_confidence": True,
    "margin": True,
    "entropy": True,
    "bald": True,
    "power_bald": True,
    "coreset": True,
    "badge": True,
    "alfa_mix": True,
    "dropquery": True,
}


def strategy_names() -> tuple[str, ...]:
    return tuple(STRATEGY_NEEDS_LABELS)


def seed_strategy_names() -> tuple[str, ...]:
    return tuple(n for n, needs in STRATEGY_NEEDS_LABELS.items() if not needs)


# strategies with a `class_balance` parameter (selection.class_balance: quotas at their diverse pick); held equal to
# the registry by tests/test_quality.py
CLASS_BALANCE_STRATEGIES: tuple[str, ...] = ("dropquery",)

# name -> what a pick's score means, in a few words (the outbox CSV's `score_means` column and the review gallery;
# each strategy's docstring says it in full). `relabel` and `adjudication` rows are images asked again.
SCORE_MEANING: dict[str, str] = {
    "random": "no score: a random pick",
    "centroid": "distance to its cluster's centre (lower = more typical)",
    "typiclust": "typicality in its cluster (higher = more typical)",
    "probcover": "pool points it newly covers (higher = covers more)",
    "least_confidence": "probability of the predicted class (lower = less sure)",
    "margin": "top-two probability gap (lower = less sure)",
    "entropy": "entropy of the prediction (higher = less sure)",
    "bald": "BALD mutual information over dropout passes (higher = less sure)",
    "power_bald": "log BALD plus noise (higher = less sure)",
    "coreset": "distance to the nearest labelled or picked image (higher = less covered)",
    "badge": "gradient-embedding distance to the picks before it (higher = more novel)",
    "alfa_mix": "anchors whose mix flips the prediction (higher = less stable)",
    "dropquery": "dropout passes that changed the prediction (higher = less stable)",
    "relabel": "label quality of the current label (lower = more suspect): asked again",
    "adjudication": "no score: its annotators disagreed and it is asked again to decide",
}
WHY_PICKED: dict[str, str] = {
    "relabel": "its label looks suspect (label quality)",
    "adjudication": "its annotators disagreed",
}


def why_picked(strategy: str) -> str:
    """One phrase: why a batch row was picked (its strategy's reason)."""
    return WHY_PICKED.get(strategy, f"picked by {strategy}: {SCORE_MEANING.get(strategy, 'its score')}")
