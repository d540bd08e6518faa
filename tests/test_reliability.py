"""Fault injection (issue 6): no crash, bad file, burst or busy database loses a label or applies it twice.

Kill tests run the work in a child process with $AL_FAULT naming a fault point
(al_core/faults.py): the child SIGKILLs itself there. The test then checks
what is on disk, restarts the work without the fault (as the daemon, a run
retry or the user would) and checks the invariants of ``assert_consistent``:
each label exactly once, no partial round, no half-written outbox file, no
visible temporary file, and the loop continues. docs/reliability.md has the table.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from al_core.catalogue import open_store
from al_core.files.processes import stop_group
from tests.reliability_helpers import (
    ROOT,
    answer_batch,
    assert_consistent,
    assert_killed,
    copy_project,
    defs_for,
    deliver,
    execute,
    requests_of,
    run_child,
    run_requests,
    sensor_and_run,
)


def _counts(store):
    return {
        t: store.fetch(f"SELECT count(*) FROM {t}")[0][0]
        for t in ("labels", "label_files", "rounds", "queries", "probes", "metrics")
    }


# ----------------------------------------------------------------------------- 1. kills while ingesting labels
@pytest.mark.parametrize("fault", ["labels.mid_insert", "labels.after_commit"])
def test_kill_while_ingesting_labels_then_rerun(base_project, tmp_path, fault):
    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    before = _counts(store)
    f = answer_batch(cfg, store, 0)
    assert_killed(run_child("labels", cfg, fault=fault))
    after = _counts(store)
    assert f.exists(), "the label file must stay in the inbox until its rows are committed and recorded"
    if fault == "labels.mid_insert":  # the transaction died with half the rows inserted: nothing is visible
        assert after == before
    else:  # committed, not yet moved: the rows are there once
        assert after["labels"] == 4 and after["label_files"] == 1
    # restart: the sensor sees the file again, the round run applies it (or recognises it) and goes on
    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    results = sensor_and_run(cfg, defs, instance)
    assert results and all(r.success for r in results)
    assert store.fetch("SELECT count(*), count(DISTINCT image_id) FROM labels") == [(4, 4)]
    assert store.fetch("SELECT status, count(*) FROM label_files GROUP BY 1") == [("accepted", 1)]
    assert store.fetch("SELECT status FROM rounds ORDER BY round") == [("closed",), ("open",)]
    assert_consistent(cfg, store)


# ----------------------------------------------------------------------------- 1. kills inside a round run
def _monitor(instance) -> None:
    """One iteration of the daemon's run monitoring (dagster._daemon.monitoring), on this instance."""
    import logging

    from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration

    class _Context:  # what the daemon passes; only the instance is used for STARTED runs without resume
        def __init__(self, inst):
            self.instance = inst

        def create_request_context(self):
            return None

    list(execute_run_monitoring_iteration(_Context(instance), logging.getLogger("test-monitoring")))


def test_killed_round_run_is_marked_failed_and_the_loop_resumes(base_project, tmp_path, monkeypatch):
    """probe.after_fit inside a real Dagster run on a file-based instance with the project's dagster.yaml."""
    from dagster._daemon.monitoring import run_monitoring

    from sensors.inbox import RUN_MAX_RUNTIME_S

    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    answer_batch(cfg, store, 0)
    proc = run_child("dagster", cfg, fault="probe.after_fit", env={"DAGSTER_HOME": str(home)})
    assert_killed(proc)
    # labels committed and batch 0 closed, then the process died before the probe was saved
    assert _counts(store)["labels"] == 4 and _counts(store)["probes"] == 0
    assert store.fetch("SELECT round, status FROM rounds") == [(0, "closed")]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.STARTED
        run_id = runs[0].run_id
        assert runs[0].tags.get("dagster/max_runtime") == str(RUN_MAX_RUNTIME_S)
        # Dagster's default launcher cannot see that a run's process is gone: a monitoring pass now changes nothing
        _monitor(instance)
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
        # the round run's time limit (set by the sensor) lets monitoring fail it instead of blocking the queue
        monkeypatch.setattr(run_monitoring, "get_current_timestamp", lambda: time.time() + RUN_MAX_RUNTIME_S + 60)
        _monitor(instance)
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        monkeypatch.undo()
        assert instance.get_runs_count(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])) == 0
        # a later run proceeds: the inbox is empty, but the sensor sees the owed batch and resumes the round
        defs = defs_for(cfg)
        results = sensor_and_run(cfg, defs, instance)
        assert results and all(r.success for r in results)
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert store.fetch("SELECT round, status FROM rounds ORDER BY round") == [(0, "closed"), (1, "open")]
    assert store.fetch("SELECT count(*) FROM probes WHERE round = 1") == [(1,)]
    assert_consistent(cfg, store)
    # and the loop continues: answering batch 1 proposes batch 2
    answer_batch(cfg, store, 1)
    assert all(r.success for r in sensor_and_run(cfg, defs, dg.DagsterInstance.ephemeral()))
    assert store.fetch("SELECT round, status FROM rounds ORDER BY round") == [(0, "closed"), (1, "closed"), (2, "open")]
    assert store.fetch("SELECT count(*), count(DISTINCT image_id) FROM labels") == [(8, 8)]
    assert_consistent(cfg, store)


@pytest.mark.parametrize("fault", ["query_set.after_insert", "outbox.before_csv"])
def test_kill_while_proposing_then_resume(base_project, tmp_path, fault):
    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    answer_batch(cfg, store, 0)
    assert_killed(run_child("round", cfg, fault=fault))
    n_probes = _counts(store)["probes"]
    assert n_probes == 1
    if fault == "query_set.after_insert":  # the batch's transaction died: no trace of batch 1
        assert store.fetch("SELECT round FROM rounds") == [(0,)] and _counts(store)["queries"] == 4
        assert not (cfg.outbox / "round-0001.label-studio.json").exists()
    else:  # batch 1 committed, its Label Studio file written, the CSV (written last) missing
        assert store.fetch("SELECT round FROM rounds ORDER BY round") == [(0,), (1,)]
        assert (cfg.outbox / "round-0001.label-studio.json").exists()
    assert not (cfg.outbox / "round-0001.csv").exists()
    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    results = sensor_and_run(cfg, defs, instance)
    assert results and all(r.success for r in results)
    assert store.fetch("SELECT round, status FROM rounds ORDER BY round") == [(0, "closed"), (1, "open")]
    batch1 = [r[0] for r in store.fetch("SELECT image_id FROM queries WHERE round = 1 ORDER BY rank")]
    assert len(batch1) == 4
    if fault == "outbox.before_csv":  # the committed batch is what the CSV now shows (not a new selection)
        assert store.fetch("SELECT count(*) FROM probes") == [(n_probes,)]
    assert_consistent(cfg, store)
    # a second look finds nothing more to do
    assert requests_of(run_requests(defs, instance)) == []


# ----------------------------------------------------------------------------- 1. kills while embedding and scanning
def test_kill_before_embedding_commit_keeps_committed_flushes(base_project, tmp_path):
    from al_core.ingest.pipeline import embed_missing
    from al_core.models.backbones import load_backbone

    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    n_images = store.fetch("SELECT count(DISTINCT image_id) FROM image_paths WHERE status = 'ok'")[0][0]
    with store.transaction() as con:  # forget the vectors: this copy embeds from scratch
        con.execute("DELETE FROM embedding_index")
        con.execute("DELETE FROM embedding_parts")
    shutil.rmtree(cfg.vectors_dir)
    # flushes of 8 vectors; the second flush dies after writing its part files, before committing them
    assert_killed(run_child("embed", cfg, fault="embeddings.before_commit@2", env={"EMBED_FLUSH_ROWS": "8"}))
    committed = store.fetch("SELECT count(*) FROM embedding_index")[0][0]
    assert committed == 8  # the first flush survived the kill
    on_disk = {str(p.relative_to(cfg.vectors_dir)) for p in cfg.vectors_dir.rglob("part-*.parquet")}
    known = {r[0] for r in store.fetch("SELECT rel_path FROM embedding_parts")}
    orphans = on_disk - known
    assert known <= on_disk and orphans, "the killed flush left part files the catalogue does not know"
    config_id = store.fetch("SELECT config_id FROM embedding_configs")[0][0]
    assert len(store.load_embeddings(config_id)) == 8  # an uncommitted part is invisible
    assert store.fetch("SELECT count(*) FROM embeddings")[0][0] == 8
    # restart: only the rest is embedded; each image ends up with exactly one vector
    bb = load_backbone(cfg.backbone.name, image_size=cfg.backbone.image_size, device="cpu")
    res = embed_missing(store, bb, batch_size=8, num_workers=0)
    assert res.n_skipped == 8 and res.n_embedded == n_images - 8 and res.n_total == n_images
    emb = store.load_embeddings(config_id)
    assert len(emb) == n_images and len(set(emb.image_ids)) == n_images
    removed = {str(p.relative_to(cfg.vectors_dir)) for p in store.gc_orphan_parts(min_age_s=0)}
    assert removed == orphans
    assert len(store.load_embeddings(config_id)) == n_images


def test_kill_inside_scan_transaction_then_rescan(base_project, tmp_path):
    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    before = store.fetch(
        "SELECT (SELECT count(*) FROM scans), (SELECT count(*) FROM image_paths), (SELECT count(*) FROM images)"
    )[0]
    assert_killed(run_child("scan", cfg, fault="scan.in_transaction"))  # this copy's root is new: every file probed
    assert (
        store.fetch(
            "SELECT (SELECT count(*) FROM scans), (SELECT count(*) FROM image_paths), (SELECT count(*) FROM images)"
        )[0]
        == before
    )
    from al_core.ingest.scan import scan

    rep = scan(store, cfg.image_root)
    assert rep.n_new == before[1] and rep.n_ok == before[1]
    assert store.fetch("SELECT count(*), count(finished_at) FROM scans") == [(before[0] + 1, before[0] + 1)]
    assert store.fetch("SELECT count(*) FROM images")[0][0] == before[2]  # same bytes, same image ids


# ----------------------------------------------------------------------------- 2. the same file again, renamed, halves
def test_same_file_twice_renamed_and_in_halves(base_project, tmp_path):
    from al_core.loop import ingest_label_files

    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    rows = store.fetch("""SELECT q.image_id, any_value(g.class_name) FROM queries q JOIN ground_truth g USING (image_id)
                          WHERE q.round = 0 GROUP BY q.image_id, q.rank ORDER BY q.rank""")
    # one annotator's answers (a repeat is the same annotator's same label: another annotator's is another answer)
    first_half = "image_id,label,annotator\n" + "".join(f"{i},{c},sim\n" for i, c in rows[:2])
    second_half = "image_id,label,annotator\n" + "".join(f"{i},{c},sim\n" for i, c in rows[1:])  # one row again
    whole = "image_id,label,annotator\n" + "".join(f"{i},{c},sim\n" for i, c in rows)

    def tick():
        reqs = requests_of(run_requests(defs, instance))
        assert len(reqs) == 1
        assert execute(defs, instance, reqs[0]).success
        return reqs[0].run_key

    deliver(cfg.inbox / "half.csv", first_half)
    key1 = tick()
    # the same bytes under the same name again (an annotator re-sends): a new run, recorded as a duplicate
    deliver(cfg.inbox / "half.csv", first_half)
    key2 = tick()
    assert key2 != key1, "the sensor's run key must differ, or the daemon drops the re-delivery as already launched"
    # the other half (one row repeats an applied label): the batch is answered, each label applied once
    deliver(cfg.inbox / "half-2.csv", second_half)
    tick()
    files = store.fetch("SELECT original_name, status, n_rows, n_applied FROM label_files ORDER BY received_at")
    assert files == [("half.csv", "accepted", 2, 2), ("half.csv", "duplicate", 0, 0), ("half-2.csv", "accepted", 3, 2)]
    reason = store.fetch("SELECT reason FROM label_files WHERE status = 'duplicate'")[0][0]
    assert "same bytes as 'half.csv'" in reason
    assert store.fetch("SELECT count(*), count(DISTINCT image_id) FROM labels") == [(4, 4)]
    # the whole file afterwards, then the same bytes under another name: nothing new either way
    classes = cfg.class_names(store)
    w = deliver(cfg.inbox / "whole.csv", whole)
    r1 = ingest_label_files(store, cfg, [w], round_=2, classes=classes)
    w2 = deliver(cfg.inbox / "whole-copy.csv", whole)
    r2 = ingest_label_files(store, cfg, [w2], round_=2, classes=classes)
    assert [(f.status, f.n_applied) for f in r1.files + r2.files] == [("accepted", 0), ("duplicate", 0)]
    assert store.fetch("SELECT count(*) FROM labels") == [(4,)]
    assert store.fetch("SELECT status FROM label_files WHERE original_name = 'whole-copy.csv'") == [("duplicate",)]
    delivered = {(i, c) for i, c in rows}
    assert set(store.fetch("SELECT image_id, label FROM labels")) == delivered
    assert_consistent(cfg, store)


# ----------------------------------------------------------------------------- 3. a burst
def _synthetic_images(store, n: int, prefix: str = "s") -> list[str]:
    """n known, ok images without files or vectors (ids are sha256 of a counter), inserted in one transaction."""
    import hashlib

    import pyarrow as pa

    from al_core.catalogue.store import now

    ids = [hashlib.sha256(f"{prefix}{i}".encode()).hexdigest() for i in range(n)]
    tbl = pa.table({"image_id": ids, "path": [f"/synthetic/{prefix}/{i:08d}.jpg" for i in range(n)]})
    ts = now()
    with store.transaction() as con:
        con.register("_syn", tbl)
        con.execute("INSERT INTO images SELECT image_id, 1, 1, 1, 'JPEG', ?, 0 FROM _syn", [ts])
        con.execute(
            "INSERT INTO image_paths (path, image_id, size_bytes, mtime_ns, status, error, first_seen, "
            "last_seen, last_scan_id, source) "
            "SELECT path, image_id, 1, 0, 'ok', NULL, ?, ?, 0, '/synthetic' FROM _syn",
            [ts, ts],
        )
        con.unregister("_syn")
    return ids


def test_burst_of_100_files_and_one_of_20000_rows(base_project, tmp_path):
    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    classes = list(cfg.class_names(store))
    syn = _synthetic_images(store, 20_000 + 500 + 1)
    shared, small_ids, big_ids = syn[0], syn[1:501], syn[501:]
    t0 = time.time() - 1000
    delivered = 0
    # 100 small files, in delivery order; each labels 5 new images and relabels one shared image
    for k in range(100):
        rows = [(iid, classes[(k + j) % len(classes)]) for j, iid in enumerate(small_ids[5 * k : 5 * k + 5])]
        rows.append((shared, classes[k % len(classes)]))
        p = deliver(cfg.inbox / f"burst-{k:03d}.csv", "image_id,label\n" + "".join(f"{i},{c}\n" for i, c in rows))
        os.utime(p, ns=(int((t0 + k) * 1e9),) * 2)
        delivered += len(rows)
    # one large file (delivered between file 49 and 50) and the answers to batch 0
    big = "image_id,label,annotator\n" + "".join(
        f"{iid},{classes[j % len(classes)]},bulk\n" for j, iid in enumerate(big_ids)
    )
    p = deliver(cfg.inbox / "big.csv", big)
    os.utime(p, ns=(int((t0 + 49.5) * 1e9),) * 2)
    delivered += len(big_ids)
    ans = answer_batch(cfg, store, 0)
    os.utime(ans, ns=(int((t0 + 200) * 1e9),) * 2)
    delivered += 4
    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    reqs = requests_of(run_requests(defs, instance))
    assert len(reqs) == 1 and len(reqs[0].run_config["ops"]["round_labels"]["config"]["files"]) == 102
    t = time.perf_counter()
    assert execute(defs, instance, reqs[0]).success  # one run for the whole burst
    seconds = time.perf_counter() - t
    print(f"\nburst: {delivered} label rows in 102 files ingested (and round 1 run) in {seconds:.1f} s")
    assert requests_of(run_requests(defs, instance)) == []  # nothing left over: a bounded number of runs (1)
    # nothing lost: every delivered row is one stored row
    assert store.fetch("SELECT count(*) FROM labels") == [(delivered,)]
    assert store.fetch("SELECT count(*), sum(n_applied) FROM label_files WHERE status = 'accepted'") == [
        (102, delivered)
    ]
    # in order: the shared image's history follows the delivery order, the last file's label is current
    hist = [r[0] for r in store.fetch("SELECT label FROM labels WHERE image_id = ? ORDER BY label_id", [shared])]
    assert hist == [classes[k % len(classes)] for k in range(100)]
    assert store.fetch("SELECT label FROM current_labels WHERE image_id = ?", [shared]) == [
        (classes[99 % len(classes)],)
    ]
    order = [
        r[0]
        for r in store.fetch("""SELECT f.original_name FROM labels l JOIN label_files f USING (file_id)
                                          GROUP BY 1 ORDER BY min(l.label_id)""")
    ]
    assert order == [f"burst-{k:03d}.csv" for k in range(50)] + ["big.csv"] + [
        f"burst-{k:03d}.csv" for k in range(50, 100)
    ] + [ans.name]
    # round 1 trained and evaluated its probe; the 20,604 labels delivered spend the total budget (12 labels,
    # selection.total_budget counts labels delivered), so no batch 1 is proposed
    assert store.fetch("SELECT round, status FROM rounds ORDER BY round") == [(0, "closed")]
    assert store.fetch("SELECT round FROM probes") == [(1,)] and store.fetch("SELECT count(*) FROM metrics") == [(1,)]
    assert store.get_asset_output("query_set", "1")["stopped"] == "total budget spent"
    assert seconds < 120
    assert_consistent(cfg, store)


# ----------------------------------------------------------------------------- 4. a reader holds the database
def _hold(cfg, seconds: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOLD_S=str(seconds))
    p = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability_child", "hold", str(cfg.source_file)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout.readline().strip() == "held"
    return p


def test_reader_holding_the_database_while_a_round_writes(base_project, tmp_path):
    from al_core.catalogue.store import Store
    from al_core.loop import ingest_label_files, list_inbox

    cfg = copy_project(base_project, tmp_path / "p", lock_timeout_s=1)
    store = open_store(cfg)
    f = answer_batch(cfg, store, 0)
    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    req = requests_of(run_requests(defs, instance))[0]  # the sensor reads beside a reader: fine
    holder = _hold(cfg, 60)
    try:
        instance.add_dynamic_partitions("rounds", [req.partition_key])
        res = defs.resolve_job_def(req.job_name).execute_in_process(
            instance=instance,
            partition_key=req.partition_key,
            run_config=req.run_config,
            tags=req.tags,
            raise_on_error=False,
        )
        assert not res.success
        failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
        err, msg = failure.event_specific_data.error, ""
        while err is not None:  # Dagster wraps the step's exception: walk the causes
            msg += err.message
            err = err.cause
        assert "StoreLockedError" in msg and "locked by another process" in msg and "Retry" in msg, msg
    finally:
        holder.kill()
        holder.wait(timeout=10)
    # nothing half-written: no label, no file record, the file still in the inbox, no batch 1
    assert _counts(store)["labels"] == 0 and _counts(store)["label_files"] == 0 and f.exists()
    assert not (cfg.outbox / "round-0001.csv").exists()
    # a retry (Dagster's run retry re-executes the same request) completes the round
    assert execute(defs, instance, req).success
    assert store.fetch("SELECT count(*) FROM labels") == [(4,)] and (cfg.outbox / "round-0001.csv").exists()
    assert_consistent(cfg, store)
    # a reader that lets go within the lock window: the writer waits and succeeds
    f2 = deliver(
        cfg.inbox / "late.csv",
        f"image_id,label\n{store.fetch('SELECT image_id FROM queries WHERE round = 1')[0][0]},cat\n",
    )
    holder = _hold(cfg, 1.5)
    try:
        t = time.perf_counter()
        rep = ingest_label_files(
            Store(cfg.db_path, cfg.vectors_dir, lock_timeout_s=30),
            cfg,
            list_inbox(cfg.inbox, 0),
            round_=2,
            classes=cfg.class_names(store),
        )
        waited = time.perf_counter() - t
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert rep.counts == {"accepted": 1} and not f2.exists()
    assert waited >= 0.5, "the writer should have waited for the reader"


# ----------------------------------------------------------------------------- 5. two rounds requested at once
def test_two_rounds_requested_at_once_are_serialised(base_project, tmp_path):
    import yaml

    from al_core.cli.round import main as round_main

    conf = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert conf["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert conf["run_coordinator"]["config"]["max_concurrent_runs"] == 1  # the queue runs one run at a time
    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    # batch 0 answered AND `al round next` pressed twice: three round runs requested at the same tick
    answer_batch(cfg, store, 0)
    assert round_main(["next", "--config", cfg.source_file]) == 0
    assert round_main(["next", "--config", cfg.source_file]) == 0
    reqs = requests_of(run_requests(defs, instance))
    assert [r.job_name for r in reqs] == ["round_job"] * 3 and {r.partition_key for r in reqs} == {"1"}
    assert all(r.tags.get("al/writes") == "true" for r in reqs)  # dagster.yaml's tag limit applies to them
    # the queue runs them one after the other; each later run sees what the earlier ones committed
    results = [execute(defs, instance, r) for r in reqs]
    assert all(r.success for r in results), [r.success for r in results]
    assert store.fetch("SELECT round, status, closed_by FROM rounds ORDER BY round") == [
        (0, "closed", "answered"),
        (1, "open", None),
    ]  # batch 1 is not closed by the stale requests
    assert store.fetch("SELECT count(*) FROM labels") == [(4,)]
    assert store.fetch("SELECT count(*) FROM requests WHERE done_at IS NULL") == [(0,)]
    assert store.fetch("SELECT count(*) FROM probes") == [(1,)]
    assert requests_of(run_requests(defs, instance)) == []
    assert_consistent(cfg, store)


def test_two_processes_ingesting_at_once_apply_each_label_once(base_project, tmp_path):
    """Outside the queue (two workers, or a CLI beside a run): the store's write lock serialises them."""
    cfg = copy_project(base_project, tmp_path / "p", lock_timeout_s=60)
    store = open_store(cfg)
    answer_batch(cfg, store, 0, name="a.csv", only=3)
    rows = store.fetch("SELECT image_id FROM queries WHERE round = 0 ORDER BY rank")
    truth = dict(store.fetch("SELECT image_id, any_value(class_name) FROM ground_truth GROUP BY 1"))
    deliver(
        cfg.inbox / "b.csv",
        "image_id,label,annotator\n"  # the same annotator as a.csv (answer_batch's)
        + "".join(f"{r[0]},{truth[r[0]]},sim\n" for r in rows[1:]),
    )
    # a writer holds the database while both workers start, so both read the same state, then race
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb,sys,time; c=duckdb.connect(sys.argv[1]); "
            "print('held', flush=True); time.sleep(float(sys.argv[2]))",
            str(cfg.db_path),
            "6",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.reliability_child", "labels", str(cfg.source_file)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        outs = [w.communicate(timeout=120) for w in workers]
    finally:
        holder.kill()
        holder.wait()
        for w in workers:
            if w.poll() is None:
                w.kill()
    assert [w.returncode for w in workers] == [0, 0], [o[1][-2000:] for o in outs]
    assert store.fetch("SELECT count(*), count(DISTINCT image_id) FROM labels") == [(4, 4)]
    assert store.fetch(
        "SELECT original_name, count(*) FROM label_files WHERE status = 'accepted' GROUP BY 1 ORDER BY 1"
    ) == [("a.csv", 1), ("b.csv", 1)]
    assert sorted(p.name.split("-", 2)[-1] for p in (cfg.inbox / "accepted").iterdir()) == ["a.csv", "b.csv"]
    assert_consistent(cfg, store)


# ----------------------------------------------------------------------------- 1 + 5 + 9: the real daemon
DAEMON_TIMEOUT_S = 300


def _listening(pid_root: int) -> set[str]:
    import psutil

    out = set()
    try:
        procs = [psutil.Process(pid_root), *psutil.Process(pid_root).children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        try:
            out |= {c.laddr.ip for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


@pytest.mark.slow
def test_daemon_fails_a_killed_run_retries_it_and_the_queue_goes_on(base_project, tmp_path):
    """`dagster-daemon run` (what `make demo` and `make ui` start) with the project's dagster.yaml: the round run's
    process is SIGKILLed half-way through inserting labels; the run is marked FAILURE (not left STARTED in the
    one-run queue), run retries launch it again, and the retry completes the round with each label once."""
    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    once = tmp_path / "fault-fired"
    env = dict(
        os.environ,
        DAGSTER_HOME=str(home),
        AL_CONFIG=str(cfg.source_file),
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        AL_FAULT="labels.mid_insert",
        AL_FAULT_ONCE=str(once),
    )
    answer_batch(cfg, store, 0)
    log_path = tmp_path / "daemon.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(ROOT / "workspace.yaml")],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    addresses: set[str] = set()

    def round_succeeded() -> bool:
        with dg.DagsterInstance.from_config(str(home)) as inst:
            return inst.get_runs_count(dg.RunsFilter(job_name="round_job", statuses=[dg.DagsterRunStatus.SUCCESS])) > 0

    try:
        deadline = time.monotonic() + DAEMON_TIMEOUT_S
        while not ((cfg.outbox / "round-0001.csv").exists() and round_succeeded()):
            addresses |= _listening(proc.pid)
            assert proc.poll() is None, log_path.read_text()[-4000:]
            assert time.monotonic() < deadline, "no successful round in time:\n" + log_path.read_text()[-4000:]
            time.sleep(1)
        addresses |= _listening(proc.pid)
    finally:
        stop_group(proc)
    assert once.exists(), "the fault point never fired"
    # nothing the daemon and its code server open listens beyond this machine
    assert addresses <= {"127.0.0.1", "::1"}, addresses
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = sorted(
            instance.get_run_records(dg.RunsFilter(job_name="round_job")), key=lambda r: r.create_timestamp
        )
        statuses = [r.dagster_run.status for r in records]
        assert statuses[:2] == [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS], statuses
        killed, retry = records[0].dagster_run, records[1].dagster_run
        assert retry.tags.get("dagster/parent_run_id") == killed.run_id  # Dagster's run retry
        # the one-run queue: no two runs of the instance overlapped
        spans = sorted((r.start_time, r.end_time) for r in instance.get_run_records() if r.start_time)
        assert all(a[1] is not None and a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), spans
    assert store.fetch("SELECT count(*), count(DISTINCT image_id) FROM labels") == [(4, 4)]
    assert_consistent(cfg, store)


# ----------------------------------------------------------------------------- 7. hostile images
def _hostile_tree(root: Path, sample_root: Path) -> None:
    """Good images in two class folders plus every kind of bad entry a real folder can hold."""
    import io

    from PIL import Image

    from tests.test_images import _png_declaring

    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for f in sorted((sample_root / cls).iterdir())[:2]:
            shutil.copy(f, root / cls / f.name)
    good = sorted((sample_root / "cat").iterdir())[5].read_bytes()
    (root / "cat" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    (root / "cat" / "bomb.png").write_bytes(_png_declaring(100_000, 100_000, buf.getvalue()))
    os.mkfifo(root / "cat" / "fifo.jpg")  # opening it for reading would wait for a writer for ever
    os.symlink(root / "nowhere.jpg", root / "cat" / "dangling.jpg")
    (root / "cat" / "folder.jpg").mkdir()  # a folder with an image name: walked into, not read as a file
    shutil.copy(sorted((sample_root / "cat").iterdir())[6], root / "cat" / "folder.jpg" / "inside.jpg")
    (root / "dog" / "changing.jpg").write_bytes(sorted((sample_root / "dog").iterdir())[5].read_bytes())
    (root / "dog" / "locked.jpg").write_bytes(sorted((sample_root / "dog").iterdir())[6].read_bytes())


def test_hostile_images_are_recorded_skipped_and_the_run_succeeds(tmp_path, sample_root, monkeypatch):
    import yaml

    import al_core.ingest.scan as images
    from al_assets.definitions import build_defs
    from al_core.config import load_config

    # first, in a child process with a deadline: a FIFO named .jpg must not hang the scan
    fifo_only = tmp_path / "fifo-project"
    _hostile_tree(fifo_only / "images", sample_root)
    (fifo_only / "al.yaml").write_text(yaml.safe_dump({"images": {"root": "images"}, "paths": {"data_dir": "data"}}))
    proc = run_child("scan", load_config(fifo_only / "al.yaml"), timeout=90)
    assert proc.returncode == 0 and "survived" in proc.stdout, proc.stderr[-3000:]

    # then the whole ingest job (scan + embed) in process, with a file changing and a file unreadable
    root = tmp_path / "project" / "images"
    _hostile_tree(root, sample_root)
    conf = {
        "images": {"root": "images"},
        "classes": ["cat", "dog"],
        "paths": {"data_dir": "data"},
        "backbone": {"name": "efficientnet_lite0", "image_size": 64, "batch_size": 8},
    }
    (root.parent / "al.yaml").write_text(yaml.safe_dump(conf))
    cfg = load_config(root.parent / "al.yaml")
    changing, locked = str(root / "dog" / "changing.jpg"), str(root / "dog" / "locked.jpg")
    real_hash, real_open = images._hash_and_decode, os.open

    def hash_while_changing(p):
        if p.path == changing:  # the annotation tool is still writing it: it grows after the listing
            with open(changing, "ab") as f:
                f.write(b"\0" * 4096)
        return real_hash(p)

    def open_denied(path, flags, *a, **kw):  # root ignores chmod 000: deny the read the way the OS would
        # (image files are opened by name inside their folder's descriptor: al_core.files.safe.open_regular)
        if str(path) == locked or (kw.get("dir_fd") is not None and path == os.path.basename(locked)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(images, "_hash_and_decode", hash_while_changing)
    monkeypatch.setattr(os, "open", open_denied)
    res = build_defs(cfg).resolve_job_def("ingest_job").execute_in_process(instance=dg.DagsterInstance.ephemeral())
    monkeypatch.undo()
    assert res.success
    store = open_store(cfg)
    rows = {Path(p).name: (st, err or "") for p, st, err in store.fetch("SELECT path, status, error FROM image_paths")}
    assert {n for n, (st, _) in rows.items() if st == "ok"} == {"0000.jpg", "0001.jpg", "inside.jpg"}
    assert rows["truncated.jpg"][0] == "corrupt" and "truncated" in rows["truncated.jpg"][1].lower()
    assert rows["bomb.png"][0] == "corrupt" and "bomb" in rows["bomb.png"][1]
    assert rows["fifo.jpg"] == ("corrupt", "not a regular file (FIFO, socket or device)")
    assert rows["dangling.jpg"][0] == "corrupt" and "dangling" in rows["dangling.jpg"][1]
    assert rows["changing.jpg"][0] == "corrupt" and "changed while being read" in rows["changing.jpg"][1]
    assert rows["locked.jpg"] == ("corrupt", "unreadable: Permission denied")
    # skipped: only the ok images have vectors
    n_ok = store.fetch("SELECT count(DISTINCT image_id) FROM image_paths WHERE status = 'ok'")[0][0]
    assert store.fetch("SELECT count(*) FROM embedding_index") == [(n_ok,)] and n_ok == 5
    # once the file has settled (and the permission is back), a rescan records both
    from al_core.ingest.scan import scan

    scan(store, root)
    assert store.fetch("SELECT status FROM image_paths WHERE path IN (?, ?)", [changing, locked]) == [("ok",), ("ok",)]


# ----------------------------------------------------------------------------- 8. damaged, foreign and older databases
def _v1_database(path: Path) -> dict:
    """A database as schema version 1 wrote it (MIGRATIONS[1], never edited once released), with rows."""
    import duckdb

    from al_core.catalogue.store import MIGRATIONS

    con = duckdb.connect(str(path))
    for ddl in MIGRATIONS[1]:
        con.execute(ddl)
    con.execute(
        "INSERT INTO schema_info VALUES ('schema_version', '1'), ('app', 'al-pipeline'), "
        "('created_at', '2026-01-01T00:00:00'), ('database_id', 'v1db')"
    )
    con.execute(
        "INSERT INTO images SELECT sha256(i::VARCHAR), 10, 32, 32, 'JPEG', TIMESTAMP '2026-01-01', 1 "
        "FROM range(50) t(i)"
    )
    con.execute(
        "INSERT INTO image_paths SELECT '/img/' || i || '.jpg', sha256(i::VARCHAR), 10, 0, 'ok', NULL, "
        "TIMESTAMP '2026-01-01', TIMESTAMP '2026-01-01', 1, '/img' FROM range(50) t(i)"
    )
    con.execute(
        "INSERT INTO rounds VALUES (0, 'seed', 'centroid', 0, 4, 4, 'c', NULL, 'closed', "
        "TIMESTAMP '2026-01-01', TIMESTAMP '2026-01-02', 'answered', 0.1, 'r', NULL)"
    )
    con.execute(
        "INSERT INTO queries SELECT 0, i + 1, sha256(i::VARCHAR), '/img/' || i || '.jpg', NULL, 'centroid' "
        "FROM range(4) t(i)"
    )
    con.execute(
        "INSERT INTO label_files VALUES ('f1', 'abc', 'a.csv', NULL, 'csv', 'accepted', NULL, 4, 4, 0, 0, "
        "false, TIMESTAMP '2026-01-02', 1, 'r')"
    )
    con.execute(
        "INSERT INTO labels SELECT i + 1, sha256(i::VARCHAR), 'cat', false, true, 'abc', 'f1', NULL, 'ann', "
        "TIMESTAMP '2026-01-02', 1, i + 2, NULL FROM range(4) t(i)"
    )
    counts = {
        t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("images", "image_paths", "rounds", "queries", "label_files", "labels")
    }
    con.close()
    return counts


def test_older_schema_is_migrated_without_losing_rows(tmp_path):
    from al_core.catalogue.store import SCHEMA_VERSION, SchemaVersionError, Store

    db = tmp_path / "v1.duckdb"
    counts = _v1_database(db)
    store = Store(db, lock_timeout_s=2)
    with pytest.raises(SchemaVersionError, match="schema version 1.*open it once writable"):
        store.fetch("SELECT count(*) FROM labels")  # a reader never migrates: a clear error
    with store.connect():  # the first writable open migrates 1 -> current in one transaction per version
        pass
    assert store.schema_version() == SCHEMA_VERSION > 1
    assert {t: store.fetch(f"SELECT count(*) FROM {t}")[0][0] for t in counts} == counts
    assert store.fetch("SELECT value FROM schema_info WHERE key = 'database_id'") == [("v1db",)]
    # the version-2 views answer over the version-1 rows
    assert store.fetch("SELECT round, labels_so_far FROM round_summary ORDER BY round") == [(0, 0), (1, 4)]
    assert store.fetch("SELECT count(*) FROM label_lineage WHERE state = 'current'") == [(4,)]


def test_a_failing_migration_changes_nothing(tmp_path, monkeypatch):
    import al_core.catalogue.store as S

    db = tmp_path / "v1.duckdb"
    counts = _v1_database(db)
    monkeypatch.setattr(S, "SCHEMA_VERSION", S.SCHEMA_VERSION + 1)
    monkeypatch.setitem(S.MIGRATIONS, S.SCHEMA_VERSION, ["CREATE TABLE half_done (x INT)", "THIS IS NOT SQL"])
    with pytest.raises(Exception, match="syntax error|Parser"), S.Store(db).connect():
        pass
    monkeypatch.undo()
    store = S.Store(db)
    # versions before the broken one committed (each version is its own transaction); the broken one left no trace
    assert store.schema_version() == S.SCHEMA_VERSION
    assert "half_done" not in {r[0] for r in store.fetch("SELECT table_name FROM information_schema.tables")}
    assert {t: store.fetch(f"SELECT count(*) FROM {t}")[0][0] for t in counts} == counts


def test_damaged_database_gives_an_error_never_wrong_rows(tmp_path):
    from al_core.catalogue.store import Store, StoreError

    good = tmp_path / "good.duckdb"
    store = Store(good)
    with store.transaction() as con:
        con.execute(
            "INSERT INTO images SELECT sha256(i::VARCHAR), i, 1, 1, 'x', TIMESTAMP '2026-01-01', 0 "
            "FROM range(20000) t(i)"
        )
    q = "SELECT count(*), sum(size_bytes), sum(hash(image_id)) FROM images"
    want = store.fetch(q)
    size = good.stat().st_size
    outcomes = {"same": 0, "error": 0}
    for off in range(0, size, 256 << 10):  # 16 bytes of garbage in each 256 KiB block, one copy each
        bad = tmp_path / "bad.duckdb"
        shutil.copy(good, bad)
        with open(bad, "r+b") as f:
            f.seek(off + 5000)
            f.write(b"\xa5" * 16)
        try:
            got = Store(bad, lock_timeout_s=1).fetch(q)
        except Exception as e:
            assert isinstance(e, StoreError) or "Corrupt database file" in str(e) or "checksum" in str(e), e
            outcomes["error"] += 1
            continue
        assert got == want, f"silently wrong rows after damage at byte {off + 5000}"
        outcomes["same"] += 1  # the damage hit free space
    assert outcomes["error"] >= 1, outcomes
    # truncated (a copy interrupted half-way): refused at open with the path in the message
    cut = tmp_path / "cut.duckdb"
    cut.write_bytes(good.read_bytes()[: size // 2])
    with pytest.raises(StoreError, match="cut.duckdb"):
        Store(cut, lock_timeout_s=1).fetch("SELECT count(*) FROM images")
    assert cut.stat().st_size == size // 2  # untouched
