"""The errors of the backbone package (al_core.models)."""

from __future__ import annotations


class BackboneError(RuntimeError):
    """Base class of the errors raised by al_core.models."""


class UnknownBackboneError(BackboneError, ValueError):
    """No backbone of that name is registered."""


class WeightsUnavailableError(BackboneError, FileNotFoundError):
    """The weights are not on this machine and cannot be downloaded."""


class WeightsRejectedError(BackboneError):
    """A weights file failed its sha256 check or the restricted (weights_only) loader."""
