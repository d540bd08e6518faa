"""Streaming embedding: real images through the real efficientnet_lite0, failures
that never stop the stream, bounded read-ahead, and the two benchmarks' scripts."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # never touch the network (also set by conftest.py)

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from al_core.ingest.embed import Failure, Progress, decode_image, embed_images

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "examples" / "cifar10-2k"


def _sample_paths(per_class: int) -> list[Path]:
    out = []
    for d in sorted(p for p in SAMPLES.iterdir() if p.is_dir()):
        out.extend(sorted(d.glob("*.jpg"))[:per_class])
    return out


@pytest.fixture(scope="module")
def effnet64():
    from al_core.models.backbones import load_backbone

    return load_backbone("efficientnet_lite0", image_size=64, device="cpu")


class FakeBackbone:
    """Duck-typed backbone: cheap transform and forward (for the stream mechanics)."""

    device = "cpu"
    feature_dim = 3

    def transform(self, img):
        import torch

        return torch.from_numpy(np.asarray(img.resize((8, 8)), dtype=np.float32)).permute(2, 0, 1) / 255

    def forward(self, x):
        return x.mean(dim=(2, 3))


def _bad_files(d: Path) -> dict[str, Path]:
    good = next(SAMPLES.glob("cat/*.jpg")).read_bytes()
    files = {
        "zero": d / "zero.jpg",
        "text": d / "notes.jpg",
        "corrupt": d / "corrupt.jpg",
        "missing": d / "missing.jpg",
    }
    files["zero"].write_bytes(b"")
    files["text"].write_text("this is not an image\n")
    # a JPEG header followed by garbage, cut short
    files["corrupt"].write_bytes(good[:200] + bytes(range(256)) * 2)
    return files


def test_real_images_embed_finite_and_deterministic(effnet64):
    paths = _sample_paths(30)  # 300 images, every class
    assert len(paths) == 300

    def run():
        stream = embed_images(paths, effnet64, batch_size=64)
        keys, vecs = [], []
        for k, v in stream:
            keys.extend(k)
            vecs.append(v)
        return stream, keys, np.concatenate(vecs)

    s1, k1, v1 = run()
    s2, k2, v2 = run()
    assert k1 == [str(p) for p in paths] == k2  # order kept
    assert v1.shape == (300, 1280) and v1.dtype == np.float32
    assert np.isfinite(v1).all() and (np.abs(v1).sum(axis=1) > 0).all()
    assert np.array_equal(v1, v2)
    assert s1.failures == [] and s1.stats.images == 300 and s1.stats.batches == 5
    assert s1.stats.images_per_s > 0 and s1.config_id == effnet64.config_id
    # features carry class information: same-class pairs are closer than random pairs on average
    labels = np.repeat(np.arange(10), 30)
    z = v1 / np.linalg.norm(v1, axis=1, keepdims=True)
    sim = z @ z.T
    same = sim[labels[:, None] == labels[None, :]].mean()
    assert same > sim.mean()


def test_failures_go_to_their_own_channel(effnet64, tmp_path):
    bad = _bad_files(tmp_path)
    good = _sample_paths(3)[:20]
    items = [str(p) for p in good[:7]] + [str(p) for p in bad.values()] + [str(p) for p in good[7:]]
    seen_failures = []
    stream = embed_images(items, effnet64, batch_size=4, on_failure=seen_failures.append)
    keys = [k for ks, _ in stream for k in ks]
    assert keys == [str(p) for p in good]
    assert [f.key for f in stream.failures] == [str(p) for p in bad.values()]
    assert seen_failures == stream.failures
    assert all(isinstance(f, Failure) and f.error for f in stream.failures)
    assert stream.stats.failures == 4 and stream.stats.images == 20


def test_a_batch_of_only_failures_is_skipped(tmp_path):
    bad = _bad_files(tmp_path)
    stream = embed_images([str(p) for p in bad.values()], FakeBackbone(), batch_size=2)
    assert list(stream) == []
    assert len(stream.failures) == 4


def test_items_keys_bytes_and_pil_images():
    from PIL import Image

    p = _sample_paths(1)[0]
    items = [("a", p), ("b", p.read_bytes()), ("c", Image.open(p)), ("d", str(p))]
    out = list(embed_images(items, FakeBackbone(), batch_size=3))
    keys = [k for ks, _ in out for k in ks]
    vecs = np.concatenate([v for _, v in out])
    assert keys == ["a", "b", "c", "d"]
    assert np.allclose(vecs, vecs[0])
    with pytest.raises(TypeError):
        list(embed_images([123], FakeBackbone()))


@pytest.mark.parametrize("backend,workers", [("serial", 0), ("threads", 1), ("threads", 2), ("processes", 2)])
def test_backends_agree(backend, workers, tmp_path):
    bad = _bad_files(tmp_path)
    items = [str(p) for p in _sample_paths(4)] + [str(bad["text"])]
    ref = list(embed_images(items, FakeBackbone(), batch_size=8, num_workers=0))
    stream = embed_images(items, FakeBackbone(), batch_size=8, num_workers=workers, backend=backend)
    out = list(stream)
    assert [k for ks, _ in out for k in ks] == [k for ks, _ in ref for k in ks]
    assert np.array_equal(np.concatenate([v for _, v in out]), np.concatenate([v for _, v in ref]))
    assert [f.key for f in stream.failures] == [str(bad["text"])]


def test_read_ahead_is_bounded():
    """Memory stays bounded: the stream never pulls more than prefetch+1 batches ahead."""
    p = str(_sample_paths(1)[0])
    pulled = 0

    def items():
        nonlocal pulled
        for _ in range(10_000):
            pulled += 1
            yield p

    stream = embed_images(items(), FakeBackbone(), batch_size=10, num_workers=1, prefetch=2)
    it = iter(stream)
    for _ in range(3):
        next(it)
    assert pulled <= 10 * (3 + 2 + 1)
    it.close()


def test_progress_reports(tmp_path):
    reports = []
    items = [str(p) for p in _sample_paths(2)]
    stream = embed_images(items, FakeBackbone(), batch_size=5, progress=reports.append, progress_interval_s=0)
    list(stream)
    assert all(isinstance(r, Progress) for r in reports)
    assert len(reports) >= 4 and reports[-1].done and not reports[0].done
    assert reports[-1].images == 20 and reports[-1].images_per_s > 0
    assert "images/s" in str(reports[-1])
    assert all(r.total == 20 for r in reports)  # a list: its length is the total
    first = str(reports[0])
    assert first.startswith(f"embedding: {reports[0].images}/20 images (") and " left" in first, first
    assert str(reports[-1]).startswith("done: 20/20 images (100 %)") and " left" not in str(reports[-1])
    assert reports[0].seconds_left == pytest.approx((20 - reports[0].images) / reports[0].images_per_s)


def test_progress_line_gives_done_total_rate_and_time_left():
    p = Progress(images=300, failures=0, elapsed_s=10.0, images_per_s=30.0, total=1200)
    assert str(p) == "embedding: 300/1200 images (25 %), 0 failures, 10.0 s, 30.0 images/s, about 30 s left"
    p = Progress(images=100, failures=0, elapsed_s=10.0, images_per_s=10.0, total=100_000)
    assert str(p).endswith("about 2 h 46 min left")
    unknown = Progress(images=5, failures=1, elapsed_s=1.0, images_per_s=5.0)
    assert str(unknown) == "embedding: 5 images, 1 failures, 1.0 s, 5.0 images/s" and unknown.seconds_left is None


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif)
    out = decode_image(path)
    assert out.size == (20, 40) and out.mode == "RGB"
    gray = tmp_path / "gray.png"
    Image.new("L", (5, 7), 128).save(gray)
    assert decode_image(gray).mode == "RGB"


def test_bench_embed_smoke(tmp_path, capsys):
    from al_core.bench.embed import main

    images = tmp_path / "imgs"
    for p in _sample_paths(2):
        (images / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, images / p.parent.name / p.name)
    out = tmp_path / "embed.json"
    assert (
        main(["--images", str(images), "--limit", "20", "--image-size", "32", "--chunk", "10", "--json", str(out)]) == 0
    )
    res = json.loads(out.read_text())
    assert res["images"] == 20 and res["pipeline_images_per_s"] > 0 and res["bare_images_per_s"] > 0
    assert res["pipeline_detail"]["failures"] == 0
    assert "Store.write_embeddings" in res["pipeline_detail"]["store"]
    assert json.loads(capsys.readouterr().out)["config_id"] == res["config_id"]


def test_cifar_features_smoke(tmp_path):
    from al_core.bench.cifar_features import main

    root = tmp_path / "cifar"
    for split, n in (("train", 3), ("test", 1)):
        for p in _sample_paths(n):
            d = root / split / p.parent.name
            d.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, d / p.name)
    out = tmp_path / "feats.npz"
    assert main(["--root", str(root), "--image-size", "32", "--out", str(out), "--quiet"]) == 0
    z = np.load(out)
    assert z["train_features"].shape == (30, 1280) and z["test_features"].shape == (10, 1280)
    assert z["train_features"].dtype == np.float32 and np.isfinite(z["train_features"]).all()
    assert list(z["train_targets"]) == sorted(list(range(10)) * 3)
    assert list(z["class_names"]) == sorted(p.name for p in SAMPLES.iterdir() if p.is_dir())
    assert json.loads(str(z["config_json"]))["preprocessing"]["input_size"] == 32
