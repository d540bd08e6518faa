"""One way to run a real Label Studio server in the tests.

``running_label_studio(data_dir, image_root, **kwargs)`` is a context manager: it runs ``make labelstudio`` (cached
by its stamp: instant once installed), starts al_core.labelstudio.server.LabelStudioServer on a free port on
127.0.0.1 with its data under ``data_dir``, yields ``(url, token, client, server)``, and stops the server's whole
process group at the end, also when the test failed. It FAILS the test (never skips) when Label Studio cannot be
installed or started: a missing Label Studio is a broken build, not an optional extra.
"""

import contextlib
import subprocess
import time
from pathlib import Path

import pytest

from al_core.labelstudio.client import LabelStudioClient
from al_core.labelstudio.server import LabelStudioError, LabelStudioServer
from tests.conftest import ROOT

INSTALL_TIMEOUT_S = 1200  # a first `make labelstudio` downloads ~200 packages: 3-4 minutes here, more on a slow mirror
TIMINGS: dict[str, float] = {}  # seconds: "install" (the make call), "start" (each start, the last one)


def ensure_label_studio() -> None:
    """``make labelstudio`` (a no-op once .venv-labelstudio/.installed is newer than the Makefile)."""
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            ["make", "--no-print-directory", "labelstudio"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`make labelstudio` did not finish within {INSTALL_TIMEOUT_S} s")
    TIMINGS["install"] = time.monotonic() - t0
    if done.returncode != 0:
        pytest.fail(f"`make labelstudio` failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")


@contextlib.contextmanager
def running_label_studio(data_dir: Path, image_root: Path, **kwargs):
    """A started Label Studio: yields (url, token, client of the first account, server)."""
    ensure_label_studio()
    server = LabelStudioServer(data_dir, image_root, **kwargs)
    try:
        server.start()
    except LabelStudioError as e:
        pytest.fail(f"Label Studio did not start: {e}")
    TIMINGS["start"] = server.started_s
    try:
        yield server.url, server.account.token, LabelStudioClient(server.url, server.account.token), server
    finally:
        server.stop()
