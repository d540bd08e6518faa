"""Stopping a child started in its own process group (``start_new_session=True``): the daemon, the webserver, a
Label Studio server, benchmark workers. One implementation, so every caller escalates the same way."""

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence

STOP_GRACE_S = 30.0  # SIGTERM, then this long for the group to exit, then SIGKILL
KILL_WAIT_S = 10.0  # after SIGKILL: how long to wait for the reaped exit status


def stop_groups(procs: Sequence[subprocess.Popen], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the process group of every running ``procs``; wait up to ``grace_s`` seconds in all; SIGKILL the
    groups still alive. A group already gone is not an error."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=KILL_WAIT_S)


def stop_group(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """``stop_groups([proc], grace_s)``."""
    stop_groups([proc], grace_s)
