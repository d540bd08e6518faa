"""The real thing: `dagster dev` (webserver + daemon) on 127.0.0.1 drives a round from a dropped label file; what
`make ui` starts does the same and refuses requests naming another host (DNS rebinding)."""

import json
import urllib.request

import pytest

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


def _status(url: str, host: str, data: bytes | None = None) -> int:
    req = urllib.request.Request(url, data=data, headers={"Host": host, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.slow
def test_make_ui_refuses_a_rebinding_host_and_runs_a_round(tmp_path):
    """`make ui` (al_assets.tools.ui: dagster-daemon + dagster-webserver behind HostGuard), for real: requests with
    `Host: evil.example` (HTTP, the GraphQL API, the websocket the UI uses) get 403; the UI's own address works;
    the daemon runs a round."""
    from tests.test_security import _websocket_status

    cfg_path = make_project(tmp_path, per_class=10, holdout=8)
    cfg = load_config(cfg_path)
    home = new_dagster_home(tmp_path)
    ingest_and_seed_in_process(cfg, cfg_path, home)
    query = json.dumps({"query": "{ version }"}).encode()
    with DagsterDev(home, cfg_path, tmp_path / "make-ui.log", guarded=True) as ui:
        assert _listening_addresses(ui.proc.pid) <= {"127.0.0.1"}
        own = f"127.0.0.1:{ui.port}"
        for evil in ("evil.example", f"evil.example:{ui.port}"):
            assert _status(f"{ui.base}/server_info", evil) == 403
            assert _status(f"{ui.base}/graphql", evil, query) == 403
            assert _websocket_status(ui.port, evil, "/graphql") == 403
        assert _status(f"{ui.base}/server_info", own) == 200
        assert _status(f"{ui.base}/graphql", f"localhost:{ui.port}", query) == 200
        assert _websocket_status(ui.port, own, "/graphql") == 101
        answer_batch(cfg, open_store(cfg), 0)
        ui.wait_for((cfg.outbox / "round-0001.csv").exists, ROUND_TIMEOUT_S, "round-0001.csv")
