"""One way to start and stop a real `dagster dev` (webserver + daemon) in the tests.

``DagsterDev(home, cfg_path, log_path)`` is a context manager: it starts
`dagster dev -h 127.0.0.1 -p <free port> -w workspace.yaml` in its own process
group (so SIGTERM reaches the daemon and the run workers), waits until
``/server_info`` answers, and on exit stops the whole group (SIGTERM, then
SIGKILL after STOP_TIMEOUT_S), also when the test failed. ``guarded=True``
starts what `make ui` starts instead (``python -m al_assets.tools.ui``: the
daemon and the webserver behind HostGuard). ``timed=True`` also keeps every
console line with its arrival time (``dev.console``) for
``repeated_too_often``.
"""

import contextlib
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
from tests.conftest import ROOT

START_TIMEOUT_S = 90  # dagster dev answered /server_info in 5-7 s on an idle machine; minutes under load
STOP_TIMEOUT_S = 20  # SIGTERM stops it and its children in ~2 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_dagster_home(tmp_path: Path) -> Path:
    """A fresh DAGSTER_HOME with the project's instance settings (dagster.yaml)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


@contextlib.contextmanager
def project_env(home: Path, cfg_path: Path):
    """DAGSTER_HOME and AL_CONFIG set in this process for the block (in-process runs on the same instance)."""
    old = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "AL_CONFIG")}
    os.environ.update(DAGSTER_HOME=str(home), AL_CONFIG=str(cfg_path))
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class DagsterDev:
    """A running `dagster dev` on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        home: Path,
        cfg_path: Path,
        log_path: Path,
        *,
        extra_env: dict | None = None,
        guarded: bool = False,
        timed: bool = False,
    ):
        self.home, self.cfg_path, self.log_path, self.guarded = home, cfg_path, log_path, guarded
        self.timed = timed  # keep (arrival time, line) of every console line in self.console
        self.console: list[tuple[float, str]] = []
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
        where = ["-h", "127.0.0.1", "-p", str(self.port), "-w", str(ROOT / "workspace.yaml")]
        cmd = (
            [sys.executable, "-m", "al_assets.tools.ui", *where]
            if self.guarded
            else [os.path.join(os.path.dirname(sys.executable), "dagster"), "dev", *where]
        )
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE if self.timed else self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._pump = None
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
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{self.base}/server_info", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            assert self.alive(), "dagster dev exited:\n" + self.log_tail()
            assert time.monotonic() < deadline, (
                f"dagster dev did not answer in {START_TIMEOUT_S} s:\n" + self.log_tail()
            )
            time.sleep(1)

    def wait_for(self, predicate, timeout_s: float, what: str) -> None:
        """Poll ``predicate()`` each second; fail with the log's tail if dagster dev dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert self.alive(), f"dagster dev exited while waiting for {what}:\n" + self.log_tail()
            assert time.monotonic() < deadline, f"no {what} in {timeout_s:.0f} s; log tail:\n" + self.log_tail(4000)
            time.sleep(1)

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            stop_group(self.proc, STOP_TIMEOUT_S)
        if self._pump is not None:
            self._pump.join(STOP_TIMEOUT_S)
        self._log.close()


def ingest_and_seed_in_process(cfg, cfg_path: Path, home: Path, then=None) -> None:
    """`ingest_job` and the seed round in this process, on the instance a daemon started later will use.

    ``then(defs, instance)``, if given, runs inside the same instance and environment (more rounds in process).
    """
    import dagster as dg

    with project_env(home, cfg_path):
        from al_assets.definitions import build_defs

        defs = build_defs(cfg)
        with dg.DagsterInstance.get() as instance:
            assert defs.resolve_job_def("ingest_job").execute_in_process(instance=instance).success
            instance.add_dynamic_partitions("rounds", ["0"])
            assert (
                defs.resolve_job_def("seed_job")
                .execute_in_process(instance=instance, partition_key="0", tags={"dagster/run_key": "seed-round-0"})
                .success
            )
            if then is not None:
                then(defs, instance)


def repeated_too_often(timed_lines, every_s: float) -> list[str]:
    """The console lines that came again less than ``every_s`` after the same line (time stamps, run ids and
    process ids aside: al_assets.tools.console.repeat_key), each with the shortest gap; continuation lines (a
    traceback's frames) aside."""
    from al_assets.tools.console import repeat_key

    last: dict[str, float] = {}
    gaps: dict[str, float] = {}
    for t, line in timed_lines:
        if not line.strip() or line[:1].isspace():
            continue
        key = repeat_key(line)
        if key in last and t - last[key] < every_s:
            gaps[key] = min(gaps.get(key, every_s), t - last[key])
        last[key] = t
    return [f"{gap:.1f} s apart: {key}" for key, gap in gaps.items()]
