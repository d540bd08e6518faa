"""Selection strategies: one registry, one call.

    from al_core.learn.strategies import get_strategy, list_strategies
    result = get_strategy("dropquery").select(
        features, labeled, labels, budget, n_classes=K, seed=0)
    result.indices, result.scores

Every strategy follows ``docs/algorithms.md``; see each class's
docstring for its exact behaviour and the meaning of its scores.
"""

from __future__ import annotations

from al_core.learn.strategies import errors
from al_core.learn.strategies.alfa_mix import AlfaMixStrategy
from al_core.learn.strategies.badge import BadgeStrategy
from al_core.learn.strategies.base import SelectionResult, Strategy
from al_core.learn.strategies.centroid import CentroidStrategy
from al_core.learn.strategies.coreset import CoresetStrategy
from al_core.learn.strategies.dropquery import DropQueryStrategy
from al_core.learn.strategies.errors import *  # noqa: F403 (every error, re-exported: errors.__all__)
from al_core.learn.strategies.probcover import ProbCoverStrategy
from al_core.learn.strategies.random_sampling import RandomStrategy
from al_core.learn.strategies.typiclust import TypiclustStrategy
from al_core.learn.strategies.uncertainty import (
    BaldStrategy,
    EntropyStrategy,
    LeastConfidenceStrategy,
    MarginStrategy,
    PowerBaldStrategy,
)

__all__ = [
    "list_strategies",
    "get_strategy",
    "seed_strategies",
    "SelectionResult",
    "Strategy",
    "UnknownStrategyError",
    *errors.__all__,
]

_REGISTRY: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        RandomStrategy,
        CentroidStrategy,
        TypiclustStrategy,
        ProbCoverStrategy,
        LeastConfidenceStrategy,
        MarginStrategy,
        EntropyStrategy,
        BaldStrategy,
        PowerBaldStrategy,
        CoresetStrategy,
        BadgeStrategy,
        AlfaMixStrategy,
        DropQueryStrategy,
    )
}


class UnknownStrategyError(KeyError):
    """No strategy of that name is registered."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0])


def list_strategies() -> list[str]:
    """Names of every registered strategy, in the specification's order."""
    return list(_REGISTRY)


def seed_strategies() -> list[str]:
    """Strategies usable with no labels (as seed-pool strategies)."""
    return [name for name, cls in _REGISTRY.items() if not cls.needs_labels]


def get_strategy(name: str, **params) -> Strategy:
    """A new strategy instance; ``params`` are its keyword parameters (see its docstring).

    The parameters are checked here as well as at every ``select`` (the constructor only
    stores them), so a bad name or value fails where the strategy is configured.
    """
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise UnknownStrategyError(f"unknown strategy {name!r}; known: {', '.join(_REGISTRY)}") from None
    try:
        strategy = cls(**params)
    except TypeError as exc:
        raise errors.InvalidParameterError(f"strategy {name!r}: {exc}") from None
    strategy.validate_params()
    return strategy
