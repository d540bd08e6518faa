"""The loop's error type."""


class LoopError(RuntimeError):
    """The loop cannot do what was asked; the message says why and what to do."""
