"""Issue 16, item 5 and the image root: what is stored is what was read, and damage is named with its repair.

Every fault is planted the way an outsider would: real truncation and byte flips in
part files, real images of every Pillow mode, a file rewritten behind the scan's back
with its old size and mtime, a second process writing a part while a run collects
orphans, real symbolic links, a FIFO, a device node and names that are not UTF-8 in
the image root. The backbone here is a stand-in whose vector is the image's mean
RGB pixel, so the tests can assert the pixels that were embedded.
"""

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from al_core.catalogue import open_store
from al_core.catalogue.errors import NonFiniteVectors, PartDamaged
from al_core.cli import main as al
from al_core.config import load_config
from al_core.ingest.pipeline import embed_missing
from al_core.ingest.scan import LINK_OUTSIDE, scan
from tests.conftest import ROOT

SIZE = 8  # every test image is 8 x 8, so a batch stacks


class MeanPixel:
    """A backbone stand-in: the vector of an image is its mean R, G, B (what it was fed, exactly)."""

    name = "mean_pixel"
    config_id = "meanpix"
    feature_dim = 3
    device = "cpu"
    config = {"backbone": "mean_pixel", "dtype": "float32", "device": "cpu"}

    class transform:  # the registry's transforms are objects with to_array
        @staticmethod
        def to_array(img):
            return np.asarray(img, dtype=np.uint8)

    nan_if_red = False

    def forward(self, x):
        out = x.float().mean(dim=(1, 2))
        if self.nan_if_red:
            out[out[:, 0] > 200] = float("nan")
        return out


def _png(path: Path, rgb) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (SIZE, SIZE), tuple(rgb)).save(path)
    return path


def _project(tmp: Path, n_per_class: int = 6) -> Path:
    """A project with two classes of flat-colour PNGs (every colour distinct)."""
    for k, cls in enumerate(("a", "b")):
        for i in range(n_per_class):
            _png(tmp / "images" / cls / f"{i:03d}.png", (40 * k + 10, 20 * i + 5, 7))
    (tmp / "al.yaml").write_text(
        yaml.safe_dump(
            {
                "images": {"root": "images"},
                "classes": ["a", "b"],
                "paths": {"data_dir": "data"},
                "store": {"lock_timeout_s": 2},
            }
        )
    )
    return tmp / "al.yaml"


def _ingest(cfgp: Path, backbone=None):
    cfg = load_config(cfgp)
    store = open_store(cfg)
    report = scan(store, cfg.image_root)
    summary = embed_missing(store, backbone or MeanPixel(), source=report.source, batch_size=4)
    return cfg, store, report, summary


def _vectors(store) -> dict[str, np.ndarray]:
    emb = store.load_embeddings(MeanPixel.config_id)
    return {str(i): emb.features[k] for k, i in enumerate(emb.image_ids)}


def _parts(store) -> list[tuple[str, str, int]]:
    return store.fetch("SELECT part_id, rel_path, n_rows FROM embedding_parts ORDER BY config_id, shard, part_id")


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = al(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


# ----------------------------------------------------------------------------- A(a), A(b): damaged parts
def test_damaged_parts_are_named_with_the_repair_command_and_verify_repairs_them(tmp_path, capsys):
    cfgp = _project(tmp_path)
    cfg, store, _, _ = _ingest(cfgp)
    before = _vectors(store)
    parts = _parts(store)
    assert len(parts) >= 3
    (first_id, first_rel, first_n), (second_id, second_rel, second_n) = parts[0], parts[1]
    first, second = store.vectors_dir / first_rel, store.vectors_dir / second_rel
    data = first.read_bytes()
    first.write_bytes(data[: len(data) // 2])  # truncated: the footer is gone (the part DuckDB binds the view on)
    raw = bytearray(second.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # one flipped byte, same size: only the sha256 sees it
    second.write_bytes(bytes(raw))
    orphan_old = store.write_part_file(MeanPixel.config_id, "0", ["0" * 64], np.zeros((1, 3), np.float32))
    old = time.time() - 7200
    os.utime(store.vectors_dir / orphan_old["rel_path"], (old, old))
    orphan_fresh = store.write_part_file(MeanPixel.config_id, "0", ["0" * 63 + "1"], np.zeros((1, 3), np.float32))

    label_file = tmp_path / "labels.csv"
    iid = next(iter(before))
    label_file.write_text(f"image_id,label\n{iid},a\n")

    # every command that loads vectors: one line naming the part and the repair command, Exit.FAILED
    rc, out, err = _run(capsys, "export", "--config", str(cfgp), "--out", str(tmp_path / "x.csv"))
    assert rc == 1 and "Traceback" not in err
    msg = [ln for ln in err.splitlines() if " is damaged " in ln]
    assert len(msg) == 1 and str(first) in msg[0] and "al verify --repair" in msg[0], err
    with pytest.raises(PartDamaged, match="al verify --repair"):
        store.load_embeddings(MeanPixel.config_id)
    # commands that do not need vectors are not broken by them (the view is bound lazily to the damage)
    rc, out, err = _run(capsys, "labels", "check", str(label_file), "--config", str(cfgp))
    assert rc == 0 and "valid" in out, err
    rc, out, err = _run(capsys, "status", "--config", str(cfgp))
    assert rc == 0, err
    import duckdb

    with pytest.raises(duckdb.Error, match="al verify --repair"):  # SQL over the embeddings view: the same line
        store.fetch("SELECT count(*) FROM embeddings")

    # al verify names every damaged part, and the orphans
    rc, out, err = _run(capsys, "verify", "--config", str(cfgp))
    assert rc == 1, err
    lines = out.splitlines()
    damaged = [ln for ln in lines if ln.startswith("damaged:")]
    assert len(damaged) == 2 and str(first) in damaged[0] + damaged[1] and str(second) in damaged[0] + damaged[1]
    assert any("sha256" in ln and str(second) in ln for ln in damaged), damaged
    orphans = [ln for ln in lines if ln.startswith("orphan:")]
    assert sorted(orphans) == sorted(
        f"orphan: {store.vectors_dir / o['rel_path']} (not in the catalogue (a writer stopped before its commit))"
        for o in (orphan_old, orphan_fresh)
    )
    assert "al verify --repair" in err

    # --repair drops both from the catalogue, keeps the files aside, collects the old orphan only
    rc, out, err = _run(capsys, "verify", "--repair", "--config", str(cfgp))
    assert rc == 0, err
    assert f"({first_n + second_n} vectors)" in err
    assert not first.exists() and (first.parent / f".damaged-{first.name}").exists()
    assert (second.parent / f".damaged-{second.name}").read_bytes() == bytes(raw)
    assert not (store.vectors_dir / orphan_old["rel_path"]).exists()
    assert (store.vectors_dir / orphan_fresh["rel_path"]).exists()
    assert {p for p, _, _ in _parts(store)} == {p for p, _, _ in parts} - {first_id, second_id}
    assert len(store.load_embeddings(MeanPixel.config_id)) == len(before) - first_n - second_n

    # the next embedding run (what `al ingest` runs) embeds exactly the dropped images again, the same vectors
    summary = embed_missing(store, MeanPixel(), source=str(cfg.image_root), batch_size=4)
    assert summary.n_embedded == first_n + second_n
    after = _vectors(store)
    assert after.keys() == before.keys()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])
    rc, _, err = _run(capsys, "verify", "--config", str(cfgp))
    assert rc == 0, err
    rc, _, err = _run(capsys, "export", "--config", str(cfgp), "--out", str(tmp_path / "y.csv"))
    assert rc == 0, err


def test_a_part_changed_between_its_write_and_its_commit_is_never_committed(store):
    from al_core.ingest.commit import commit_pending
    from al_core.ingest.shards import write_manifest

    store.register_embedding_config("cfg", {"backbone": "b", "dim": 2})
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(40)]
    ids = [i for i in ids if i[0] == "a"][:2] or ids[:1]
    rec = store.write_part_file("cfg", ids[0][0], ids, np.ones((len(ids), 2), np.float32))
    path = store.vectors_dir / rec["rel_path"]
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(PartDamaged, match="before its commit: sha256"):
        store.commit_parts([rec])
    assert store.fetch("SELECT count(*) FROM embedding_parts") == [(0,)]
    # a shard worker's part changed after its manifest was written: dropped at commit, never committed
    rec2 = store.write_part_file("cfg", ids[0][0], ids, np.ones((len(ids), 2), np.float32))
    write_manifest(store.vectors_loc, rec2, {"backbone": "b", "dim": 2})
    p2 = store.vectors_dir / rec2["rel_path"]
    raw2 = bytearray(p2.read_bytes())
    raw2[len(raw2) // 2] ^= 1
    p2.write_bytes(bytes(raw2))
    out = commit_pending(store, "cfg")
    assert out["parts_missing"] == 1 and out["parts_committed"] == 0
    assert store.fetch("SELECT count(*) FROM embedding_index") == [(0,)] and not p2.exists()


# ----------------------------------------------------------------------------- A(c): NaN refused, naming the image
def test_non_finite_vectors_are_refused_naming_the_image(tmp_path, store):
    store.register_embedding_config("cfg", {"backbone": "b", "dim": 2})
    ids = ["1" * 64, "2" * 64]
    with pytest.raises(NonFiniteVectors, match="2{64}") as e:
        store.write_embeddings("cfg", ids, np.array([[0, 0], [np.inf, 1]], np.float32))
    assert e.value.image_ids == ["2" * 64] and "1" * 64 not in str(e.value)
    assert store.fetch("SELECT count(*) FROM embedding_parts") == [(0,)]

    cfgp = _project(tmp_path / "p", n_per_class=3)
    red = _png(tmp_path / "p" / "images" / "a" / "red.png", (250, 0, 0))
    cfg = load_config(cfgp)
    st = open_store(cfg)
    scan(st, cfg.image_root)
    bb = MeanPixel()
    bb.nan_if_red = True
    said = []
    summary = embed_missing(st, bb, source=str(cfg.image_root), batch_size=4, progress=said.append)
    assert summary.n_embedded == 6 and summary.n_failed == 1
    red_id = hashlib.sha256(red.read_bytes()).hexdigest()
    assert st.fetch("SELECT image_id, path, error FROM embedding_failures") == [
        (red_id, str(red), "non-finite vector (NaN or inf) from the backbone: not stored")
    ]
    assert any(str(red) in s and "non-finite" in s for s in said)
    assert red_id not in _vectors(st) and len(_vectors(st)) == 6


# ----------------------------------------------------------------------------- A(d): orphans collected, safely
_SLOW_WRITER = """
import sys, time, numpy as np
from pathlib import Path
from al_core.catalogue.store import Store
s = Store(sys.argv[1])
rec = s.write_part_file("meanpix", "f", ["f" * 64], np.full((1, 3), 9, np.float32))
Path(sys.argv[2]).write_text(rec["rel_path"])
while not Path(sys.argv[3]).exists():
    time.sleep(0.05)
s.commit_parts([rec])
print("committed")
"""


def test_orphans_are_collected_after_a_run_and_a_part_another_process_is_committing_is_kept(tmp_path):
    from al_core.ingest.shards import write_manifest

    cfgp = _project(tmp_path, n_per_class=2)
    cfg, store, _, _ = _ingest(cfgp)
    old = time.time() - 7200
    orphan = store.write_part_file("meanpix", "0", ["0" * 64], np.zeros((1, 3), np.float32))
    pending = store.write_part_file("meanpix", "1", ["1" * 64], np.zeros((1, 3), np.float32))
    write_manifest(store.vectors_loc, pending, MeanPixel.config)
    for rec in (orphan, pending):
        os.utime(store.vectors_dir / rec["rel_path"], (old, old))
    # a second process writes a part and commits it only when told: its part is uncommitted during our run
    wrote, go = tmp_path / "wrote", tmp_path / "go"
    child = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(store.db_path), str(wrote), str(go)],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not wrote.exists():
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.05)
        _png(cfg.image_root / "a" / "new.png", (1, 2, 3))
        scan(store, cfg.image_root)
        summary = embed_missing(store, MeanPixel(), source=str(cfg.image_root))  # the run, then its collection
        assert summary.n_embedded == 1
        assert not (store.vectors_dir / orphan["rel_path"]).exists()  # old, no manifest: collected by the run
        assert (store.vectors_dir / pending["rel_path"]).exists()  # waits for a commit: kept whatever its age
        assert (store.vectors_dir / wrote.read_text()).exists()  # the other process's part: young, kept
        go.write_text("")
        assert child.wait(60) == 0 and "committed" in child.stdout.read()
    finally:
        if child.poll() is None:
            child.kill()
    assert _vectors(store)["f" * 64].tolist() == [9, 9, 9]


# ----------------------------------------------------------------------------- A(e): hash what you embed
def test_an_image_changed_after_the_scan_never_gets_a_vector_under_its_old_id(tmp_path):
    cfgp = _project(tmp_path, n_per_class=2)
    cfg = load_config(cfgp)
    store = open_store(cfg)
    scan(store, cfg.image_root)
    victim = cfg.image_root / "a" / "001.png"
    old_id = hashlib.sha256(victim.read_bytes()).hexdigest()
    st = victim.stat()
    # rewritten behind the scan's back: other pixels, the same size, the old mtime (a scan would call it unchanged)
    other = tmp_path / "other.png"
    _png(other, (200, 100, 50))
    data = other.read_bytes()
    assert len(data) == st.st_size
    victim.write_bytes(data)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    summary = embed_missing(store, MeanPixel(), source=str(cfg.image_root))
    assert summary.n_embedded == 3 and summary.n_failed == 1
    assert old_id not in _vectors(store)
    status, error = store.fetch("SELECT status, error FROM image_paths WHERE path = ?", [str(victim)])[0]
    assert status == "corrupt" and error.startswith("changed since the scan")
    # the next scan hashes it again (the error is a retried one) and the next run embeds the new bytes
    report = scan(store, cfg.image_root)
    assert report.n_changed == 1
    embed_missing(store, MeanPixel(), source=str(cfg.image_root))
    new_id = hashlib.sha256(data).hexdigest()
    np.testing.assert_allclose(_vectors(store)[new_id], [200, 100, 50])


# ----------------------------------------------------------------------------- A(f): every Pillow mode
def _mode_images(d: Path) -> dict[str, tuple[Path, np.ndarray | None]]:
    """name -> (file written by Pillow, the 8-bit RGB pixels it must be embedded as; None: unsupported)."""
    d.mkdir(parents=True)
    out = {}
    g16 = (np.arange(SIZE * SIZE, dtype=np.uint32).reshape(SIZE, SIZE) * 1000 + 1000).astype(np.uint16)
    im = Image.fromarray(g16)
    assert im.mode == "I;16"
    im.save(d / "grey16.png")
    exp16 = np.rint(g16.astype(np.float64) / 257).astype(np.uint8)
    out["I;16"] = (d / "grey16.png", np.repeat(exp16[..., None], 3, axis=2))
    g32 = g16.astype(np.int32)
    Image.fromarray(g32).save(d / "grey32.tif")
    out["I"] = (d / "grey32.tif", np.repeat(exp16[..., None], 3, axis=2))
    Image.fromarray(np.full((SIZE, SIZE), 100000, np.int32)).save(d / "grey32_big.tif")
    out["I out of range"] = (d / "grey32_big.tif", None)
    f = np.linspace(0, 1, SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)
    Image.fromarray(f).save(d / "float.tif")
    out["F"] = (d / "float.tif", np.repeat(np.rint(f.astype(np.float64) * 255).astype(np.uint8)[..., None], 3, 2))
    Image.fromarray(np.full((SIZE, SIZE), 7.5, np.float32)).save(d / "float_big.tif")
    out["F out of range"] = (d / "float_big.tif", None)
    la = np.zeros((SIZE, SIZE, 2), np.uint8)
    la[..., 0] = 200
    la[:, SIZE // 2 :, 1] = 255  # left half transparent (its grey 200 must not show), right half opaque
    Image.fromarray(la, "LA").save(d / "la.png")
    exp_la = np.zeros((SIZE, SIZE, 3), np.uint8)
    exp_la[:, SIZE // 2 :] = 200
    out["LA"] = (d / "la.png", exp_la)
    p = Image.new("P", (SIZE, SIZE), 0)
    p.putpalette([255, 255, 255, 10, 20, 30] + [0] * (256 * 3 - 6))
    p.paste(1, (0, 0, SIZE, SIZE // 2))  # top half colour 1, bottom half colour 0 = transparent white
    p.save(d / "palette.png", transparency=0)
    exp_p = np.zeros((SIZE, SIZE, 3), np.uint8)
    exp_p[: SIZE // 2] = (10, 20, 30)
    out["P with transparency"] = (d / "palette.png", exp_p)
    Image.new("CMYK", (SIZE, SIZE), (0, 255, 255, 0)).save(d / "cmyk.tif")  # pure red in CMYK
    out["CMYK"] = (d / "cmyk.tif", np.tile(np.array([255, 0, 0], np.uint8), (SIZE, SIZE, 1)))
    return out


def test_every_image_mode_is_embedded_as_its_8_bit_pixels_or_recorded_unsupported(tmp_path):
    from al_core.ingest.embed import decode_image

    images = _mode_images(tmp_path / "images" / "modes")
    for name, (path, expected) in images.items():
        if expected is None:
            with pytest.raises(ValueError, match="no defined 8-bit scale|only 0..65535"):
                decode_image(path)
        else:
            got = np.asarray(decode_image(path))
            np.testing.assert_array_equal(got, expected, err_msg=name)
    # the whole path: scan records the unsupported ones with the reason, embedding feeds exactly these pixels
    (tmp_path / "al.yaml").write_text(
        yaml.safe_dump({"images": {"root": "images"}, "classes": ["modes"], "paths": {"data_dir": "data"}})
    )
    cfg, store, report, summary = _ingest(tmp_path / "al.yaml")
    rows = {Path(p).name: (s, e) for p, s, e in store.fetch("SELECT path, status, error FROM image_paths")}
    for name, (path, expected) in images.items():
        status, error = rows[path.name]
        if expected is None:
            assert status == "corrupt" and error.startswith("unsupported:"), (name, error)
        else:
            assert status == "ok", (name, error)
    vectors = _vectors(store)
    for name, (path, expected) in images.items():
        if expected is not None:
            iid = hashlib.sha256(path.read_bytes()).hexdigest()
            np.testing.assert_allclose(vectors[iid], expected.reshape(-1, 3).mean(axis=0), rtol=1e-5, err_msg=name)
            assert vectors[iid].max() < 255 or name == "CMYK", name  # never a white picture


# ----------------------------------------------------------------------------- B: the image root is hostile
def test_planted_entries_in_the_image_root_are_recorded_never_followed_outside(tmp_path, capsys):
    cfgp = _project(tmp_path / "p", n_per_class=2)
    root = tmp_path / "p" / "images"
    outside = tmp_path / "outside"
    secret = _png(outside / "secret.png", (66, 66, 66))
    _png(outside / "folder" / "more.png", (77, 77, 77))
    raw_name = os.fsencode(root / "a") + b"/caf\xe9-\xff.png"  # Latin-1 bytes: not UTF-8
    odd_pixels = tmp_path / "odd.png"
    _png(odd_pixels, (123, 45, 67))
    with open(raw_name, "wb") as f:
        f.write(odd_pixels.read_bytes())
    os.mkdir(os.fsencode(root) + b"/cl\xe0ss")  # a class folder whose name is not UTF-8
    _png(Path(os.fsdecode(os.fsencode(root) + b"/cl\xe0ss/x.png")), (5, 6, 7))
    os.symlink(secret, root / "a" / "link-out.png")  # a link to a file outside the root
    os.symlink(outside / "folder", root / "linked-folder")  # a link to a folder outside the root
    os.symlink(root / "a" / "000.png", root / "b" / "link-in.png")  # a link inside the root: followed
    os.symlink(root, root / "a" / "loop")  # a link loop
    os.mkfifo(root / "a" / "fifo.png")
    try:
        os.mknod(root / "a" / "zero.png", 0o600 | 0o020000, os.makedev(1, 5))  # /dev/zero's device number
        has_device = True
    except PermissionError:
        has_device = False
    secret_atime = secret.stat().st_atime_ns
    os.utime(secret, ns=(secret_atime - 10**12, secret.stat().st_mtime_ns))
    secret_atime = secret.stat().st_atime_ns

    rc, _, err = _run(capsys, "ingest", "--no-embed", "--config", str(cfgp))
    assert rc == 0 and "Traceback" not in err, err
    assert "linked-folder: a symbolic link to a folder outside the image root (not followed)" in err
    cfg = load_config(cfgp)
    store = open_store(cfg)
    rows = {p: (s, e, fs) for p, s, e, fs in store.fetch("SELECT path, status, error, fs_path FROM image_paths")}
    odd = str(root / "a" / "caf\\xe9-\\xff.png")
    assert rows[odd][0] == "ok" and bytes(rows[odd][2]) == raw_name
    assert rows[str(root / "a" / "link-out.png")][:2] == ("corrupt", LINK_OUTSIDE)
    assert rows[str(root / "b" / "link-in.png")][0] == "ok"
    assert rows[str(root / "a" / "fifo.png")][:2] == ("corrupt", "not a regular file (FIFO, socket or device)")
    if has_device:
        assert rows[str(root / "a" / "zero.png")][:2] == ("corrupt", "not a regular file (FIFO, socket or device)")
    assert not any(str(outside) in p for p in rows)  # nothing outside recorded
    assert not any("loop" in p for p in rows)  # the loop entered no folder twice
    truth = dict(store.fetch("SELECT path, class_name FROM ground_truth"))
    assert truth[str(root / "cl\\xe0ss" / "x.png")] == "cl\\xe0ss"
    assert secret.stat().st_atime_ns == secret_atime  # the file outside was never read

    # embedding opens the non-UTF-8 file by its bytes and feeds its pixels; no vector of anything outside
    embed_missing(store, MeanPixel(), source=str(root))
    vectors = _vectors(store)
    np.testing.assert_allclose(vectors[hashlib.sha256(odd_pixels.read_bytes()).hexdigest()], [123, 45, 67])
    assert hashlib.sha256(secret.read_bytes()).hexdigest() not in vectors
    # a rescan finds the odd name unchanged (the same stored row, not a new one each time)
    again = scan(store, root)
    assert again.n_new == 0 and again.n_changed == 0 and again.n_missing == 0

    # a new file, scanned, then swapped for a link to a copy outside (the same bytes: the hash would match)
    victim = _png(root / "a" / "late.png", (9, 99, 199))
    scan(store, root)
    copy = outside / "copy.png"
    copy.write_bytes(victim.read_bytes())
    iid = hashlib.sha256(victim.read_bytes()).hexdigest()
    victim.unlink()
    os.symlink(copy, victim)
    summary = embed_missing(store, MeanPixel(), source=str(root))
    assert summary.n_embedded == 0 and summary.n_failed == 1 and LINK_OUTSIDE in summary.failures[0]["error"]
    assert iid not in _vectors(store)


# ----------------------------------------------------------------------------- C: the image root itself
@pytest.mark.parametrize("case", ["missing", "a file", "empty", "no images", "only corrupt"])
def test_al_ingest_with_an_unusable_image_root_names_the_setting_and_the_fix(tmp_path, capsys, case):
    root = tmp_path / "images"
    if case == "a file":
        root.write_text("not a folder")
    elif case != "missing":
        root.mkdir()
    if case == "no images":
        (root / "README.txt").write_text("images go here")
    if case == "only corrupt":
        (root / "bad.png").write_bytes(b"not a png")
    (tmp_path / "al.yaml").write_text(
        yaml.safe_dump({"images": {"root": "images"}, "classes": ["a"], "paths": {"data_dir": "data"}})
    )
    rc, out, err = _run(capsys, "ingest", "--config", str(tmp_path / "al.yaml"))
    assert rc == 2 and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("al ingest: images.root")]
    assert len(lines) == 1, err
    line = lines[0]
    assert f"images.root (in {tmp_path / 'al.yaml'}): {root}" in line
    assert "set images.root to the folder that holds them" in line
    assert {
        "missing": "does not exist",
        "a file": "is a regular file, not a folder",
        "empty": "holds no image files",
        "no images": "holds no image files",
        "only corrupt": "none is usable (1 corrupt",
    }[case] in line
    cfg = load_config(tmp_path / "al.yaml")
    if case == "only corrupt":  # recorded, then refused
        assert open_store(cfg).fetch("SELECT status FROM image_paths") == [("corrupt",)]
    elif cfg.db_path.exists():  # refused before anything was recorded
        assert open_store(cfg).fetch("SELECT count(*) FROM scans") == [(0,)]


_FLIPPER = """
import os, sys
victim, real, secret, stop = sys.argv[1:5]
tmp_link, tmp_real = victim + ".tmp-link", victim + ".tmp-real"
n = 0
while not os.path.exists(stop):
    os.symlink(secret, tmp_link)
    os.replace(tmp_link, victim)  # the image is now a link to the file outside
    os.link(real, tmp_real)
    os.replace(tmp_real, victim)  # and the real file again
    n += 1
print(n)
"""


def test_a_second_process_flipping_an_image_and_a_link_outside_never_gets_the_outside_read(tmp_path):
    from al_core.files.safe import UnsafeEntry
    from al_core.ingest.image_files import read_image_bytes

    root = tmp_path / "images"
    victim = _png(root / "a" / "000.png", (1, 2, 3))
    real = root / ".keep" / "000.png"  # a hidden folder: never listed, inside the root
    real.parent.mkdir()
    os.link(victim, real)
    secret = _png(tmp_path / "outside" / "secret.png", (250, 250, 250)).read_bytes()
    stop = tmp_path / "stop"
    child = subprocess.Popen(
        [sys.executable, "-c", _FLIPPER, str(victim), str(real), str(tmp_path / "outside" / "secret.png"), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    seen = {"real": 0, "refused": 0, "gone": 0}
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            try:
                data = read_image_bytes(str(victim), str(root))
            except UnsafeEntry:  # a link where the file was, at the look or at the open: not followed
                seen["refused"] += 1
                continue
            except OSError:  # the entry changed under a system call (no entry, not a link any more)
                seen["gone"] += 1
                continue
            assert data != secret, "the file outside the image root was read"
            assert data == real.read_bytes()
            seen["real"] += 1
    finally:
        stop.write_text("")
        flips = int(child.communicate(timeout=30)[0].strip() or 0)
    print(f"{flips} flips; reads: {seen}")
    assert flips > 50 and seen["real"] > 0 and seen["refused"] > 0, (flips, seen)
