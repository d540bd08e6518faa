"""Starting and stopping a real `dagster dev` (webserver + daemon) for a project: the tests and `al bench round`.

``DagsterDev(home, cfg_path, log_path, root=REPO)`` is a context manager: it
starts `dagster dev -h 127.0.0.1 -p <free port> -w ROOT/workspace.yaml` in its
own process group (so SIGTERM reaches the daemon, the code servers and the run
workers), with ``DAGSTER_HOME=home`` and ``AL_CONFIG=cfg_path``, waits until
``/server_info`` answers, and on exit stops the whole group (SIGTERM, then
SIGKILL after STOP_TIMEOUT_S: al_core.files.processes.stop_group), also when
the block failed or was interrupted. ``guarded=True`` starts what `make ui`
starts instead (``python -m al_assets.tools.ui``: the daemon and the webserver
behind HostGuard). Its output goes to ``log_path``; ``timed=True`` also keeps
every console line with its arrival time (``dev.console``: for checks that no
line repeats too often).
"""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from al_core.files.processes import stop_group

REPO = Path(__file__).resolve().parents[2]  # the checkout: workspace.yaml and dagster.yaml
START_TIMEOUT_S = 90  # dagster dev answered /server_info in 5-7 s on an idle machine; minutes under load
STOP_TIMEOUT_S = 20  # SIGTERM stops it and its children in ~2 s
POLL_S = 1.0  # how often /server_info is asked while starting


class DagsterDevError(RuntimeError):
    """`dagster dev` exited or did not answer in time; the message ends with the tail of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_dagster_home(parent: Path, root: Path = REPO) -> Path:
    """A fresh ``parent/dagster_home`` with the project's instance settings (``root/dagster.yaml``)."""
    home = parent / "dagster_home"
    home.mkdir()
    shutil.copy(root / "dagster.yaml", home / "dagster.yaml")
    return home


class DagsterDev:
    """A running `dagster dev` on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        home: Path,
        cfg_path: Path,
        log_path: Path,
        *,
        root: Path = REPO,
        extra_env: dict | None = None,
        guarded: bool = False,
        start_timeout_s: float = START_TIMEOUT_S,
        timed: bool = False,
    ):
        self.home, self.cfg_path, self.log_path, self.root, self.guarded = home, cfg_path, log_path, root, guarded
        self.start_timeout_s = start_timeout_s
        self.timed = timed  # keep (arrival time, line) of every console line in self.console
        self.console: list[tuple[float, str]] = []
        self._pump: threading.Thread | None = None
        self.env = dict(
            os.environ,
            DAGSTER_HOME=str(home),
            AL_CONFIG=str(cfg_path),
            HF_HUB_OFFLINE="1",
            PYTHONUNBUFFERED="1",
            **(extra_env or {}),
        )
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log = None

    def log_tail(self, chars: int = 3000) -> str:
        """The console's tail; for `make ui` (guarded) also the tail of its whole log (al_assets.tools.ui)."""
        tails = [self.log_path]
        if self.guarded:
            from al_assets.tools.ui import CONSOLE_LOG_NAME

            tails.append(self.home / CONSOLE_LOG_NAME)
        return "\n".join(f"--- {p}\n" + p.read_text(errors="replace")[-chars:] for p in tails if p.exists())

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "DagsterDev":
        self._log = open(self.log_path, "w")
        where = ["-h", "127.0.0.1", "-p", str(self.port), "-w", str(self.root / "workspace.yaml")]
        cmd = (
            [sys.executable, "-m", "al_assets.tools.ui", *where]
            if self.guarded
            else [os.path.join(os.path.dirname(sys.executable), "dagster"), "dev", *where]
        )
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE if self.timed else self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if self.timed:
            self._pump = threading.Thread(target=self._read_console, daemon=True)
            self._pump.start()
        try:
            self._wait_for_server()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _read_console(self) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.console.append((time.monotonic(), line))
            self._log.write(line + "\n")
            self._log.flush()

    def _wait_for_server(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.base}/server_info", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if not self.alive():
                raise DagsterDevError("dagster dev exited:\n" + self.log_tail())
            if time.monotonic() > deadline:
                raise DagsterDevError(
                    f"dagster dev did not answer in {self.start_timeout_s:.0f} s:\n" + self.log_tail()
                )
            time.sleep(POLL_S)

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            stop_group(self.proc, STOP_TIMEOUT_S)
        if self._pump is not None:
            self._pump.join(STOP_TIMEOUT_S)
        if self._log is not None:
            self._log.close()
