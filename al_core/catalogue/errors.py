"""The store's errors: what a user must act on, with the message saying what."""


class StoreError(RuntimeError):
    """A store problem the user must act on (message says what)."""


class StoreLockedError(StoreError):
    """Another process holds the database; retry later (retryable)."""


class SchemaVersionError(StoreError):
    """The database was written by a newer al-pipeline, or is not ours."""


REPAIR_COMMAND = "al verify --repair"  # what every damaged-part message names


class PartDamaged(StoreError):
    """A committed vector part file is missing, truncated or not what the catalogue recorded.

    ``rel_path``: the part, relative to the vectors folder; the message names the file and the repair command.
    """

    def __init__(self, path: str, reason: str, rel_path: str | None = None):
        super().__init__(
            f"vector part {path} is damaged ({reason}): run `{REPAIR_COMMAND}` to drop it, "
            "then `al ingest` embeds its images again"
        )
        self.path, self.reason, self.rel_path = path, reason, rel_path


class NonFiniteVectors(ValueError):
    """Vectors with NaN or infinite values were offered to the part writer; ``image_ids`` names their images."""

    def __init__(self, image_ids, names=None):
        self.image_ids = list(image_ids)
        shown = ", ".join(names or self.image_ids[:5])
        more = f" and {len(self.image_ids) - 5} more" if len(self.image_ids) > 5 and not names else ""
        super().__init__(f"refusing to store non-finite embedding vectors (NaN or inf) of {shown}{more}")
