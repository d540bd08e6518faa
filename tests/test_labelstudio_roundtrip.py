"""The round trip with a real Label Studio 1.23.2, driven by docs/label-studio.md's own commands.

One server for the module, started by the guide's ``al labelstudio serve`` block on a free 127.0.0.1 port (the test
fails, never skips, when it cannot start; it is stopped at the end, also on failure). A project of six images
whose names need URL-encoding, batch 0 proposed, then:

- ``al labelstudio push`` (the guide's blocks: the local server, then ``--url`` with the token in the environment)
  creates the project with the generated config and imports the batch once; every task image is served with the
  file's exact bytes;
- two users annotate through the API: alice submits cat on plain.jpg, presses Skip on c+d.jpg, saves a draft on
  r&d.jpg, submits nothing on x#1.jpg, says ship on "with space.jpg" where bob says dog (a disagreement), and bob
  submits cat on é.jpg, then updates it to dog;
- every export format (JSON, JSON_MIN, CSV, TSV) and the target storage's files (Label Studio wrote them into the
  inbox) are delivered into a fresh copy of the project state: labels stored, skips counted where the format
  carries them, then ``al labelstudio pull`` into the same copy: the disagreement recorded with both annotators'
  emails, nothing doubled, the next batch proposed;
- ``al labelstudio pull`` end to end on the project itself: an update after the pull replaces the earlier answer,
  a pull with nothing new writes nothing, and the next batch is pushed with the probe's pre-labels.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import al_core.loop as R
from al_core.catalogue import labels as labels_q
from al_core.catalogue import open_store
from al_core.catalogue.store import sha256_file
from al_core.config import load_config
from al_core.ingest.scan import scan
from al_core.labelstudio.client import EXPORT_FORMATS, LabelStudioClient, LabelStudioUnreachable, choice_result
from al_core.labelstudio.server import PID_FILE, free_port
from al_core.loop.inbox import pending_files
from tests.conftest import ROOT, SAMPLE_ROOT
from tests.labelstudio_helpers import ensure_label_studio

GUIDE = ROOT / "docs" / "label-studio.md"
CLASSES = ["cat", "dog", "ship"]
ALICE, BOB = "admin@example.com", "bob@example.com"
NAMES = ["plain.jpg", "c+d.jpg", "r&d.jpg", "x#1.jpg", "with space.jpg", "é.jpg"]
EXPECTED = {"plain.jpg": "cat", "with space.jpg": "dog", "é.jpg": "dog"}  # labels.policy latest
SERVE_TIMEOUT_S = 240  # a first start runs Label Studio's migrations: 35-70 s on 2 shared cores, more under load
CLI_TIMEOUT_S = 120
TIMES: dict[str, float] = {}


def guide_blocks() -> dict[str, tuple[str, str]]:
    """name -> (language, text) of every ```LANG tested=NAME block of the guide."""
    found = re.findall(r"^```(\w+) tested=([\w-]+)\n(.*?)^```$", GUIDE.read_text(), flags=re.M | re.S)
    return {name: (lang, text) for lang, name, text in found}


BLOCKS = guide_blocks()


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("AL_CONFIG", "LABEL_STUDIO_API_KEY", "LABEL_STUDIO_URL")}
    env.update(PYTHONPATH=str(ROOT), PATH=f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}", **extra)
    return env


def run_block(name: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    lang, text = BLOCKS[name]
    assert lang == "sh"
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", text],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def al(*args, cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["al", *args], cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )


def _merge(a: dict, b: dict) -> dict:
    return {**a, **{k: _merge(a.get(k, {}), v) if isinstance(v, dict) else v for k, v in b.items()}}


def make_project(proj: Path) -> None:
    images = proj / "images"
    images.mkdir(parents=True)
    for k, name in enumerate(NAMES):
        shutil.copyfile(sorted((SAMPLE_ROOT / CLASSES[k % 3]).iterdir())[k], images / name)
    conf = {
        "name": "ls-roundtrip",
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
        "sensor": {"settle_s": 0.0},
        "store": {"lock_timeout_s": 5},
    }
    lang, settings = BLOCKS["settings"]
    assert lang == "yaml"
    (proj / "al.yaml").write_text(yaml.safe_dump(_merge(conf, yaml.safe_load(settings)), allow_unicode=True))
    cfg = load_config(proj / "al.yaml")
    store = open_store(cfg)
    scan(store, root=cfg.image_root)
    ids = sorted(sha256_file(images / n) for n in NAMES)
    store.register_embedding_config("fake", {"backbone": "fake", "dim": 4})
    store.write_embeddings("fake", ids, np.random.default_rng(0).normal(size=(len(ids), 4)).astype(np.float32))
    b0 = R.propose(store, cfg, 0, R.load_pool(store, cfg, "fake", CLASSES))
    assert sorted(b0.image_ids) == ids


def fresh_copy(s, name: str, *, under_document_root: bool = False):
    """A copy of the project as it was with batch 0 just proposed (before Label Studio saw it); one that pushes
    lies under the server's document root (the project's folder), as Label Studio asks of a storage."""
    dest = (s["proj"] if under_document_root else s["top"]) / f"copy-{name}"
    shutil.copytree(s["template"], dest)
    cfg = load_config(dest / "al.yaml")
    return dest, cfg, open_store(cfg)


def _serve(proj: Path):
    """The guide's serve block, in the background: (process, url, password, token)."""
    lang, text = BLOCKS["serve"]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["bash", "-c", text],
        cwd=proj,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines = []
    while time.monotonic() - t0 < SERVE_TIMEOUT_S:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("Ctrl-C stops it."):
            TIMES["server_start_s"] = time.monotonic() - t0
            head = next(x for x in lines if x.startswith("Label Studio http"))
            account = next(x for x in lines if "log in as" in x)
            m = re.search(r"log in as (\S+) / (\S+)\s+API token (\S+)", account)
            assert m and m.group(1) == ALICE, account
            return proc, head.split()[2], m.group(2), m.group(3), lines
    _stop(proc, proj)
    pytest.fail(f"`al labelstudio serve` did not print its URL within {SERVE_TIMEOUT_S} s:\n" + "\n".join(lines[-40:]))


def _stop(proc: subprocess.Popen, proj: Path) -> int | None:
    """Ctrl-C to the serve command; whatever is left of Label Studio's process group killed."""
    code = None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    pid_file = proj / "data" / "label-studio" / PID_FILE
    if pid_file.exists():  # serve was killed before it could stop Label Studio
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
    return code


@pytest.fixture(scope="module")
def s(tmp_path_factory):
    t_begin = time.monotonic()
    t0 = time.monotonic()
    ensure_label_studio()
    TIMES["make_labelstudio_s"] = time.monotonic() - t0
    top = tmp_path_factory.mktemp("ls-roundtrip")
    proj = top / "proj"
    make_project(proj)
    shutil.copytree(proj, top / "template")
    state = {"top": top, "proj": proj, "template": top / "template", "cfg": load_config(proj / "al.yaml")}
    proc, url, password, token, lines = _serve(proj)
    state.update(url=url, token=token, password=password, serve_lines=lines, serve_proc=proc)
    try:
        yield state
    finally:
        state["serve_exit"] = _stop(proc, proj)
        TIMES["module_s"] = time.monotonic() - t_begin
        print("\nLabel Studio round trip: " + ", ".join(f"{k} {v:.1f}" for k, v in TIMES.items()))


@pytest.fixture(scope="module")
def pushed(s):
    """The guide's push blocks run; the scenario annotated; the target-storage files and every export kept."""
    first = run_block("push", s["proj"])
    again = run_block("push-url", s["proj"], LABEL_STUDIO_URL=s["url"], LABEL_STUDIO_API_KEY=s["token"])
    alice = LabelStudioClient(s["url"], s["token"])
    project = alice.find_project("ls-roundtrip")
    pid = project["id"]
    tasks = alice.tasks(pid)
    task = {t["data"]["path"].rsplit("/", 1)[1]: t["id"] for t in tasks}
    served = {t["data"]["path"]: alice.get_bytes(t["data"]["image"]) for t in tasks}
    bob = alice.sign_up(BOB, "bob-labels-2026!")
    ann = {
        "plain": alice.annotate(task["plain.jpg"], choice_result("cat"), lead_time=3.5),
        "skip": alice.annotate(task["c+d.jpg"], [], was_cancelled=True, lead_time=1.25),
        "empty": alice.annotate(task["x#1.jpg"], [], lead_time=0.5),
        "alice_ship": alice.annotate(task["with space.jpg"], choice_result("ship"), lead_time=4.0),
    }
    alice.save_draft(task["r&d.jpg"], choice_result("ship"), lead_time=2.0)
    time.sleep(0.05)
    ann["bob_dog"] = bob.annotate(task["with space.jpg"], choice_result("dog"), lead_time=5.0)
    ann["bob_cat"] = bob.annotate(task["é.jpg"], choice_result("cat"), lead_time=2.0)
    time.sleep(1.0)  # updated_at visibly later
    ann["bob_update"] = bob.update_annotation(ann["bob_cat"]["id"], choice_result("dog"), lead_time=6.0)
    inbox = s["cfg"].inbox
    target = {p.name: p.read_bytes() for p in inbox.iterdir() if re.fullmatch(r"\d+\.json", p.name)}
    exports = {f: alice.export(pid, f) for f in EXPORT_FORMATS}
    return {
        "first": first,
        "again": again,
        "alice": alice,
        "bob": bob,
        "project": project,
        "tasks": tasks,
        "task": task,
        "served": served,
        "ann": ann,
        "target": target,
        "exports": exports,
    }


def test_the_guide_has_every_step():
    assert set(BLOCKS) == {"settings", "serve", "push", "push-url", "pull"}


def test_serve_binds_loopback_and_prints_the_account(s):
    assert s["url"].startswith("http://127.0.0.1:")
    text = "\n".join(s["serve_lines"])
    assert f"document root {s['proj']}" in text and f"images {s['proj'] / 'images'}" in text
    assert LabelStudioClient(s["url"], s["token"]).whoami()["email"] == ALICE
    assert (s["proj"] / "data" / "label-studio" / "label-studio.url").read_text().strip() == s["url"]


def test_serve_refuses_a_public_address_unless_told(s):
    r = al("labelstudio", "serve", "--host", "192.0.2.10", cwd=s["proj"])  # TEST-NET-1: refused before any bind
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "not a loopback address" in r.stderr and "--allow-remote" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("al labelstudio serve: refusing")


def test_push_creates_the_project_and_never_duplicates(s, pushed):
    assert pushed["first"].returncode == 0, pushed["first"].stderr
    assert "6 task(s) imported, 0 already there" in pushed["first"].stdout
    assert pushed["again"].returncode == 0, pushed["again"].stderr
    assert "0 task(s) imported, 6 already there" in pushed["again"].stdout
    assert (
        s["token"]
        not in pushed["first"].stdout + pushed["first"].stderr + pushed["again"].stdout + pushed["again"].stderr
    )
    tasks = pushed["tasks"]
    assert sorted(t["data"]["task_key"].split("/")[0] for t in tasks) == ["round-0000"] * 6
    assert len({t["data"]["image_id"] for t in tasks}) == 6
    xml = (s["cfg"].outbox / "label-studio-config.xml").read_text()
    assert pushed["project"]["label_config"] == xml.rstrip("\n") and 'required="true"' in xml
    # the storages push added: the images (source) and the inbox (target, settings block of the guide)
    alice, pid = pushed["alice"], pushed["project"]["id"]
    assert [x["path"] for x in alice.local_files_sources(pid)] == [str(s["proj"] / "images")]
    assert [x["path"] for x in alice.local_files_targets(pid)] == [str(s["cfg"].inbox)]


def test_every_task_image_is_served_with_its_exact_bytes(s, pushed):
    assert sorted(pushed["served"]) == sorted(f"images/{n}" for n in NAMES)
    for name in NAMES:
        assert pushed["served"][f"images/{name}"] == (s["proj"] / "images" / name).read_bytes(), name
    urls = {t["data"]["path"]: t["data"]["image"] for t in pushed["tasks"]}
    assert urls["images/x#1.jpg"] == "/data/local-files/?d=images/x%231.jpg"
    assert urls["images/with space.jpg"] == "/data/local-files/?d=images/with%20space.jpg"


def test_push_and_pull_errors_are_one_line_naming_the_fix(s, pushed):
    bad = "0" * 40
    cases = [
        (
            ("labelstudio", "push", "--url", s["url"]),
            {"LABEL_STUDIO_API_KEY": bad},
            "refused the token in $LABEL_STUDIO_API_KEY (HTTP 401): use the token shown under Account & Settings",
        ),
        (
            ("labelstudio", "pull", "--url", f"http://127.0.0.1:{free_port()}"),
            {"LABEL_STUDIO_API_KEY": bad},
            "cannot reach Label Studio at http://127.0.0.1:",
        ),
        (("labelstudio", "push", "--url", s["url"]), {}, "no API token for"),
    ]
    for args, env, message in cases:
        r = al(*args, cwd=s["proj"], **env)
        assert r.returncode == 1, (args, r.stderr)
        last = r.stderr.strip().splitlines()[-1]
        assert message in last and "Traceback" not in r.stderr and bad not in r.stdout + r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 2  # the project line, then the error
    # a copy of the project: no server of its own running, and no open batch once batch 0 is closed
    dest, cfg, store = fresh_copy(s, "errors")
    r = al("labelstudio", "push", cwd=dest)
    assert (
        r.returncode == 1
        and "no Label Studio to talk to: start the project's own with `al labelstudio serve`" in r.stderr
    )
    R.close_round(store, 0, "manual")
    r = al("labelstudio", "push", "--url", s["url"], cwd=dest, LABEL_STUDIO_API_KEY=s["token"])
    assert r.returncode == 1 and "no open batch to push" in r.stderr.splitlines()[-1], r.stderr


def _name_of(store):
    """image id -> file name (every copy of the project holds the same six files)."""
    return {sha256_file(store.db_path.parents[1] / "images" / n): n for n in NAMES}


def _labels(store):
    name = _name_of(store)
    return {
        name[iid]: (status, label)
        for iid, status, label in store.fetch("SELECT image_id, status, label FROM image_labels")
    }


def _disagreement(store):
    name = _name_of(store)
    with store.connect(read_only=True) as con:
        found = labels_q.disagreements(con)
    return [(name[d["image_id"]], sorted((a["annotator"], a["label"]) for a in d["answers"])) for d in found]


# format -> (files delivered, whether it carries skips, whether it names annotators by email)
def _deliveries(pushed) -> dict:
    e = pushed["exports"]
    return {
        "JSON": ({"export-JSON.json": e["JSON"].content}, True, False),
        "JSON_MIN": ({"export-JSON_MIN.json": e["JSON_MIN"].content}, False, False),
        "CSV": ({"export-CSV.csv": e["CSV"].content}, False, False),
        "TSV": ({"export-TSV.csv": e["TSV"].content}, False, False),
        "target": (pushed["target"], True, True),
    }


@pytest.mark.parametrize("fmt", ["JSON", "JSON_MIN", "CSV", "TSV", "target"])
def test_every_format_delivered_into_a_fresh_copy(s, pushed, fmt):
    files, skips, emails = _deliveries(pushed)[fmt]
    if fmt == "target":  # one file per task (FUTURE_SAVE_TASK_TO_STORAGE), the draft-only task wrote none
        assert sorted(files) == sorted(f"{pushed['task'][n]}.json" for n in NAMES if n != "r&d.jpg")
    dest, cfg, store = fresh_copy(s, fmt)
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (cfg.inbox / name).write_bytes(content)
    rep = R.ingest_label_files(store, cfg, pending_files(cfg), round_=1)
    assert {f.status for f in rep.files} == {"accepted"}, rep.files
    labels = _labels(store)
    assert {n: lab for n, (st, lab) in labels.items() if st == "labelled"} == EXPECTED
    assert (labels.get("c+d.jpg") == ("skipped", None)) is skips
    assert (rep.answered, rep.proposed) == (4 if skips else 3, 6)
    warned = [w for f in rep.files for w in f.warnings]
    empty = pushed["ann"]["empty"]
    assert len(warned) == 1 and warned[0].startswith(f"task {empty['task']}, annotation {empty['id']} ")
    [(where, answers)] = _disagreement(store)
    assert where == "with space.jpg" and sorted(lab for _, lab in answers) == ["dog", "ship"]
    assert all((a in (ALICE, BOB)) is emails for a, _ in answers)
    n = store.fetch("SELECT count(*) FROM labels")[0][0]
    assert n == (5 if skips else 4)

    # `al labelstudio pull` into the same copy (a team's server: --url, token in the environment)
    r = al("labelstudio", "pull", "--url", s["url"], cwd=dest, LABEL_STUDIO_API_KEY=s["token"])
    assert r.returncode == 0, r.stderr
    assert re.search(
        r"pulled 6 new or updated annotation\(s\) of 6 as JSON into .*label-studio-\d+-\d{8}T\d{6}Z-"
        r"[0-9a-f]{16}\.json",
        r.stdout,
    ), r.stdout
    assert s["token"] not in r.stdout + r.stderr
    again = R.ingest_label_files(store, cfg, pending_files(cfg), round_=1)
    assert [f.status for f in again.files] == ["accepted"]
    assert sum(f.n_applied for f in again.files) == (0 if skips else 1)  # only the skip, where it was missing
    assert store.fetch("SELECT count(*) FROM labels")[0][0] == 5  # nothing doubled
    assert _disagreement(store) == [("with space.jpg", [(ALICE, "ship"), (BOB, "dog")])]
    assert _labels(store)["c+d.jpg"] == ("skipped", None)
    assert again.answered == 4
    missing = {m["path"].rsplit("/", 1)[1] for m in again.labelling["batch"]["unanswered"]}
    assert missing == {"r&d.jpg", "x#1.jpg"}  # the draft and the empty Submit
    # the next batch: batch 0 closed by hand, the unanswered images proposed again
    R.close_round(store, 0, "manual")
    pool = R.load_pool(store, cfg, "fake", CLASSES)
    probe, rec = R.train_probe(store, cfg, 1, pool)
    b1 = R.propose(store, cfg, 1, pool, probe=probe, probe_id=rec.probe_id)
    assert {_name_of(store)[i] for i in b1.image_ids} == missing


def test_pull_end_to_end_updates_replace_and_nothing_is_applied_twice(s, pushed):
    cfg, proj = s["cfg"], s["proj"]
    store = open_store(cfg)
    r = run_block("pull", proj)
    assert r.returncode == 0 and "pulled 6 new or updated annotation(s) of 6 as JSON" in r.stdout, r.stderr
    pulled = [p for p in pending_files(cfg) if p.name.startswith("label-studio-")]
    assert len(pulled) == 1
    doc = json.loads(pulled[0].read_text())
    assert {a["completed_by"]["email"] for t in doc for a in t["annotations"]} == {ALICE, BOB}
    # the pulled file and the target storage's task files, ingested together
    rep = R.ingest_label_files(store, cfg, pending_files(cfg), round_=1)
    assert {f.status for f in rep.files} == {"accepted"} and len(rep.files) == 6
    assert {n: lab for n, (st, lab) in _labels(store).items() if st == "labelled"} == EXPECTED
    assert store.fetch("SELECT count(*) FROM labels")[0][0] == 5
    # nothing new: nothing written
    r = run_block("pull", proj)
    assert r.returncode == 0 and "nothing new" in r.stdout and pending_files(cfg) == []
    # alice changes her mind after the pull: ship -> dog; the update replaces her earlier answer
    pushed["alice"].update_annotation(pushed["ann"]["alice_ship"]["id"], choice_result("dog"), lead_time=7.0)
    r = run_block("pull", proj)
    assert r.returncode == 0 and "pulled 1 new or updated annotation(s) of 6" in r.stdout, r.stdout
    [pull2] = [p for p in pending_files(cfg) if p.name.startswith("label-studio-")]
    assert [t["id"] for t in json.loads(pull2.read_text())] == [pushed["task"]["with space.jpg"]]
    time.sleep(0.2)
    rep = R.ingest_label_files(store, cfg, pending_files(cfg), round_=1)  # the pull and the rewritten task file
    assert sum(f.n_applied for f in rep.files) == 1
    assert store.fetch("SELECT count(*) FROM labels")[0][0] == 6
    space = sha256_file(proj / "images" / "with space.jpg")
    assert sorted(store.fetch("SELECT annotator, label, state FROM answers WHERE image_id = ?", [space])) == [
        (ALICE, "dog", "current"),
        (ALICE, "ship", "superseded"),
        (BOB, "dog", "current"),
    ]
    assert _disagreement(store) == []
    # the next batch, proposed with the probe's pre-labels, pushed: only its tasks are new
    R.close_round(store, 0, "manual")
    pool = R.load_pool(store, cfg, "fake", CLASSES)
    probe, rec = R.train_probe(store, cfg, 1, pool)
    b1 = R.propose(store, cfg, 1, pool, probe=probe, probe_id=rec.probe_id)
    r = run_block("push", proj)
    assert r.returncode == 0 and f"{len(b1.image_ids)} task(s) imported, 0 already there" in r.stdout, r.stderr
    alice, pid = pushed["alice"], pushed["project"]["id"]
    tasks = alice.tasks(pid)
    assert len(tasks) == 6 + len(b1.image_ids)
    new = [t for t in tasks if t["data"]["round"] == 1]
    assert sorted(t["data"]["image_id"] for t in new) == sorted(b1.image_ids)
    for t in new:
        [pred] = alice.task(t["id"])["predictions"]
        assert pred["model_version"] == rec.probe_id and 0 < pred["score"] <= 1
        assert pred["result"][0]["value"]["choices"][0] in CLASSES


def test_push_on_proposal_and_pull_in_sensor(s, pushed, monkeypatch):
    """What the round run (label_studio.push_on_proposal) and the inbox sensor (pull_in_sensor) call: never raising,
    a line for the log either way; nothing at all with the settings off."""
    from al_core.loop.labelstudio_sync import pull_if_configured, push_if_configured

    # pushed from a folder outside Label Studio's document root: refused, with Label Studio's reason
    dest, cfg, store = fresh_copy(s, "outside")
    conf = yaml.safe_load((dest / "al.yaml").read_text())
    conf["label_studio"].update(project="outside")
    (dest / "al.yaml").write_text(yaml.safe_dump(conf, allow_unicode=True))
    r = al("labelstudio", "push", "--url", s["url"], cwd=dest, LABEL_STUDIO_API_KEY=s["token"])
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert re.search(
        r"refused the push: .*HTTP 400: Absolute local path .*copy-outside/images\" must be a "
        r"subdirectory of LOCAL_FILES_DOCUMENT_ROOT",
        r.stderr.splitlines()[-1],
    ), r.stderr

    dest, cfg, store = fresh_copy(s, "auto", under_document_root=True)
    assert push_if_configured(store, cfg) is None and pull_if_configured(cfg) is None  # off by default
    conf = yaml.safe_load((dest / "al.yaml").read_text())
    conf["label_studio"].update(url=s["url"], project="auto-copy", push_on_proposal=True, pull_in_sensor=True)
    (dest / "al.yaml").write_text(yaml.safe_dump(conf, allow_unicode=True))
    cfg = load_config(dest / "al.yaml")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", s["token"])
    ok, line = push_if_configured(store, cfg)
    assert ok and re.fullmatch(
        r"pushed batch 0 to Label Studio project \d+ at http://127\.0\.0\.1:\d+: 6 task\(s\) "
        r"imported, 0 already there",
        line,
    ), line
    alice = pushed["alice"]
    project = alice.find_project("auto-copy")
    [first, *_] = alice.tasks(project["id"])
    alice.annotate(first["id"], choice_result("ship"), lead_time=1.0)
    ok, line = pull_if_configured(cfg)
    assert ok and "1 new or updated annotation(s) into" in line, line
    [pulled] = [p for p in pending_files(cfg) if p.name.startswith("label-studio-")]
    # the copy's target storage (push added it) wrote the task's file beside it
    assert sorted(p.name for p in pending_files(cfg)) == sorted([pulled.name, f"{first['id']}.json"])
    assert [t["id"] for t in json.loads(pulled.read_text())] == [first["id"]]
    assert pull_if_configured(cfg) == (
        True,
        f"label_studio.pull_in_sensor: nothing new in Label Studio project {project['id']}",
    )
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "0" * 40)
    ok, line = pull_if_configured(cfg)
    assert not ok and "refused the token in $LABEL_STUDIO_API_KEY (HTTP 401)" in line and "0" * 40 not in line
    conf["label_studio"]["url"] = f"http://127.0.0.1:{free_port()}"
    (dest / "al.yaml").write_text(yaml.safe_dump(conf, allow_unicode=True))
    ok, line = push_if_configured(store, load_config(dest / "al.yaml"))
    assert not ok and "cannot reach Label Studio" in line and "push it later with `al labelstudio push`" in line
    assert len(alice.tasks(project["id"])) == 6 and len(alice.tasks(pushed["project"]["id"])) > 0


def test_serve_stops_on_ctrl_c(s, pushed):
    """Runs last: Ctrl-C to `al labelstudio serve` stops Label Studio and removes its pid and URL files."""
    code = _stop(s["serve_proc"], s["proj"])
    assert code == 0
    with pytest.raises(LabelStudioUnreachable):
        LabelStudioClient(s["url"], s["token"], timeout_s=5).whoami()
    assert not (s["proj"] / "data" / "label-studio" / PID_FILE).exists()
    assert not (s["proj"] / "data" / "label-studio" / "label-studio.url").exists()
