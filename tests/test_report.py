"""Report pictures, the offline HTML report and `al simulate` end to end (small store, fast)."""

import base64
import csv
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from al_core.catalogue import open_store

SAMPLE_ROOT = Path(__file__).resolve().parents[1] / "examples" / "cifar10-2k"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES4 = ["airplane", "automobile", "bird", "cat"]


def _open_png(data: bytes) -> Image.Image:
    assert isinstance(data, bytes) and data[:8] == PNG_SIGNATURE
    im = Image.open(io.BytesIO(data))
    im.load()
    assert im.format == "PNG"
    return im


def make_project(tmp, n_per_class=10, holdout=12, dim=16):
    """A 4-class project of real sample images with class-dependent random vectors; returns (cfg, store)."""
    from al_core.config import load_config
    from al_core.ingest.scan import scan

    root = tmp / "images"
    for c in CLASSES4:
        (root / c).mkdir(parents=True)
        for f in sorted((SAMPLE_ROOT / c).glob("*.jpg"))[:n_per_class]:
            shutil.copy(f, root / c / f.name)
    (tmp / "al.yaml").write_text(
        f"images:\n  root: images\npaths:\n  data_dir: data\n  inbox: data/inbox\n  outbox: data/outbox\n"
        f"evaluation:\n  holdout: {holdout}\nselection:\n  budget_per_round: 4\n  seed: 0\n"
    )
    cfg = load_config(tmp / "al.yaml")
    store = open_store(cfg)
    scan(store, root=root)
    rows = store.fetch("SELECT image_id, any_value(class_name) FROM ground_truth GROUP BY 1 ORDER BY 1")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((len(CLASSES4), dim)) * 0.6
    vecs = np.stack([centres[CLASSES4.index(c)] + rng.standard_normal(dim) for _, c in rows]).astype(np.float32)
    store.register_embedding_config("cfg-test", {"backbone": "random", "dim": dim, "preprocessing": {"size": 32}})
    store.write_embeddings("cfg-test", [r[0] for r in rows], vecs)
    return cfg, store


def add_rounds(store):
    """Rounds 0-2 (centroid, then dropquery), their queries, probes and metrics, as the loop would write them."""
    from al_core.catalogue.store import now

    paths = store.fetch("SELECT image_id, min(path) FROM image_paths WHERE status = 'ok' GROUP BY 1 ORDER BY 1")
    conf = [[3, 0, 0, 0], [1, 2, 0, 0], [0, 0, 3, 0], [0, 1, 0, 2]]
    recall = {c: r for c, r in zip(CLASSES4, [1.0, 2 / 3, 1.0, 2 / 3], strict=True)}
    ts = now()
    with store.transaction() as con:
        for r, (kind, strat) in enumerate([("seed", "centroid"), ("query", "dropquery"), ("query", "dropquery")]):
            con.execute(
                "INSERT INTO rounds VALUES (?, ?, ?, ?, 4, 4, 'cfg-test', ?, ?, ?, NULL, NULL, 0.1, NULL, NULL)",
                [r, kind, strat, r, None if r == 0 else f"p{r}", "open" if r == 2 else "closed", ts],
            )
            for rank in range(1, 5):
                iid, path = paths[r * 4 + rank - 1]
                if r == 2 and rank == 2:
                    path = str(store.db_path.parent / "gone.jpg")  # a missing file: a grey tile
                con.execute(
                    "INSERT INTO queries (round, rank, image_id, path, score, strategy) VALUES (?, ?, ?, ?, ?, ?)",
                    [r, rank, iid, path, None if r == 0 else 1.0 / rank, strat],
                )
        for pid, rnd, ver, n, acc in [("p1", 1, 1, 4, 0.5), ("p2", 2, 1, 8, 0.6), ("p2b", 2, 2, 8, 0.75)]:
            con.execute(
                "INSERT INTO probes (probe_id, round, version, trigger, path, sha256, config_id, n_labels, "
                "n_classes, seed, train_seconds, trained_at, run_id) "
                "VALUES (?, ?, ?, 'round', ?, 'x', 'cfg-test', ?, 4, ?, 0.1, ?, NULL)",
                [pid, rnd, ver, f"/nowhere/{pid}.safetensors", n, rnd, ts],
            )
            con.execute(
                "INSERT INTO metrics (probe_id, round, accuracy, balanced_accuracy, macro_f1, "
                "per_class_recall, confusion, n_labels, n_eval, evaluated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 12, ?)",
                [pid, rnd, acc, acc - 0.05, acc - 0.1, json.dumps(recall), json.dumps(conf), n, ts],
            )


# ----------------------------------------------------------------------------- pictures
def test_learning_curve_png_valid_with_and_without_std():
    from al_core.reporting.report import learning_curve_png

    png = learning_curve_png(
        {
            "dropquery": [(10, 0.5), (20, 0.7), (30, 0.8)],
            "random": [(10, 0.45, 0.02), (20, 0.6, 0.03), (30, None, None)],
        },
        title="t",
    )
    im = _open_png(png)
    assert 300 < im.width < 2000 and 200 < im.height < 1500
    _open_png(learning_curve_png({}))  # empty: a figure that says so


def test_confusion_png_valid_including_empty_rows_and_empty_matrix():
    from al_core.reporting.report import confusion_png

    im = _open_png(confusion_png([[5, 1, 0], [0, 0, 0], [2, 0, 7]], ["a", "b", "c"]))
    assert 200 < im.width < 2000 and 200 < im.height < 2000
    _open_png(confusion_png([], []))


def test_gallery_survives_missing_and_corrupt_images(tmp_path):
    from al_core.reporting.report import gallery_png

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    good = sorted((SAMPLE_ROOT / "cat").glob("*.jpg"))[:3]
    items = [(str(p), f"#{i + 1}  0.{9 - i}") for i, p in enumerate(good)]
    items += [(str(tmp_path / "missing.jpg"), "#4  0.5"), (str(bad), "#5\nline two")]
    im = _open_png(gallery_png(items, cols=3, thumb=48))
    assert im.width >= 3 * 48 and im.height >= 2 * 48
    assert im.width < 600 and im.height < 600
    # the missing image's tile is grey, not blank
    rgb = np.asarray(im.convert("RGB"))
    assert ((rgb == 128).all(axis=2)).sum() > 48 * 20
    _open_png(gallery_png([]))


# ----------------------------------------------------------------------------- report
def _data_uris(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)]


def test_write_report_is_one_offline_html_file(tmp_path):
    from al_core.reporting.report import loop_curves, metadata_images, write_report

    cfg, store = make_project(tmp_path)
    add_rounds(store)
    # latest probe version per round; label names the query and seed strategies
    assert loop_curves(store) == {"dropquery (seed: centroid)": [(4, 0.5), (8, 0.75)]}
    cfg.reports_dir.mkdir(parents=True)
    (cfg.reports_dir / "simulate-20250101T000000Z.json").write_text(
        json.dumps(
            {
                "strategies": {
                    "margin": {
                        "accuracy_per_round": [0.4, 0.6],
                        "std_per_round": [0.1, 0.05],
                        "labels_per_round": [4, 8],
                        "seeds": [1, 10],
                        "area_under_curve": 0.5,
                    }
                },
                "seed_strategy": "centroid",
                "n_pool": 28,
                "n_eval": 12,
                "budget": 4,
                "rounds": 1,
            }
        )
    )
    (cfg.reports_dir / "simulate-broken.json").write_text("{not json")

    out = write_report(store, cfg, tmp_path / "out" / "report.html")
    assert out == tmp_path / "out" / "report.html"
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # atomic: no temp file left
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert not re.search(r"(?i)https?:", text)
    assert not re.search(r"(?i)<script|<link|@import|url\(|src=\"(?!data:)", text)
    pngs = _data_uris(text)
    assert len(pngs) == 4  # the manager's curve (labels and cost), learning curves, confusion matrix, gallery
    for p in pngs:
        _open_png(p)
    for needle in [
        "dropquery (seed: centroid)",
        "simulated: margin (seed: centroid)",
        "random",
        "cfg-test",
        "simulate-broken.json",
        "0.750",
        "airplane",
        "gone.jpg",
    ]:
        assert needle in text, needle

    md = metadata_images(store, cfg)
    assert set(md) == {"learning_curve", "confusion_matrix", "proposed_images"}
    for v in md.values():
        assert v.startswith("![") and "](data:image/png;base64," in v and len(v) < 200_000
        _open_png(_data_uris(v)[0])


def test_report_on_a_project_without_rounds(tmp_path):
    from al_core.reporting.report import loop_curves, metadata_images, write_report

    cfg, store = make_project(tmp_path, n_per_class=3)
    assert loop_curves(store) == {}
    assert metadata_images(store, cfg) == {}
    text = write_report(store, cfg).read_text(encoding="utf-8")
    assert "No round yet" in text and len(_data_uris(text)) == 2  # the manager's curve and the learning curves


# ----------------------------------------------------------------------------- al simulate
def test_al_simulate_end_to_end(tmp_path, capsys):
    from al_core.cli import COMMANDS
    from al_core.cli.simulate import main
    from al_core.reporting.report import simulate_curves

    assert COMMANDS["simulate"][0] == "al_core.cli.simulate"
    cfg, store = make_project(tmp_path)
    out_json = tmp_path / "sim.json"
    rc = main(
        [
            "--config",
            str(tmp_path / "al.yaml"),
            "--strategies",
            "margin,random",
            "--seed-strategy",
            "centroid",
            "--rounds",
            "3",
            "--seeds",
            "2",
            "--json",
            str(out_json),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "round 3/3" in captured.err  # progress on stderr
    assert "margin" in captured.out and "random" in captured.out  # the table on stdout
    data = json.loads(out_json.read_text())
    assert {"strategies", "seed_strategy", "n_pool", "n_eval", "budget", "rounds"} <= set(data)
    assert data["seed_strategy"] == "centroid" and data["rounds"] == 3 and data["budget"] == 4
    assert data["n_eval"] == 12 and data["n_pool"] == 28 and data["eval_source"] == "holdout"
    assert set(data["strategies"]) == {"margin", "random"}
    for s in data["strategies"].values():
        assert len(s["accuracy_per_round"]) == len(s["std_per_round"]) == 4
        assert s["labels_per_round"] == [4, 8, 12, 16] and s["seeds"] == [1, 10]
        assert all(0.0 <= a <= 1.0 for a in s["accuracy_per_round"])
        assert 0.0 <= s["area_under_curve"] <= 1.0
        per_seed = np.asarray(s["accuracy_per_seed"])
        np.testing.assert_allclose(per_seed.mean(axis=0), s["accuracy_per_round"])
    # CSV, plot and the JSON copy for the report, in <data_dir>/reports/
    reports = cfg.reports_dir
    (csv_path,) = reports.glob("simulate-*.csv")
    rows = list(csv.DictReader(csv_path.open()))
    assert list(rows[0]) == ["strategy", "seed", "round", "labels", "accuracy"] and len(rows) == 2 * 2 * 4
    (png_path,) = reports.glob("simulate-*.png")
    _open_png(png_path.read_bytes())
    (copy,) = reports.glob("simulate-*.json")
    assert json.loads(copy.read_text()) == data
    curves, problems = simulate_curves(reports)
    assert set(curves) == {"simulated: margin (seed: centroid)", "simulated: random (seed: centroid)"}
    assert not problems

    # --json alone prints the JSON on stdout (the table goes to stderr)
    rc = main(
        [
            "--config",
            str(tmp_path / "al.yaml"),
            "--strategies",
            "random",
            "--rounds",
            "1",
            "--seeds",
            "1",
            "--json",
            "--out-dir",
            str(tmp_path / "elsewhere"),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0 and json.loads(captured.out)["strategies"]["random"]["labels_per_round"] == [4, 8]
    assert len(list((tmp_path / "elsewhere").glob("simulate-*.csv"))) == 1

    # unknown strategy / too many rounds: a message and exit code 2, no traceback
    assert main(["--config", str(tmp_path / "al.yaml"), "--strategies", "nope"]) == 2
    assert "unknown strategy" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "al.yaml"), "--rounds", "50"]) == 2
    assert "pool has 28" in capsys.readouterr().err


def test_simulate_holdout_matches_the_loop_and_uses_eval_set(tmp_path, capsys):
    from al_core.loop.holdout import stratified_holdout
    from al_core.reporting.simulation import load_data

    cfg, store = make_project(tmp_path)
    rows = store.fetch("""SELECT p.image_id, any_value(g.class_name) FROM (SELECT DISTINCT image_id FROM image_paths
                          WHERE status = 'ok') p LEFT JOIN ground_truth g USING (image_id) GROUP BY 1 ORDER BY 1""")
    picks = stratified_holdout(rows, 12, seed=0)
    assert len(picks) == 12 and sorted(c for _, c in picks) == sorted(CLASSES4 * 3)  # stratified
    data = load_data(store, cfg, CLASSES4, "cfg-test")
    assert sorted(data["eval_ids"]) == sorted(i for i, _ in picks) and data["eval_source"] == "holdout"
    assert not set(data["eval_ids"]) & set(data["pool_ids"])
    try:
        from al_core.loop.holdout import ensure_eval_set
    except ImportError:
        ensure_eval_set = None
    if ensure_eval_set is not None:  # the loop holds out exactly the same images
        ensure_eval_set(store, cfg, CLASSES4)
        held = {r[0] for r in store.fetch("SELECT image_id FROM eval_set")}
        assert held == {i for i, _ in picks}
    else:
        from al_core.catalogue.store import now

        with store.transaction() as con:
            for iid, _ in picks[:8]:
                con.execute("INSERT INTO eval_set VALUES (?, NULL, 'holdout', ?)", [iid, now()])
    data = load_data(store, cfg, CLASSES4, "cfg-test")
    assert data["eval_source"] == "eval_set"
    assert set(data["eval_ids"]) == {r[0] for r in store.fetch("SELECT image_id FROM eval_set")}


def test_al_simulate_on_a_real_project_uses_the_delivered_labels_and_says_so(tmp_path, capsys):
    """No class folders (a team's flat folder of photos): the labels delivered so far are the oracle."""
    from al_core.cli.simulate import main
    from al_core.config import load_config
    from al_core.ingest.scan import scan
    from al_core.loop import ingest_label_files

    root = tmp_path / "photos"
    root.mkdir()
    truth = {}
    for c in CLASSES4:
        for f in sorted((SAMPLE_ROOT / c).glob("*.jpg"))[:12]:
            shutil.copy(f, root / f"IMG_{c}_{f.name}")
            truth[f"IMG_{c}_{f.name}"] = c
    (tmp_path / "al.yaml").write_text(
        "images:\n  root: photos\nclasses: [" + ", ".join(CLASSES4) + "]\n"
        "evaluation:\n  holdout: 8\nselection:\n  budget_per_round: 4\n  seed: 0\n"
    )
    cfg = load_config(tmp_path / "al.yaml")
    store = open_store(cfg)
    scan(store, root=root)
    assert store.fetch("SELECT count(*) FROM ground_truth") == [(0,)]  # a flat folder: no ground truth
    rows = store.fetch("SELECT image_id, path FROM image_paths WHERE status = 'ok' ORDER BY path")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((len(CLASSES4), 16)) * 0.6
    cls = [truth[Path(p).name] for _, p in rows]
    vecs = np.stack([centres[CLASSES4.index(c)] + rng.standard_normal(16) for c in cls]).astype(np.float32)
    store.register_embedding_config("cfg-test", {"backbone": "random", "dim": 16, "preprocessing": {"size": 32}})
    store.write_embeddings("cfg-test", [r[0] for r in rows], vecs)
    assert main(["--config", str(tmp_path / "al.yaml"), "--rounds", "2", "--seeds", "1"]) == 2  # nothing delivered
    assert "only 0 labels delivered" in capsys.readouterr().err
    cfg.inbox.mkdir(parents=True)
    labelled = rows[:40]
    (cfg.inbox / "team.csv").write_text(
        "image_id,label\n" + "".join(f"{iid},{truth[Path(p).name]}\n" for iid, p in labelled)
    )
    rep = ingest_label_files(store, cfg, [cfg.inbox / "team.csv"], round_=1, classes=CLASSES4)
    assert rep.counts == {"accepted": 1}
    out_json = tmp_path / "sim.json"
    rc = main(
        [
            "--config",
            str(tmp_path / "al.yaml"),
            "--strategies",
            "margin,random",
            "--rounds",
            "2",
            "--seeds",
            "1",
            "--json",
            str(out_json),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    data = json.loads(out_json.read_text())
    assert data["oracle"]["kind"] == "delivered_labels" and data["oracle"]["n_labels"] == 40
    assert data["n_pool"] + data["n_eval"] == 40 and data["eval_source"] == "holdout"
    assert "the 40 labels delivered so far are the oracle" in captured.out
    assert "optimistic for the strategy in use" in captured.out
