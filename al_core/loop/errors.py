"""The loop's error type."""


class LoopError(RuntimeError):
    """The loop cannot do what was asked; the message says why and what to do."""


class ValidationUnavailable(LoopError):
    """The inputs a label file is validated against cannot be read (no database yet, a locked or unreadable one,
    no class list) or no longer fit the labels (al_core.loop.class_changes.ClassListChanged): nothing can be
    judged now."""
