"""Every export Label Studio 1.23.2 writes, as a real server wrote it (tests/data/label-studio-1.23.2, made by
tests/test_labelstudio_server.py), delivered into a fresh copy of a project: the same labels whatever the format,
skips counted where the format carries them, the disagreement recorded with both annotators, the empty Submit a
warning naming its task and annotation, lead_time kept, nothing doubled, and the next batch proposed.

The fixtures name their six images ``img0000``..``img0005``; the test gives each the sha256 of a real image file
of the same name (``c+d.jpg``, ``r&d.jpg``, ``x#1.jpg``, ``with space.jpg``, ``é.jpg``...), replacing the id and
nothing else.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import al_core.loop as R
from al_core.catalogue import labels as labels_q
from al_core.catalogue import open_store
from al_core.catalogue.store import sha256_file
from al_core.config import from_dict
from al_core.ingest.scan import scan
from tests.conftest import SAMPLE_ROOT

DATA = Path(__file__).resolve().parent / "data" / "label-studio-1.23.2"
CLASSES = ["cat", "dog", "ship"]
SCENARIO = json.loads((DATA / "scenario.json").read_text())
USERS = SCENARIO["users"]  # Label Studio user id -> email, as GET /api/users gives them
FILES = {name: info["task_id"] for name, info in SCENARIO["tasks"].items()}
# file, the format parse_label_file detects, whether the format carries skips and emails
EXPORTS = [
    ("export/JSON.json", "label_studio", True, False),
    ("export/JSON-all.json", "label_studio", True, False),
    ("export/JSON_MIN.json", "label_studio_min", False, False),
    ("export/JSON_MIN-all.json", "label_studio_min", False, False),
    ("export/CSV.csv", "label_studio_csv", False, False),
    ("export/CSV-all.csv", "label_studio_csv", False, False),
    ("export/TSV.csv", "label_studio_tsv", False, False),
    ("export/TSV-all.csv", "label_studio_tsv", False, False),
    ("target-per-task", "label_studio_task", True, True),
    ("target-per-annotation", "label_studio_annotation", True, True),
]
# what every format gives (the latest policy): admin's cat; bob's dog after admin's ship (a disagreement); bob's
# update of cat to dog
EXPECTED = {"plain.jpg": "cat", "with space.jpg": "dog", "é.jpg": "dog"}
LEAD_TIME = {a["annotation_id"]: a["lead_time"] for a in SCENARIO["annotations"]}


@pytest.fixture()
def project(tmp_path):
    """The six images of the scenario (distinct sample files under the scenario's names), scanned, embedded,
    and batch 0 proposing all of them."""
    images = tmp_path / "images"
    images.mkdir()
    samples = sorted((SAMPLE_ROOT / "cat").iterdir())
    for k, name in enumerate(FILES):
        shutil.copy(samples[k], images / name)
    conf = {
        "images": {"root": "images"},
        "classes": CLASSES,
        "selection": {
            "seed_strategy": "random",
            "query_strategy": "margin",
            "budget_per_round": 6,
            "total_budget": 12,
            "answered_fraction": 1.0,
        },
        "evaluation": {"holdout": 0},
        "store": {"lock_timeout_s": 2},
    }
    cfg = from_dict(conf, base_dir=tmp_path)
    store = open_store(cfg)
    scan(store, root=cfg.image_root)
    sha = {name: sha256_file(images / name) for name in FILES}
    ids = sorted(sha.values())
    store.register_embedding_config("fake", {"backbone": "fake", "dim": 4})
    store.write_embeddings("fake", ids, np.random.default_rng(0).normal(size=(len(ids), 4)).astype(np.float32))
    b0 = R.propose(store, cfg, 0, R.load_pool(store, cfg, "fake", CLASSES))
    assert sorted(b0.image_ids) == ids
    tasks = {t["data"]["image_id"]: t for t in json.loads((DATA / "tasks.json").read_text())}
    fixture_id = {t["data"]["path"].split("/", 1)[1]: iid for iid, t in tasks.items()}
    return {
        "cfg": cfg,
        "store": store,
        "sha": sha,
        "id_of": {fixture_id[n]: sha[n] for n in FILES},
        "tasks": tasks,
        "fixture_id": fixture_id,
    }


def deliver(project, rel: str) -> list[Path]:
    """The fixture file (or every file of a target-storage folder) in the inbox, with the real image ids."""
    cfg = project["cfg"]
    src = DATA / rel
    out = []
    for f in sorted(src.iterdir()) if src.is_dir() else [src]:
        data = f.read_bytes()
        for fake, real in project["id_of"].items():
            data = data.replace(fake.encode(), real.encode())
        dest = cfg.inbox / f"{src.name}-{f.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        out.append(dest)
    return out


def by_name(project, rows):
    name = {v: k for k, v in project["sha"].items()}
    return {name[iid]: rest for iid, *rest in rows}


def test_the_outbox_writes_the_urls_and_paths_the_real_server_served(project):
    # the real server ran with LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT = the image folder's parent and fetched every
    # image of tasks.json with the file's exact bytes; the outbox writes the same URLs for the same files
    cfg = project["cfg"]
    ours = {t["data"]["path"]: t for t in json.loads((cfg.outbox / "round-0000.label-studio.json").read_text())}
    for iid, real in project["tasks"].items():
        t = ours[real["data"]["path"]]
        assert t["data"]["image"] == real["data"]["image"]
        assert t["data"]["image_id"] == project["id_of"][iid]
    xml = (cfg.outbox / "label-studio-config.xml").read_text()
    assert 'required="true"' in xml and '<Choices name="label"' in xml


@pytest.mark.parametrize("rel, fmt, skips, emails", EXPORTS, ids=[e[0] for e in EXPORTS])
def test_every_export_gives_the_same_labels(project, rel, fmt, skips, emails):
    cfg, store = project["cfg"], project["store"]
    files = deliver(project, rel)
    rep = R.ingest_label_files(store, cfg, files, round_=1)
    assert {f.status for f in rep.files} == {"accepted"}, rep.files
    assert set(store.fetch("SELECT DISTINCT format FROM label_files")) == {(fmt,)}
    # the training labels: the same for every format
    labels = by_name(project, store.fetch("SELECT image_id, status, label FROM image_labels"))
    assert {n: lab for n, (status, lab) in labels.items() if status == "labelled"} == EXPECTED
    # the Skip button: a skip, counted towards the batch, where the format carries it (JSON_MIN, CSV and TSV
    # leave cancelled annotations out: the image stays unanswered)
    assert (labels.get("c+d.jpg") == ["skipped", None]) is skips
    assert (rep.answered, rep.proposed) == (4 if skips else 3, 6) and not rep.ready
    missing = {m["path"].rsplit("/", 1)[1] for m in rep.labelling["batch"]["unanswered"]}
    assert missing == {"r&d.jpg", "x#1.jpg"} | (set() if skips else {"c+d.jpg"})  # the draft, the empty Submit
    # the empty Submit: ignored with a warning that names its task and annotation; the file is applied
    warned = [w for f in rep.files for w in f.warnings]
    assert len(warned) == 1 and warned[0].startswith("task 4, annotation 3 (line ") and "empty annotation" in warned[0]
    report = next(Path(f.stored_path + ".warnings.json") for f in rep.files if f.n_warnings)
    assert json.loads(report.read_text())["warnings"][0]["task_id"] == "4"
    # every answer kept with its annotator, task, annotation time and lead_time
    rows = store.fetch("SELECT annotation_id, annotator, task_id, seconds, seconds_source, annotated_at FROM labels")
    assert all(r[5] is not None for r in rows) and {r[4] for r in rows} == {"lead_time"}
    assert all(r[3] == LEAD_TIME[int(r[0])] for r in rows) and {r[2] for r in rows} <= {"1", "2", "5", "6"}
    who = {(r[0], r[2]): r[1] for r in rows}
    assert who[("5", "5")] == ("bob@example.com" if emails else "2")  # by email where the file names it
    # the disagreement on "with space.jpg": both answers, both annotators
    with store.connect(read_only=True) as con:
        [dis] = labels_q.disagreements(con)
    assert dis["image_id"] == project["sha"]["with space.jpg"] and dis["classes"] == ["dog", "ship"]
    pairs = {(a["annotator"], a["label"]) for a in dis["answers"]}
    assert pairs == (
        {("admin@example.com", "ship"), ("bob@example.com", "dog")} if emails else {("1", "ship"), ("2", "dog")}
    )
    assert rep.labelling["disagreements"] == 1
    # the users looked up through the API (what `al labelstudio pull` records) name every earlier row by email
    with store.transaction() as con:
        labels_q.record_annotators(con, USERS, "api", rows[0][5])
    with store.connect(read_only=True) as con:
        [dis] = labels_q.disagreements(con)
    assert {(a["annotator"], a["label"]) for a in dis["answers"]} == {
        ("admin@example.com", "ship"),
        ("bob@example.com", "dog"),
    }
    # delivered again (another copy of the same export): nothing doubled
    n = store.fetch("SELECT count(*) FROM labels")[0][0]
    for f in files:
        f.write_bytes(Path(next(x.stored_path for x in rep.files if x.name == f.name)).read_bytes() + b"\n")
    again = R.ingest_label_files(store, cfg, files, round_=1)
    assert {f.status for f in again.files} == {"accepted"} and sum(f.n_applied for f in again.files) == 0
    assert store.fetch("SELECT count(*) FROM labels")[0][0] == n
    # the next batch: batch 0 closed by hand, the unanswered images proposed again
    R.close_round(store, 0, "manual")
    pool = R.load_pool(store, cfg, "fake", CLASSES)
    probe, rec = R.train_probe(store, cfg, 1, pool)
    b1 = R.propose(store, cfg, 1, pool, probe=probe, probe_id=rec.probe_id)
    name = {v: k for k, v in project["sha"].items()}
    assert {name[i] for i in b1.image_ids} == missing


def test_cumulative_exports_in_every_format_never_double(project):
    # the JSON export first, then every other export and both target-storage layouts of the same annotations
    cfg, store = project["cfg"], project["store"]
    first = R.ingest_label_files(store, cfg, deliver(project, "export/JSON.json"), round_=1)
    n = store.fetch("SELECT count(*) FROM labels")[0][0]
    assert n == first.files[0].n_applied == 5  # cat, skip, ship, dog, dog
    for rel, *_ in EXPORTS[1:]:
        rep = R.ingest_label_files(store, cfg, deliver(project, rel), round_=1)
        assert sum(f.n_applied for f in rep.files) == 0, (rel, rep.files)
    assert store.fetch("SELECT count(*) FROM labels")[0][0] == n
    # the target-storage files named the users: the JSON export's ids now read as emails
    assert {r[0] for r in store.fetch("SELECT DISTINCT annotator FROM answers")} == {
        "admin@example.com",
        "bob@example.com",
    }
    with store.connect(read_only=True) as con:
        assert labels_q.annotator_emails(con) == USERS


def test_an_update_in_label_studio_replaces_the_earlier_answer(project):
    # bob's annotation 6 was submitted as cat, then updated to dog: an export made before the update holds cat
    # (Label Studio keeps the annotation id and moves updated_at); the later export's dog replaces it
    cfg, store = project["cfg"], project["store"]
    [f] = deliver(project, "target-per-annotation/6")
    before = json.loads(f.read_text())
    before["result"][0]["value"]["choices"] = ["cat"]
    before["updated_at"] = before["created_at"]
    early = cfg.inbox / "6-before-update"
    early.write_text(json.dumps(before, indent=2))
    R.ingest_label_files(store, cfg, [early], round_=1)
    e = project["sha"]["é.jpg"]
    assert store.fetch("SELECT label FROM image_labels WHERE image_id = ?", [e]) == [("cat",)]
    R.ingest_label_files(store, cfg, [f], round_=1)
    assert store.fetch("SELECT label FROM image_labels WHERE image_id = ?", [e]) == [("dog",)]
    assert store.fetch("SELECT label, state FROM answers WHERE image_id = ? ORDER BY label_id", [e]) == [
        ("cat", "superseded"),
        ("dog", "current"),
    ]
    assert store.fetch("SELECT count(*) FROM label_disagreements") == [(0,)]  # one annotator changing their mind
