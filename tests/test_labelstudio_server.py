"""A real Label Studio 1.23.2 server: images served under the documented local-files setup, annotations by two users
through the API, every export format and both target-storage layouts, saved as the fixtures under
tests/data/label-studio-1.23.2/ (README there; ``AL_REGENERATE_LS_FIXTURES=1`` rewrites them, otherwise the test
checks they still match what the server writes, timestamps aside).

The scenario (one project, six tasks, users alice = the first account and bob = signed up through the invite link):

    plain.jpg       alice submits cat
    c+d.jpg         alice presses Skip (was_cancelled)
    r&d.jpg         alice saves a draft (ship) and never submits
    x#1.jpg         alice submits nothing (the API accepts it although the config says required="true")
    with space.jpg  alice says ship, bob says dog (a disagreement)
    é.jpg           bob submits cat, then updates it to dog
"""

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest

from al_core.files.atomic import atomic_write_bytes
from al_core.labelstudio.client import EXPORT_FORMATS, LabelStudioAPIError, LabelStudioClient, choice_result
from al_core.labelstudio.server import PID_FILE, LabelStudioError, LabelStudioServer
from al_core.labelstudio.urls import local_files_url, path_from_local_files_url
from tests.conftest import ROOT, SAMPLE_ROOT
from tests.labelstudio_helpers import TIMINGS, running_label_studio

FIXTURES = ROOT / "tests" / "data" / "label-studio-1.23.2"
REGENERATE = os.environ.get("AL_REGENERATE_LS_FIXTURES") == "1"
ALICE, BOB = "admin@example.com", "bob@example.com"
BOB_PASSWORD = "bob-labels-2026!"
LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="label" toName="image" choice="single" showInline="true" required="true">
    <Choice value="cat"/>
    <Choice value="dog"/>
    <Choice value="ship"/>
    <Choice value="skip"/>
  </Choices>
</View>
"""
# file name -> (source image class, the probe's guess, its probability)
IMAGES = {
    "plain.jpg": ("cat", "cat", 0.91),
    "c+d.jpg": ("dog", "dog", 0.62),
    "r&d.jpg": ("ship", "ship", 0.55),
    "x#1.jpg": ("cat", "dog", 0.48),
    "with space.jpg": ("ship", "ship", 0.73),
    "é.jpg": ("dog", "cat", 0.51),
}
TIME_KEYS = {"created_at", "updated_at", "draft_created_at", "created_ago", "unique_id", "time_queued"}


def _make_images(images: Path) -> dict[str, Path]:
    images.mkdir(parents=True)
    out = {}
    for i, (name, (cls, _, _)) in enumerate(IMAGES.items()):
        src = sorted((SAMPLE_ROOT / cls).iterdir())[i]
        out[name] = images / name
        shutil.copyfile(src, out[name])
    return out


def _tasks(files: dict[str, Path], document_root: Path) -> list[dict]:
    tasks = []
    for rank, (name, (_, guess, p)) in enumerate(IMAGES.items()):
        rel = files[name].relative_to(document_root).as_posix()
        tasks.append(
            {
                "data": {
                    "image": local_files_url(files[name], document_root),
                    "round": 1,
                    "rank": rank,
                    "score": p,
                    "strategy": "dropquery",
                    "image_id": f"img{rank:04d}",
                    "path": rel,
                },
                "predictions": [{"model_version": "probe-r0", "score": p, "result": choice_result(guess)}],
            }
        )
    return tasks


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _status(client: LabelStudioClient, path: str) -> int:
    try:
        client.get_bytes(path)
        return 200
    except LabelStudioAPIError as e:
        return e.status


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """Run the scenario on a real server; a dict of everything the tests below look at."""
    t_begin = time.monotonic()
    top = tmp_path_factory.mktemp("labelstudio")  # the document root: images/ and both inboxes lie under it
    files = _make_images(top / "images")
    inbox_ann, inbox_task, inbox_rewrite = top / "inbox-per-annotation", top / "inbox-per-task", top / "inbox-2"
    for d in (inbox_ann, inbox_task, inbox_rewrite):
        d.mkdir()
    s = {"files": files, "top": top, "tasks_in": _tasks(files, top)}
    data_dir = top / "label-studio"

    # Phase A: Label Studio's default target-storage layout (one file per annotation)
    with running_label_studio(data_dir, top / "images", task_files=False) as (url, token, alice, server):
        s["first_start_s"] = TIMINGS["start"]
        s["document_root_env"] = server.document_root
        project = alice.upsert_project("al-pipeline scenario", LABEL_CONFIG)
        pid = s["project_id"] = project["id"]
        s["config_after_update"] = alice.upsert_project("al-pipeline scenario", LABEL_CONFIG)["id"]
        alice.add_local_files_source(pid, str(top / "images"))
        ids = alice.import_tasks(pid, s["tasks_in"])
        task = dict(zip(IMAGES, ids))
        s["task"] = task
        s["tasks_listed"] = alice.tasks(pid)
        s["served"] = {t["data"]["path"]: alice.get_bytes(t["data"]["image"]) for t in s["tasks_listed"]}
        s["unencoded_status"] = {
            n: _status(alice, "/data/local-files/?d=images/" + n) for n in ("c+d.jpg", "r&d.jpg", "x#1.jpg")
        }
        s["absolute_status"] = _status(alice, "/data/local-files/?d=" + urllib.parse.quote(str(files["plain.jpg"])))
        target = alice.add_local_files_target(pid, str(inbox_ann))
        try:
            alice.add_local_files_target(pid, str(tmp_path_factory.mktemp("outside")))
            s["outside_target"] = None
        except LabelStudioAPIError as e:
            s["outside_target"] = e

        bob = alice.sign_up(BOB, BOB_PASSWORD)
        s["users"] = {u["id"]: u["email"] for u in alice.users()}
        s["alice_id"], s["bob_id"] = alice.whoami()["id"], bob.whoami()["id"]
        a = s["ann"] = {}
        a["plain"] = alice.annotate(task["plain.jpg"], choice_result("cat"), lead_time=3.5)
        a["skip"] = alice.annotate(task["c+d.jpg"], [], was_cancelled=True, lead_time=1.25)
        s["draft"] = alice.save_draft(task["r&d.jpg"], choice_result("ship"), lead_time=2.0)
        a["empty"] = alice.annotate(task["x#1.jpg"], [], lead_time=0.5)
        a["alice_ship"] = alice.annotate(task["with space.jpg"], choice_result("ship"), lead_time=4.0)
        time.sleep(0.05)  # distinct created_at: JSON_MIN and CSV order a task's annotations by it
        a["bob_dog"] = bob.annotate(task["with space.jpg"], choice_result("dog"), lead_time=5.0)
        a["bob_cat"] = bob.annotate(task["é.jpg"], choice_result("cat"), lead_time=2.0)
        s["target_before_update"] = (inbox_ann / str(a["bob_cat"]["id"])).read_bytes()
        time.sleep(1.0)  # updated_at visibly after created_at
        a["bob_update"] = bob.update_annotation(a["bob_cat"]["id"], choice_result("dog"), lead_time=6.0)
        s["target_storage"] = alice.sync_target(target["id"])
        s["target_per_annotation"] = _snapshot(inbox_ann)
        s["pgid"] = server.proc.pid
        s["pid_file"] = (data_dir / PID_FILE).read_text().strip()
        s["listening"] = {
            (c.laddr.ip, c.laddr.port)
            for c in psutil.Process(server.proc.pid).net_connections()
            if c.status == psutil.CONN_LISTEN
        }
        s["port"] = server.port
        s["cmdline"] = psutil.Process(server.proc.pid).cmdline()
        s["password"] = server.account.password
        try:
            LabelStudioServer(data_dir, top / "images").start()
            s["second_start"] = None
        except LabelStudioError as e:
            s["second_start"] = str(e)
    s["pid_file_after_stop"] = (data_dir / PID_FILE).exists()
    s["stopped"] = server.proc.poll() is not None
    try:
        os.killpg(s["pgid"], 0)
        s["group_left"] = True
    except ProcessLookupError:
        s["group_left"] = False

    # Phase B: the same data folder restarted with one file per task (what `al labelstudio serve` runs)
    with running_label_studio(data_dir, top / "images") as (url, token, alice, server):
        s["restart_s"] = TIMINGS["start"]
        s["whoami_after_restart"] = alice.whoami()["email"]
        target = alice.add_local_files_target(pid, str(inbox_task))
        alice.sync_target(target["id"])
        s["target_per_task"] = _snapshot(inbox_task)
        s["exports"] = {
            (f, every): alice.export(pid, f, download_all_tasks=every)
            for f in EXPORT_FORMATS
            for every in (False, True)
        }
        # a second project: a task file is rewritten on every Submit and Update
        bob = LabelStudioClient(url, bob.token)
        p2 = alice.upsert_project("rewrite check", LABEL_CONFIG)["id"]
        alice.add_local_files_source(p2, str(top / "images"))
        alice.add_local_files_target(p2, str(inbox_rewrite))
        [t2] = alice.import_tasks(p2, s["tasks_in"][:1])
        steps = []
        first = alice.annotate(t2, choice_result("cat"))
        steps.append(json.loads((inbox_rewrite / f"{t2}.json").read_text()))
        bob.annotate(t2, choice_result("dog"))
        steps.append(json.loads((inbox_rewrite / f"{t2}.json").read_text()))
        alice.update_annotation(first["id"], choice_result("ship"))
        steps.append(json.loads((inbox_rewrite / f"{t2}.json").read_text()))
        s["rewrite_steps"], s["rewrite_files"] = steps, sorted(p.name for p in inbox_rewrite.iterdir())
    s["total_s"] = time.monotonic() - t_begin
    s["install_s"] = TIMINGS["install"]
    print(
        f"\nLabel Studio timings: make labelstudio {s['install_s']:.1f} s, first start {s['first_start_s']:.1f} s, "
        f"restart {s['restart_s']:.1f} s, whole scenario {s['total_s']:.1f} s"
    )
    if REGENERATE:
        _write_fixtures(s)
    return s


# -- the fixture files ---------------------------------------------------------------------------------------------
def _export_name(export_type: str, every: bool, filename: str) -> str:
    return f"{export_type}{'-all' if every else ''}{Path(filename).suffix}"


def _scenario_record(s) -> dict:
    """What happened, for the reader tests: tasks by file name and every annotation with its expected reading."""
    a = s["ann"]
    answers = [
        ("plain", "plain.jpg", ALICE, "cat"),
        ("skip", "c+d.jpg", ALICE, None),
        ("empty", "x#1.jpg", ALICE, None),
        ("alice_ship", "with space.jpg", ALICE, "ship"),
        ("bob_dog", "with space.jpg", BOB, "dog"),
        ("bob_update", "é.jpg", BOB, "dog"),
    ]
    return {
        "label_studio": "1.23.2",
        "project_id": s["project_id"],
        "users": {str(k): v for k, v in sorted(s["users"].items())},
        "tasks": {
            name: {
                "task_id": s["task"][name],
                "path": f"images/{name}",
                "predicted": IMAGES[name][1],
                "score": IMAGES[name][2],
            }
            for name in IMAGES
        },
        "annotations": [
            {
                "what": what,
                "annotation_id": a[what]["id"],
                "task_id": s["task"][name],
                "file": name,
                "annotator": who,
                "choice": choice,
                "was_cancelled": a[what]["was_cancelled"],
                "lead_time": a[what]["lead_time"],
            }
            for what, name, who, choice in answers
        ],
        "drafts": [{"task_id": s["task"]["r&d.jpg"], "file": "r&d.jpg", "user": ALICE, "choice": "ship"}],
        "notes": {"bob_update": "bob submitted cat, then updated the same annotation to dog"},
    }


def _fixture_files(s) -> dict[str, bytes]:
    out = {
        "config.xml": LABEL_CONFIG.encode(),
        "tasks.json": (json.dumps(s["tasks_in"], indent=2, ensure_ascii=False) + "\n").encode(),
        "scenario.json": (json.dumps(_scenario_record(s), indent=2, ensure_ascii=False) + "\n").encode(),
    }
    manifest = {}
    for (fmt, every), e in s["exports"].items():
        name = _export_name(fmt, every, e.filename)
        out[f"export/{name}"] = e.content
        manifest[name] = {"exportType": fmt, "download_all_tasks": every, "label_studio_filename": e.filename}
    out["export/manifest.json"] = (json.dumps(manifest, indent=2) + "\n").encode()
    out.update({f"target-per-annotation/{k}": v for k, v in s["target_per_annotation"].items()})
    out.update({f"target-per-task/{k}": v for k, v in s["target_per_task"].items()})
    return out


def _write_fixtures(s) -> None:
    for sub in ("export", "target-per-annotation", "target-per-task"):
        shutil.rmtree(FIXTURES / sub, ignore_errors=True)
    for rel, content in _fixture_files(s).items():
        (FIXTURES / rel).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(FIXTURES / rel, content)


def _normalise(name: str, content: bytes):
    """The content with the values that change from run to run (times, uuids, file-name stamps) blanked."""

    def blank(x):
        if isinstance(x, dict):
            return {k: ("<t>" if k in TIME_KEYS and v is not None else blank(v)) for k, v in x.items()}
        if isinstance(x, list):
            return [blank(v) for v in x]
        return x

    if name.endswith(".csv"):
        text = content.decode()
        rows = list(csv.reader(io.StringIO(text), delimiter="\t" if name.startswith("export/TSV") else ","))
        head = rows[0]
        return [head] + [[("<t>" if head[i] in TIME_KEYS and v else v) for i, v in enumerate(r)] for r in rows[1:]]
    if name == "export/manifest.json":
        return {
            k: {**v, "label_studio_filename": Path(v["label_studio_filename"]).suffix}
            for k, v in json.loads(content).items()
        }
    if name == "config.xml":
        return content.decode()
    return blank(json.loads(content))


def test_fixtures_match_what_the_server_writes(scenario):
    produced = _fixture_files(scenario)
    committed = {
        str(p.relative_to(FIXTURES)): p.read_bytes()
        for p in FIXTURES.rglob("*")
        if p.is_file() and p.name != "README.md"
    }
    assert {k for k in produced if k.startswith("export/")} == {
        f"export/{n}"
        for n in (
            "JSON.json",
            "JSON-all.json",
            "JSON_MIN.json",
            "JSON_MIN-all.json",
            "CSV.csv",
            "CSV-all.csv",
            "TSV.csv",
            "TSV-all.csv",
            "manifest.json",
        )
    }
    assert sorted(committed) == sorted(produced), "fixture files differ: rerun with AL_REGENERATE_LS_FIXTURES=1"
    for name, content in produced.items():
        assert _normalise(name, committed[name]) == _normalise(name, content), (
            f"{name} no longer matches what Label Studio writes: rerun with AL_REGENERATE_LS_FIXTURES=1"
        )
    assert (FIXTURES / "README.md").read_text().count("AL_REGENERATE_LS_FIXTURES=1") >= 1


# -- the server and the images ---------------------------------------------------------------------------------------
def test_server_binds_loopback_reuses_its_account_and_stops_its_group(scenario):
    assert scenario["document_root_env"] == scenario["top"]  # the image folder's parent
    assert scenario["listening"] == {("127.0.0.1", scenario["port"])}
    assert scenario["pid_file"] == str(scenario["pgid"]) and not scenario["pid_file_after_stop"]
    assert "--internal-host" in scenario["cmdline"] and not any(scenario["password"] in a for a in scenario["cmdline"])
    assert "already runs on" in scenario["second_start"]
    assert scenario["stopped"] and not scenario["group_left"]
    assert scenario["whoami_after_restart"] == ALICE
    assert scenario["users"] == {scenario["alice_id"]: ALICE, scenario["bob_id"]: BOB}
    assert scenario["config_after_update"] == scenario["project_id"]  # upsert found the project by its title


def test_every_image_is_served_with_its_exact_bytes(scenario):
    files = scenario["files"]
    assert sorted(scenario["served"]) == sorted(f"images/{n}" for n in IMAGES)
    for name, path in files.items():
        assert scenario["served"][f"images/{name}"] == path.read_bytes(), name
    urls = {t["data"]["path"]: t["data"]["image"] for t in scenario["tasks_listed"]}
    assert urls["images/c+d.jpg"] == "/data/local-files/?d=images/c%2Bd.jpg"
    assert urls["images/é.jpg"] == "/data/local-files/?d=images/%C3%A9.jpg"
    for rel, url in urls.items():
        assert str(path_from_local_files_url(url)) == rel
    # unencoded names and absolute paths (the old task URLs) are 404s under the documented document root
    assert scenario["unencoded_status"] == {"c+d.jpg": 404, "r&d.jpg": 404, "x#1.jpg": 404}
    assert scenario["absolute_status"] == 404


def test_storages_follow_the_document_root(scenario):
    err = scenario["outside_target"]
    assert err is not None and err.status == 400 and "must be a subdirectory of" in err.body
    assert scenario["target_storage"]["status"] == "completed"


def test_the_api_accepts_an_empty_submit_despite_required(scenario):
    # required="true" is checked by the labelling UI only: the API stores an empty, not-cancelled annotation
    empty = scenario["ann"]["empty"]
    assert empty["result"] == [] and empty["was_cancelled"] is False
    skip = scenario["ann"]["skip"]
    assert skip["result"] == [] and skip["was_cancelled"] is True
    upd = scenario["ann"]["bob_update"]
    assert upd["id"] == scenario["ann"]["bob_cat"]["id"] and upd["updated_at"] > upd["created_at"]
    assert upd["lead_time"] == 6.0  # an update replaces lead_time (the UI sends the running total)


# -- the exports ---------------------------------------------------------------------------------------------------
def _choice(annotation: dict):
    for r in annotation["result"]:
        return r["value"]["choices"][0]
    return None


def test_json_export_has_every_annotation_with_user_ids(scenario):
    t, a = scenario["task"], scenario["ann"]
    finished = json.loads(scenario["exports"]["JSON", False].content)
    everything = json.loads(scenario["exports"]["JSON", True].content)
    assert [x["id"] for x in finished] == sorted(t[n] for n in IMAGES if n != "r&d.jpg")  # drafts-only: not finished
    assert [x["id"] for x in everything] == sorted(t.values())
    by_task = {x["id"]: x for x in everything}
    for x in everything:
        assert {
            "id",
            "data",
            "annotations",
            "drafts",
            "predictions",
            "total_annotations",
            "cancelled_annotations",
        } <= set(x)
        assert all(isinstance(p, int) for p in x["predictions"])  # predictions as ids; each annotation embeds one
        for ann in x["annotations"]:
            assert isinstance(ann["completed_by"], int)  # a user id, never the email
            assert {"id", "result", "was_cancelled", "lead_time", "created_at", "updated_at"} <= set(ann)
            assert ann["prediction"]["model_version"] == "probe-r0"
    skip = by_task[t["c+d.jpg"]]
    assert [(n["was_cancelled"], n["result"]) for n in skip["annotations"]] == [(True, [])]
    assert (skip["total_annotations"], skip["cancelled_annotations"]) == (0, 1)
    assert [(n["was_cancelled"], n["result"]) for n in by_task[t["x#1.jpg"]]["annotations"]] == [(False, [])]
    pair = by_task[t["with space.jpg"]]["annotations"]
    assert sorted((n["completed_by"], _choice(n)) for n in pair) == sorted(
        [(scenario["alice_id"], "ship"), (scenario["bob_id"], "dog")]
    )
    [upd] = by_task[t["é.jpg"]]["annotations"]
    assert (upd["id"], _choice(upd), upd["lead_time"]) == (a["bob_cat"]["id"], "dog", 6.0)
    draft = by_task[t["r&d.jpg"]]
    assert draft["annotations"] == [] and [d["user"] for d in draft["drafts"]] == [ALICE]  # drafts name the email
    assert _choice(draft["drafts"][0]) == "ship"
    assert all(x["drafts"] == [] for x in finished)


def _min_rows(scenario, every: bool) -> list[dict]:
    return json.loads(scenario["exports"]["JSON_MIN", every].content)


def test_json_min_has_one_row_per_answer_and_no_skips(scenario):
    t, a = scenario["task"], scenario["ann"]
    rows = _min_rows(scenario, False)
    for r in rows:
        assert {
            "image",
            "round",
            "rank",
            "score",
            "strategy",
            "image_id",
            "path",  # the task data, flattened
            "id",
            "annotator",
            "annotation_id",
            "created_at",
            "updated_at",
            "lead_time",
        } <= set(r)
        assert isinstance(r["annotator"], int)  # the user id
    got = [(r["id"], r["annotation_id"], r.get("label")) for r in rows]
    assert got == [
        (t["plain.jpg"], a["plain"]["id"], "cat"),
        (t["x#1.jpg"], a["empty"]["id"], None),  # an empty submit: a row without the `label` key
        (t["with space.jpg"], a["bob_dog"]["id"], "dog"),  # newest first within a task
        (t["with space.jpg"], a["alice_ship"]["id"], "ship"),
        (t["é.jpg"], a["bob_cat"]["id"], "dog"),
    ]
    assert "label" not in rows[1]
    assert not any(r["id"] == t["c+d.jpg"] for r in _min_rows(scenario, True))  # a skip leaves no trace at all
    [draft] = [r for r in _min_rows(scenario, True) if r["id"] == t["r&d.jpg"]]  # a draft: a row of task data only
    assert (draft["annotator"], draft["annotation_id"], draft["lead_time"]) == (None, None, None)
    assert "label" not in draft
    assert isinstance(rows[0]["label"], str)  # one choice is a string, not a list


@pytest.mark.parametrize("fmt,sep", [("CSV", ","), ("TSV", "\t")])
def test_csv_and_tsv_are_json_min_as_text(scenario, fmt, sep):
    t = scenario["task"]
    for every in (False, True):
        e = scenario["exports"][fmt, every]
        assert e.filename.endswith(".csv")  # the TSV export is named .csv too
        text = e.content.decode()
        assert "\r\n" in text
        rows = list(csv.DictReader(io.StringIO(text), delimiter=sep))
        head = text.split("\r\n", 1)[0].replace('"', "").split(sep)
        assert head == sorted(head)  # columns sorted by name
        assert set(head) == {
            "annotation_id",
            "annotator",
            "created_at",
            "id",
            "image",
            "image_id",
            "label",
            "lead_time",
            "path",
            "rank",
            "round",
            "score",
            "strategy",
            "updated_at",
        }
        mins = _min_rows(scenario, every)
        assert [(int(r["id"]), r["annotation_id"], r["label"], r["annotator"]) for r in rows] == [
            (
                m["id"],
                "" if m["annotation_id"] is None else str(m["annotation_id"]),
                m.get("label", ""),
                "" if m["annotator"] is None else str(m["annotator"]),
            )
            for m in mins
        ]
        assert not any(int(r["id"]) == t["c+d.jpg"] for r in rows)
    first = scenario["exports"][fmt, False].content.decode().split("\r\n")[1].split(sep)
    assert first[0] == str(scenario["ann"]["plain"]["id"]) and first[1] == f'"{scenario["alice_id"]}"'  # quoted text


# -- target storage ------------------------------------------------------------------------------------------------
def test_target_storage_per_annotation_files(scenario):
    a, files = scenario["ann"], scenario["target_per_annotation"]
    ids = {str(a[k]["id"]) for k in ("plain", "skip", "empty", "alice_ship", "bob_dog", "bob_cat")}
    assert set(files) == ids  # named by annotation id, no extension; the draft wrote nothing
    docs = {k: json.loads(v) for k, v in files.items()}
    for d in docs.values():
        assert set(d["completed_by"]) == {"id", "email", "first_name", "last_name"}
        assert "data" in d["task"] and "annotations" not in d["task"]
    assert docs[str(a["skip"]["id"])]["was_cancelled"] is True
    assert docs[str(a["bob_dog"]["id"])]["completed_by"]["email"] == BOB
    before = json.loads(scenario["target_before_update"])
    after = docs[str(a["bob_cat"]["id"])]
    assert (_choice(before), _choice(after)) == ("cat", "dog")  # rewritten in place on Update


def test_target_storage_per_task_files(scenario):
    t, a = scenario["task"], scenario["ann"]
    files = scenario["target_per_task"]
    assert set(files) == {f"{t[n]}.json" for n in IMAGES if n != "r&d.jpg"}
    docs = {int(k.removesuffix(".json")): json.loads(v) for k, v in files.items()}
    for d in docs.values():
        assert {"id", "data", "annotations", "drafts", "predictions"} <= set(d)
        for ann in d["annotations"]:
            assert set(ann["completed_by"]) == {"id", "email", "first_name", "last_name"}
    assert [n["was_cancelled"] for n in docs[t["c+d.jpg"]]["annotations"]] == [True]
    pair = docs[t["with space.jpg"]]["annotations"]
    assert sorted((n["completed_by"]["email"], _choice(n)) for n in pair) == [(ALICE, "ship"), (BOB, "dog")]
    assert [(n["id"], _choice(n)) for n in docs[t["é.jpg"]]["annotations"]] == [(a["bob_cat"]["id"], "dog")]
    steps = scenario["rewrite_steps"]
    assert [[_choice(n) for n in s["annotations"]] for s in steps] == [["cat"], ["cat", "dog"], ["ship", "dog"]]
    assert len(scenario["rewrite_files"]) == 1


def test_serve_prints_the_url_and_account_and_stops_on_ctrl_c(scenario):
    """docs/label-studio.md's `serve(...)` call on the scenario's data folder (a restart: its account is reused)."""
    code = (
        f"from al_core.labelstudio.server import serve; "
        f"serve({str(scenario['top'] / 'label-studio')!r}, {str(scenario['top'] / 'images')!r})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (lines and lines[-1].startswith("Ctrl-C")):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
        assert lines and lines[-1] == "Ctrl-C stops it.", lines
        url = lines[0].split()[2]
        assert url.startswith("http://127.0.0.1:") and f"log in as {ALICE} / " in lines[1]
        token = lines[1].rsplit(" ", 1)[1]
        assert LabelStudioClient(url, token).whoami()["email"] == ALICE
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        with pytest.raises(OSError):
            urllib.request.urlopen(url + "/health", timeout=5)
        assert not (scenario["top"] / "label-studio" / PID_FILE).exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        pid_file = scenario["top"] / "label-studio" / PID_FILE
        if pid_file.exists():  # serve() was killed before it could stop Label Studio
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
