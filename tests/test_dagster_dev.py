"""The real thing: `dagster dev` (webserver + daemon) on 127.0.0.1 drives a round from a dropped label file."""


from al_core.catalogue import open_store
from al_core.config import load_config
from tests.dagster_helpers import DagsterDev, ingest_and_seed_in_process, new_dagster_home
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
    ingest_and_seed_in_process(cfg, cfg_path, home)  # on the same instance the daemon will use
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
