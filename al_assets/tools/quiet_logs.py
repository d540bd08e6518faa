"""A job run in this process, quiet on the terminal: the tool's own lines there, every Dagster event in a file.

``quiet_job(job, log_path)`` gives the job two loggers instead of Dagster's console logger (which prints every
DEBUG event: step starts, outputs, handled outputs...): ``al_terminal`` prints the messages the steps log
themselves (``context.log.info``: scan and embedding progress) and every warning or error, one line each;
``al_file`` writes every event, DEBUG included, to ``log_path``.
"""

import logging
import sys
import time
from pathlib import Path

import dagster as dg

LOG_RECORD_METADATA_ATTR = "dagster_meta"  # where Dagster's log manager puts a record's metadata (step, event)


def _meta(record: logging.LogRecord) -> dict:
    return getattr(record, LOG_RECORD_METADATA_ATTR, None) or {}


class ToolLinesOnly(logging.Filter):
    """Warnings and errors, and the messages the steps log themselves (no Dagster event attached)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or (
            record.levelno >= logging.INFO and _meta(record).get("dagster_event") is None
        )


class ToolLineFormatter(logging.Formatter):
    """``[ingest 12:03:04] embeddings: embedding: 640/1200 images ...``: the step and its own message."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        meta = _meta(record)
        step = meta.get("step_key")
        level = "" if record.levelno < logging.WARNING else f"{record.levelname}: "
        text = meta.get("orig_message") or record.getMessage()
        error = _error_line(meta.get("dagster_event"))
        if error and error not in text:
            text = f"{text.rstrip('.')}: {error}"
        return (
            f"[{self.prefix} {time.strftime('%H:%M:%S', time.localtime(record.created))}] {level}"
            f"{step + ': ' if step else ''}{text}"
        )


def _error_line(event) -> str | None:
    """The first line of a failed step's error (a ``dg.Failure``'s description: the tool's one-line message)."""
    error = getattr(getattr(event, "event_specific_data", None), "error", None)
    message = getattr(error, "message", None)
    if not message:
        return None
    first = message.strip().splitlines()[0]
    return first.split("Failure: ", 1)[-1] if first.startswith("dagster.") else first


def _logger(name: str, handler: logging.Handler, level: int) -> logging.Logger:
    lg = logging.getLogger(name)
    lg.handlers.clear()
    lg.propagate = False
    lg.setLevel(level)
    handler.setLevel(level)
    lg.addHandler(handler)
    return lg


@dg.logger(config_schema={"prefix": dg.Field(str, default_value="dagster")})
def terminal_logger(init_context) -> logging.Logger:
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(ToolLinesOnly())
    handler.setFormatter(ToolLineFormatter(init_context.logger_config["prefix"]))
    return _logger("al_terminal", handler, logging.INFO)


@dg.logger(config_schema={"path": str})
def file_logger(init_context) -> logging.Logger:
    path = Path(init_context.logger_config["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    return _logger("al_file", handler, logging.DEBUG)


def quiet_job(job: dg.JobDefinition, log_path: Path, prefix: str = "dagster") -> tuple[dg.JobDefinition, dict]:
    """(``job`` with the terminal and file loggers, the run config that sets them up)."""
    loggers = {"al_terminal": terminal_logger, "al_file": file_logger}
    return job.with_logger_defs(loggers), {
        "loggers": {"al_terminal": {"config": {"prefix": prefix}}, "al_file": {"config": {"path": str(log_path)}}}
    }
