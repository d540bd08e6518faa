"""The first hour of a team's own project (issue 12, items 3, 4 and 5), store-level on real image files: every
proposal and the evaluation list write their review gallery beside their CSV, the seed proposal writes the
evaluation list and makes inbox/ and inbox/eval/, `al status` says what to do next (the evaluation set, a rejected
delivery) and a round without evaluation labels says "not evaluated"."""

import csv
import io
import json
import re
import shutil
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import al_core.loop as R
from al_core.catalogue import open_store
from al_core.cli.status import main as status_main
from al_core.config import load_config
from al_core.ingest.scan import scan
from al_core.loop import outbox
from al_core.loop.evaluation import NOT_EVALUATED, evaluate
from al_core.loop.holdout import eval_set_state
from al_core.loop.review_page import THUMB_PX, thumbnail_path
from tests.conftest import SAMPLE_ROOT

CLASSES = ["cat", "dog", "ship"]
CONFIG_ID = "fake-8d"
PROJECT = """images:
  root: photos
classes: [cat, dog, ship]
selection:
  seed_strategy: random
  query_strategy: margin
  budget_per_round: 6
  total_budget: 18
  answered_fraction: 1.0
evaluation:
  holdout: 9
store:
  lock_timeout_s: 2
"""


@pytest.fixture()
def project(tmp_path):
    """A flat folder of 30 camera-style names, scanned, with fake 8-d embeddings that separate the classes."""
    root = tmp_path / "photos"
    root.mkdir()
    truth = {}
    for c in CLASSES:
        for f in sorted((SAMPLE_ROOT / c).iterdir())[:10]:
            name = f"IMG_{len(truth) + 1:04d}.JPG"
            shutil.copy(f, root / name)
            truth[name] = c
    (tmp_path / "al.yaml").write_text(PROJECT)
    cfg = load_config(tmp_path / "al.yaml")
    store = open_store(cfg)
    scan(store, root=cfg.image_root)
    id_of = {Path(p).name: i for p, i in store.fetch("SELECT path, image_id FROM image_paths WHERE status = 'ok'")}
    ids = sorted(id_of.values())
    cls_of = {id_of[n]: c for n, c in truth.items()}
    vecs = np.random.default_rng(0).normal(0, 0.3, (len(ids), 8)).astype(np.float32)
    for k, iid in enumerate(ids):
        vecs[k, CLASSES.index(cls_of[iid])] += 3.0
    store.register_embedding_config(CONFIG_ID, {"backbone": "fake", "dim": 8})
    store.write_embeddings(CONFIG_ID, ids, vecs)
    return cfg, store, truth, tmp_path / "al.yaml"


def _status(cfg_file, capsys) -> dict:
    assert status_main(["--config", str(cfg_file), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _filled(path: Path, labels: dict, **writer) -> bytes:
    """``path`` (an outbox CSV) with its label column filled from ``labels`` (file name -> class)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["label"] = labels[r["file_name"]]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), **({"lineterminator": "\n"} | writer))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _check_gallery(page: Path, files: list[str]):
    text = page.read_text()
    for name in files:
        assert name in text
    hrefs = re.findall(r'href="([^"]+)"', text)
    assert hrefs and all((page.parent / urllib.parse.unquote(h)).resolve().exists() for h in hrefs)
    thumbs = re.findall(r'<img src="([^"]+)"', text)
    assert len(thumbs) == len(files)
    for th in thumbs:
        with Image.open(page.parent / urllib.parse.unquote(th)) as im:
            assert max(im.size) == THUMB_PX >= 160
    return text


def test_seed_proposal_writes_galleries_the_eval_list_and_the_inbox_and_status_says_what_next(project, capsys):
    cfg, store, truth, cfg_file = project
    assert not cfg.inbox.exists()
    s = _status(cfg_file, capsys)
    assert "sensor proposes the seed batch" in s["next_action"] and s["last_round"] is None
    prop = R.propose_seed(store, cfg, CONFIG_ID)
    # inbox/ and inbox/eval/ exist from the first proposal
    assert cfg.inbox.is_dir() and (cfg.inbox / "eval").is_dir()
    # the batch's gallery beside its CSV, thumbnails generated small into the outbox, no image copied
    page = outbox.batch_page(cfg.outbox, 0)
    assert prop.outbox_files[0] == str(outbox.batch_csv(cfg.outbox, 0)) and prop.outbox_files[-1] == str(page)
    with open(outbox.batch_csv(cfg.outbox, 0), newline="") as f:
        batch = list(csv.DictReader(f))
    text = _check_gallery(page, [r["file_name"] for r in batch])
    assert "Batch 0" in text and "picked by random" in text and "<th>rank</th>" in text
    assert all(thumbnail_path(cfg.outbox, r["image_id"]).exists() for r in batch)
    assert not any(p.name in truth for p in cfg.outbox.rglob("*"))
    # the evaluation list and its gallery
    ev = eval_set_state(store, cfg)
    assert ev["size"] == prop.eval_holdout == 9 and ev["labelled"] == 0
    assert ev["csv"] == str(cfg.outbox / "eval-holdout.csv") and ev["page"] == str(outbox.eval_page(cfg.outbox))
    assert "label the evaluation set (0/9 labelled)" in ev["todo"] and str(cfg.inbox / "eval") in ev["todo"]
    with open(ev["csv"], newline="") as f:
        held = list(csv.DictReader(f))
    assert list(held[0]) == list(outbox.EVAL_CSV_HEADER) and len(held) == 9
    _check_gallery(Path(ev["page"]), [r["file_name"] for r in held])
    # al status: the open batch first, then the evaluation set, in one sentence
    s = _status(cfg_file, capsys)
    assert s["evaluation"]["labelled"] == 0 and s["evaluation"]["size"] == 9
    assert (
        s["next_action"].startswith("label batch 0 (0/6 answered)") and "label the evaluation set" in s["next_action"]
    )
    # a rejected delivery is a warning of al status and its next action
    (cfg.inbox / "oops.csv").write_text("file_name,label\nIMG_0001.JPG,kitten\n")
    rep = R.ingest_label_files(store, cfg, [cfg.inbox / "oops.csv"], round_=1)
    assert [f.status for f in rep.files] == ["rejected"]
    s = _status(cfg_file, capsys)
    (r,) = s["rejected_deliveries"]
    assert r["original_name"] == "oops.csv" and "not a class" in r["reason"]
    assert s["next_action"].startswith("fix the rejected delivery oops.csv")
    assert status_main(["--config", str(cfg_file)]) == 0
    out = capsys.readouterr().out
    assert "WARNING         rejected delivery oops.csv" in out and "evaluation set  0/9 labelled" in out
    # the batch delivered (its own CSV filled, saved with BOM and CRLF), then the round is "not evaluated"
    filled = cfg.inbox / "batch0.csv"
    filled.write_bytes(b"\xef\xbb\xbf" + _filled(outbox.batch_csv(cfg.outbox, 0), truth, lineterminator="\r\n"))
    rep = R.ingest_label_files(store, cfg, [filled], round_=1)
    assert [f.status for f in rep.files] == ["accepted"] and rep.ready
    s = _status(cfg_file, capsys)
    assert s["rejected_deliveries"] == [] and s["next_action"].startswith("Label the evaluation set (0/9")
    R.close_round(store, 0, "answered")
    pool = R.load_pool(store, cfg, CONFIG_ID, CLASSES)
    probe, rec = R.train_probe(store, cfg, 1, pool)
    m = evaluate(store, cfg, 1, pool, probe, rec.probe_id)
    assert m["status"] == NOT_EVALUATED and m["accuracy"] is None and m["n_eval"] == 0
    # the evaluation list labelled by file name into inbox/eval/: the round is scored
    (cfg.inbox / "eval" / "eval.csv").write_bytes(_filled(cfg.outbox / "eval-holdout.csv", truth, delimiter=";"))
    rep = R.ingest_label_files(store, cfg, [cfg.inbox / "eval" / "eval.csv"], round_=1)
    assert [f.status for f in rep.files] == ["accepted"]
    ev = eval_set_state(store, cfg)
    assert (ev["labelled"], ev["size"], ev["todo"]) == (9, 9, None)
    m = evaluate(store, cfg, 1, pool, probe, rec.probe_id)
    assert m["status"] == "evaluated on 9 image(s)" and m["n_eval"] == 9 and m["accuracy"] is not None
    # the query batch: its gallery shows the probe's predicted class, probability and the strategy's score
    prop1 = R.propose(store, cfg, 1, pool, probe=probe, probe_id=rec.probe_id)
    with open(outbox.batch_csv(cfg.outbox, 1), newline="") as f:
        batch1 = list(csv.DictReader(f))
    assert len(batch1) == prop1.budget == 6
    assert all(r["predicted"] in CLASSES and 0 < float(r["probability"]) <= 1 for r in batch1)
    assert all(r["score_means"] == "top-two probability gap (lower = less sure)" for r in batch1)
    text = _check_gallery(outbox.batch_page(cfg.outbox, 1), [r["file_name"] for r in batch1])
    assert "top-two probability gap" in text and batch1[0]["predicted"] in text
    assert _status(cfg_file, capsys)["next_action"].startswith("label batch 1 (0/6 answered)")
    # al rounds: answered/proposed per batch
    from al_core.cli.audit import rounds_main

    assert rounds_main(["--config", str(cfg_file), "--json"]) == 0
    rows = {r["round"]: r for r in json.loads(capsys.readouterr().out)}
    assert (rows[0]["answered"], rows[0]["proposed"]) == (6, 6) and (rows[1]["answered"], rows[1]["proposed"]) == (0, 6)
    assert rounds_main(["--config", str(cfg_file)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "answered" in table[0] and " 6/6 " in table[2] and " 0/6 " in table[3]


def test_al_report_links_every_gallery_and_says_simulated_only_for_simulated_deliveries(project, capsys):
    from al_core.cli.report import main as report_main

    cfg, store, truth, cfg_file = project
    R.propose_seed(store, cfg, CONFIG_ID)
    (cfg.inbox / "b0.csv").write_bytes(_filled(outbox.batch_csv(cfg.outbox, 0), truth))
    R.ingest_label_files(store, cfg, [cfg.inbox / "b0.csv"], round_=1)
    R.close_round(store, 0, "answered")
    pool = R.load_pool(store, cfg, CONFIG_ID, CLASSES)
    probe, rec = R.train_probe(store, cfg, 1, pool)
    evaluate(store, cfg, 1, pool, probe, rec.probe_id)
    R.propose(store, cfg, 1, pool, probe=probe, probe_id=rec.probe_id)
    out = Path(cfg.base_dir) / "elsewhere" / "report.html"
    assert report_main(["--config", str(cfg_file), "--out", str(out)]) == 0
    capsys.readouterr()
    text = out.read_text()
    links = dict((h, label) for h, label in re.findall(r'<a href="([^"]+)">([^<]+)</a>', text) if ".html" in h)
    targets = {(out.parent / urllib.parse.unquote(h)).resolve() for h in links}
    assert targets == {
        outbox.batch_page(cfg.outbox, 0).resolve(),
        outbox.batch_page(cfg.outbox, 1).resolve(),
        outbox.eval_page(cfg.outbox).resolve(),
    }
    assert "simulated" not in text.lower()  # a real project's deliveries: nothing says simulated
    # answers delivered by the simulated annotator: the report says how many
    with open(outbox.batch_csv(cfg.outbox, 1), newline="") as f:
        ids = [r["image_id"] for r in csv.DictReader(f)]
    (cfg.inbox / "sim.csv").write_text("image_id,label,annotator\n" + "".join(f"{i},cat,simulated\n" for i in ids))
    R.ingest_label_files(store, cfg, [cfg.inbox / "sim.csv"], round_=2)
    assert report_main(["--config", str(cfg_file), "--out", str(out)]) == 0
    assert "6 of its 12 labels delivered by the simulated annotator" in out.read_text()
