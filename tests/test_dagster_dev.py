"""The real thing: `dagster dev` (webserver + daemon) on 127.0.0.1 drives a round from a dropped label file."""

import dagster as dg

from al_core.catalogue import open_store
from al_core.config import load_config
from tests.dagster_helpers import DagsterDev, new_dagster_home, project_env
from tests.loop_helpers import answer_batch, make_project

ROUND_TIMEOUT_S = 240


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
    home = new_dagster_home(tmp_path)
    # ingest and the seed pool in process, on the same instance the daemon will use
    with project_env(home, cfg_path):
        from al_assets.definitions import build_defs

        defs = build_defs(cfg)
        with dg.DagsterInstance.get() as instance:
            assert defs.resolve_job_def("ingest_job").execute_in_process(instance=instance).success
            instance.add_dynamic_partitions("rounds", ["0"])
            assert defs.resolve_job_def("seed_job").execute_in_process(
                instance=instance, partition_key="0", tags={"dagster/run_key": "seed-round-0"}).success
    assert (cfg.outbox / "round-0000.csv").exists()

    with DagsterDev(home, cfg_path, tmp_path / "dagster-dev.log") as dev:
        addrs = _listening_addresses(dev.proc.pid)
        assert addrs and addrs <= {"127.0.0.1"}, f"listening on {addrs}"
        answer_batch(cfg, open_store(cfg), 0)
        target = cfg.outbox / "round-0001.csv"
        dev.wait_for(target.exists, ROUND_TIMEOUT_S, "round-0001.csv")
        lines = target.read_text().splitlines()
        assert len(lines) == 1 + 4
    assert open_store(cfg).fetch("SELECT count(*) FROM labels") == [(4,)]
