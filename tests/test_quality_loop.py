"""Label quality inside the loop (in process): relabel requests, near-duplicates in a batch, the demo's report."""

import csv
import json
import os
import shutil
import time

import dagster as dg
import numpy as np
import yaml
from PIL import Image

from al_core.catalogue import open_store
from al_core.config import load_config
from tests.loop_helpers import answer_batch, execute, make_project, run_requests


def _requests(result):
    return [] if isinstance(result, dg.SkipReason) else list(result.run_requests or [])


def _project(tmp_path, selection=None, quality=None, twins=False, **kw):
    from al_assets.definitions import build_defs

    p = make_project(tmp_path, **kw)
    conf = yaml.safe_load(p.read_text())
    conf["selection"].update(selection or {})
    if quality:
        conf["quality"] = quality
    p.write_text(yaml.safe_dump(conf))
    if twins:  # every image gets a twin: its copy with one pixel changed (other bytes, nearly the same embedding)
        for f in sorted((tmp_path / "images").rglob("*.jpg")):
            im = Image.open(f).convert("RGB")
            im.putpixel((0, 0), (255, 255, 255))
            im.save(f.with_name(f.stem + "-twin.png"))
    cfg = load_config(p)
    defs = build_defs(cfg)
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("ingest_job").execute_in_process(instance=instance).success
    return cfg, defs, instance


def _round(defs, instance):
    reqs = _requests(run_requests(defs, instance))
    assert reqs, "the sensor requested nothing"
    res = execute(defs, instance, reqs[-1])
    assert res.success
    return res


def _settled(cfg):
    """Every file in the inbox made old enough for the sensor's settle rule."""
    for f in cfg.inbox.glob("*.csv"):
        os.utime(f, (time.time() - 10,) * 2)


def _batch_csv(cfg, r):
    with open(cfg.outbox / f"round-{r:04d}.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_a_relabel_request_round_trips_through_outbox_inbox_and_history(tmp_path):
    from al_core.cli.labels import main as labels_main
    from al_core.reporting.audit import lineage

    cfg, defs, instance = _project(tmp_path, selection={"relabel_fraction": 0.25}, budget=4, total=16)
    store = open_store(cfg)
    _round(defs, instance)  # seed pool
    answer_batch(cfg, store, 0, wrong=1)
    res = _round(defs, instance)  # round 1: train, assess the labels, propose batch 1 with one image to label again
    quality = res.output_for_node("label_quality", "result")
    assert quality["n_labels"] == 4 and quality["n_folds"] == 2
    assert store.fetch("SELECT count(*) FROM label_quality") == [(4,)]
    rows = _batch_csv(cfg, 1)
    again = [r for r in rows if r["strategy"] == "relabel"]
    assert len(rows) == 4 and len(again) == 1
    iid = again[0]["image_id"]
    training = {r[0] for r in store.fetch("SELECT image_id FROM labels")}
    assert iid in training  # a training image, asked again
    tasks = json.loads((cfg.outbox / "round-0001.label-studio.json").read_text())
    marked = [t["data"] for t in tasks if t["data"].get("relabel")]
    assert [(d["image_id"], d["strategy"]) for d in marked] == [(iid, "relabel")]
    [(reason,)] = store.fetch("SELECT reason FROM query_reasons WHERE round = 1 AND image_id = ?", [iid])
    assert reason.startswith("label again:")
    first = store.fetch("SELECT label FROM labels WHERE image_id = ? ORDER BY label_id", [iid])
    # the annotators answer batch 1, the image to label again with the label it already had (same annotator):
    # it is an answer to the request, so it goes into the history and answers the batch
    truth = dict(store.fetch("SELECT image_id, any_value(class_name) FROM ground_truth GROUP BY 1"))
    answer = {r["image_id"]: truth[r["image_id"]] for r in rows} | {iid: first[0][0]}
    (cfg.inbox / "batch1.csv").write_text(
        "image_id,label,annotator\n" + "".join(f"{i},{lab},sim\n" for i, lab in answer.items())
    )
    _settled(cfg)
    _round(defs, instance)  # round 2
    hist = store.fetch("SELECT label, round FROM labels WHERE image_id = ? ORDER BY label_id", [iid])
    assert len(hist) == 2 and hist[1] == (first[0][0], 2)
    assert store.fetch("SELECT status FROM rounds WHERE round = 1") == [("closed",)]
    d = lineage(store, iid)
    back = [q for q in d["proposals"] if q["strategy"] == "relabel"]
    assert len(back) == 1 and back[0]["round"] == 1 and back[0]["reason"] == reason
    assert d["labels"][-1]["proposed_strategy"] == "relabel"  # the new answer answers the relabel request
    assert labels_main(["suspects", "--config", cfg.source_file, "--json"]) == 0


def test_a_batch_that_would_have_held_two_near_duplicates_holds_one(tmp_path):
    from al_core.learn.strategies import get_strategy
    from al_core.loop.pool import load_project_pool

    cfg, defs, instance = _project(
        tmp_path, twins=True, per_class=10, holdout=8, budget=16, total=32, seed_strategy="random"
    )
    store = open_store(cfg)
    emb = store.get_asset_output("embeddings", "")
    pool = load_project_pool(store, cfg, emb["config_id"])
    # what random would have picked alone for batch 0 (same seed, same candidates: eval set held out first)
    from al_core.loop.holdout import ensure_eval_set

    ensure_eval_set(store, cfg, cfg.class_names(store))
    pool = load_project_pool(store, cfg, emb["config_id"])
    alone = get_strategy("random").select(
        pool.features,
        np.empty(0, np.int64),
        np.empty(0, np.int64),
        16,
        n_classes=4,
        seed=cfg.selection.seed,
        candidates=pool.candidates,
    )
    _round(defs, instance)
    pairs = {tuple(sorted(p[:2])) for p in store.fetch("SELECT image_id, twin_id FROM near_duplicates")}
    assert len(pairs) >= 40  # every image and its twin (cosine above 0.98)
    ids_alone = [str(pool.image_ids[i]) for i in alone.indices]
    would = [(a, b) for a in ids_alone for b in ids_alone if a < b and (a, b) in pairs]
    assert would, "the test needs a seed whose plain pick holds a pair"
    batch = [r[0] for r in store.fetch("SELECT image_id FROM queries WHERE round = 0 ORDER BY rank")]
    assert len(batch) == 16 and not [(a, b) for a in batch for b in batch if a < b and (a, b) in pairs]
    replaced = store.fetch("SELECT dropped_id, twin_id, replacement_id, how FROM batch_replacements WHERE round = 0")
    assert len(replaced) >= len(would) and all(r[2] in batch and r[0] not in batch for r in replaced)
    value = store.get_asset_output("seed_pool", "0")
    assert len(value["batch_rules"]["near_duplicates_replaced"]) == len(replaced)


def test_the_demo_report_shows_agreement_suspects_and_class_balance(tmp_path, capsys):
    from al_assets.tools.demo import SECOND_ANNOTATOR_NOISE, SECOND_ANNOTATOR_SHARE
    from al_core.cli.annotator import main as annotator_main
    from al_core.cli.audit import export_main
    from al_core.cli.status import main as status_main
    from al_core.loop.annotator import answer_round, second_opinion
    from al_core.reporting.report import write_report

    cfg, defs, instance = _project(tmp_path, per_class=12, budget=6, total=24)
    shutil.copy(next((tmp_path / "images" / "cat").iterdir()), tmp_path / "images" / "cat" / "copy-of-a-cat.jpg")
    store = open_store(cfg)
    assert defs.resolve_job_def("ingest_job").execute_in_process(instance=instance).success  # the copy: a 2nd path
    _round(defs, instance)
    share = SECOND_ANNOTATOR_SHARE + 0.4
    # batch 0 through `al simulate-annotator`: a second, noisy annotator on a share, then the first annotator
    assert (
        annotator_main(
            [
                "--config",
                cfg.source_file,
                "--noise",
                "0.2",
                "--second-share",
                str(share),
                "--second-noise",
                str(SECOND_ANNOTATOR_NOISE),
            ]
        )
        == 0
    )
    assert sorted(p.name for p in cfg.inbox.glob("*.csv")) == ["simulated-2-round-0000.csv", "simulated-round-0000.csv"]
    _settled(cfg)
    _round(defs, instance)
    for r in (1, 2):  # as the demo does
        second_opinion(cfg, r, share=share, noise=SECOND_ANNOTATOR_NOISE)
        answer_round(cfg, r, noise=0.2)
        _settled(cfg)
        _round(defs, instance)
    [(method,)] = store.fetch("SELECT method FROM label_quality_runs WHERE round = 3")
    assert method == "self_confidence+crowdlab"  # two annotators on some images: CROWDLAB and ActiveLab
    multi = store.fetch(
        "SELECT count(*), count(consensus), count(relabel_score) FROM label_quality "
        "WHERE round = 3 AND n_annotations >= 2"
    )[0]
    assert multi[0] > 0 and multi[0] == multi[1] == multi[2]
    html = write_report(store, cfg).read_text()
    assert "<h2>Agreement between annotators</h2>" in html and "No image has answers from two" not in html
    assert "Fleiss' kappa" in html and "simulated / simulated-2" in html
    assert "<h2>Suspected label errors</h2>" in html and "training labels, each scored by a probe" in html
    assert "<h2>Class balance</h2>" in html and "predicted share of the pool" in html
    assert "<h2>Duplicates</h2>" in html and "1 images, 2 paths" in html
    capsys.readouterr()
    assert status_main(["--config", cfg.source_file]) == 0
    out = capsys.readouterr().out
    assert "exact duplicates 1 images under 2 paths" in out and "copy-of-a-cat.jpg" in out
    assert "agreement       " in out and "suspects        round 3" in out
    assert export_main(["--config", cfg.source_file, "--out", str(tmp_path / "e.csv")]) == 0
    with open(tmp_path / "e.csv", newline="") as f:
        dup = [r for r in csv.DictReader(f) if r["n_paths"] == "2"]
    assert len(dup) == 1 and any(p.endswith("copy-of-a-cat.jpg") for p in json.loads(dup[0]["paths"]))
