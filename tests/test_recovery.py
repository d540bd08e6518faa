"""Issue 16, classes 3, 6 and 9: faults that clear are followed by a successful round without a person; the class
list has a history; runs end cleanly.

The read-only outbox is made read-only for real: a read-only bind mount of the
folder onto itself (``mount --bind -o ro``, which works for root, where chmod
stops nothing); where mounting is not permitted, the folder is replaced by a
file, so that creating anything in it fails. docs/reliability.md has the table.
"""

import contextlib
import csv
import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from al_core.catalogue import open_store
from tests.reliability_helpers import (
    answer_batch,
    assert_consistent,
    copy_project,
    defs_for,
    execute,
    requests_of,
    run_requests,
)

BACKOFF_S, BACKOFF_MAX_S = 0.5, 1.5  # the sensor's back-off, scaled down from 30 s / 300 s for the test
TICK_S = 0.2  # the daemon's sensor interval, scaled down


class ReadOnly:
    """Makes a folder unwritable until ``clear()``: a read-only bind mount, else the folder replaced by a file."""

    def __init__(self, folder: Path):
        self.folder, self.mechanism = folder, None

    def __enter__(self) -> "ReadOnly":
        r = subprocess.run(
            ["mount", "--bind", "-o", "ro", str(self.folder), str(self.folder)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if r.returncode == 0:
            self.mechanism = "read-only bind mount"
        else:  # not root, or no mount permission (a container): a file where the folder was
            self.folder.rename(self.folder.with_name(self.folder.name + ".real"))
            self.folder.write_text("not a folder\n")
            self.mechanism = "folder replaced by a file"
        return self

    def clear(self) -> None:
        if self.mechanism == "read-only bind mount":
            subprocess.run(["umount", str(self.folder)], check=True, timeout=30)
        elif self.mechanism:
            self.folder.unlink()
            self.folder.with_name(self.folder.name + ".real").rename(self.folder)
        self.mechanism = None

    def __exit__(self, *exc) -> None:
        self.clear()


def _execute(defs, instance, req):
    """A run as the daemon launches it (in process), failing without raising."""
    job = defs.resolve_job_def(req.job_name)
    if req.partition_key is not None:
        instance.add_dynamic_partitions("rounds", [req.partition_key])
    return job.execute_in_process(
        instance=instance,
        partition_key=req.partition_key,
        run_config=req.run_config,
        tags=req.tags,
        raise_on_error=False,
    )


def _tick(defs, instance):
    return run_requests(defs, instance)


def _until_a_round_succeeds(defs, instance, timeout_s: float) -> tuple[float, list[str]]:
    """Tick every TICK_S and run what is requested until a run succeeds; (seconds until its request, keys)."""
    t0, keys = time.monotonic(), []
    while time.monotonic() - t0 < timeout_s:
        for req in requests_of(_tick(defs, instance)):
            keys.append(req.run_key)
            asked = time.monotonic() - t0
            if _execute(defs, instance, req).success:
                return asked, keys
        time.sleep(TICK_S)
    raise AssertionError(f"no successful run within {timeout_s} s; requested {keys}")


@pytest.fixture()
def fast_backoff(monkeypatch):
    import sensors.inbox as S

    monkeypatch.setattr(S, "RETRY_BACKOFF_S", BACKOFF_S)
    monkeypatch.setattr(S, "RETRY_BACKOFF_MAX_S", BACKOFF_MAX_S)
    assert S.retry_wait_s(1) == BACKOFF_S and S.retry_wait_s(10) == BACKOFF_MAX_S


# ----------------------------------------------------------------------------- 3. a read-only outbox
def test_a_read_only_outbox_is_followed_by_a_round_without_a_person(base_project, tmp_path, fast_backoff):
    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    answer_batch(cfg, store, 0)
    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    with ReadOnly(cfg.outbox) as fault:
        print(f"\noutbox made unwritable by: {fault.mechanism}")
        first = requests_of(_tick(defs, instance))
        assert len(first) == 1 and not _execute(defs, instance, first[0]).success
        # the labels are in and batch 1 is committed; its CSV could not be written
        assert store.fetch("SELECT count(*) FROM labels") == [(4,)]
        assert store.fetch("SELECT round, status FROM rounds ORDER BY round") == [(0, "closed"), (1, "open")]
        # the sensor asks for a resume run (the work owed: the outbox of batch 1), which fails too
        resume = requests_of(_tick(defs, instance))
        assert [r.tags.get("al/resume") for r in resume] == ["outbox-r1"]
        assert not _execute(defs, instance, resume[0]).success
        # the same work is not dropped (Dagster launches a key once): it is asked for again after the back-off
        held = _tick(defs, instance)
        assert isinstance(held, dg.SkipReason) and "requesting it again in" in held.skip_message
        time.sleep(BACKOFF_S + 0.1)
        again = requests_of(_tick(defs, instance))
        assert [r.run_key for r in again] == [resume[0].run_key + "-a1"]
        assert not _execute(defs, instance, again[0]).success
        fault.clear()
    # the fault has cleared: a successful run within the stated bound (back-off at most, plus one tick)
    asked, keys = _until_a_round_succeeds(defs, instance, timeout_s=60)
    print(f"\na run requested {asked:.2f} s after the outbox was writable again ({keys[-1]})")
    assert asked <= BACKOFF_MAX_S + TICK_S + 1.0, (asked, keys)
    assert keys[-1] == resume[0].run_key + "-a2"
    assert (cfg.outbox / "round-0001.csv").exists()
    assert store.fetch("SELECT count(*), count(DISTINCT image_id) FROM labels") == [(4, 4)]
    assert store.fetch("SELECT count(*) FROM rounds WHERE round = 1") == [(1,)]
    assert_consistent(cfg, store)
    # and the loop goes on
    answer_batch(cfg, store, 1)
    _until_a_round_succeeds(defs, instance, timeout_s=60)
    assert store.fetch("SELECT round, status FROM rounds ORDER BY round") == [(0, "closed"), (1, "closed"), (2, "open")]
    assert_consistent(cfg, store)


def test_a_run_retried_from_its_failed_step_finds_its_batch_proposed_and_succeeds(base_project, tmp_path, monkeypatch):
    """Dagster's run retry re-executes a failed run from the failed step (FROM_FAILURE, the default): here
    ``query_set``, which had committed batch 1 before the outbox refused its CSV. The retry is a no-op success
    that writes the missing files, not `LoopError: batch 1 was already proposed`."""
    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    answer_batch(cfg, store, 0)
    monkeypatch.setenv("AL_CONFIG", str(cfg.source_file))
    from tests.reliability_child import round_job_of_the_project

    job = dg.reconstructable(round_job_of_the_project)
    defs = defs_for(cfg)
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        req = requests_of(run_requests(defs, instance))[0]
        instance.add_dynamic_partitions("rounds", [req.partition_key])
        tags = {**req.tags, "dagster/partition": req.partition_key}
        with ReadOnly(cfg.outbox):
            failed = dg.execute_job(job, instance, run_config=req.run_config, tags=tags, raise_on_error=False)
        assert not failed.success
        steps = {e.step_key: e.event_type_value for e in failed.all_events if e.is_step_failure}
        assert steps == {"query_set": "STEP_FAILURE"}
        assert store.fetch("SELECT count(*) FROM rounds WHERE round = 1") == [(1,)]
        assert not (cfg.outbox / "round-0001.csv").exists()
        retry = dg.execute_job(
            job,
            instance,
            tags=tags,
            raise_on_error=False,  # the parent's tags, as run retries
            reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance),
        )
        assert retry.success
        ran = {e.step_key for e in retry.all_events if e.is_step_start}
        assert ran == {"query_set", "query_set_query_set_is_valid"}  # the failed step and its asset check only
        logs = [e.user_message for e in instance.all_logs(retry.run_id)]
        assert any("batch 1 already proposed by run " + failed.run_id in m for m in logs)
    assert store.fetch("SELECT count(*) FROM rounds WHERE round = 1") == [(1,)]
    assert store.fetch("SELECT count(*) FROM probes") == [(1,)]
    assert_consistent(cfg, store)


def test_a_project_file_fixed_mid_project_is_followed_by_a_round(base_project, tmp_path, fast_backoff):
    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    answer_batch(cfg, store, 0)
    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    req = requests_of(_tick(defs, instance))[0]
    good = Path(cfg.source_file).read_text()
    conf = yaml.safe_load(good)
    conf["selection"]["query_strategy"] = "dropquerry"  # a typo, saved while the run waits in the queue
    Path(cfg.source_file).write_text(yaml.safe_dump(conf))
    assert not _execute(defs, instance, req).success
    assert store.fetch("SELECT count(*) FROM labels") == [(0,)]  # nothing was half-applied
    # a tick does not crash: it says what is wrong and starts nothing
    held = _tick(defs, instance)
    assert isinstance(held, dg.SkipReason) and "dropquerry" in held.skip_message
    assert "cannot be used" in held.skip_message
    time.sleep(0.01)
    Path(cfg.source_file).write_text(good)
    asked, keys = _until_a_round_succeeds(defs, instance, timeout_s=60)
    assert asked <= BACKOFF_MAX_S + TICK_S + 1.0 and keys[-1] == req.run_key + "-a1", (asked, keys)
    assert store.fetch("SELECT count(*), count(DISTINCT image_id) FROM labels") == [(4, 4)]
    assert store.fetch("SELECT round, status FROM rounds ORDER BY round") == [(0, "closed"), (1, "open")]
    assert_consistent(cfg, store)


# ----------------------------------------------------------------------------- 6. the class list has a history
def _export(cfg_path: Path, out: Path) -> dict:
    from al_core.cli.audit import export_main

    assert export_main(["--config", str(cfg_path), "--out", str(out)]) == 0
    with open(out, newline="") as f:
        return {r["image_id"]: (r["predicted"], r["confidence"], r["probe_id"]) for r in csv.DictReader(f)}


def test_reordered_and_renamed_classes_do_not_relabel_old_predictions(base_project, tmp_path):
    from al_core.learn.probe import Probe
    from al_core.loop.evaluation import evaluate_round
    from al_core.loop.train import CLASSES_METADATA_KEY
    from al_core.reporting.data import confusion_classes, last_confusion, latest_metrics

    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    answer_batch(cfg, store, 0)
    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    result = execute(defs, instance, requests_of(run_requests(defs, instance))[0])
    assert result.success
    ((probe_id, path, classes_json),) = store.fetch("SELECT probe_id, path, classes FROM probes")
    meta = result.asset_materializations_for_node("query_set")[0].metadata
    assert meta["classes"].value == ", ".join(json.loads(classes_json))  # the query set says which list it used
    per_class = result.asset_materializations_for_node("eval_metrics")[0].metadata["per_class"].value
    ((n_eval, counts),) = store.fetch("SELECT n_eval, per_class_n_eval FROM metrics")
    counts = json.loads(counts)
    assert list(per_class) == json.loads(classes_json) and sum(counts.values()) == n_eval  # recall and its count
    assert all(
        re.fullmatch(rf"[01]\.\d{{3}} on {counts[c]} evaluation images", v)
        if counts[c]
        else v == "n/a (no evaluation image)"
        for c, v in per_class.items()
    ), per_class
    trained_with = json.loads(classes_json)
    assert trained_with == list(cfg.classes)
    assert json.loads(Probe.read_metadata(path)[CLASSES_METADATA_KEY]) == trained_with  # the file says it too
    before = _export(Path(cfg.source_file), tmp_path / "before.csv")
    assert {p for p, _, _ in before.values()} <= set(trained_with) and any(p for p, _, _ in before.values())
    config_id = store.fetch("SELECT config_id FROM probes")[0][0]
    metrics_before = evaluate_round(store, cfg, 1, config_id, probe_id)
    conf = yaml.safe_load(Path(cfg.source_file).read_text())
    for edited in (list(reversed(trained_with)), [c if c != "cat" else "kitty" for c in trained_with]):
        conf["classes"] = edited  # reordered, then one renamed
        Path(cfg.source_file).write_text(yaml.safe_dump(conf))
        from al_core.config import load_config

        cfg2 = load_config(cfg.source_file)
        assert _export(Path(cfg2.source_file), tmp_path / f"after-{edited[0]}.csv") == before
        m = evaluate_round(store, cfg2, 1, config_id, probe_id)
        assert (m["accuracy"], m["per_class_recall"], m["confusion"]) == (
            metrics_before["accuracy"],
            metrics_before["per_class_recall"],
            metrics_before["confusion"],
        )
        last = last_confusion(latest_metrics(store))
        assert confusion_classes(last, cfg2, store) == trained_with


# ----------------------------------------------------------------------------- 9. runs end cleanly
def test_every_writing_job_has_a_time_limit_and_the_sensor_sets_it():
    from al_assets.definitions import defs
    from al_assets.jobs import INGEST_MAX_RUNTIME_S, RUN_MAX_RUNTIME_S

    limits = {
        name: defs.resolve_job_def(name).tags.get("dagster/max_runtime")
        for name in ("ingest_job", "seed_job", "round_job", "retrain_job", "embed_shards_job", "embed_shards_dask_job")
    }
    assert limits == {
        "ingest_job": str(INGEST_MAX_RUNTIME_S),
        "seed_job": str(RUN_MAX_RUNTIME_S),
        "round_job": str(RUN_MAX_RUNTIME_S),
        "retrain_job": str(RUN_MAX_RUNTIME_S),
        "embed_shards_job": str(INGEST_MAX_RUNTIME_S),
        "embed_shards_dask_job": str(INGEST_MAX_RUNTIME_S),
    }


def test_the_demo_stops_the_daemon_only_once_no_run_is_going():
    from dagster._core.storage.tags import AUTO_RETRY_RUN_ID_TAG, WILL_RETRY_TAG

    from al_assets.runs import in_flight_runs, is_in_flight
    from al_assets.tools.demo import wait_for_runs

    @dg.job
    def noop():
        pass

    with dg.instance_for_test() as instance:
        run = instance.create_run_for_job(noop)
        assert [r.run_id for r in in_flight_runs(instance)] == [run.run_id]  # NOT_STARTED: still going
        t = time.monotonic()
        assert wait_for_runs(instance, timeout_s=0.5, poll_s=0.05) is False and time.monotonic() - t >= 0.5
        instance.report_run_failed(run)
        instance.add_run_tags(run.run_id, {WILL_RETRY_TAG: "true"})  # failed, its retry not created yet
        assert is_in_flight(instance.get_run_by_id(run.run_id))
        threading.Timer(0.5, lambda: instance.add_run_tags(run.run_id, {AUTO_RETRY_RUN_ID_TAG: "r2"})).start()
        t = time.monotonic()
        assert wait_for_runs(instance, timeout_s=30, poll_s=0.05) is True
        assert 0.4 <= time.monotonic() - t < 10 and in_flight_runs(instance) == []


def test_outbox_readers_skip_and_report_what_is_not_theirs(base_project, tmp_path):
    from al_core.loop.outbox import batches_in, has_batch_csv

    cfg = copy_project(base_project, tmp_path / "p")
    (cfg.outbox / "round-0007.csv").mkdir()
    (cfg.outbox / "round-0008.csv").symlink_to(cfg.db_path)
    assert batches_in(cfg.outbox) == [0] and not has_batch_csv(cfg.outbox, 7) and not has_batch_csv(cfg.outbox, 8)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(cfg.outbox / "round-0007.csv")


def test_a_round_run_before_any_delivery_needs_no_inbox_folder(base_project, tmp_path):
    """`al round next` or a resume run before anything was delivered: no inbox folder yet, nothing to move."""
    from al_core.loop import ingest_round_labels

    cfg = copy_project(base_project, tmp_path / "p")
    shutil.rmtree(cfg.inbox, ignore_errors=True)
    res = ingest_round_labels(open_store(cfg), cfg, 1, [])
    assert res.report.files == [] and not cfg.inbox.exists()
