import os
import shutil

import pytest

from al_core.ingest.scan import ok_images, scan


@pytest.fixture()
def image_tree(tmp_path, sample_root):
    """Real sample images plus the awkward files a real folder holds."""
    root = tmp_path / "images"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for f in sorted((sample_root / cls).iterdir())[:20]:
            shutil.copy(f, root / cls / f.name)
    cat0 = sorted((sample_root / "cat").iterdir())[0]
    shutil.copy(cat0, root / "dog" / "copy of cat with spaces.jpg")  # duplicate bytes, path with spaces
    shutil.copy(sorted((sample_root / "dog").iterdir())[0], root / "dog" / "chien-été-犬.jpg")  # non-ASCII
    (root / "dog" / "truncated.jpg").write_bytes((sample_root / "dog" / "0001.jpg").read_bytes()[:200])
    (root / "dog" / "empty.jpg").write_bytes(b"")
    (root / "dog" / "notes.jpg").write_text("not an image at all\n")
    (root / "dog" / "README.txt").write_text("ignored: not an image extension\n")
    os.symlink("..", root / "dog" / "loop")  # a symlink loop must not hang the scan
    return root


def test_scan_records_every_path_with_a_status(store, image_tree):
    r = scan(store, image_tree)
    assert r.n_files == 45
    assert r.n_corrupt == 3 and r.n_ok == 42
    assert r.n_images == 40  # both copies (cat 0000, dog 0000) collapse onto their originals
    statuses = dict(store.fetch("SELECT regexp_extract(path, '[^/]+$'), status FROM image_paths"))
    assert statuses["truncated.jpg"] == statuses["empty.jpg"] == statuses["notes.jpg"] == "corrupt"
    assert statuses["chien-été-犬.jpg"] == "ok" and statuses["copy of cat with spaces.jpg"] == "ok"
    errors = dict(store.fetch("SELECT regexp_extract(path, '[^/]+$'), error FROM image_paths WHERE status='corrupt'"))
    assert errors["empty.jpg"] == "empty file"
    assert "Truncated" in errors["truncated.jpg"] or "truncated" in errors["truncated.jpg"]
    assert "identify" in errors["notes.jpg"]
    # both paths of the duplicate are kept and point to one image
    dup = store.fetch("""SELECT count(*), count(DISTINCT image_id) FROM image_paths
                         WHERE image_id = (SELECT image_id FROM image_paths WHERE path LIKE '%copy of cat%')""")
    assert dup == [(2, 1)]
    assert {c for (c,) in store.fetch("SELECT DISTINCT class_name FROM ground_truth")} == {"cat", "dog"}
    assert len(ok_images(store, image_tree)) == 40


def test_rescan_is_incremental_and_keeps_missing_files(store, image_tree, monkeypatch):
    scan(store, image_tree)
    import al_core.ingest.scan as images

    calls = []
    real = images._hash_and_decode
    monkeypatch.setattr(images, "_hash_and_decode", lambda p: calls.append(p.path) or real(p))
    r = scan(store, image_tree)
    assert calls == [] and r.n_unchanged == 45 and r.n_new == 0
    gone = image_tree / "cat" / "0000.jpg"
    gone.unlink()
    changed = image_tree / "cat" / "0001.jpg"
    changed.write_bytes((image_tree / "cat" / "0002.jpg").read_bytes())
    r = scan(store, image_tree)
    assert calls == [str(changed)]
    assert r.n_missing == 1 and r.n_changed == 1
    row = store.fetch("SELECT status FROM image_paths WHERE path = ?", [str(gone)])
    assert row == [("missing",)]  # never silently dropped
    same = store.fetch(
        "SELECT count(DISTINCT image_id) FROM image_paths WHERE path IN (?, ?)",
        [str(changed), str(image_tree / "cat" / "0002.jpg")],
    )
    assert same == [(1,)]


def _png_declaring(width: int, height: int, small_png: bytes) -> bytes:
    """A real PNG whose header declares another size (CRC fixed): a decompression bomb's signature."""
    import struct
    import zlib

    assert small_png[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + small_png[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return small_png[:16] + ihdr + crc + small_png[33:]


def test_decompression_bomb_is_recorded_not_decoded(store, tmp_path):
    import io

    from PIL import Image

    root = tmp_path / "imgs" / "x"
    root.mkdir(parents=True)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    (root / "fine.png").write_bytes(buf.getvalue())
    (root / "bomb.png").write_bytes(_png_declaring(200_000, 200_000, buf.getvalue()))
    r = scan(store, tmp_path / "imgs")
    rows = dict(
        store.fetch("SELECT regexp_extract(path, '[^/]+$'), status || ':' || coalesce(error, '') FROM image_paths")
    )
    assert rows["fine.png"] == "ok:"
    assert rows["bomb.png"].startswith("corrupt:") and "bomb" in rows["bomb.png"]
    assert r.n_ok == 1 and r.n_corrupt == 1


def test_manifest_scan_with_ground_truth_column(store, tmp_path, sample_root):
    files = sorted((sample_root / "ship").iterdir())[:5]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,class\n" + "".join(f"{f},ship\n" for f in files) + "does/not/exist.jpg,ship\n")
    r = scan(store, manifest=manifest)
    assert r.n_files == 6 and r.n_ok == 5 and r.n_corrupt == 1
    assert store.fetch("SELECT DISTINCT class_name, source FROM ground_truth") == [("ship", "manifest")]


def test_scan_project_uses_the_project_source_unless_given_one(store, tmp_path, sample_root):
    from types import SimpleNamespace

    from al_core.ingest.scan import scan_project

    files = sorted((sample_root / "ship").iterdir())[:3]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,class\n" + "".join(f"{f},ship\n" for f in files))
    root = tmp_path / "root"
    (root / "frog").mkdir(parents=True)
    for f in sorted((sample_root / "frog").iterdir())[:2]:
        shutil.copy(f, root / "frog" / f.name)
    project = SimpleNamespace(manifest=manifest, image_root=None)  # the project file names a manifest
    assert scan_project(store, project).source == str(manifest)
    given = scan_project(store, project, image_root=root)  # a given root wins over the project's manifest
    assert given.source == str(root) and given.n_ok == 2
    assert store.fetch("SELECT source, count(*) FROM ground_truth GROUP BY 1 ORDER BY 1") == [
        ("folder", 2),
        ("manifest", 3),
    ]
    with pytest.raises(ValueError, match="images.root"):
        scan_project(store, SimpleNamespace(manifest=None, image_root=None))
