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
