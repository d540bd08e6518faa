"""docs/quickstart.md, executed (issue 12, item 12 and its "Done when"): the document's own shell commands, run
as a user runs them (`.venv/bin/al ...` in a shell, from the repository's folder, `make ui`'s daemon and UI),
against a generated flat folder of camera-named photos with exact duplicates, a truncated JPEG and junk files.

Nothing is launched by hand: the sensor of a real daemon proposes the seed batch after `al ingest`, and each
round after a delivery. The test plays the annotators where the document asks a person to label: it fills the
outbox CSV's `label` column with the true class and saves it as a spreadsheet does (UTF-8 BOM, CRLF line ends)
into the inbox, and labels the evaluation list by file name into inbox/eval/. It goes to round 3 as the document
does (batch 1 in two deliveries, so one round run only waits and says so), then checks `al status --json` (the
open batch, its missing images and the next action), `al report` (every batch's gallery linked), that every run
was launched by the sensor, and what `make ui`'s terminal showed (no Dagster event, no line repeated within 30 s).
The one edit of the project file `al init` writes: a sensor tick every TICK_S seconds instead of 30, so the test
does not wait for ticks. 262-516 s on the shared 2-core machine; about half of each round is the ingest run the
sensor queues before it (sensor.ingest_before_round).

The Label Studio path of the document (`al labelstudio serve/push/pull`) is covered against a real server by
tests/test_labelstudio_roundtrip.py.
"""

import csv
import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import dagster as dg
from PIL import Image

from al_assets.runs import in_flight_runs
from al_assets.tools.console import REPEAT_EVERY_S
from al_assets.tools.ui import CONSOLE_LOG_NAME
from tests.conftest import ROOT, SAMPLE_ROOT
from tests.dagster_helpers import DagsterDev, new_dagster_home, project_env, repeated_too_often

DOC = ROOT / "docs" / "quickstart.md"
DOC_PROJECT = "/data/my-project"  # the document's example project folder, replaced by the test's
DOC_LABELS = "my-labels.csv"  # the document's example label file
CLASSES = ["cat", "dog", "ship", "truck"]  # the document's --classes
PER_CLASS = 18  # 72 photos: the auto hold-out is 20 (5 per class), 52 left for the seed batch and rounds 1-3
DUPLICATES = 3  # exact copies under another name
PNG_EVERY = 9  # every 9th photo a PNG of another size (DSC_*.png)
ROUNDS = 3  # the document goes to round 3: batches 0 (seed) to 3
HALF = 5  # batch 1 comes in two deliveries: the first 5 rows, then the rest
WAITED = f"waiting for labels ({HALF}/10)"  # the al/status tag of the round run the first half starts
TICK_S = 2  # the one edit of the written project file: a sensor tick every 2 s instead of 30 s
SEED_TIMEOUT_S = 240  # the seed run: a code server, the k-means seed and the outbox files; ~20 s on an idle machine
ROUND_TIMEOUT_S = 420  # an ingest run then a round run (train, evaluate, propose); ~40 s on an idle machine
CMD_TIMEOUT_S = 300  # one `al` command (al ingest embeds the 72 photos)
AL = Path(sys.executable).with_name("al")


# ------------------------------------------------------------------ the photos: a team's own flat folder
def make_photos(folder: Path) -> dict[str, str]:
    """A flat folder as a camera and a laptop leave it; returns {file name: true class} of the readable photos."""
    folder.mkdir(parents=True)
    sources = {c: sorted((SAMPLE_ROOT / c).iterdir())[:PER_CLASS] for c in CLASSES}
    truth: dict[str, str] = {}
    for i in range(PER_CLASS * len(CLASSES)):  # the classes interleaved: IMG_0001 cat, IMG_0002 dog, ...
        cls = CLASSES[i % len(CLASSES)]
        with Image.open(sources[cls][i // len(CLASSES)]) as im:
            im = im.convert("RGB")
            if i % PNG_EVERY == PNG_EVERY - 1:
                name = f"DSC_{i + 1:04d}.png"
                im.resize((48 + i % 5 * 8, 40)).save(folder / name)  # other sizes, not square
            else:
                name = f"IMG_{i + 1:04d}.JPG"
                im.resize((96, 96)).save(folder / name, quality=90)
        truth[name] = cls
    for name in sorted(truth)[:DUPLICATES]:  # copies a laptop makes
        copy = name.replace(".", " (1).", 1)
        (folder / copy).write_bytes((folder / name).read_bytes())
        truth[copy] = truth[name]
    whole = (folder / "IMG_0001.JPG").read_bytes()
    (folder / "IMG_9999.JPG").write_bytes(whole[: len(whole) // 3])  # a transfer cut short
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + bytes(64))
    (folder / "notes.txt").write_text("photos from the field trip\n")
    (folder / "Thumbs.db").write_bytes(bytes(128))
    return truth


# ------------------------------------------------------------------ the document
def doc_sections() -> dict[str, list[tuple[str, str]]]:
    """{"1": [(info string, code), ...], ...}: the fenced blocks under each numbered `## N.` heading."""
    out: dict[str, list[tuple[str, str]]] = {}
    section = None
    for m in re.finditer(r"^## (\d+)\.|^```(\w*)\n(.*?)^```$", DOC.read_text(), re.M | re.S):
        if m.group(1):
            section = m.group(1)
            out[section] = []
        elif section is not None:
            out[section].append((m.group(2), m.group(3)))
    return out


def shell_blocks(sections, number: str) -> list[str]:
    return [code for info, code in sections[number] if info == "sh"]


class User:
    """Runs the document's commands as a user at a shell in the repository's folder (`export` persists)."""

    def __init__(self, project: Path, labels_file: Path):
        self.subst = {DOC_PROJECT: str(project), DOC_LABELS: str(labels_file)}
        env = {k: v for k, v in os.environ.items() if k not in ("AL_CONFIG", "DAGSTER_HOME")}
        self.env = dict(env, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        self.out: dict[str, subprocess.CompletedProcess] = {}
        self.started: list[str] = []  # long-running commands the test starts itself (make ui)

    def run_block(self, code: str) -> None:
        for line in code.splitlines():
            for old, new in self.subst.items():
                line = line.replace(old, new)
            words = shlex.split(line, comments=True)
            if not words:
                continue
            if words[0] == "export":
                for w in words[1:]:
                    k, _, v = w.partition("=")
                    self.env[k] = v
            elif words[:2] == ["make", "ui"]:
                self.started.append("make ui")
            else:
                assert words[0] == ".venv/bin/al", f"a command the test does not know how to run: {line}"
                res = subprocess.run(
                    ["bash", "-c", line], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=CMD_TIMEOUT_S
                )
                assert res.returncode == 0, f"{line}\n{res.stdout}\n{res.stderr}"
                self.out[" ".join(words[1:])] = res

    def al(self, *args: str) -> subprocess.CompletedProcess:
        res = subprocess.run(
            [str(AL), *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=CMD_TIMEOUT_S
        )
        assert res.returncode == 0, f"al {' '.join(args)}\n{res.stdout}\n{res.stderr}"
        return res


# ------------------------------------------------------------------ the annotators
def deliver(path: Path, data: bytes) -> None:
    """Save as the annotator's program does (a temporary file, then renamed into place)."""
    tmp = path.parent / f".~{path.name}"
    tmp.write_bytes(data)
    os.replace(tmp, path)


def filled_as_a_spreadsheet_saves(batch_csv: Path, truth: dict[str, str], rows_: slice = slice(None)) -> bytes:
    """The outbox CSV (its ``rows_``) with the label column filled with the true classes, saved with a UTF-8 BOM
    and CRLF."""
    with open(batch_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[rows_]
    assert rows and all(r["label"] == "" for r in rows)
    for r in rows:
        r["label"] = truth[r["file_name"]]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\r\n")
    w.writeheader()
    w.writerows(rows)
    return b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8")


def by_file_name(listing_csv: Path, truth: dict[str, str]) -> bytes:
    """A label file of the team's own: `file_name,label`, one row per image of the listing."""
    with open(listing_csv, newline="", encoding="utf-8") as f:
        names = [r["file_name"] for r in csv.DictReader(f)]
    return ("file_name,label\n" + "".join(f"{n},{truth[n]}\n" for n in names)).encode()


def waiting_runs(home: Path, cfg_file: Path) -> list[str]:
    """The ``al/status`` tags of the finished round runs that only waited for labels."""
    with project_env(home, cfg_file), dg.DagsterInstance.get() as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name="round_job"))
    return [
        r.tags["al/status"]
        for r in runs
        if r.tags.get("al/status", "").startswith("waiting") and r.status == dg.DagsterRunStatus.SUCCESS
    ]


def status_json(user: User) -> dict:
    return json.loads(user.al("status", "--json").stdout)


def _gallery_links(report: Path) -> set[Path]:
    text = report.read_text()
    hrefs = re.findall(r'<a href="([^"]+\.html)"', text)
    return {(report.parent / urllib.parse.unquote(h)).resolve() for h in hrefs}


# ------------------------------------------------------------------ the test
def test_the_quickstart_runs_as_written_to_round_3(tmp_path):
    t0 = time.monotonic()
    sections = doc_sections()
    assert list(sections) == ["1", "2", "3", "4", "5"], "the quickstart's numbered sections changed"
    project = tmp_path / "my-project"
    truth = make_photos(project / "photos")
    user = User(project, tmp_path / DOC_LABELS)
    cfg_file = project / "al.yaml"

    # 1. al init for the flat folder, AL_CONFIG exported
    (init,) = shell_blocks(sections, "1")
    user.run_block(init)
    assert user.env["AL_CONFIG"] == str(cfg_file) and cfg_file.exists()
    written = cfg_file.read_text()
    assert "classes: [cat, dog, ship, truck]" in written and re.search(r"^  root: photos\b", written, re.M)
    edited = re.sub(r"^(  interval_s:) 30\b", rf"\1 {TICK_S}", written, count=1, flags=re.M)
    assert edited != written
    cfg_file.write_text(edited)

    # 2. al ingest, al status: the duplicates and the truncated file found, the junk ignored
    (ingest,) = shell_blocks(sections, "2")
    user.run_block(ingest)
    err = user.out["ingest"].stderr
    assert err.splitlines()[0].startswith("al ingest: project") and str(cfg_file) in err.splitlines()[0]
    assert "scan: 76 files, 76 new, 0 changed, 0 unchanged, 0 missing, 1 corrupt" in err  # junk files ignored
    assert re.search(r"^done: 72/72 images \(100 %\), 0 failures, [\d.]+ s, [\d.]+ images/s$", err, re.M), err
    status = user.out["status"].stdout
    assert re.search(r"images +72 distinct \(sha256\), paths: corrupt 1, ok 75", status), status
    assert f"exact duplicates {DUPLICATES} images under {2 * DUPLICATES} paths" in status
    assert "make ui" in status.splitlines()[-1]  # the next action: start the daemon
    s = status_json(user)
    assert s["paths_by_status"] == {"corrupt": 1, "ok": 75} and s["images"] == 72
    assert s["quality"]["exact_duplicates"]["n_images"] == DUPLICATES
    assert s["last_round"] is None and "sensor proposes the seed batch" in s["next_action"]

    # 3. make ui: the sensor proposes the seed batch; nobody launches a run
    (ui,) = shell_blocks(sections, "3")
    user.run_block(ui)
    assert user.started == ["make ui"]
    home = new_dagster_home(tmp_path)
    outbox, inbox = project / "data" / "outbox", project / "data" / "inbox"
    doc = DOC.read_text()
    columns = re.search(r"`round-0000\.csv`: one row per image to label: `([^`]+)`", doc, re.S).group(1)
    listed = [c.strip() for c in columns.replace("\n", " ").split(",")]
    timings = {}
    with DagsterDev(home, cfg_file, tmp_path / "make-ui.log", guarded=True, timed=True) as dev:
        t = time.monotonic()
        dev.wait_for((outbox / "round-0000.csv").exists, SEED_TIMEOUT_S, "seed batch round-0000.csv")
        timings["seed"] = time.monotonic() - t
        listed_files = [n for pair in re.findall(r"^- `([^`]+)`(?: and `([^`]+)`)?:", doc, re.M) for n in pair if n]
        assert len(listed_files) == 6, listed_files
        dev.wait_for(lambda: all((outbox / n).exists() for n in listed_files), 60, f"the outbox's {listed_files}")
        assert inbox.is_dir() and (inbox / "eval").is_dir()
        with open(outbox / "round-0000.csv", newline="") as f:
            assert next(csv.reader(f)) == listed
        s = status_json(user)
        assert s["evaluation"]["size"] == 20 and s["evaluation"]["labelled"] == 0
        assert s["next_action"].startswith("label batch 0 (0/10 answered)")
        assert "label the evaluation set (0/20 labelled)" in s["next_action"]

        # 4. label: the doc's own label file checked, the evaluation list by file name, batch 0 as a spreadsheet
        (example,) = [code for info, code in sections["4"] if info == ""]
        (tmp_path / DOC_LABELS).write_text(example)
        for line in example.splitlines()[1:]:
            name, label = line.split(",")
            assert truth[name] == label, f"the quickstart's example {name} is a {truth[name]} in the test's folder"
        (check,) = shell_blocks(sections, "4")
        user.run_block(check)
        deliver(inbox / "eval" / "eval-labels.csv", by_file_name(outbox / "eval-holdout.csv", truth))
        deliver(inbox / "round-0000.csv", filled_as_a_spreadsheet_saves(outbox / "round-0000.csv", truth))

        # 5. the rounds: each delivery brings the next batch
        for r in range(1, ROUNDS + 1):
            t = time.monotonic()
            dev.wait_for((outbox / f"round-{r:04d}.csv").exists, ROUND_TIMEOUT_S, f"batch {r} (round-{r:04d}.csv)")
            timings[f"round {r}"] = time.monotonic() - t
            s = status_json(user)
            b = s["labelling"]["batch"]
            assert (b["round"], b["proposed"], b["answered"]) == (r, 10, 0), b
            with open(outbox / f"round-{r:04d}.csv", newline="") as f:
                names = {row["file_name"] for row in csv.DictReader(f)}
            assert {Path(m["path"]).name for m in b["unanswered"]} == names
            assert s["next_action"].startswith(f"label batch {r} (0/10 answered): fill the label column of")
            assert s["evaluation"]["labelled"] == 20 and s["rejected_deliveries"] == []
            batch = outbox / f"round-{r:04d}.csv"
            if r == 1:  # two annotators: the first delivers half the batch, the round waits and says so
                first = inbox / "batch-1-first-half.csv"
                deliver(first, filled_as_a_spreadsheet_saves(batch, truth, slice(0, HALF)))
                dev.wait_for(lambda: WAITED in waiting_runs(home, cfg_file), ROUND_TIMEOUT_S, f"a run {WAITED}")
                assert not first.exists()  # ingested (moved into inbox/accepted/)
                s = status_json(user)
                b = s["labelling"]["batch"]
                assert (b["round"], b["proposed"], b["answered"]) == (1, 10, HALF), b
                with open(batch, newline="") as f:
                    rest = {row["file_name"] for row in list(csv.DictReader(f))[HALF:]}
                assert {Path(m["path"]).name for m in b["unanswered"]} == rest
                assert s["next_action"].startswith(f"label batch 1 ({HALF}/10 answered)")
                rest_filled = filled_as_a_spreadsheet_saves(batch, truth, slice(HALF, None))
                deliver(inbox / "batch-1-second-half.csv", rest_filled)
            elif r < ROUNDS:
                deliver(inbox / f"batch-{r}.csv", filled_as_a_spreadsheet_saves(batch, truth))
        (status_block,) = shell_blocks(sections, "5")
        user.run_block(status_block)
        with project_env(home, cfg_file), dg.DagsterInstance.get() as instance:
            dev.wait_for(lambda: not in_flight_runs(instance), ROUND_TIMEOUT_S, "the last run's end")
            runs = instance.get_runs()

    # make ui's terminal: its own line naming the whole log, the runs' own lines; no Dagster event, no repeats
    console = [line for _, line in dev.console]
    whole = (home / CONSOLE_LOG_NAME).read_text()
    assert console[0].startswith("al-pipeline UI on http://127.0.0.1:") and str(home / CONSOLE_LOG_NAME) in console[0]
    assert "STEP_START" in whole and "inbox_sensor" in whole  # every Dagster line is in the log file
    assert not any(" - DEBUG - " in line or "STEP_START" in line for line in console), console
    for r in range(1, ROUNDS + 1):  # each round says where its batch is
        said = f"] query_set: batch {r}: 10 image(s) to label in {outbox / f'round-{r:04d}.csv'} (gallery"
        assert any(line.startswith("[round_job ") and said in line for line in console), (said, console)
    assert repeated_too_often(dev.console, REPEAT_EVERY_S) == [], console

    # every run was the sensor's, and none failed
    assert runs and all(run.tags.get("dagster/sensor_name") == "inbox_sensor" for run in runs), [
        (run.job_name, run.tags) for run in runs
    ]
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs), [(r.job_name, r.status) for r in runs]
    assert {run.job_name for run in runs} >= {"seed_job", "round_job"}
    # the deliveries were accepted (the spreadsheet's BOM and CRLF, the file names), the rounds evaluated
    kept = [p.name for p in (inbox / "accepted").iterdir()]
    delivered = (
        "eval-labels.csv",
        "round-0000.csv",
        "batch-1-first-half.csv",
        "batch-1-second-half.csv",
        "batch-2.csv",
    )
    for name in delivered:
        assert any(name in k for k in kept), (name, kept)
    assert not (inbox / "rejected").exists() or not any((inbox / "rejected").iterdir())
    rounds = json.loads(user.al("rounds", "--json").stdout)
    assert [r["round"] for r in rounds] == list(range(ROUNDS + 1))
    assert all(r["accuracy"] is not None for r in rounds[1:]), rounds
    assert [(r["answered"], r["proposed"]) for r in rounds] == [(10, 10)] * ROUNDS + [(0, 10)]
    # al report: the report links every batch's gallery and the evaluation set's
    report = project / "data" / "reports" / "report.html"
    assert user.out["report"].stdout.strip() == str(report)
    assert _gallery_links(report) >= {
        *((outbox / f"round-{r:04d}.html").resolve() for r in range(ROUNDS + 1)),
        (outbox / "eval-holdout.html").resolve(),
    }
    assert "simulated" not in report.read_text().lower()
    # al lineage by the document's file name
    assert "IMG_0021.JPG" in user.out["lineage IMG_0021.JPG"].stdout
    print(
        f"quickstart: {time.monotonic() - t0:.0f} s in all; " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    )
