"""The labelling loop in process: ingest, seed pool, label file, sensor, round run, next batch."""

import json
from pathlib import Path

import dagster as dg
import pytest

from al_core.catalogue import open_store
from al_core.config import load_config
from al_core.loop import outbox
from tests.loop_helpers import answer_batch, execute, make_project, run_requests


@pytest.fixture()
def project(tmp_path):
    from al_assets.definitions import build_defs

    cfg = load_config(make_project(tmp_path))
    defs = build_defs(cfg)
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("ingest_job").execute_in_process(instance=instance).success
    return cfg, defs, instance


def _requests(result):
    if isinstance(result, dg.SkipReason):
        return []
    return list(result.run_requests or [])


def test_whole_loop_seed_labels_sensor_round(project):
    cfg, defs, instance = project
    store = open_store(cfg)
    # 1. the sensor starts the seed round once embeddings exist
    reqs = _requests(run_requests(defs, instance))
    assert [r.job_name for r in reqs] == ["seed_job"]
    assert execute(defs, instance, reqs[0]).success
    batch0 = (cfg.outbox / "round-0000.csv").read_text().splitlines()
    assert batch0[0] == ",".join(outbox.BATCH_CSV_HEADER) and len(batch0) == 1 + 4
    assert batch0[0] == "rank,path,file_name,predicted,probability,score,score_means,strategy,image_id,label"
    assert all(",centroid," in line and line.endswith(",") for line in batch0[1:])  # the label column left empty
    tasks = json.loads((cfg.outbox / "round-0000.label-studio.json").read_text())
    assert len(tasks) == 4 and all("image_id" in t["data"] for t in tasks)
    assert '<Choice value="skip"/>' in (cfg.outbox / "label-studio-config.xml").read_text()
    eval_ids = {r[0] for r in store.fetch("SELECT image_id FROM eval_set WHERE label IS NOT NULL")}
    assert len(eval_ids) == 12
    assert not eval_ids & {line.split(",")[-2] for line in batch0[1:]}  # image_id, then the empty label
    # nothing in the inbox: the sensor skips
    assert _requests(run_requests(defs, instance)) == []

    # 2. annotators answer batch 0: the sensor requests round 1, which trains, evaluates and proposes batch 1
    f = answer_batch(cfg, store, 0)
    reqs = _requests(run_requests(defs, instance))
    assert [r.job_name for r in reqs] == ["round_job"] and reqs[0].partition_key == "1"
    res = execute(defs, instance, reqs[0])
    assert res.success
    assert not f.exists() and len(list((cfg.inbox / "accepted").iterdir())) == 1
    assert store.fetch("SELECT count(*), count(DISTINCT image_id), min(round) FROM labels") == [(4, 4, 1)]
    probes = store.fetch("SELECT probe_id, n_labels, sha256, trigger FROM probes")
    assert len(probes) == 1 and probes[0][1] == 4 and probes[0][3] == "round"
    acc = store.fetch("SELECT accuracy, n_eval FROM metrics")[0]
    assert 0.0 <= acc[0] <= 1.0 and acc[1] == 12
    batch1 = (cfg.outbox / "round-0001.csv").read_text().splitlines()[1:]
    assert len(batch1) == 4 and all(line.split(",")[7] == "dropquery" for line in batch1)
    ids1 = {line.split(",")[-2] for line in batch1}
    assert not ids1 & (eval_ids | {line.split(",")[-2] for line in batch0[1:]})
    assert store.fetch("SELECT status, closed_by FROM rounds WHERE round = 0") == [("closed", "answered")]
    # lineage through asset inputs: the query set records the probe that scored it
    assert store.fetch("SELECT probe_id FROM rounds WHERE round = 1")[0][0] == probes[0][0]
    # asset checks of the round passed
    checks = res.get_asset_check_evaluations()
    assert all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks if not c.passed]
    assert {"round_is_evaluated", "deliveries_accepted"} <= {c.check_name for c in checks}
    # the query set links its review gallery (beside the batch CSV) as a path; the run says what it did
    meta = res.asset_materializations_for_node("query_set")[0].metadata
    assert meta["review_page"].path == str(cfg.outbox / "round-0001.html") and Path(meta["review_page"].path).exists()
    assert instance.get_run_by_id(res.run_id).tags["al/status"] == "answered (4/4): training the next round"


def test_al_ingest_alone_lets_the_sensor_propose_the_seed_batch(tmp_path):
    """Issue 12, item 1: the seed step follows from the data: vectors made by `al ingest` (no Dagster run of
    ingest_job at all) are seen by the sensor, which proposes the seed pool at its next tick."""
    from al_assets.definitions import build_defs
    from al_core.cli.ingest import main as ingest_main

    cfg_file = make_project(tmp_path)
    cfg = load_config(cfg_file)
    defs, instance = build_defs(cfg), dg.DagsterInstance.ephemeral()
    first = run_requests(defs, instance)
    assert isinstance(first, dg.SkipReason) and "al ingest" in first.skip_message
    assert ingest_main(["--config", str(cfg_file)]) == 0
    reqs = _requests(run_requests(defs, instance))  # the next tick
    assert [r.job_name for r in reqs] == ["seed_job"]
    assert execute(defs, instance, reqs[0]).success
    assert (cfg.outbox / "round-0000.csv").exists() and (cfg.outbox / "round-0000.html").exists()
    assert instance.get_runs(dg.RunsFilter(job_name="ingest_job")) == []


def test_partial_answer_waits_then_manual_close(project):
    cfg, defs, instance = project
    store = open_store(cfg)
    execute(defs, instance, _requests(run_requests(defs, instance))[0])
    answer_batch(cfg, store, 0, only=2)
    req = _requests(run_requests(defs, instance))[0]
    res = execute(defs, instance, req)
    assert res.success
    # a run that only waited says so in its tags and metadata, not an unexplained success
    assert instance.get_run_by_id(res.run_id).tags["al/status"] == "waiting for labels (2/4)"
    meta = res.asset_materializations_for_node("round_labels")[0].metadata
    assert meta["status"].value == "waiting for labels (2/4)"
    assert store.fetch("SELECT count(*) FROM labels") == [(2,)]
    assert store.fetch("SELECT count(*) FROM probes") == [(0,)]  # 2/4 answered < 1.0: no probe, no new batch
    assert not (cfg.outbox / "round-0001.csv").exists()
    # `al round next` records a request; the sensor turns it into a forced round run
    from al_core.cli.round import main as round_main

    assert round_main(["next", "--config", cfg.source_file]) == 0
    reqs = _requests(run_requests(defs, instance))
    assert len(reqs) == 1 and reqs[0].run_config["ops"]["round_labels"]["config"]["force_close"] is True
    assert execute(defs, instance, reqs[0]).success
    assert store.fetch("SELECT status, closed_by FROM rounds WHERE round = 0") == [("closed", "manual")]
    assert (cfg.outbox / "round-0001.csv").exists()
    assert store.fetch("SELECT count(*) FROM requests WHERE done_at IS NULL") == [(0,)]


def test_bad_file_rejected_whole_duplicate_recorded(project):
    cfg, defs, instance = project
    store = open_store(cfg)
    execute(defs, instance, _requests(run_requests(defs, instance))[0])
    good = answer_batch(cfg, store, 0, name="a-good.csv")
    content = good.read_text()
    bad = cfg.inbox / "b-bad.csv"
    bad.write_text(content + "../../etc/passwd,cat,eve\n")
    import os
    import time

    old = time.time() - 5
    os.utime(bad, (old, old))
    req = _requests(run_requests(defs, instance))[0]
    res = execute(defs, instance, req)
    assert res.success
    # the rejected delivery is a visible warning in the UI: the round's check fails with severity WARN
    (check,) = [c for c in res.get_asset_check_evaluations() if c.check_name == "deliveries_accepted"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "b-bad.csv" in check.description and "looks like a path" in check.description
    rows = dict(store.fetch("SELECT original_name, status FROM label_files"))
    assert rows == {"a-good.csv": "accepted", "b-bad.csv": "rejected"}
    assert store.fetch("SELECT count(*) FROM labels") == [(4,)]  # nothing from the bad file
    rejected = list((cfg.inbox / "rejected").iterdir())
    report = [p for p in rejected if p.name.endswith(".errors.json")]
    assert len(rejected) == 2 and len(report) == 1
    errs = json.loads(report[0].read_text())["errors"]
    assert any(e["line"] == 6 for e in errs)
    # the same bytes again, under another name: a duplicate row, no label changes
    again = cfg.inbox / "again.csv"
    again.write_text(content)
    os.utime(again, (old, old))
    assert execute(defs, instance, _requests(run_requests(defs, instance))[0]).success
    assert store.fetch("SELECT status FROM label_files WHERE original_name = 'again.csv'") == [("duplicate",)]
    assert store.fetch("SELECT count(*) FROM labels") == [(4,)]


def test_skip_relabel_unproposed_eval_inbox_label_studio_retract_and_retry(project):
    import os
    import time

    from al_core.cli.labels import main as labels_main

    cfg, defs, instance = project
    store = open_store(cfg)
    execute(defs, instance, _requests(run_requests(defs, instance))[0])
    batch0 = [r[0] for r in store.fetch("SELECT image_id FROM queries WHERE round = 0 ORDER BY rank")]
    truth = dict(store.fetch("SELECT image_id, any_value(class_name) FROM ground_truth GROUP BY 1"))
    eval_ids = {r[0] for r in store.fetch("SELECT image_id FROM eval_set")}
    never = next(i for i in sorted(truth) if i not in batch0 and i not in eval_ids)
    old = time.time() - 5

    def deliver(name, text, folder=None):
        d = folder or cfg.inbox
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
        os.utime(d / name, (old, old))
        return d / name

    # a Label Studio export: two annotations on one task (the newest is the annotator's answer), one cancelled (a
    # skip, undated: older than the dated ones), one skip; every annotation is kept
    tasks = []
    for n, iid in enumerate(batch0):
        anns = [
            {
                "id": 10 * n + 1,
                "was_cancelled": False,
                "updated_at": "2026-01-01T00:00:00Z",
                "result": [{"type": "choices", "value": {"choices": ["ship" if truth[iid] != "ship" else "cat"]}}],
            },
            {
                "id": 10 * n + 2,
                "was_cancelled": False,
                "updated_at": "2026-02-01T00:00:00Z",
                "result": [{"type": "choices", "value": {"choices": [truth[iid]]}}],
            },
            {"id": 10 * n + 3, "was_cancelled": True, "result": []},
        ]
        if n == 3:
            anns[1]["result"][0]["value"]["choices"] = ["skip"]
        tasks.append({"id": n, "data": {"image_id": iid}, "annotations": anns})
    deliver("export.json", json.dumps(tasks))
    deliver("extra.csv", f"image_id,label\n{never},{truth[never]}\n")  # an image never proposed: accepted, flagged
    spare = next(i for i in sorted(truth) if i not in batch0 and i not in eval_ids and i != never)
    deliver("eval.csv", f"image_id,label\n{spare},{truth[spare]}\n", cfg.inbox / "eval")
    assert execute(defs, instance, _requests(run_requests(defs, instance))[-1]).success
    labels = {
        r[0]: r[1:] for r in store.fetch("SELECT image_id, label, is_skip, proposed, annotation_id FROM current_labels")
    }
    assert labels[batch0[0]] == (truth[batch0[0]], False, True, "2")  # the newest annotation decides
    assert store.fetch(
        "SELECT annotation_id, is_skip, state FROM answers WHERE image_id = ? ORDER BY label_id", [batch0[0]]
    ) == [("1", False, "superseded"), ("2", False, "current"), ("3", True, "superseded")]
    assert labels[batch0[3]][:2] == ("skip", True)
    assert labels[never][2] is False  # flagged as never proposed
    assert store.fetch("SELECT label, source FROM eval_set WHERE image_id = ?", [spare]) == [
        (truth[spare], "inbox/eval")
    ]
    assert spare not in labels
    # the skipped image is never proposed again and is not a training label
    assert store.fetch("SELECT n_labels FROM probes") == [(4,)]  # 3 batch labels + the unproposed one; skip excluded
    later = {r[0] for r in store.fetch("SELECT image_id FROM queries WHERE round >= 1")}
    assert batch0[3] not in later and spare not in later

    # a changed label is history; the newest wins
    new = next(c for c in cfg.classes if c != truth[batch0[0]])
    deliver("fix.csv", f"image_id,label\n{batch0[0]},{new}\n")
    assert execute(defs, instance, _requests(run_requests(defs, instance))[-1]).success
    hist = store.fetch("SELECT label FROM labels WHERE image_id = ? AND NOT is_skip ORDER BY label_id", [batch0[0]])
    assert [h[0] for h in hist][-2:] == [truth[batch0[0]], new]
    assert store.fetch("SELECT label FROM current_labels WHERE image_id = ?", [batch0[0]]) == [(new,)]

    # retract the fix: the older label is current again, the history stays
    sha = store.fetch("SELECT sha256 FROM label_files WHERE original_name = 'fix.csv'")[0][0]
    assert labels_main(["retract", sha[:12], "--config", cfg.source_file, "--reason", "bad annotator"]) == 0
    assert store.fetch("SELECT label FROM current_labels WHERE image_id = ?", [batch0[0]]) == [(truth[batch0[0]],)]
    assert store.fetch("SELECT count(*) FROM labels WHERE image_id = ?", [batch0[0]]) == [(4,)]
    assert store.fetch("SELECT status FROM label_files WHERE sha256 = ?", [sha]) == [("retracted",)]

    # a file rejected for an unknown image can be retried once the image exists (a new run key)
    bogus = "f" * 64
    f = deliver("late.csv", f"image_id,label\n{bogus},cat\n")
    sha_late = __import__("al_core.catalogue.store", fromlist=["sha256_file"]).sha256_file(f)
    assert execute(defs, instance, _requests(run_requests(defs, instance))[-1]).success
    assert store.fetch("SELECT status FROM label_files WHERE sha256 = ?", [sha_late]) == [("rejected",)]
    assert labels_main(["retry", sha_late[:12], "--config", cfg.source_file]) == 0
    reqs = _requests(run_requests(defs, instance))
    retry = [r for r in reqs if "al/request" in r.tags]
    assert len(retry) == 1 and retry[0].run_config["ops"]["round_labels"]["config"]["files"][0].endswith("late.csv")


def test_scheduled_retraining_adds_a_probe_version_without_a_new_batch(project):
    import datetime as dt

    cfg, defs, instance = project
    store = open_store(cfg)
    execute(defs, instance, _requests(run_requests(defs, instance))[0])
    schedule = defs.resolve_schedule_def("retrain_schedule")
    ctx = dg.build_schedule_context(
        instance=instance,
        resources={"store": defs.resources["store"]},
        scheduled_execution_time=dt.datetime(2026, 1, 1, 3, 0),
    )
    assert isinstance(schedule(ctx), dg.SkipReason)  # no probe yet: skipped, says why
    answer_batch(cfg, store, 0)
    assert execute(defs, instance, _requests(run_requests(defs, instance))[0]).success
    ctx = dg.build_schedule_context(
        instance=instance,
        resources={"store": defs.resources["store"]},
        scheduled_execution_time=dt.datetime(2026, 1, 1, 3, 0),
    )
    req = schedule(ctx)
    assert isinstance(req, dg.RunRequest) and req.partition_key == "1" and req.tags["al/trigger"] == "schedule"
    req = req.with_replaced_attrs(job_name="retrain_job")
    assert execute(defs, instance, req).success
    assert store.fetch("SELECT version, trigger FROM probes ORDER BY version") == [(1, "round"), (2, "schedule")]
    assert store.fetch("SELECT count(*) FROM metrics") == [(2,)]
    assert store.fetch("SELECT count(*) FROM rounds") == [(2,)]  # no new batch proposed


def test_loop_package_exports_functions_and_classes_not_modules():
    import importlib
    import inspect
    import pkgutil

    import al_core.loop as loop

    modules = {m.name for m in pkgutil.iter_modules(loop.__path__)}
    for m in modules:  # importing every module first: a module named like an export would shadow it
        importlib.import_module(f"al_core.loop.{m}")
    assert not modules & set(loop.__all__)
    for name in loop.__all__:
        obj = getattr(loop, name)
        assert not inspect.ismodule(obj) and obj.__name__ == name, name
    with pytest.raises(AttributeError):
        loop.no_such_name  # noqa: B018


def test_inbox_sensor_takes_its_interval_from_the_project_config(tmp_path):
    import yaml

    from sensors.inbox import build_inbox_sensor

    p = make_project(tmp_path, per_class=1)
    conf = yaml.safe_load(p.read_text())
    conf["sensor"]["interval_s"] = 7
    p.write_text(yaml.safe_dump(conf))
    sensor = build_inbox_sensor(load_config(p))
    assert sensor.name == "inbox_sensor" and sensor.minimum_interval_seconds == 7
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_outbox_names_and_fields(tmp_path):
    from al_core.loop import outbox
    from al_core.loop.annotator import delivery_name, pending_rounds

    assert outbox.batch_csv(tmp_path, 3).name == "round-0003.csv"
    assert outbox.batch_tasks_json(tmp_path, 3).name == "round-0003.label-studio.json"
    for name in ("round-0003.csv", "round-0001.csv", "round-0002.label-studio.json", "xround-0004.csv", "round-5.csv"):
        (tmp_path / name).write_text("image_id\n")
    assert outbox.batches_in(tmp_path) == [1, 3] and outbox.batches_in(tmp_path / "none") == []
    cfg = load_config(make_project(tmp_path / "p", per_class=1))
    cfg.outbox.mkdir(parents=True)
    for r in (0, 2):
        outbox.batch_csv(cfg.outbox, r).write_text("image_id,path,rank,score,strategy\n")
    (cfg.outbox / ".simulated-annotator").write_text("0\n")
    assert pending_rounds(cfg) == [2]
    assert delivery_name("sim", 2) == "sim-round-0002.csv"
    # a field with a separator, a quote or any line break is quoted (a lone carriage return too)
    assert [outbox.csv_field(v) for v in ("a,b", 'say "x"', "a\rb", "a\nb", None, 3)] == [
        '"a,b"',
        '"say ""x"""',
        '"a\rb"',
        '"a\nb"',
        "",
        "3",
    ]


def test_simulated_annotator_answers_each_batch_once_from_the_ground_truth(project):
    from al_core.loop.annotator import answer_pending, answer_round, pending_rounds
    from al_core.loop.inbox import list_inbox

    cfg, defs, instance = project
    store = open_store(cfg)
    assert pending_rounds(cfg) == []
    execute(defs, instance, _requests(run_requests(defs, instance))[0])
    assert pending_rounds(cfg) == [0]
    delivered = answer_pending(cfg)
    assert [p.name for p in delivered] == ["simulated-round-0000.csv"] and pending_rounds(cfg) == []
    assert list_inbox(cfg.inbox, 0.0) == delivered and sorted(p.name for p in cfg.inbox.iterdir()) == [
        "eval",
        "simulated-round-0000.csv",
    ]  # no temporary file left behind (inbox/eval/ made with the seed batch)
    truth = dict(store.fetch("SELECT image_id, any_value(class_name) FROM ground_truth GROUP BY 1"))
    batch = [r[0] for r in store.fetch("SELECT image_id FROM queries WHERE round = 0 ORDER BY rank")]
    lines = delivered[0].read_text().splitlines()
    assert lines == ["image_id,label,annotator"] + [f"{i},{truth[i]},simulated" for i in batch]
    # every answer a skip, under another annotator's name: a second file, the same batch
    p = answer_round(cfg, 0, skip=1.0, annotator="team-b")
    assert p.name == "team-b-round-0000.csv"
    assert {line.split(",")[1] for line in p.read_text().splitlines()[1:]} == {cfg.labels.skip_label}


def test_auto_holdout_follows_the_pool():
    from al_core.config import from_dict
    from al_core.loop.holdout import auto_holdout_size, holdout_size

    assert auto_holdout_size(1200, 4) == 120  # the team of the issue: 10 %, not 500 of 1,200
    assert auto_holdout_size(100_000, 10) == 500  # capped
    assert auto_holdout_size(100, 10) == 50  # at least 5 per class expected ... but at most half the pool
    assert auto_holdout_size(300, 10) == 50
    assert holdout_size(from_dict({}), 1200, 4) == 120
    assert holdout_size(from_dict({"evaluation": {"holdout": 37}}), 1200, 4) == 37


def test_a_round_without_evaluation_labels_is_a_visible_warning(tmp_path):
    """Issue 12, item 5: until the evaluation list is labelled, the round's metrics say "not evaluated" and the
    round_is_evaluated check fails as a warning (the run itself succeeds), naming what to do."""
    import yaml

    from al_assets.definitions import build_defs

    cfg_file = make_project(tmp_path)
    conf = yaml.safe_load(cfg_file.read_text())
    conf["evaluation"]["labels_from_ground_truth"] = False
    cfg_file.write_text(yaml.safe_dump(conf))
    cfg = load_config(cfg_file)
    defs, instance = build_defs(cfg), dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("ingest_job").execute_in_process(instance=instance).success
    store = open_store(cfg)
    reqs = _requests(run_requests(defs, instance))
    assert [r.job_name for r in reqs] == ["seed_job"] and execute(defs, instance, reqs[0]).success
    assert (cfg.outbox / "eval-holdout.csv").exists() and (cfg.inbox / "eval").is_dir()
    assert store.fetch("SELECT count(*) FROM eval_set WHERE label IS NOT NULL") == [(0,)]
    answer_batch(cfg, store, 0)
    reqs = _requests(run_requests(defs, instance))
    res = execute(defs, instance, reqs[0])
    assert res.success
    check = next(c for c in res.get_asset_check_evaluations() if c.check_name == "round_is_evaluated")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.description.startswith("not evaluated")
    assert check.metadata["eval_images"].value == "0"
    assert store.fetch("SELECT n_eval FROM metrics") == [(0,)]
