"""`al bench round --via daemon` at a small N, for real: a `dagster dev` started and stopped by the benchmark, the
seed batch proposed by the sensor, the label file landing, the next outbox CSV; its JSON holds the split read from
the daemon's instance, and no ingest run went before the round (the tiny image root did not change: issue 12,
item 9)."""

import json
import os
import subprocess
import sys

import psutil

from al_assets.tools.bench_round_daemon import SPLIT, split, timeline
from tests.conftest import ROOT

BENCH_TIMEOUT_S = 600  # dagster dev start (5-7 s idle, minutes under load), the seed run, the round run


# the stages before the run executes, in the order the daemon records them
FIRST_STAGES = [
    "label file landed -> sensor tick started",
    "sensor tick started -> run created",
    "run created -> run enqueued",
    "run enqueued -> run launched",
    "run launched -> run process started",
    "run process started -> run execution started",
]


def test_the_daemon_path_bench_reports_its_split_and_no_ingest_run(tmp_path):
    out = tmp_path / "round.json"
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=pythonpath, TMPDIR=str(tmp_path))  # the temporary project under tmp_path
    cmd = [sys.executable, "-m", "al_assets.tools.bench_round", "--via", "daemon", "--n", "300", "--dim", "16"]
    cmd += ["--classes", "3", "--budget", "5", "--timeout-s", str(BENCH_TIMEOUT_S - 60), "--json", str(out)]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=BENCH_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-4000:]
    res = json.loads(out.read_text())
    assert res["via"] == "daemon" and res["n"] == 300 and res["proposed"] == 5
    assert res["sensor_interval_s"] == 5 and res["sensor_settle_s"] == 2.0  # the bench's interval, the default settle
    assert res["round_run_status"] == "SUCCESS"
    # no ingest run before the round: the root is unchanged since the benchmark's scan
    assert res["ingest_runs_after_landing"] == 0 and res["ingest_before"] == "skipped"
    assert res["ingest_check"].startswith("image root unchanged since scan 1 at ") and res["ingest_check_s"] > 0
    # the split: every stage from the daemon's records, adding up to the landing-to-rename figure
    stages = dict(res["timeline_s"])
    assert abs(sum(stages.values()) - res["landing_to_outbox_rename_s"]) < 0.01
    assert list(stages)[:6] == FIRST_STAGES
    assert all(v >= 0 for k, v in stages.items() if not k.startswith("label file landed"))
    assert list(stages)[-1].endswith("-> outbox CSV renamed")
    s = res["split_s"]
    assert list(s)[:6] == list(SPLIT.values()) and not [k for k in s if k.startswith("other")]
    assert {"step round_labels", "step probe", "step query_set (up to the rename)"} <= set(s)
    assert abs(sum(s.values()) - res["landing_to_outbox_rename_s"]) < 0.01
    assert s["run process start (a spawned interpreter, dagster imports)"] > 0.3  # a fresh process
    assert res["landing_to_outbox_seen_s"] >= res["landing_to_outbox_rename_s"] - 0.01
    assert "eval_metrics" in res["steps_after_the_rename"]  # evaluation comes after the proposal
    # the daemon and everything it started are gone, and so is the temporary project
    assert not _processes_of(tmp_path) and not list(tmp_path.glob("al-bench-round-*"))


def _processes_of(tmp_path) -> list:
    """Processes whose project file ($AL_CONFIG) lies under ``tmp_path`` (the benchmark's temporary project)."""
    out = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("AL_CONFIG", "").startswith(str(tmp_path)):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


class _Tick:
    timestamp, end_timestamp = 10.0, 10.4


def test_the_timeline_adds_up_and_leaves_out_what_is_missing():
    ev = {"RUN_CREATED": 10.3, "RUN_ENQUEUED": 10.5, "RUN_STARTING": 12.1, "PROCESS_STARTED": 14.0, "RUN_START": 16.0}
    steps = {"probe": {"start": 17.0, "end": 18.0}, "round_labels": {"start": 16.5, "end": 16.9}}
    steps |= {"query_set": {"start": 18.1, "end": 20.0}, "eval_metrics": {"start": 20.1, "end": 25.0}}
    stages = timeline(8.0, 19.5, _Tick(), ev, steps)
    assert [k for k, _ in stages] == [
        *FIRST_STAGES,
        "run execution started -> step round_labels started",
        "step round_labels started -> step round_labels ended",
        "step round_labels ended -> step probe started",
        "step probe started -> step probe ended",
        "step probe ended -> step query_set started",
        "step query_set started -> outbox CSV renamed",
    ]
    assert abs(sum(v for _, v in stages) - 11.5) < 1e-9
    s = split(stages)
    assert list(s.values())[:6] == [2.0, 0.3, 0.2, 1.6, 1.9, 2.0]
    assert s["step query_set (up to the rename)"] == 1.4 and s["step probe"] == 1.0 and s["step round_labels"] == 0.4
    assert s["between steps (run start to the first, and gaps)"] == 0.7
    assert abs(sum(s.values()) - 11.5) < 1e-9
    # no tick record and no process event: the stages around them are one, the sum the same
    stages = timeline(8.0, 19.5, None, {k: v for k, v in ev.items() if k != "PROCESS_STARTED"}, steps)
    assert stages[0] == ["label file landed -> run created", 2.3] and abs(sum(v for _, v in stages) - 11.5) < 1e-9
    s = split(stages)
    assert s["other (label file landed -> run created)"] == 2.3
    assert s["other (run launched -> run execution started)"] == 3.9
    assert s["settle and tick wait"] == 0.0 and s["run process start (a spawned interpreter, dagster imports)"] == 0.0
