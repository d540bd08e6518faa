"""The store's errors: what a user must act on, with the message saying what."""


class StoreError(RuntimeError):
    """A store problem the user must act on (message says what)."""


class StoreLockedError(StoreError):
    """Another process holds the database; retry later (retryable)."""


class SchemaVersionError(StoreError):
    """The database was written by a newer al-pipeline, or is not ours."""
