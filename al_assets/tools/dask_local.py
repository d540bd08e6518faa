"""A Dask scheduler and workers on 127.0.0.1, each in its own process group, to run embed_shards_dask_job: what
`al bench scale embed` (al_assets.tools.bench_scale) and tests/test_scale_out.py start.

``LocalDask(log_dir, env)`` picks a free port (``address``; the children's environment gets it as
$AL_DASK_SCHEDULER); ``scheduler()`` starts the scheduler and waits until it listens; ``worker(name, writer=...)``
starts one worker: one thread, no nanny, no memory limit, preloaded with al_assets.tools.dask_preload (the code
location and the backbone load when it starts), and ``writer=True`` gives it the catalogue's writer resource (the
plan and commit steps run only there: al_assets.shards). Each process logs to ``log_dir/<name>.log``. Leaving the
``with`` block stops every process group (al_core.files.processes.stop_groups) and closes the logs, also after an
error. Everything listens on 127.0.0.1 only: --dashboard-address too, since even with --no-dashboard distributed
serves /health and /metrics over HTTP on the dashboard address (default :8787 on every interface).
"""

import socket
import subprocess
import sys
import time
from pathlib import Path

from al_assets.shards import DASK_SCHEDULER_ENV, WRITER_RESOURCE
from al_core.files.processes import stop_groups

HOST = "127.0.0.1"
SCHEDULER_START_S = 60.0  # the scheduler listens after ~2 s on an idle machine
STOP_GRACE_S = 15.0  # SIGTERM, then this long before SIGKILL (a worker exits in ~1 s)
ROOT = Path(__file__).resolve().parents[2]  # the checkout: the children's working directory
WORKER_ARGS = [
    *("--host", HOST, "--nworkers", "1", "--nthreads", "1", "--no-nanny", "--memory-limit", "0"),
    *("--no-dashboard", "--dashboard-address", f"{HOST}:0", "--preload", "al_assets.tools.dask_preload"),
]


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on now (the OS's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float, host: str = HOST) -> None:
    """Return once something listens on ``host:port``; RuntimeError when ``proc`` exits first, TimeoutError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:2]} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


class LocalDask:
    """A scheduler and workers on 127.0.0.1 (see the module docstring)."""

    def __init__(self, log_dir: Path, env: dict[str, str]):
        self.port = free_port()
        self.address = f"tcp://{HOST}:{self.port}"
        self.env = dict(env, **{DASK_SCHEDULER_ENV: self.address})
        self.log_dir = Path(log_dir)
        self.procs: list[subprocess.Popen] = []
        self._logs: list = []

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with its process in stop()
        self._logs.append(log)
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("dask")), *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def scheduler(self, timeout: float = SCHEDULER_START_S) -> subprocess.Popen:
        """Start the scheduler; return once it listens on ``address``."""
        proc = self._start(
            ["scheduler", "--host", HOST, "--port", str(self.port), "--no-dashboard"]
            + ["--dashboard-address", f"{HOST}:0", "--no-show"],
            "scheduler",
        )
        wait_port(self.port, proc, timeout)
        return proc

    def worker(self, name: str, *, writer: bool = False) -> subprocess.Popen:
        """Start a worker called ``name`` (``writer``: the one beside the DuckDB file, which runs plan and commit)."""
        resources = ["--resources", f"{WRITER_RESOURCE}=1"] if writer else []
        return self._start(["worker", self.address, *WORKER_ARGS, "--name", name, *resources], name)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        """The last ``chars`` characters of ``name``'s log so far."""
        for log in self._logs:
            if not log.closed:
                log.flush()
        return (self.log_dir / f"{name}.log").read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """Stop every process group started (SIGTERM, SIGKILL after STOP_GRACE_S) and close the logs."""
        stop_groups(self.procs, grace_s=STOP_GRACE_S)
        for log in self._logs:
            log.close()

    def __enter__(self) -> "LocalDask":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
