"""Issue 16, classes 1 and 2: the inbox and the outbox are written by others, and the tool's own commands move files.

Every fault is planted the way an outsider would: by a second process, with real
symbolic links, FIFOs, folders, names that are not UTF-8, swaps racing the
reader. The promises: nothing outside the project's folders is read, copied or
overwritten; no tick crashes and the queue never stalls; every entry is
recorded with a reason and shown; every move keeps both files; a file keeps its
kind (training or evaluation). docs/reliability.md has the table.
"""

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from al_core.catalogue import open_store
from tests.reliability_helpers import (
    answer_batch,
    assert_consistent,
    assert_killed,
    copy_project,
    defs_for,
    deliver,
    execute,
    requests_of,
    run_child,
    run_requests,
)

SECRET = "TOPSECRET-0123456789abcdef"  # inside files outside the project: must never show up anywhere


def outsider(code: str, **paths) -> None:
    """Run ``code`` in a second Python process (an annotator, another user); ``paths`` arrive as variables."""
    prelude = "import os, sys, time, json\n" + "".join(f"{k} = {str(v)!r}\n" for k, v in paths.items())
    subprocess.run([sys.executable, "-c", prelude + code], check=True, timeout=60)


def _secret_file(tmp_path: Path) -> Path:
    """A file outside the project that looks like a label file; its id is the secret (an error would quote it)."""
    p = tmp_path / "outside" / "secret.csv"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"image_id,label\n{SECRET},cat\n")
    return p


def _rows(store, round_: int = 0) -> list[tuple[str, str]]:
    return store.fetch(
        """SELECT q.image_id, any_value(g.class_name) FROM queries q JOIN ground_truth g USING (image_id)
                          WHERE q.round = ? GROUP BY q.image_id, q.rank ORDER BY q.rank""",
        [round_],
    )


def _csv(rows) -> str:
    return "image_id,label\n" + "".join(f"{i},{c}\n" for i, c in rows)


def _everything_recorded(store) -> str:
    """Every text the catalogue holds about label files and labels, as one string."""
    return json.dumps([store.fetch("SELECT * FROM label_files"), store.fetch("SELECT * FROM labels")], default=str)


def _assert_secret_nowhere(cfg, store, secret_file: Path, before: tuple, events=()) -> None:
    assert SECRET not in _everything_recorded(store)
    for folder in (cfg.inbox, cfg.outbox):
        for p in folder.rglob("*"):
            if p.is_file() and not p.is_symlink():
                assert SECRET not in p.read_text(errors="replace"), p
    for e in events:
        assert SECRET not in str(e.message or ""), e.message
    st = secret_file.stat()
    assert (secret_file.read_text(), st.st_mtime_ns) == before, "the file outside the project was changed"


def _log_messages(result) -> list:
    return list(result.all_events)


# ----------------------------------------------------------------------------- 1. planted entries in the inbox
def test_planted_entries_are_refused_shown_recorded_and_set_aside(base_project, tmp_path):
    from al_core.loop.inbox import look_at_inbox

    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    secret = _secret_file(tmp_path)
    before = (secret.read_text(), secret.stat().st_mtime_ns)
    rows = _rows(store)
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    long_ok, long_bad = "L" * 251 + ".csv", "B" * 246 + ".csv"  # 255 and 250 bytes: NAME_MAX, and near it
    outsider(
        """
inbox = os.fsencode(inbox)
os.symlink(secret, os.path.join(inbox, b"evil.csv"))
os.symlink(db, os.path.join(inbox, b"db.csv"))
os.mkfifo(os.path.join(inbox, b"pipe.csv"))
os.mkdir(os.path.join(inbox, b"folder.csv"))
open(os.path.join(inbox, b"folder.csv", b"inside.csv"), "w").write(good0)
open(os.path.join(inbox, b"caf\\xe9.csv"), "w").write(good0)          # a name that is not UTF-8
open(os.path.join(inbox, long_ok.encode()), "w").write(good1)
open(os.path.join(inbox, long_bad.encode()), "w").write(bad)
open(os.path.join(inbox, b"future.csv"), "w").write(good2)
os.utime(os.path.join(inbox, b"future.csv"), (4102444800, 4102444800))  # 2100-01-01
open(os.path.join(inbox, b"ok.csv"), "w").write(good3)
open(os.path.join(inbox, b"notes.txt"), "w").write("not labels")
open(os.path.join(inbox, b"late.csv.part"), "w").write("image_id,la")
old = time.time() - 30
for n in (long_ok, long_bad, "ok.csv", "notes.txt", "late.csv.part"):
    os.utime(os.path.join(inbox, n.encode()), (old, old))
os.utime(os.path.join(inbox, b"caf\\xe9.csv"), (old, old))
""",
        inbox=cfg.inbox,
        secret=secret,
        db=cfg.db_path,
        long_ok=long_ok,
        long_bad=long_bad,
        good0=_csv(rows[:1]),
        good1=_csv(rows[1:2]),
        good2=_csv(rows[2:3]),
        good3=_csv(rows[3:4]),
        bad=f"image_id,label\n{rows[0][0]},not-a-class\n",
    )
    time.sleep(1.1)  # the future file is settled by its change time (the kernel's, not the writer's)

    # the sensor's look accounts for every entry
    view = look_at_inbox(open_store(cfg, lock_timeout_s=2), cfg)
    s = view.survey
    assert sorted(r.name for r in s.refused) == ["caf\\xe9.csv", "db.csv", "evil.csv", "folder.csv", "pipe.csv"]
    assert {r.name: r.reason.split(":")[0] for r in s.refused} == {
        "evil.csv": "a symbolic link with a label-file name",
        "db.csv": "a symbolic link with a label-file name",
        "pipe.csv": "a FIFO with a label-file name",
        "folder.csv": "a folder with a label-file name",
        "caf\\xe9.csv": "its name is not valid UTF-8",
    }
    assert sorted(p.name for p in s.ready) == sorted([long_ok, long_bad, "future.csv", "ok.csv"])
    assert s.waiting == [("late.csv.part", "a temporary name: still being written")]
    assert [n for n, _ in s.ignored] == ["notes.txt"]
    assert any(n.startswith("future.csv: modification time 2100-01-01") for n in s.notes)
    described = s.describe()
    for shown in ("evil.csv", "pipe.csv", "folder.csv", "caf\\xe9.csv", "late.csv.part", "notes.txt"):
        assert shown in described

    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    reqs = requests_of(run_requests(defs, instance))
    assert len(reqs) == 1 and reqs[0].tags["al/refused"] == "5"
    result = execute(defs, instance, reqs[0])
    assert result.success
    files = {r[0]: r[1:] for r in store.fetch("SELECT original_name, status, reason, stored_path FROM label_files")}
    assert {n: st for n, (st, _, _) in files.items()} == {
        "evil.csv": "rejected",
        "db.csv": "rejected",
        "pipe.csv": "rejected",
        "folder.csv": "rejected",
        "caf\\xe9.csv": "rejected",
        long_ok: "accepted",
        long_bad: "rejected",
        "future.csv": "accepted",
        "ok.csv": "accepted",
    }
    assert files["evil.csv"][1].startswith("not read: a symbolic link")
    assert files["caf\\xe9.csv"][1].startswith("not read: its name is not valid UTF-8")
    # the three good files' labels, each once; the refused entries' contents were never read
    assert sorted(store.fetch("SELECT image_id, label FROM labels")) == sorted(rows[1:4])
    # every stored name fits NAME_MAX with its error report; links moved as links, the FIFO as a FIFO
    rejected, accepted = cfg.inbox / "rejected", cfg.inbox / "accepted"
    for _st, _why, stored in files.values():
        assert len(os.fsencode(Path(stored).name + ".errors.json")) <= 255 and os.path.lexists(stored), stored
    by_name = {n: Path(v[2]) for n, v in files.items()}
    assert os.readlink(by_name["evil.csv"]) == str(secret) and os.readlink(by_name["db.csv"]) == str(cfg.db_path)
    assert stat.S_ISFIFO(os.lstat(by_name["pipe.csv"]).st_mode)
    assert (by_name["folder.csv"] / "inside.csv").read_text() == _csv(rows[:1])
    assert by_name["caf\\xe9.csv"].read_text() == _csv(rows[:1]) and by_name["caf\\xe9.csv"].parent == rejected
    for n in ("evil.csv", "db.csv", "pipe.csv", "folder.csv", "caf\\xe9.csv", long_bad):
        report = json.loads(Path(str(by_name[n]) + ".errors.json").read_text())
        assert report["n_errors"] >= 1
    assert by_name[long_ok].parent == accepted and by_name[long_ok].read_text() == _csv(rows[1:2])
    # nothing outside the project read, copied or changed; the database is intact
    _assert_secret_nowhere(cfg, store, secret, before, _log_messages(result))
    assert store.fetch("SELECT count(*) FROM rounds") == [(1,)]
    # what is left is shown, never "inbox is empty"; no run is asked for it
    assert sorted(p.name for p in cfg.inbox.iterdir()) == ["accepted", "late.csv.part", "notes.txt", "rejected"]
    tick = run_requests(defs, instance)
    assert isinstance(tick, dg.SkipReason) and "empty" not in tick.skip_message
    assert "late.csv.part" in tick.skip_message and "notes.txt" in tick.skip_message
    (cfg.inbox / "late.csv.part").unlink()
    assert_consistent(cfg, store, inbox_empty=False)


def test_file_swapped_for_a_link_between_the_look_and_the_read(base_project, tmp_path):
    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    secret = _secret_file(tmp_path)
    before = (secret.read_text(), secret.stat().st_mtime_ns)
    f = answer_batch(cfg, store, 0, name="answers.csv")
    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    reqs = requests_of(run_requests(defs, instance))  # the sensor saw a regular file
    assert len(reqs) == 1
    outsider("os.symlink(secret, target + '.new'); os.replace(target + '.new', target)", secret=secret, target=f)
    result = execute(defs, instance, reqs[0])
    assert result.success
    assert store.fetch("SELECT original_name, status, sha256 FROM label_files") == [("answers.csv", "rejected", "")]
    reason = store.fetch("SELECT reason FROM label_files")[0][0]
    assert "symbolic link" in reason and "when the round run read it" in reason
    assert store.fetch("SELECT count(*) FROM labels") == [(0,)]
    _assert_secret_nowhere(cfg, store, secret, before, _log_messages(result))
    # the annotator delivers the real file again: the loop goes on
    answer_batch(cfg, store, 0, name="answers-again.csv")
    reqs = requests_of(run_requests(defs, instance))
    assert len(reqs) == 1 and execute(defs, instance, reqs[0]).success
    assert store.fetch("SELECT round, status FROM rounds ORDER BY round") == [(0, "closed"), (1, "open")]
    assert_consistent(cfg, store)


def test_a_second_process_flipping_a_file_and_a_link_never_gets_the_link_read(base_project, tmp_path):
    """A real race: another process swaps a label file for a link to a file outside and back, as fast as it can,
    while the reader (the parser the sensor and the run use, and the run's hashing open) reads it again and
    again. Every read sees the real file or refuses; never the file outside."""
    from al_core.files.safe import UnsafeEntry, open_regular
    from al_core.labels import parse_label_file

    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    secret = _secret_file(tmp_path)
    rows = _rows(store)
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    target, good = cfg.inbox / "race.csv", _csv(rows)
    stop = tmp_path / "stop"
    flipper = subprocess.Popen(
        [
            sys.executable,
            "-c",
            """
import os, sys
target, secret, good, stop = sys.argv[1:5]
n = 0
while not os.path.exists(stop):
    with open(target + ".f", "w") as f:
        f.write(good)
    os.replace(target + ".f", target)
    os.symlink(secret, target + ".l")
    os.replace(target + ".l", target)
    n += 1
print(n)
""",
            str(target),
            str(secret),
            good,
            str(stop),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    outcomes = {"ok": 0, "refused": 0, "gone": 0}
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            p = parse_label_file(
                target, classes=cfg.class_names(store), known_image_ids={i for i, _ in rows}, root=cfg.inbox
            )
            text = json.dumps([str(e) for e in p.errors])
            assert SECRET not in text
            if p.ok:
                assert [(r.image_id, r.label) for r in p.rows] == rows
                outcomes["ok"] += 1
            else:
                assert p.sha256 == "" and "not a regular file" in text or "cannot read" in text, text
                outcomes["refused"] += 1
            try:
                with open_regular(target, root=cfg.inbox) as fh:
                    assert fh.read() == good.encode()
            except UnsafeEntry:
                outcomes["refused"] += 1
            except FileNotFoundError:
                outcomes["gone"] += 1
    finally:
        stop.write_text("")
        flips = int(flipper.communicate(timeout=30)[0])
    print(f"\n{flips} flips; reads: {outcomes}")
    assert flips > 50 and outcomes["ok"] > 0 and outcomes["refused"] > 0, (flips, outcomes)


def test_inbox_folders_replaced_by_links_are_set_aside_never_followed(base_project, tmp_path):
    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    rows = _rows(store)
    elsewhere = {k: tmp_path / "outside" / k for k in ("accepted", "rejected", "eval")}
    for d in elsewhere.values():
        d.mkdir(parents=True)
    deliver(elsewhere["eval"] / "outside-eval.csv", _csv(rows))  # would label the eval set if it were read
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    outsider(
        """
for k, d in json.loads(targets).items():
    p = os.path.join(inbox, k)
    if os.path.isdir(p) and not os.path.islink(p):
        os.rmdir(p)
    os.symlink(d, p)
""",
        inbox=cfg.inbox,
        targets=json.dumps({k: str(v) for k, v in elsewhere.items()}),
    )
    deliver(cfg.inbox / "good.csv", _csv(rows))
    deliver(cfg.inbox / "bad.csv", f"image_id,label\n{rows[0][0]},not-a-class\n")
    from al_core.loop.inbox import survey_inbox

    s = survey_inbox(cfg.inbox, 0.0)
    assert sorted(p.name for p in s.ready) == ["bad.csv", "good.csv"]  # inbox/eval is not read through the link
    assert sorted(n for n, _ in s.ignored) == ["accepted", "eval", "rejected"]
    assert all("never followed" in why for _, why in s.ignored)
    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    reqs = requests_of(run_requests(defs, instance))
    assert len(reqs) == 1 and execute(defs, instance, reqs[0]).success
    # nothing went through the links: the outside folders hold what they held
    assert [sorted(p.name for p in d.iterdir()) for d in elsewhere.values()] == [[], [], ["outside-eval.csv"]]
    assert store.fetch("SELECT count(*) FROM label_files WHERE original_name = 'outside-eval.csv'") == [(0,)]
    # the planted links are set aside (kept, still links), real folders hold the files
    for k in ("accepted", "rejected"):
        assert (cfg.inbox / k).is_dir() and not (cfg.inbox / k).is_symlink()
    aside = sorted(p.name.split(".refused-")[0] for p in cfg.inbox.iterdir() if ".refused-symbolic-link-" in p.name)
    assert aside == ["accepted", "eval", "rejected"]
    assert store.fetch("SELECT original_name, status FROM label_files ORDER BY 1") == [
        ("bad.csv", "rejected"),
        ("good.csv", "accepted"),
    ]
    assert store.fetch("SELECT round, status FROM rounds ORDER BY round") == [(0, "closed"), (1, "open")]


# ----------------------------------------------------------------------------- 1. planted entries in the outbox
def test_links_planted_in_the_outbox_are_replaced_never_followed(base_project, tmp_path):
    from al_core.loop.annotator import answer_round

    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    secret = _secret_file(tmp_path)
    before = (secret.read_text(), secret.stat().st_mtime_ns)
    db_before = store.fetch("SELECT count(*) FROM images")
    outsider(
        """
os.symlink(db, os.path.join(outbox, "round-0001.csv"))                 # overwrote the database once
os.symlink(secret, os.path.join(outbox, "round-0001.label-studio.json"))
os.remove(os.path.join(outbox, "label-studio-config.xml"))            # batch 0's, replaced by a folder
os.mkdir(os.path.join(outbox, "label-studio-config.xml"))
os.symlink(secret, os.path.join(outbox, ".simulated-annotator"))
for i in range(200):  # guesses at temporary names (the old scheme, and more): never used
    for n in (f".round-0001.csv.tmp-{i}", f".round-0001.csv.{i}.tmp", f".label-studio-config.xml.{i}.tmp"):
        os.symlink(db, os.path.join(outbox, n))
""",
        outbox=cfg.outbox,
        secret=secret,
        db=cfg.db_path,
    )
    answer_batch(cfg, store, 0)
    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    reqs = requests_of(run_requests(defs, instance))
    assert len(reqs) == 1 and execute(defs, instance, reqs[0]).success
    # the database and the file outside are intact; the batch files are regular files written by us
    assert store.fetch("SELECT count(*) FROM images") == db_before
    assert store.fetch("SELECT round, status FROM rounds ORDER BY round") == [(0, "closed"), (1, "open")]
    for n in ("round-0001.csv", "round-0001.label-studio.json", "label-studio-config.xml"):
        assert stat.S_ISREG(os.lstat(cfg.outbox / n).st_mode), n
    assert [p.name.split(".refused-")[0] for p in cfg.outbox.iterdir() if ".refused-folder-" in p.name] == [
        ".label-studio-config.xml"
    ]
    _assert_secret_nowhere(cfg, store, secret, before)
    assert_consistent(cfg, store)
    # the simulated annotator's state file is a link to the file outside: replaced, never appended through
    answer_round(cfg, 1)
    assert stat.S_ISREG(os.lstat(cfg.outbox / ".simulated-annotator").st_mode)
    assert (secret.read_text(), secret.stat().st_mtime_ns) == before


# ----------------------------------------------------------------------------- 1. a huge sparse file, a tick's budget
def _bytes_read() -> int:
    """Bytes this process has read through read(2) and friends so far (Linux /proc/self/io, rchar)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_huge_sparse_file_is_never_read_by_a_tick_and_read_once_by_the_run(base_project, tmp_path, monkeypatch):
    import al_core.labels as labels_mod
    from al_core.labels import MAX_FILE_BYTES
    from al_core.loop import deliveries
    from al_core.loop import inbox as inbox_mod

    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    rows = _rows(store)
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    outsider(
        """
with open(os.path.join(inbox, "huge.csv"), "wb") as f:
    f.truncate(16 << 30)   # 16 GiB, sparse: reading it would take minutes here
old = time.time() - 30
os.utime(os.path.join(inbox, "huge.csv"), (old, old))
""",
        inbox=cfg.inbox,
    )
    for i, (iid, c) in enumerate(rows):  # four small files
        deliver(cfg.inbox / f"small-{i}.csv", f"image_id,label\n{iid},{c}\n")
    parsed, hashed = [], []
    real_parse, real_sha = labels_mod.parse_label_file, deliveries.sha256_of

    def counting_parse(p, **kw):
        parsed.append(Path(p).name)
        return real_parse(p, **kw)

    monkeypatch.setattr(labels_mod, "parse_label_file", counting_parse)
    monkeypatch.setattr(deliveries, "sha256_of", lambda f, *a: hashed.append(1) or real_sha(f, *a))
    one_file = (cfg.inbox / "small-0.csv").stat().st_size
    monkeypatch.setattr(inbox_mod, "SENSOR_READ_BUDGET_BYTES", 2 * one_file + 1)  # two small files per tick
    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    read_before, t = _bytes_read(), time.perf_counter()
    view = inbox_mod.look_at_inbox(open_store(cfg, lock_timeout_s=2), cfg)
    reqs = requests_of(run_requests(defs, instance))
    tick_s, tick_read = time.perf_counter() - t, _bytes_read() - read_before
    assert tick_s < 10, f"two looks took {tick_s:.1f} s"
    assert tick_read < 64 << 20, f"two looks read {tick_read} bytes"  # the database and imports; never the 16 GiB
    # each file read at most once per look (the parser hashes what it reads: no second hashing), the huge file never
    assert "huge.csv" not in parsed and hashed == [] and len(parsed) == 4 and len(set(parsed)) == 2
    notes = {f.path.name: f.note for f in view.files}
    assert notes["huge.csv"].startswith(f"{16 << 30} bytes, over the {MAX_FILE_BYTES}-byte limit")
    assert "read budget" in notes["small-2.csv"] and notes["small-0.csv"] is None
    assert len(reqs) == 1 and len(reqs[0].run_config["ops"]["round_labels"]["config"]["files"]) == 5
    parsed.clear()
    t = time.perf_counter()
    assert execute(defs, instance, reqs[0]).success
    assert time.perf_counter() - t < 60
    assert "huge.csv" not in parsed and len(hashed) == 4 and sorted(parsed) == [f"small-{i}.csv" for i in range(4)]
    rec = store.fetch("SELECT status, sha256, reason FROM label_files WHERE original_name = 'huge.csv'")
    assert rec[0][:2] == ("rejected", "") and "over the" in rec[0][2] and "not read" in rec[0][2]
    assert store.fetch("SELECT count(*) FROM labels") == [(4,)]
    assert store.fetch("SELECT round, status FROM rounds ORDER BY round") == [(0, "closed"), (1, "open")]


# ----------------------------------------------------------------------------- 2. moves keep both files and the kind
def _training_rounds(cfg, store, defs, instance) -> None:
    """Run what the sensor asks for until it asks for nothing (as the daemon would)."""
    for _ in range(4):
        reqs = requests_of(run_requests(defs, instance))
        if not reqs:
            return
        for r in reqs:
            assert execute(defs, instance, r).success


def _eval_never_trained(store) -> None:
    assert store.fetch("""SELECT count(*) FROM probe_labels pl JOIN labels l USING (label_id)
                          JOIN eval_set e USING (image_id)""") == [(0,)]


def test_retry_keeps_both_files_and_the_kind_and_eval_images_never_train(base_project, tmp_path):
    from al_core.cli.labels import main as labels_main

    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    rows = _rows(store)
    eval_rows = store.fetch(
        "SELECT e.image_id, any_value(g.class_name) FROM eval_set e JOIN ground_truth g "
        "USING (image_id) GROUP BY 1 ORDER BY 1 LIMIT 3"
    )
    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    # an evaluation file rejected because one of its images was unreadable at the time, and a bad training file
    hidden = eval_rows[0][0]
    with store.transaction() as con:
        con.execute("UPDATE image_paths SET status = 'missing' WHERE image_id = ?", [hidden])
    deliver(cfg.inbox / "eval" / "ev.csv", _csv(eval_rows))
    deliver(cfg.inbox / "x.csv", f"image_id,label\n{rows[0][0]},not-a-class\n")
    # training labels that name evaluation images too: they must never reach a probe
    deliver(cfg.inbox / "sneaky.csv", _csv(eval_rows[1:] + rows[1:2]))
    _training_rounds(cfg, store, defs, instance)
    files = {n: (st, ev) for n, st, ev in store.fetch("SELECT original_name, status, is_eval FROM label_files")}
    assert files == {"ev.csv": ("rejected", True), "x.csv": ("rejected", False), "sneaky.csv": ("accepted", False)}
    with store.transaction() as con:
        con.execute("UPDATE image_paths SET status = 'ok' WHERE image_id = ?", [hidden])
    # the corrected training file waits in the inbox under the same name when the old one is retried
    corrected = deliver(cfg.inbox / "x.csv", _csv(rows[:1]))
    bad_sha, ev_sha = (
        store.fetch("SELECT sha256 FROM label_files WHERE original_name = ?", [n])[0][0] for n in ("x.csv", "ev.csv")
    )
    assert labels_main(["retry", bad_sha[:12], "--config", cfg.source_file]) == 0
    assert corrected.read_text() == _csv(rows[:1]), "the waiting corrected file was overwritten"
    assert sorted(p.name for p in cfg.inbox.iterdir() if p.is_file()) == ["x-1.csv", "x.csv"]
    # the evaluation file goes back to inbox/eval/, never to the training inbox
    assert labels_main(["retry", ev_sha[:12], "--config", cfg.source_file]) == 0
    assert [p.name for p in (cfg.inbox / "eval").iterdir()] == ["ev.csv"]
    for p in (cfg.inbox / "x-1.csv", cfg.inbox / "x.csv", cfg.inbox / "eval" / "ev.csv"):
        os.utime(p, (time.time() - 10,) * 2)
    _training_rounds(cfg, store, defs, instance)
    got = store.fetch("SELECT original_name, status, is_eval FROM label_files ORDER BY received_at")
    assert sorted(got[3:]) == [
        ("ev.csv", "accepted", True),
        ("x-1.csv", "rejected", False),
        ("x.csv", "accepted", False),
    ]
    ids = [i for i, _ in eval_rows]
    assert sorted(store.fetch("SELECT image_id, label FROM eval_set WHERE image_id IN (?, ?, ?)", ids)) == eval_rows
    # the batch answered: a probe trains, on no evaluation image (sneaky.csv named two)
    answer_batch(cfg, store, 0)
    _training_rounds(cfg, store, defs, instance)
    assert store.fetch("SELECT count(*) FROM probes") == [(1,)]
    _eval_never_trained(store)
    # retracting an evaluation delivery is refused (its labels are not training labels); a training one works
    assert labels_main(["retract", ev_sha[:12], "--config", cfg.source_file]) != 0
    sneaky_sha = store.fetch("SELECT sha256 FROM label_files WHERE original_name = 'sneaky.csv'")[0][0]
    assert labels_main(["retract", sneaky_sha[:12], "--config", cfg.source_file]) == 0
    answer_batch(cfg, store, 1)
    _training_rounds(cfg, store, defs, instance)
    assert store.fetch("SELECT count(*) FROM probes") == [(2,)]
    _eval_never_trained(store)
    assert_consistent(cfg, store)


def test_a_crash_after_commit_keeps_an_eval_file_an_eval_file(base_project, tmp_path):
    """The repair path (committed, not moved): the re-run matches the crashed delivery by name, bytes and kind, so
    the same bytes delivered as training labels meanwhile stay a duplicate and never train."""
    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    eval_rows = store.fetch(
        "SELECT e.image_id, any_value(g.class_name) FROM eval_set e JOIN ground_truth g "
        "USING (image_id) GROUP BY 1 ORDER BY 1 LIMIT 3"
    )
    ev = deliver(cfg.inbox / "eval" / "same.csv", _csv(eval_rows))
    assert_killed(run_child("labels", cfg, fault="labels.after_commit"))
    assert ev.exists() and store.fetch("SELECT status, is_eval FROM label_files") == [("accepted", True)]
    deliver(cfg.inbox / "same.csv", _csv(eval_rows))  # the same bytes and name, as training labels
    answer_batch(cfg, store, 0)
    defs, instance = defs_for(cfg), dg.DagsterInstance.ephemeral()
    _training_rounds(cfg, store, defs, instance)
    got = sorted(store.fetch("SELECT original_name, status, is_eval FROM label_files"))
    assert got == [
        ("labels-round-0000.csv", "accepted", False),
        ("same.csv", "accepted", True),
        ("same.csv", "duplicate", False),
    ]
    stored = store.fetch("SELECT stored_path FROM label_files WHERE original_name = 'same.csv' AND is_eval")[0][0]
    assert Path(stored).is_file() and not ev.exists()
    assert store.fetch("SELECT count(*) FROM probes") == [(1,)]
    _eval_never_trained(store)
    assert_consistent(cfg, store)


@pytest.mark.parametrize("where", ["accepted", "rejected"])
def test_same_bytes_twice_in_one_second_keep_both_files(base_project, tmp_path, where):
    """Two deliveries whose stored names would be equal (same second, same bytes, same name): both kept."""
    from al_core.loop import ingest_label_files

    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    rows = _rows(store)
    body = _csv(rows[:2]) if where == "accepted" else f"image_id,label\n{rows[0][0]},nope\n"
    classes = cfg.class_names(store)
    reps = []
    for _ in range(3):
        f = deliver(cfg.inbox / "same.csv", body)
        reps.append(ingest_label_files(store, cfg, [f], round_=1, classes=classes))
    stored = [r[0] for r in store.fetch("SELECT stored_path FROM label_files ORDER BY received_at")]
    assert len(set(stored)) == 3 and all(Path(p).read_text() == body for p in stored)
    assert len(list((cfg.inbox / where).iterdir())) == (3 if where == "accepted" else 6)  # with error reports


def test_a_refused_entry_that_cannot_be_moved_is_left_and_never_recorded_twice(base_project, tmp_path):
    """inbox/rejected/ unwritable (a read-only bind mount, else a file in its place): a planted link cannot be
    moved, so it is left where it is and not recorded (recorded once only when it has been moved); the runs
    asked for it meanwhile add no row, and the queue goes on with the other files."""
    from al_core.loop import ingest_label_files
    from al_core.loop.inbox import survey_inbox
    from tests.test_recovery import ReadOnly

    cfg = copy_project(base_project, tmp_path / "p")
    store = open_store(cfg)
    secret = _secret_file(tmp_path)
    rows = _rows(store)
    (cfg.inbox / "rejected").mkdir(parents=True)
    os.symlink(secret, cfg.inbox / "evil.csv")
    good = deliver(cfg.inbox / "good.csv", _csv(rows))
    classes = cfg.class_names(store)
    warnings: list[str] = []
    with ReadOnly(cfg.inbox / "rejected") as fault:
        if fault.mechanism != "read-only bind mount":
            pytest.skip("needs a read-only bind mount (a file in place of rejected/ is set aside, not a fault)")
        for _ in range(2):
            rep = ingest_label_files(
                store,
                cfg,
                [good] if good.exists() else [],
                round_=1,
                classes=classes,
                refused=survey_inbox(cfg.inbox, 0).refused,
                warn=warnings.append,
            )
            assert [f.status for f in rep.files if f.name == "evil.csv"] == []
    assert os.path.islink(cfg.inbox / "evil.csv") and any("cannot be moved" in w for w in warnings)
    assert store.fetch("SELECT original_name, status FROM label_files") == [("good.csv", "accepted")]
    rep = ingest_label_files(store, cfg, [], round_=1, classes=classes, refused=survey_inbox(cfg.inbox, 0).refused)
    assert [(f.name, f.status) for f in rep.files] == [("evil.csv", "rejected")]
    assert store.fetch("SELECT count(*) FROM label_files WHERE original_name = 'evil.csv'") == [(1,)]
