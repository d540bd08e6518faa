"""The errors of a select call: every one a SelectionError (a ValueError) that names the problem."""

from __future__ import annotations

__all__ = [
    "BudgetTooLargeError",
    "DuplicateIndexError",
    "EmptyPoolError",
    "InvalidFeaturesError",
    "InvalidIndicesError",
    "InvalidLabelsError",
    "InvalidParameterError",
    "LabelsRequiredError",
    "SelectionError",
]


class SelectionError(ValueError):
    """Invalid input to a selection strategy."""


class InvalidFeaturesError(SelectionError):
    """features is not a finite 2-D numeric array."""


class InvalidIndicesError(SelectionError):
    """labeled or candidates are not valid row indices."""


class DuplicateIndexError(InvalidIndicesError):
    """An index appears twice in labeled or in candidates."""


class InvalidLabelsError(SelectionError):
    """labels do not match labeled or lie outside [0, n_classes)."""


class EmptyPoolError(SelectionError):
    """No row to pick from (no features, or every candidate already labelled)."""


class BudgetTooLargeError(SelectionError):
    """The budget exceeds the number of unlabelled candidates."""


class LabelsRequiredError(SelectionError):
    """A strategy that needs labels was called with none."""


class InvalidParameterError(SelectionError):
    """A strategy parameter, the budget, n_classes, seed or probe is invalid."""
