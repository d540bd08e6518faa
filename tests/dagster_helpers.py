"""One way to start and stop a real `dagster dev` (webserver + daemon) in the tests.

``DagsterDev`` is the product's (al_assets.tools.dev_server: also what `al bench round` starts), rooted at this
checkout, with ``wait_for``: poll a condition while failing the test with the log's tail when `dagster dev` dies or
time runs out. ``guarded=True`` starts what `make ui` starts instead; ``timed=True`` keeps every console line with
its arrival time (``dev.console``) for ``repeated_too_often``.
"""

import contextlib
import os
import time
from pathlib import Path

from al_assets.tools import dev_server
from al_assets.tools.dev_server import START_TIMEOUT_S, STOP_TIMEOUT_S, free_port
from tests.conftest import ROOT

__all__ = [
    "START_TIMEOUT_S",
    "STOP_TIMEOUT_S",
    "DagsterDev",
    "free_port",
    "ingest_and_seed_in_process",
    "new_dagster_home",
    "project_env",
    "repeated_too_often",
]


def new_dagster_home(tmp_path: Path) -> Path:
    """A fresh DAGSTER_HOME with the project's instance settings (dagster.yaml)."""
    return dev_server.new_dagster_home(tmp_path, ROOT)


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


class DagsterDev(dev_server.DagsterDev):
    """A running `dagster dev` on 127.0.0.1 for this checkout (al_assets.tools.dev_server.DagsterDev)."""

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
        super().__init__(home, cfg_path, log_path, root=ROOT, extra_env=extra_env, guarded=guarded, timed=timed)

    def wait_for(self, predicate, timeout_s: float, what: str) -> None:
        """Poll ``predicate()`` each second; fail with the log's tail if dagster dev dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert self.alive(), f"dagster dev exited while waiting for {what}:\n" + self.log_tail()
            assert time.monotonic() < deadline, f"no {what} in {timeout_s:.0f} s; log tail:\n" + self.log_tail(4000)
            time.sleep(1)


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
