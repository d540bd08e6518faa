"""Images named as people name them (issue 12, item 2): a label file and `al lineage` name an image by sha256 id,
by path relative to the image root or by unique file name; the outbox batch CSV is a label file once its `label`
column is filled, also after a spreadsheet's round trip (BOM, CRLF, `;`, quoted fields). Real image files, a real
store, the real readers and ingestion; no Dagster."""

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import al_core.loop as R
from al_core.catalogue import open_store
from al_core.config import from_dict
from al_core.ingest.scan import scan
from al_core.labels import parse_label_file
from al_core.labels.names import ImageNames
from al_core.loop import outbox
from al_core.loop.inbox import validation_inputs
from al_core.reporting.audit import AuditError, lineage
from tests.conftest import SAMPLE_ROOT

CLASSES = ["cat", "dog", "ship"]
CONFIG_ID = "fake-8d"


@pytest.fixture()
def project(tmp_path):
    """A flat folder of camera-style names (no class folders), one exact duplicate, a subfolder holding a
    different image under a name that is also in the flat folder (its relative path names the flat one), and two
    subfolders holding different images under one name (an ambiguous file name)."""
    root = tmp_path / "photos"
    for sub in ("trip", "home"):
        (root / sub).mkdir(parents=True)
    truth = {}
    n = 0
    for c in CLASSES:
        for f in sorted((SAMPLE_ROOT / c).iterdir())[:6]:
            n += 1
            shutil.copy(f, root / f"IMG_{n:04d}.JPG")
            truth[f"IMG_{n:04d}.JPG"] = c
    shutil.copy(root / "IMG_0001.JPG", root / "IMG_0001 copy.JPG")  # an exact duplicate: the same image
    frogs = sorted((SAMPLE_ROOT / "frog").iterdir())
    shutil.copy(frogs[0], root / "trip" / "IMG_0002.JPG")  # another image
    shutil.copy(frogs[1], root / "trip" / "IMG_0100.JPG")
    shutil.copy(frogs[2], root / "home" / "IMG_0100.JPG")
    cfg = from_dict(
        {
            "images": {"root": "photos"},
            "classes": CLASSES,
            "selection": {
                "seed_strategy": "random",
                "query_strategy": "margin",
                "budget_per_round": 6,
                "total_budget": 18,
                "answered_fraction": 1.0,
                "seed": 0,
            },
            "evaluation": {"holdout": 0},
            "store": {"lock_timeout_s": 2},
        },
        base_dir=tmp_path,
    )
    store = open_store(cfg)
    scan(store, root=cfg.image_root)
    ids = sorted({r[0] for r in store.fetch("SELECT image_id FROM image_paths WHERE status = 'ok'")})
    vecs = np.random.default_rng(0).normal(0, 1, (len(ids), 8)).astype(np.float32)
    store.register_embedding_config(CONFIG_ID, {"backbone": "fake", "dim": 8})
    store.write_embeddings(CONFIG_ID, ids, vecs)
    id_of = dict(store.fetch("SELECT path, image_id FROM image_paths WHERE status = 'ok'"))
    return cfg, store, truth, {p.split("/photos/", 1)[1]: i for p, i in id_of.items()}


def _parse(cfg, store, path):
    classes, known = validation_inputs(cfg, store)
    return parse_label_file(path, classes=classes, known_image_ids=known, skip_label=cfg.labels.skip_label)


def test_a_label_file_names_images_by_id_path_or_unique_file_name(project):
    cfg, store, truth, id_of = project
    f = Path(cfg.base_dir) / "by_names.csv"
    f.write_text(
        "file,label\nIMG_0003.JPG,cat\n"  # a unique file name
        "trip/IMG_0002.JPG,ship\n"  # a path relative to the image root (the trip folder's IMG_0002)
        "./IMG_0007.JPG,dog\n"  # a relative path written with ./
        f"{id_of['IMG_0008.JPG']},dog\n"  # a sha256 id
        "IMG_0001 copy.JPG,cat\n"
    )  # an exact duplicate's name: the same image as IMG_0001.JPG
    p = _parse(cfg, store, f)
    assert p.ok, p.errors
    assert [(r.image_id, r.label) for r in p.rows] == [
        (id_of["IMG_0003.JPG"], "cat"),
        (id_of["trip/IMG_0002.JPG"], "ship"),
        (id_of["IMG_0007.JPG"], "dog"),
        (id_of["IMG_0008.JPG"], "dog"),
        (id_of["IMG_0001.JPG"], "cat"),
    ]
    assert id_of["IMG_0001 copy.JPG"] == id_of["IMG_0001.JPG"]
    # a CSV with a `path` column, and JSON lines with `file_name`
    f2 = Path(cfg.base_dir) / "by_path.csv"
    f2.write_text("path,label,annotator\nIMG_0004.JPG,cat,ann\ntrip/IMG_0002.JPG,ship,ann\n")
    assert [r.image_id for r in _parse(cfg, store, f2).rows] == [id_of["IMG_0004.JPG"], id_of["trip/IMG_0002.JPG"]]
    f3 = Path(cfg.base_dir) / "names.jsonl"
    f3.write_text(
        json.dumps({"file_name": "IMG_0005.JPG", "label": "cat"})
        + "\n"
        + json.dumps({"path": "IMG_0009.JPG", "label": "dog"})
        + "\n"
    )
    p3 = _parse(cfg, store, f3)
    assert p3.ok and [r.image_id for r in p3.rows] == [id_of["IMG_0005.JPG"], id_of["IMG_0009.JPG"]]


def test_an_ambiguous_or_unknown_name_is_one_error_per_line_listing_the_candidates(project):
    cfg, store, _, _ = project
    f = Path(cfg.base_dir) / "bad.csv"
    f.write_text("file_name,label\nIMG_0100.JPG,cat\nIMG_9999.JPG,dog\n../photos/IMG_0003.JPG,cat\nIMG_0002.JPG,cat\n")
    p = _parse(cfg, store, f)
    assert not p.ok and p.rows == ()  # rejected whole
    assert [(e.line, e.field) for e in p.errors] == [(2, "image_id"), (3, "image_id"), (4, "image_id")]
    amb, unknown, traversal = (e.message for e in p.errors)
    assert "names 2 different images (home/IMG_0100.JPG, trip/IMG_0100.JPG)" in amb
    assert "relative to the image root" in amb
    assert "\n" not in amb
    assert "no image of the catalogue has this one" in unknown
    assert "looks like a path" in traversal  # `..` is never resolved: only names the catalogue lists


def test_the_filled_outbox_csv_is_a_label_file_also_after_a_spreadsheet_round_trip(project):
    cfg, store, truth, id_of = project
    prop = R.propose(store, cfg, 0, R.load_pool(store, cfg, CONFIG_ID, CLASSES))
    csv_path = outbox.batch_csv(cfg.outbox, 0)
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(outbox.BATCH_CSV_HEADER)
    assert [r["image_id"] for r in rows] == prop.image_ids and [r["rank"] for r in rows] == [
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
    ]
    name_of = {}
    for p, i in sorted(id_of.items()):  # an image's first path by name ("IMG_0001 copy.JPG" for the duplicate)
        name_of.setdefault(i, p)
    for r in rows:
        assert r["path"] == name_of[r["image_id"]] and r["file_name"] == r["path"].rsplit("/", 1)[-1]
        assert r["strategy"] == "random" and r["score_means"] == "no score: a random pick" and r["label"] == ""
        assert r["predicted"] == "" and r["probability"] == ""  # the seed batch has no probe
    # an unfilled batch CSV is no label file: every label missing
    p = _parse(cfg, store, csv_path)
    assert not p.ok and {e.message for e in p.errors} == {"missing label"}
    # filled in a spreadsheet and saved the way some locales save: BOM, CRLF, `;`, every field quoted
    for r in rows:
        r["label"] = truth.get(r["path"], "ship")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter=";", quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    w.writeheader()
    w.writerows(rows)
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    delivered = cfg.inbox / "round-0000-filled.csv"
    delivered.write_bytes(b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8"))
    assert _parse(cfg, store, delivered).ok
    report = R.ingest_label_files(store, cfg, [delivered], round_=0)
    assert [f.status for f in report.files] == ["accepted"] and report.files[0].n_applied == 6
    got = dict(store.fetch("SELECT image_id, label FROM labels"))
    assert got == {r["image_id"]: r["label"] for r in rows}
    # the same with the image_id column emptied by hand: the row's path names the image
    for r in rows:
        r["image_id"] = ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\r\n")
    w.writeheader()
    w.writerows(rows)
    again = Path(cfg.base_dir) / "no-ids.csv"
    again.write_text(buf.getvalue())
    p = _parse(cfg, store, again)
    assert p.ok and [r.image_id for r in p.rows] == prop.image_ids


def test_lineage_takes_a_path_or_a_unique_file_name(project):
    cfg, store, _, id_of = project
    root = cfg.image_root
    assert lineage(store, "IMG_0006.JPG", root)["image_id"] == id_of["IMG_0006.JPG"]
    assert lineage(store, "trip/IMG_0002.JPG", root)["image_id"] == id_of["trip/IMG_0002.JPG"]
    # a bare name that is a path relative to the root names that file, whatever other folders hold
    assert lineage(store, "IMG_0002.JPG", root)["image_id"] == id_of["IMG_0002.JPG"] != id_of["trip/IMG_0002.JPG"]
    assert lineage(store, id_of["IMG_0006.JPG"][:12], root)["image_id"] == id_of["IMG_0006.JPG"]
    with pytest.raises(AuditError, match=r"names 2 different images \(home/IMG_0100.JPG, trip/IMG_0100.JPG\)"):
        lineage(store, "IMG_0100.JPG", root)
    with pytest.raises(AuditError, match="is not an image id, nor the path"):
        lineage(store, "nothing.jpg", root)


def test_lineage_cli_by_file_name(project, capsys):
    from al_core.cli.audit import lineage_main

    cfg, store, _, id_of = project
    cfg_file = Path(cfg.base_dir) / "al.yaml"
    cfg_file.write_text("images:\n  root: photos\nclasses: [cat, dog, ship]\nevaluation:\n  holdout: 0\n")
    assert lineage_main(["--config", str(cfg_file), "--json", "IMG_0006.JPG"]) == 0
    assert json.loads(capsys.readouterr().out)["image_id"] == id_of["IMG_0006.JPG"]
    assert lineage_main(["--config", str(cfg_file), "IMG_0100.JPG"]) != 0
    err = capsys.readouterr().err
    assert "names 2 different images" in err and "Traceback" not in err


def test_image_names_without_a_root_and_the_fast_membership():
    names = ImageNames([("a" * 64, "/data/x/one.jpg"), ("b" * 64, "/data/y/one.jpg"), ("b" * 64, "/data/y/two.jpg")])
    assert "a" * 64 in names and "one.jpg" not in names and len(names) == 2
    assert names.resolve("/data/y/two.jpg") == ("b" * 64, None) and names.resolve("two.jpg") == ("b" * 64, None)
    iid, why = names.resolve("one.jpg")
    assert iid is None and "/data/x/one.jpg, /data/y/one.jpg" in why
