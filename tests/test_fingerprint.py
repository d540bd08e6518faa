"""The image root's fingerprint (al_core.ingest.fingerprint) and the check before a round (al_core.ingest.freshness),
on real files: the scan records the fingerprint of what it listed; an unchanged root needs no ingest run; an added,
removed or rewritten image (size, mtime, or bytes with both kept), a file made unreadable, an image left without a
vector, a scan from before the fingerprint and a check that fails all ask for one (issue 12, item 9)."""

import os
import shutil
from pathlib import Path
from unittest.mock import ANY

import numpy as np
import pytest

from al_core.catalogue import images, open_store
from al_core.config import load_config
from al_core.ingest.fingerprint import fingerprint_entries
from al_core.ingest.freshness import ingest_decision
from al_core.ingest.listing import ImageRootError, source_fingerprint
from al_core.ingest.scan import scan
from tests.conftest import SAMPLE_ROOT

CONFIG_ID = "fake-4d"


def _copy_images(root: Path, n: int = 6) -> list[Path]:
    out = []
    for c in ("cat", "ship"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for f in sorted((SAMPLE_ROOT / c).iterdir())[: n // 2]:
            out.append(Path(shutil.copy2(f, root / c / f.name)))
    return out


@pytest.fixture()
def project(tmp_path):
    """A scanned root of 6 real images, every one embedded (fake 4-d vectors) under the loop's embedding config."""
    root = tmp_path / "images"
    files = _copy_images(root)
    (tmp_path / "al.yaml").write_text("images:\n  root: images\nclasses: [cat, ship]\nstore:\n  lock_timeout_s: 2\n")
    cfg = load_config(tmp_path / "al.yaml")
    store = open_store(cfg)
    scan(store, root=cfg.image_root)
    _embed_all(store)
    return cfg, store, files


def _embed_all(store) -> None:
    ids = [r[0] for r in store.fetch("SELECT DISTINCT image_id FROM image_paths WHERE status = 'ok' ORDER BY 1")]
    done = {r[0] for r in store.fetch("SELECT image_id FROM embedding_index")}
    todo = [i for i in ids if i not in done]
    store.register_embedding_config(CONFIG_ID, {"backbone": "fake", "dim": 4})
    if todo:
        store.write_embeddings(CONFIG_ID, todo, np.ones((len(todo), 4), np.float32))
    store.put_asset_output("embeddings", "", None, {"config_id": CONFIG_ID, "backbone": "fake", "dim": 4})


def test_the_scan_records_the_fingerprint_of_what_it_listed(project):
    cfg, store, files = project
    source, now = source_fingerprint(root=cfg.image_root)
    with store.connect(read_only=True) as con:
        last = images.last_scan(con, source)
    assert last.scan_id == 1 and last.n_files == 6 == now.n_files
    assert last.fingerprint == now.digest and now.digest.startswith("fp1:") and len(now.digest) == 4 + 64
    # paths are hashed relative to the root: the same listing under another root has the same fingerprint
    entries = [(str(f), os.stat(f), None) for f in files]
    moved = [(f"/elsewhere/{Path(p).relative_to(cfg.image_root)}", st, pr) for p, st, pr in entries]
    assert fingerprint_entries(str(cfg.image_root), entries).digest == now.digest
    assert fingerprint_entries("/elsewhere", moved).digest == now.digest
    assert fingerprint_entries("/elsewhere", moved[1:]).digest != now.digest


def test_an_unchanged_root_needs_no_ingest_run(project):
    cfg, store, files = project
    d = ingest_decision(store, cfg)
    assert not d.needed and d.scan_id == 1 and d.n_files == 6
    assert d.reason.startswith("image root unchanged since scan 1 at ") and d.reason.endswith(": no ingest run")
    assert d.as_tags() == {"al/ingest_before": "skipped", "al/ingest_check": d.reason, "al/ingest_check_s": ANY}
    assert 0 < float(d.as_tags()["al/ingest_check_s"]) < 5 and d.seconds > 0
    # reading the files changes nothing (the scan and embedding only read)
    for f in files:
        f.read_bytes()
    (cfg.image_root / "notes.txt").write_text("not an image: the scanner never lists it")
    (cfg.image_root / ".hidden.jpg").write_bytes(files[0].read_bytes())  # hidden: never listed
    assert not ingest_decision(store, cfg).needed


def _add(cfg, files):
    shutil.copy(SAMPLE_ROOT / "frog" / sorted(os.listdir(SAMPLE_ROOT / "frog"))[0], cfg.image_root / "cat" / "new.jpg")


def _remove(cfg, files):
    files[0].unlink()


def _grow(cfg, files):  # same mtime, another size
    st = os.stat(files[1])
    files[1].write_bytes(files[1].read_bytes() + b"\0trailer")
    os.utime(files[1], ns=(st.st_atime_ns, st.st_mtime_ns))


def _touch(cfg, files):  # same bytes, another mtime
    st = os.stat(files[2])
    os.utime(files[2], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _same_size_and_mtime(cfg, files):  # other bytes of the same length, the mtime put back: ctime still moves
    st = os.stat(files[3])
    data = bytearray(files[3].read_bytes())
    data[-3] ^= 0xFF
    files[3].write_bytes(bytes(data))
    os.utime(files[3], ns=(st.st_atime_ns, st.st_mtime_ns))


def _unreadable(cfg, files):
    files[4].chmod(0)


def _rename(cfg, files):
    files[5].rename(files[5].with_name("renamed.jpg"))


@pytest.mark.parametrize(
    "change", [_add, _remove, _grow, _touch, _same_size_and_mtime, _unreadable, _rename], ids=lambda f: f.__name__[1:]
)
def test_a_changed_root_needs_an_ingest_run_and_the_next_scan_settles_it(project, change):
    cfg, store, files = project
    change(cfg, files)
    d = ingest_decision(store, cfg)
    assert d.needed and d.reason.startswith("image root changed: ") and d.reason.endswith(": ingest run queued")
    assert "at scan 1 (" in d.reason and d.as_tags()["al/ingest_before"] == "queued"
    r = scan(store, root=cfg.image_root)  # what the ingest run does first
    _embed_all(store)  # and then
    assert r.scan_id == 2
    after = ingest_decision(store, cfg)
    assert not after.needed and after.reason.startswith("image root unchanged since scan 2 at "), after.reason


def test_the_counts_in_the_reason(project):
    cfg, store, files = project
    _add(cfg, files)
    assert "image root changed: 7 files now, 6 at scan 1 (" in ingest_decision(store, cfg).reason


def test_an_image_left_without_a_vector_needs_an_ingest_run(project):
    """An ingest stopped after its scan: the root is unchanged, but an ok image has no vector (nor failure)."""
    cfg, store, files = project
    _add(cfg, files)
    scan(store, root=cfg.image_root)  # scanned, never embedded
    d = ingest_decision(store, cfg)
    assert d.needed and d.reason.startswith("image root unchanged since scan 2 at ")
    assert d.reason.endswith(", but 1 of its images have no vector yet: ingest run queued")


def test_no_scan_or_a_scan_without_fingerprint_needs_an_ingest_run(tmp_path, project):
    cfg, store, files = project
    other = tmp_path / "other.yaml"
    other.write_text(f"images:\n  root: {tmp_path / 'images' / 'cat'}\nclasses: [cat, ship]\n")
    d = ingest_decision(store, load_config(other))  # a root this database never scanned
    assert d.needed and d.reason == "no scan of the image root recorded: ingest run queued"
    with store.transaction() as con:  # as a scan recorded before schema version 9 reads
        con.execute("UPDATE scans SET fingerprint = NULL")
    d = ingest_decision(store, cfg)
    assert d.needed and "scan 1 recorded no fingerprint (made before schema version 9)" in d.reason


def test_a_check_that_fails_queues_an_ingest_run(tmp_path, project):
    cfg, store, files = project
    shutil.rmtree(cfg.image_root)
    d = ingest_decision(store, cfg)
    assert d.needed and d.reason.startswith("image root check failed (ImageRootError: images.root: ")
    assert d.reason.endswith(": ingest run queued")
    with pytest.raises(ImageRootError):
        source_fingerprint(root=cfg.image_root)
    broken = open_store(cfg)
    broken.db_path.write_bytes(b"not a database")
    _copy_images(cfg.image_root)
    d = ingest_decision(broken, cfg)
    assert d.needed and d.reason.startswith("image root check failed (")


def test_a_manifest_is_fingerprinted_with_its_own_file(tmp_path):
    files = _copy_images(tmp_path / "images")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,class\n" + "".join(f"{f},{f.parent.name}\n" for f in files))
    (tmp_path / "al.yaml").write_text("images:\n  manifest: manifest.csv\nclasses: [cat, ship]\n")
    cfg = load_config(tmp_path / "al.yaml")
    store = open_store(cfg)
    scan(store, manifest=manifest, ground_truth_from_folders=False)
    _embed_all(store)
    d = ingest_decision(store, cfg)
    assert not d.needed and d.reason.startswith("manifest unchanged since scan 1 at "), d.reason
    new = Path(shutil.copy(next((SAMPLE_ROOT / "frog").iterdir()), tmp_path / "images" / "new.jpg"))
    manifest.write_text(manifest.read_text() + f"{new},ship\n")  # the manifest file itself changed
    assert ingest_decision(store, cfg).reason.startswith("manifest changed: 7 files now, 6 at scan 1")
    scan(store, manifest=manifest, ground_truth_from_folders=False)
    _embed_all(store)
    assert not ingest_decision(store, cfg).needed
    st = os.stat(files[1])
    os.utime(files[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a listed file rewritten
    assert ingest_decision(store, cfg).needed
