"""The exit statuses of every `al` command: one table, used by all of them (docs/architecture.md)."""

import enum


class Exit(enum.IntEnum):
    OK = 0  # done
    FAILED = 1  # the command ran and the answer is no: an invalid label file, a problem with the data
    USAGE = 2  # wrong arguments, or the project file is missing or invalid (the message names the fix)
    LOCKED = 3  # retryable: another process held the database for the whole lock-retry window
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), nothing half-written


DESCRIPTIONS = {
    Exit.OK: "done",
    Exit.FAILED: "the command ran and failed or found a problem (the message says what)",
    Exit.USAGE: "wrong arguments, or the project file is missing or invalid",
    Exit.LOCKED: "the database stayed locked by another process for store.lock_timeout_s: retry",
    Exit.INTERRUPTED: "interrupted (Ctrl-C)",
}
