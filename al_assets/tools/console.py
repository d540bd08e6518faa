"""What `make ui` shows on its terminal (issue 12, item 8): the tool's own lines, warnings and errors.

Every line the daemon, the webserver and the runs they start print goes to a log file (``ConsoleTee``); the
terminal gets (``LineFilter``), each Dagster line shortened as the tool's own lines look (``compact``):

- the runs' and the sensor's own lines: what a step or a sensor tick logs itself (``context.log.info``: scan
  and embedding progress, a round's status, the label files a tick found), which Dagster prints at INFO under
  the logger ``dagster``;
- every warning and error, with the indented lines that follow it (a traceback);
- lines not in Dagster's format (a tool's own print, a crash's traceback);

and not Dagster's DEBUG events (step starts, outputs, handled outputs), the INFO chatter of the daemon, the
webserver and the code servers (a line per sensor tick, per run-monitoring pass, per code server start), nor
the few Dagster warnings nobody can act on (DAGSTER_NOISE).
A line shown less than REPEAT_EVERY_S ago (its time stamp, run ids and process ids aside) is written to the log
file only (``RepeatGate``); the next time it is shown it says how many were held back.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

REPEAT_EVERY_S = 30.0  # the same line on the terminal at most this often (a sensor tick can come every second)
RUN_LOGGER = "dagster"  # Dagster's console logger in a run: INFO lines there are the steps' own messages
SHOWN_LEVELS = frozenset({"WARNING", "ERROR", "CRITICAL"})
DAGSTER_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d (?P<time>\d\d:\d\d:\d\d)(?:[.,]\d+)? [+-]\d{4} - (?P<logger>[\w.\-]+) - "
    r"(?P<level>[A-Z]+) - (?P<msg>.*)$"
)
# a run's line: "<job> - <run id> - [<pid> - ][<step> - ]<text>"
RUN_MESSAGE = re.compile(r"^(?P<job>\S+) - [0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12} - (?:\d+ - )?(?P<text>.*)$")
# a sensor's line (its context.log, printed by the daemon): "<repository> - <sensor> - <text>"
SENSOR_MESSAGE = re.compile(r"^[\w.-]+ - (?P<sensor>[\w.-]+) - (?P<text>.*)$")
# Dagster's own lines that say nothing a user can act on: hidden from the terminal, kept in the log
DAGSTER_NOISE = (
    "No heartbeat received in",  # a finished run's code server stopping itself (WARNING, after every run)
    "No cursor for event type",  # the event log consumer on a fresh instance (WARNING, once per event type)
    "due to skipped dependencies",  # the steps a round run skips when it only waited (its own line says why)
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:[.,]\d+)? [+-]\d{4} - |^\[[\w .-]+ \d\d:\d\d:\d\d\] ")
_IDS = re.compile(r"\b[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}\b|\b[0-9a-f]{12,64}\b| - \d+ - ")


def repeat_key(line: str) -> str:
    """``line`` without its time stamp, run ids, hashes and process ids: what makes two lines "the same"."""
    return _IDS.sub(" <id> ", _STAMP.sub("", ANSI.sub("", line))).strip()


class RepeatGate:
    """Lets a line through at most once every ``every_s`` seconds per ``repeat_key``; counts the rest."""

    def __init__(self, every_s: float = REPEAT_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.every_s, self.clock = every_s, clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, line: str) -> str | None:
        """The line to show (with a note of the ones held back since it was last shown), or None."""
        key, now = repeat_key(line), self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        held = self._held.pop(key, 0)
        return f"{line} ({held} more like it in the last {now - last:.0f} s: see the log)" if held else line


def compact(m: re.Match) -> str:
    """A Dagster line as the tool's lines look (al_assets.tools.quiet_logs): ``[round_job 03:41:05] round_labels:
    answered (10/10)``, ``[dagster.daemon.SensorDaemon 03:41:07] WARNING: ...``."""
    level = "" if m["level"] == "INFO" else f"{m['level']}: "
    run = RUN_MESSAGE.match(m["msg"]) if m["logger"] == RUN_LOGGER else None
    if run is None:
        sensor = SENSOR_MESSAGE.match(m["msg"]) if m["logger"] == RUN_LOGGER else None
        if sensor is not None:
            return f"[{sensor['sensor']} {m['time']}] {level}{sensor['text']}"
        return f"[{m['logger']} {m['time']}] {level}{m['msg']}"
    step, sep, rest = run["text"].partition(" - ")
    text = f"{step}: {rest}" if sep and " " not in step else run["text"]
    return f"[{run['job']} {m['time']}] {level}{text}"


class LineFilter:
    """Which lines of one output stream the terminal shows (see the module docstring); one per stream, since a
    line's indented continuation follows the line it continues."""

    def __init__(self, gate: RepeatGate):
        self.gate = gate
        self.showing = True  # whether the last head line was shown: its indented continuation lines follow it

    def __call__(self, line: str) -> str | None:
        plain = ANSI.sub("", line)
        m = DAGSTER_LINE.match(plain)
        if m is None and (not plain.strip() or plain[:1].isspace()):
            return line if self.showing else None  # a continuation (a traceback's frames, a multi-line message)
        if m is None:
            self.showing = True
            return self.gate(line)
        self.showing = (m["level"] in SHOWN_LEVELS or (m["logger"] == RUN_LOGGER and m["level"] == "INFO")) and not any(
            n in m["msg"] for n in DAGSTER_NOISE
        )
        return self.gate(compact(m)) if self.showing else None


class ConsoleTee:
    """Pumps child processes' output: every line into ``log``, the lines ``LineFilter`` keeps onto ``out``."""

    def __init__(self, log_path: Path, out: IO[str], gate: RepeatGate | None = None):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if log_path.exists():  # the previous session's log is kept once
            log_path.replace(log_path.with_name(log_path.name + ".1"))
        self.log_path, self.out = log_path, out
        self.gate = gate or RepeatGate()
        self._log = open(log_path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115 (closed by close())
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def say(self, line: str) -> None:
        """A line of the tool itself: on the terminal and in the log."""
        with self._lock:
            self._write(line, line)

    def _write(self, line: str, shown: str | None) -> None:
        # a full disk, or a stream still talking after close(): the terminal still gets its lines
        with contextlib.suppress(OSError, ValueError):
            self._log.write(line + "\n")
            self._log.flush()
        if shown is not None:
            with contextlib.suppress(OSError, ValueError):  # the terminal went away: the log still gets everything
                print(shown, file=self.out, flush=True)

    def pump(self, stream: IO[bytes]) -> None:
        """Read ``stream`` to its end in a thread."""
        filt = LineFilter(self.gate)

        def run():
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._lock:
                    self._write(line, filt(line))

        t = threading.Thread(target=run, name="al-ui-console", daemon=True)
        t.start()
        self._threads.append(t)

    def close(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the streams to end (their processes stopped), then close the log."""
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._log.close()
