"""Shared set-up for tests/test_reliability.py and tests/test_security.py.

One small real project (4 classes x 8 sample images, efficientnet_lite0 at 64 px)
is ingested and seeded once per session; every test works on its own copy
(database, vectors, outbox), so the expensive embedding happens once.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from al_core.catalogue.store import sha256_file
from al_core.config import load_config
from tests.conftest import ROOT
from tests.loop_helpers import answer_batch, execute, make_project, run_requests

CHILD_TIMEOUT_S = 120  # a child that neither dies nor finishes in this time fails the test


def build_base_project(tmp_path_factory) -> Path:
    """A project ingested (scan + embed) and seeded (batch 0 proposed): its folder.

    Built once per session by the ``base_project`` fixture of tests/conftest.py.
    """
    from al_assets.definitions import build_defs

    tmp = tmp_path_factory.mktemp("reliability-base")
    cfg = load_config(make_project(tmp, per_class=8, holdout=8, budget=4, total=12))
    defs = build_defs(cfg)
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("ingest_job").execute_in_process(instance=instance).success
    reqs = run_requests(defs, instance).run_requests
    assert [r.job_name for r in reqs] == ["seed_job"]
    assert execute(defs, instance, reqs[0]).success
    assert (cfg.outbox / "round-0000.csv").exists()
    return tmp


def copy_project(base: Path, dest: Path, *, lock_timeout_s: float | None = None):
    """A private copy of the base project (images shared through a symlink); returns its config."""
    import yaml

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(base / "data", dest / "data", ignore=shutil.ignore_patterns("dagster_home"))
    os.symlink(base / "images", dest / "images")
    conf = yaml.safe_load((base / "al.yaml").read_text())
    if lock_timeout_s is not None:
        conf["store"]["lock_timeout_s"] = lock_timeout_s
    (dest / "al.yaml").write_text(yaml.safe_dump(conf))
    return load_config(dest / "al.yaml")


def defs_for(cfg):
    from al_assets.definitions import build_defs

    return build_defs(cfg)


def requests_of(result) -> list:
    if result is None or isinstance(result, dg.SkipReason):
        return []
    return list(result.run_requests or [])


def sensor_and_run(cfg, defs, instance, *, max_runs: int = 4) -> list:
    """What the daemon does, in process: ask the sensor, run what it requests, until it asks for nothing."""
    results = []
    for _ in range(max_runs):
        reqs = requests_of(run_requests(defs, instance))
        if not reqs:
            return results
        for r in reqs:
            results.append(execute(defs, instance, r))
    return results


def run_child(
    cmd: str, cfg, *, fault: str | None = None, env: dict | None = None, timeout: float = CHILD_TIMEOUT_S
) -> subprocess.CompletedProcess:
    """tests/reliability_child.py COMMAND in a child process, with $AL_FAULT when given."""
    e = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), AL_CONFIG=str(cfg.source_file), OMP_NUM_THREADS="1")
    e.pop("AL_FAULT", None)
    if fault:
        e["AL_FAULT"] = fault
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tests.reliability_child", cmd, str(cfg.source_file)],
        cwd=ROOT,
        env=e,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_killed(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == -signal.SIGKILL, (
        f"expected death by SIGKILL at the fault point, got rc={proc.returncode}\n"
        f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
    )
    assert "survived" not in proc.stdout


def deliver(path: Path, text: str | bytes, *, age_s: float = 10.0) -> Path:
    """Write a label file the way a careful annotator does (complete, then settled)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    old = time.time() - age_s
    os.utime(path, (old, old))
    return path


def visible_temporaries(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.rglob("*")
        if not p.name.startswith(".") and re.search(r"\.(tmp|part|partial)(-\d+)?$|\.tmp-", p.name)
    )


def assert_consistent(cfg, store, *, inbox_empty: bool = True) -> None:
    """The invariants every fault test checks after the restart."""
    # each label exactly once: no file applies two rows to one image, and no annotator's row repeats the label that
    # annotator's previous standing answer for the image already had (a re-applied label; a withdrawn delivery's
    # rows stand no more, so answering again after a retraction is no repeat); every label row belongs to a
    # recorded, ingested file
    assert store.fetch("SELECT file_sha256, image_id FROM labels GROUP BY ALL HAVING count(*) > 1") == []
    assert store.fetch("""SELECT count(*) FROM (
                            SELECT label = lag(label) OVER (PARTITION BY image_id, coalesce(annotator, '-')
                                                            ORDER BY label_id) AS again
                            FROM labels WHERE file_sha256 NOT IN (SELECT file_sha256 FROM retractions))
                          WHERE again""") == [(0,)]
    assert store.fetch("""SELECT count(*) FROM labels l WHERE NOT EXISTS (SELECT 1 FROM label_files f
                          WHERE f.file_id = l.file_id AND f.status IN ('accepted', 'retracted'))""") == [(0,)]
    assert store.fetch("SELECT sha256 FROM label_files WHERE status = 'accepted' GROUP BY 1 HAVING count(*) > 1") == []
    # no partial round: every recorded batch has exactly its budget of queries, and nothing else has queries
    rounds = store.fetch("SELECT round, budget FROM rounds ORDER BY round")
    assert dict(store.fetch("SELECT round, count(*) FROM queries GROUP BY 1")) == dict(rounds)
    assert store.fetch("SELECT count(*) FROM rounds WHERE status = 'open'")[0][0] <= 1
    # no half-written outbox: each batch's CSV complete (its queries in rank order), none for unrecorded batches
    for r, budget in rounds:
        lines = (cfg.outbox / f"round-{r:04d}.csv").read_text().splitlines()
        want = [q[0] for q in store.fetch("SELECT image_id FROM queries WHERE round = ? ORDER BY rank", [r])]
        assert lines[0] == "image_id,path,rank,score,strategy" and [ln.split(",")[0] for ln in lines[1:]] == want
        assert len(lines) == budget + 1
    csvs = {p.name for p in cfg.outbox.glob("round-*.csv")}
    assert csvs == {f"round-{r:04d}.csv" for r, _ in rounds}
    assert visible_temporaries(cfg.outbox) == [] and visible_temporaries(cfg.inbox) == []
    # every recorded probe is on disk, byte for byte
    for path, sha in store.fetch("SELECT path, sha256 FROM probes"):
        assert sha256_file(path) == sha
    if inbox_empty:
        left = [p.name for p in cfg.inbox.iterdir() if p.is_file()] if cfg.inbox.is_dir() else []
        assert left == [], f"label files left in the inbox: {left}"


__all__ = [
    "build_base_project",
    "copy_project",
    "defs_for",
    "requests_of",
    "sensor_and_run",
    "run_child",
    "assert_killed",
    "deliver",
    "assert_consistent",
    "visible_temporaries",
    "answer_batch",
    "execute",
    "run_requests",
    "ROOT",
]
