"""Audit and export (al_core.reporting.audit): rounds table, lineage, SQL views, export, snapshot, CLI.

One small but real project (40 sample images, 4 classes x 10, simple
class-informative 16-d vectors) is driven through the loop functions of
al_core.loop: eval hold-out, seed batch 0 (random), two label files answering
it (one with a skip), probe r1 + metrics, batch 1 (margin), a third label file
answering batch 1 (with a skip and a relabel of a batch-0 image), a retraction
of the second file, probe r2 v1 (round) and v2 (schedule), batch 2.
"""

import csv
import datetime as _dt
import json
import os
import shutil
import stat
import subprocess
import sys

import duckdb
import numpy as np
import pytest
import yaml

from al_core import cli
from al_core.catalogue import open_store
from al_core.catalogue.store import SCHEMA_VERSION, SchemaVersionError, Store, now, sha256_file
from al_core.cli import audit as audit_cli
from al_core.config import from_dict
from al_core.reporting import audit
from al_core.reporting.audit import AuditError, export, iso, lineage, rounds_table, snapshot
from tests.conftest import SAMPLE_ROOT

CLASSES = ["airplane", "cat", "frog", "ship"]
PER_CLASS = 10
CONFIG_ID = "fake-16d"


def _conf() -> dict:
    return {
        "images": {"root": "images"},
        "classes": CLASSES,
        "selection": {
            "seed_strategy": "random",
            "query_strategy": "margin",
            "budget_per_round": 8,
            "total_budget": 24,
            "answered_fraction": 1.0,
            "seed": 0,
        },
        "evaluation": {"holdout": 8, "labels_from_ground_truth": True},
        "paths": {"data_dir": "data", "inbox": "data/inbox", "outbox": "data/outbox"},
        "store": {"lock_timeout_s": 1},
    }


def _write_labels(cfg, name: str, rows: list[tuple[str, str]], annotator: str):
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    p = cfg.inbox / name
    p.write_text("image_id,label,annotator\n" + "".join(f"{i},{lab},{annotator}\n" for i, lab in rows))
    return p


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    import al_core.loop as R
    from al_core.ingest.scan import scan

    tmp = tmp_path_factory.mktemp("audit")
    for c in CLASSES:
        (tmp / "images" / c).mkdir(parents=True)
        for f in sorted((SAMPLE_ROOT / c).iterdir())[:PER_CLASS]:
            shutil.copy(f, tmp / "images" / c / f.name)
    (tmp / "al.yaml").write_text(yaml.safe_dump(_conf()))
    cfg = from_dict(_conf(), base_dir=tmp, source_file=str(tmp / "al.yaml"))
    store = open_store(cfg)
    scan(store, root=cfg.image_root)
    truth = dict(store.fetch("SELECT image_id, any_value(class_name) FROM ground_truth GROUP BY 1"))
    assert len(truth) == len(CLASSES) * PER_CLASS
    ids = sorted(truth)
    rng = np.random.default_rng(0)
    vecs = rng.normal(0, 0.3, (len(ids), 16)).astype(np.float32)
    for k, iid in enumerate(ids):
        vecs[k, CLASSES.index(truth[iid])] += 3.0
    store.register_embedding_config(CONFIG_ID, {"backbone": "fake", "dim": 16})
    store.write_embeddings(CONFIG_ID, ids, vecs)
    classes = cfg.class_names(store)
    assert list(classes) == CLASSES

    assert R.ensure_eval_set(store, cfg, classes)["holdout"] == 8
    # round 0: seed pool
    pool = R.load_pool(store, cfg, CONFIG_ID, classes)
    b0 = R.propose(store, cfg, 0, pool)
    assert b0.budget == 8
    # round 1: two deliveries answer batch 0; file B holds one label and one skip
    a_rows = [(i, truth[i]) for i in b0.image_ids[:6]]
    b_rows = [(b0.image_ids[6], truth[b0.image_ids[6]]), (b0.image_ids[7], "skip")]
    fa = _write_labels(cfg, "labels-a.csv", a_rows, "alice")
    fb = _write_labels(cfg, "labels-b.csv", b_rows, "bob")
    sha_a, sha_b = sha256_file(fa), sha256_file(fb)
    rep1 = R.ingest_label_files(store, cfg, [fa, fb], round_=1, classes=classes)
    assert rep1.counts == {"accepted": 2} and rep1.ready
    R.close_round(store, 0, "answered")
    pool1 = R.load_pool(store, cfg, CONFIG_ID, classes)
    probe1, rec1 = R.train_probe(store, cfg, 1, pool1)
    R.evaluate(store, cfg, 1, pool1, probe1, rec1.probe_id)
    b1 = R.propose(store, cfg, 1, pool1, probe=probe1, probe_id=rec1.probe_id)
    assert b1.budget == 8
    # round 2: file C answers batch 1 (one skip) and relabels a batch-0 image; file B is retracted
    relabelled = b0.image_ids[0]
    wrong = CLASSES[(CLASSES.index(truth[relabelled]) + 1) % len(CLASSES)]
    c_rows = [(i, truth[i]) for i in b1.image_ids[:7]] + [(b1.image_ids[7], "skip"), (relabelled, wrong)]
    fc = _write_labels(cfg, "labels-c.csv", c_rows, "carol")
    sha_c = sha256_file(fc)
    rep2 = R.ingest_label_files(store, cfg, [fc], round_=2, classes=classes)
    assert rep2.counts == {"accepted": 1} and rep2.ready
    with store.transaction() as con:  # what `al labels retract` records
        con.execute("INSERT INTO retractions VALUES (?, ?, 'bad annotator', 2)", [sha_b, now()])
        con.execute("UPDATE label_files SET status = 'retracted' WHERE sha256 = ?", [sha_b])
    R.close_round(store, 1, "answered")
    pool2 = R.load_pool(store, cfg, CONFIG_ID, classes)
    probe2, rec2 = R.train_probe(store, cfg, 2, pool2)
    R.evaluate(store, cfg, 2, pool2, probe2, rec2.probe_id)
    b2 = R.propose(store, cfg, 2, pool2, probe=probe2, probe_id=rec2.probe_id)
    probe3, rec3 = R.train_probe(store, cfg, 2, pool2, trigger="schedule")
    R.evaluate(store, cfg, 2, pool2, probe3, rec3.probe_id)
    return {
        "tmp": tmp,
        "cfg": cfg,
        "store": store,
        "truth": truth,
        "ids": ids,
        "b0": b0,
        "b1": b1,
        "b2": b2,
        "sha": {"a": sha_a, "b": sha_b, "c": sha_c},
        "probes": {"r1": rec1, "r2v1": rec2, "r2v2": rec3},
        "relabelled": relabelled,
    }


# ----------------------------------------------------------------------------- rounds
def test_rounds_table(project):
    rows = rounds_table(project["store"])
    assert [r["round"] for r in rows] == [0, 1, 2]
    r0, r1, r2 = rows
    assert (r0["kind"], r0["strategy"], r0["seed"], r0["budget"]) == ("seed", "random", 0, 8)
    assert (r1["kind"], r1["strategy"], r1["seed"]) == ("query", "margin", 1)
    assert r2["status"] == "open" and r0["status"] == r1["status"] == "closed"
    # labels so far: none at round 0; 6 (file A) + 1 (file B) and one skip at round 1;
    # at round 2 file B is retracted and file C adds 7 labels, a skip and a relabel (no new image)
    assert [r["labels_so_far"] for r in rows] == [0, 7, 13]
    assert [r["skips_so_far"] for r in rows] == [0, 1, 1]
    assert [r["labels_ingested"] for r in rows] == [0, 8, 9]
    # ... and agree with what the probe of each round really trained on
    assert r1["probe_n_labels"] == r1["labels_so_far"] == project["probes"]["r1"].n_labels
    assert r2["probe_n_labels"] == r2["labels_so_far"] == project["probes"]["r2v2"].n_labels
    # the latest probe version of a round is reported, with its metrics
    assert r0["probe_id"] is None and r0["accuracy"] is None
    assert r1["probe_id"] == project["probes"]["r1"].probe_id
    assert (r2["probe_id"], r2["probe_version"], r2["probe_trigger"], r2["n_probes"]) == (
        project["probes"]["r2v2"].probe_id,
        2,
        "schedule",
        2,
    )
    m = dict(project["store"].fetch("SELECT probe_id, accuracy FROM metrics"))
    assert r2["accuracy"] == pytest.approx(m[r2["probe_id"]]) and 0 <= r2["balanced_accuracy"] <= 1
    for r in rows:
        _dt.datetime.fromisoformat(r["proposed_at"].rstrip("Z"))
    assert r0["evaluated_at"] is None and r1["evaluated_at"].endswith("Z")
    json.dumps(rows)  # JSON-ready


def _norm(v):
    if isinstance(v, _dt.datetime):
        return iso(v)
    if isinstance(v, float):
        return round(v, 9)
    return v


def test_round_summary_view_agrees_with_rounds_table(project):
    store = project["store"]
    with store.connect(read_only=True) as con:
        cur = con.execute("SELECT * FROM round_summary")
        cols = [d[0] for d in cur.description]
        view = [dict(zip(cols, map(_norm, r), strict=True)) for r in cur.fetchall()]
    py = [{k: _norm(v) for k, v in r.items()} for r in rounds_table(store)]
    assert set(cols) == set(py[0])
    assert view == py


# ----------------------------------------------------------------------------- lineage
def test_lineage_of_a_labelled_image(project):
    store, b1 = project["store"], project["b1"]
    iid = b1.image_ids[0]  # proposed by margin in round 1, labelled by carol in round 2
    d = lineage(store, iid[:10])  # a unique prefix is enough
    assert d["image_id"] == iid
    assert d["image"]["first_seen"] and d["paths"][0]["status"] == "ok"
    assert str(project["tmp"] / "images") in d["paths"][0]["path"]
    assert [e["config_id"] for e in d["embeddings"]] == [CONFIG_ID]
    assert d["eval_set"] is None
    [prop] = d["proposals"]
    assert (prop["round"], prop["strategy"], prop["rank"]) == (1, "margin", 1)
    assert prop["score"] == pytest.approx(b1.scores[0])
    [lab] = d["labels"]
    assert (lab["proposed_round"], lab["proposed_strategy"]) == (1, "margin")
    assert lab["proposed_score"] == pytest.approx(b1.scores[0])
    assert (lab["file_name"], lab["file_sha256"], lab["annotator"]) == ("labels-c.csv", project["sha"]["c"], "carol")
    assert (lab["round"], lab["state"], lab["retracted"], lab["label"]) == (2, "current", False, project["truth"][iid])
    assert d["current_label"]["label_id"] == lab["label_id"]
    pr = project["probes"]
    assert [p["probe_id"] for p in d["probes"]] == [pr["r2v1"].probe_id, pr["r2v2"].probe_id]
    assert all(p["sha256"] and p["accuracy"] is not None for p in d["probes"])
    assert lab["probe_ids"] == [pr["r2v1"].probe_id, pr["r2v2"].probe_id]
    text = audit_cli.format_lineage(d)
    assert "labels-c.csv" in text and "carol" in text and pr["r2v2"].probe_id in text and "margin" in text


def test_lineage_history_superseded_and_retracted(project):
    store, b0, pr = project["store"], project["b0"], project["probes"]
    d = lineage(store, project["relabelled"])
    old, new = d["labels"]
    # alice and carol answered the same batch differently: both answers count, a disagreement, never dropped;
    # the latest policy takes carol's (the newer delivery)
    assert (old["state"], new["state"]) == ("current", "current")
    assert (old["decides"], new["decides"]) == (False, True) and old["disagreement"] and new["disagreement"]
    assert d["current_label"]["label_id"] == new["label_id"]
    t = d["training"]
    assert (t["status"], t["label"], t["policy"], t["disagreement"]) == ("labelled", new["label"], "latest", True)
    [dis] = t["disagreements"]
    assert [(a["annotator"], a["label"]) for a in dis["answers"]] == [("alice", old["label"]), ("carol", new["label"])]
    assert dis["resolution"] == "resolved by the latest policy" and dis["is_current"]
    assert (old["file_name"], new["file_name"]) == ("labels-a.csv", "labels-c.csv")
    assert old["proposed_round"] == new["proposed_round"] == 0 and old["proposed_strategy"] == "random"
    assert old["probe_ids"] == [pr["r1"].probe_id] and new["probe_ids"] == [pr["r2v1"].probe_id, pr["r2v2"].probe_id]
    # a retracted delivery: history kept, marked retracted, only the probe trained before it used the label
    for iid in b0.image_ids[6:8]:
        d = lineage(store, iid)
        [lab] = d["labels"]
        assert (lab["file_name"], lab["annotator"]) == ("labels-b.csv", "bob")
        assert lab["retracted"] and lab["state"] == "retracted" and lab["retracted_from_round"] == 2
        assert lab["retraction_reason"] == "bad annotator" and lab["file_status"] == "retracted"
        assert d["current_label"] is None
        assert lab["probe_ids"] == ([] if lab["is_skip"] else [pr["r1"].probe_id])
    assert "[retracted from round 2]" in audit_cli.format_lineage(d)


def test_lineage_unknown_and_bad_ids(project):
    store = project["store"]
    unknown = next(c * 64 for c in "0123456789abcdef" if not any(i.startswith(c * 8) for i in project["ids"]))
    with pytest.raises(AuditError, match="no image"):
        lineage(store, unknown)
    with pytest.raises(AuditError, match="at least 8"):
        lineage(store, project["ids"][0][:5])
    with pytest.raises(AuditError, match="not an image id"):
        lineage(store, "../etc/passwd")


def test_lineage_ambiguous_prefix(store):
    with store.transaction() as con:
        for tail in ("0" * 56, "1" * 56):
            con.execute("INSERT INTO images VALUES (?, 1, 1, 1, 'PNG', ?, 1)", ["abcdef12" + tail, now()])
    with pytest.raises(AuditError, match="ambiguous"):
        lineage(store, "abcdef12")
    assert lineage(store, "abcdef120")["image_id"] == "abcdef12" + "0" * 56


def test_label_lineage_view_agrees_with_lineage(project):
    store = project["store"]
    with store.connect(read_only=True) as con:
        cur = con.execute("SELECT * FROM label_lineage")
        cols = [d[0] for d in cur.description]
        view = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        n_labels = con.execute("SELECT count(*) FROM labels").fetchone()[0]
    assert len(view) == n_labels == 17
    fields = {
        "label_id": "label_id",
        "label": "label",
        "is_skip": "is_skip",
        "label_round": "round",
        "annotator": "annotator",
        "file_name": "file_name",
        "file_sha256": "file_sha256",
        "file_status": "file_status",
        "retracted": "retracted",
        "retracted_from_round": "retracted_from_round",
        "is_current": "is_current",
        "state": "state",
        "proposed_round": "proposed_round",
        "decides": "decides",
        "disagreement": "disagreement",
        "task_id": "task_id",
        "seconds_source": "seconds_source",
        "superseded_because": "superseded_because",
        "proposed_strategy": "proposed_strategy",
        "proposed_rank": "proposed_rank",
    }
    for iid in sorted({v["image_id"] for v in view}):
        d = lineage(store, iid)
        rows = [v for v in view if v["image_id"] == iid]
        assert len(rows) == len(d["labels"])
        for v, lab in zip(rows, d["labels"], strict=True):
            for vk, pk in fields.items():
                assert v[vk] == lab[pk], (iid, vk)
            assert _norm(v["proposed_score"]) == _norm(lab["proposed_score"])
            assert iso(v["received_at"]) == lab["received_at"]
            assert [p["probe_id"] for p in v["probes"]] == lab["probe_ids"] and v["n_probes"] == len(lab["probe_ids"])
            assert v["config_ids"] == [e["config_id"] for e in d["embeddings"]]
            assert iso(v["image_first_seen"]) == d["image"]["first_seen"]
    # the rows the training labels come from are exactly current_labels, and each is a current answer
    cur_ids = {r[0] for r in store.fetch("SELECT label_id FROM current_labels")}
    assert {v["label_id"] for v in view if v["decides"]} == cur_ids
    assert all(v["is_current"] for v in view if v["decides"])


# ----------------------------------------------------------------------------- export
def test_export_csv_and_parquet(project, tmp_path):
    import pyarrow.parquet as pq

    store, cfg, pr = project["store"], project["cfg"], project["probes"]
    s = export(store, cfg, tmp_path / "out" / "labels.csv", "csv")
    assert s["rows"] == len(project["ids"]) and s["probe_id"] == pr["r2v2"].probe_id
    with open(s["path"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(audit.EXPORT_COLUMNS)
    assert sorted(r["image_id"] for r in rows) == project["ids"]  # one row per embedded image
    assert all(
        r["predicted"] in CLASSES and 0 < float(r["confidence"]) <= 1 and r["probe_id"] == pr["r2v2"].probe_id
        for r in rows
    )
    current = {i: (lab, skip) for i, lab, skip in store.fetch("SELECT image_id, label, is_skip FROM current_labels")}
    for r in rows:
        lab, skip = current.get(r["image_id"], ("", None))
        assert r["label"] == lab
        assert r["label_source"] == ("" if skip is None else ("skip" if skip else "human"))
        assert os.path.exists(r["path"])
    assert (s["labelled"], s["skips"]) == (13, 1)
    relabelled = next(r for r in rows if r["image_id"] == project["relabelled"])
    assert relabelled["label"] != project["truth"][project["relabelled"]]  # newest wins
    # the retracted delivery's images are unlabelled again
    assert {r["label_source"] for r in rows if r["image_id"] in project["b0"].image_ids[6:8]} == {""}
    # predictions and confidences are exactly the latest probe's
    from al_core.loop.train import load_probe

    emb = store.load_embeddings(CONFIG_ID, [r["image_id"] for r in rows])
    proba = load_probe(store, pr["r2v2"].probe_id).predict_proba(emb.features)
    assert [r["predicted"] for r in rows] == [CLASSES[k] for k in proba.argmax(1)]
    np.testing.assert_allclose([float(r["confidence"]) for r in rows], proba.max(1), rtol=1e-6)
    # parquet, same content
    sp = export(store, cfg, tmp_path / "out" / "labels.parquet")
    assert sp["format"] == "parquet"
    t = pq.read_table(sp["path"])
    assert t.column_names == list(audit.EXPORT_COLUMNS) and t.num_rows == len(rows)
    assert t.column("predicted").to_pylist() == [r["predicted"] for r in rows]
    np.testing.assert_allclose(t.column("confidence").to_numpy(), [float(r["confidence"]) for r in rows])
    assert sorted(os.listdir(tmp_path / "out")) == ["labels.csv", "labels.parquet"]  # no temporary left


def test_export_refuses_a_tampered_probe(project, tmp_path):
    from al_core.loop.errors import LoopError

    path = project["probes"]["r2v2"].path
    with open(path, "rb") as f:
        saved = f.read()
    try:
        with open(path, "ab") as f:
            f.write(b"x")
        with pytest.raises(LoopError, match="sha256"):
            export(project["store"], project["cfg"], tmp_path / "x.csv")
        assert not (tmp_path / "x.csv").exists()
    finally:
        with open(path, "wb") as f:
            f.write(saved)


# ----------------------------------------------------------------------------- snapshot
def _counts(con, tables):
    return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


def test_snapshot_is_consistent_read_only_and_standalone(project, tmp_path):
    store = project["store"]
    dest = tmp_path / "snaps" / "warehouse-test.duckdb"
    s = snapshot(store, dest)
    assert s["path"] == str(dest) and s["tables"]["labels"] == 17
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o444
    assert os.listdir(dest.parent) == [dest.name]  # no temporary, no WAL
    with store.connect(read_only=True) as con:
        src = _counts(con, s["tables"])
        src_rounds = con.execute("SELECT * FROM round_summary").fetchall()
    assert src == s["tables"]
    here = os.getcwd()
    try:
        os.chdir("/")
        con = duckdb.connect(str(dest), read_only=True)
        snap_counts = _counts(con, s["tables"])
        assert snap_counts.pop("schema_info") == src.pop("schema_info") + 2  # + snapshot_of, snapshot_at
        assert snap_counts == src
        assert con.execute("SELECT * FROM round_summary").fetchall() == src_rounds
        assert con.execute("SELECT count(*) FROM label_lineage").fetchone()[0] == 17
        assert con.execute("SELECT count(*) FROM embeddings").fetchone()[0] == len(project["ids"])
        info = dict(con.execute("SELECT key, value FROM schema_info").fetchall())
        con.close()
    finally:
        os.chdir(here)
    assert info["snapshot_of"] == str(store.db_path) and info["schema_version"] == str(SCHEMA_VERSION)
    # the store's own read path accepts it (schema version check) and the Python audit works on it
    snap = Store(dest, vectors_dir=store.vectors_dir)
    assert rounds_table(snap) == rounds_table(store)
    with pytest.raises(AuditError, match="exists"):
        snapshot(store, dest)


def test_snapshot_never_replaces_a_file_created_during_the_copy(project, tmp_path, monkeypatch):
    from al_core.catalogue import audit as catalogue_audit

    dest = tmp_path / "snap.duckdb"
    copy = catalogue_audit.copy_database

    def copy_then_race(con, tmp, **kw):
        counts = copy(con, tmp, **kw)
        dest.write_bytes(b"another snapshot")  # someone else published this name meanwhile
        return counts

    monkeypatch.setattr(catalogue_audit, "copy_database", copy_then_race)
    with pytest.raises(AuditError, match="exists"):
        snapshot(project["store"], dest)
    assert dest.read_bytes() == b"another snapshot" and os.listdir(tmp_path) == [dest.name]  # no temporary left


# ----------------------------------------------------------------------------- CLI
def test_cli_registered_and_commands_run(project, tmp_path, capsys):
    cfgp = str(project["tmp"] / "al.yaml")
    for name in ("rounds", "lineage", "export", "snapshot"):
        assert name in cli.COMMANDS
    assert cli.main(["rounds", "--config", cfgp]) == 0
    out = capsys.readouterr().out
    assert "labels" in out and "margin" in out and "not proposed" not in out
    assert cli.main(["rounds", "--json", "--config", cfgp]) == 0
    assert json.loads(capsys.readouterr().out) == rounds_table(project["store"])
    iid = project["b1"].image_ids[0]
    assert cli.main(["lineage", iid[:12], "--json", "--config", cfgp]) == 0
    assert json.loads(capsys.readouterr().out)["image_id"] == iid
    assert cli.main(["lineage", "abc", "--config", cfgp]) == 1
    assert "at least 8" in capsys.readouterr().err
    out_csv = tmp_path / "e.parquet"
    assert cli.main(["export", "--out", str(out_csv), "--config", cfgp]) == 0
    assert "parquet" in capsys.readouterr().out and out_csv.exists()
    # defaults: timestamped files under data/exports and data/snapshots
    assert audit_cli.main(["export", "--config", cfgp]) == 0
    assert audit_cli.main(["snapshot", "--config", cfgp]) == 0
    capsys.readouterr()
    data = project["cfg"].data_dir
    [e] = os.listdir(data / "exports")
    [sn] = os.listdir(data / "snapshots")
    assert e.startswith("labels-") and e.endswith(".csv") and sn.startswith("warehouse-") and sn.endswith(".duckdb")
    assert audit_cli.main(["nonsense"]) == 2


def test_locked_database_gives_exit_3_and_names_the_setting(project, capsys):
    cfgp = str(project["tmp"] / "al.yaml")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb,sys,time; c=duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(30)",
            str(project["store"].db_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        for argv in (["rounds"], ["lineage", project["ids"][0]], ["snapshot", "--out", "/tmp/never.duckdb"]):
            assert audit_cli.main([*argv, "--config", cfgp]) == 3
            err = capsys.readouterr().err
            assert "store.lock_timeout_s" in err and "locked" in err and "Traceback" not in err
    finally:
        holder.kill()
        holder.wait()
    assert not os.path.exists("/tmp/never.duckdb")


# ----------------------------------------------------------------------------- migration
def test_version_1_database_migrates_to_the_audit_views(tmp_path, monkeypatch):
    import al_core.catalogue.store as S

    db = tmp_path / "old.duckdb"
    monkeypatch.setattr(S, "SCHEMA_VERSION", 1)
    with Store(db).connect():
        pass
    monkeypatch.undo()
    assert S.SCHEMA_VERSION == SCHEMA_VERSION > 1
    with pytest.raises(SchemaVersionError, match="migrate"), Store(db).connect(read_only=True):
        pass
    with Store(db).connect() as con:  # a writable open migrates
        names = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert {
        "round_summary",
        "label_lineage",
        "current_labels",
        "embeddings",
        "answers",
        "image_labels",
        "batch_answers",
        "label_disagreements",
        "adjudication_queue",
    } <= names
    assert Store(db).schema_version() == S.SCHEMA_VERSION
    assert rounds_table(Store(db)) == []
