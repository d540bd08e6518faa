"""The real thing: `dagster dev` (webserver + daemon) on 127.0.0.1 drives a round from a dropped label file."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import dagster as dg

from al_core.config import load_config
from tests.conftest import ROOT
from tests.loop_helpers import answer_batch, make_project
from al_core.catalogue import open_store

START_TIMEOUT_S = 90
ROUND_TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening_addresses(pid_root: int) -> set[str]:
    """Local addresses on which the process group listens (from /proc/net/tcp*)."""
    import psutil

    procs = [psutil.Process(pid_root), *psutil.Process(pid_root).children(recursive=True)]
    out = set()
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    out.add(c.laddr.ip)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def test_dagster_dev_runs_a_round_from_the_inbox(tmp_path):
    cfg_path = make_project(tmp_path, per_class=10, holdout=8)
    cfg = load_config(cfg_path)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ, DAGSTER_HOME=str(home), AL_CONFIG=str(cfg_path), HF_HUB_OFFLINE="1",
               PYTHONUNBUFFERED="1")
    # ingest and the seed pool in process, on the same instance the daemon will use
    old = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "AL_CONFIG")}
    os.environ.update(DAGSTER_HOME=str(home), AL_CONFIG=str(cfg_path))
    try:
        from al_assets.definitions import build_defs

        defs = build_defs(cfg)
        with dg.DagsterInstance.get() as instance:
            assert defs.resolve_job_def("ingest_job").execute_in_process(instance=instance).success
            instance.add_dynamic_partitions("rounds", ["0"])
            assert defs.resolve_job_def("seed_job").execute_in_process(
                instance=instance, partition_key="0", tags={"dagster/run_key": "seed-round-0"}).success
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert (cfg.outbox / "round-0000.csv").exists()

    port = _free_port()
    log = open(tmp_path / "dagster-dev.log", "w")
    proc = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port),
         "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "dagster-dev.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "dagster dev did not answer in time"
            time.sleep(1)
        addrs = _listening_addresses(proc.pid)
        assert addrs and addrs <= {"127.0.0.1"}, f"listening on {addrs}"
        answer_batch(cfg, open_store(cfg), 0)
        deadline = time.monotonic() + ROUND_TIMEOUT_S
        target = cfg.outbox / "round-0001.csv"
        while not target.exists():
            assert proc.poll() is None, (tmp_path / "dagster-dev.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (
                "no round-0001.csv in time; log tail:\n" + (tmp_path / "dagster-dev.log").read_text()[-4000:])
            time.sleep(1)
        lines = target.read_text().splitlines()
        assert len(lines) == 1 + 4
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
    assert open_store(cfg).fetch("SELECT count(*) FROM labels") == [(4,)]
