"""Backbone registry: real EfficientNet-Lite0 weights, DINOv2 / OpenCLIP code paths
with random weights, configuration of the giant ones, and safe weights loading."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # never touch the network (also set by conftest.py)

import dataclasses
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from al_core.models import backbones as B
from al_core.models import weights as W
from al_core.models.builders import effnet_lukemelas_to_timm
from al_core.models.registry import register_backbone
from tests.pickle_bomb import plant_pickle

ROOT = Path(__file__).resolve().parents[1]
ALL = [
    "efficientnet_lite0",
    "dinov2_vits14",
    "dinov2_vitb14",
    "dinov2_vitl14",
    "dinov2_vitg14",
    "openclip_vit_b16",
    "openclip_vit_l14",
    "openclip_vit_bigg14",
]
DIMS = {
    "efficientnet_lite0": 1280,
    "dinov2_vits14": 384,
    "dinov2_vitb14": 768,
    "dinov2_vitl14": 1024,
    "dinov2_vitg14": 1536,
    "openclip_vit_b16": 512,
    "openclip_vit_l14": 768,
    "openclip_vit_bigg14": 1280,
}


@pytest.fixture()
def empty_hf_cache(tmp_path, monkeypatch):
    """No hub weights anywhere, whatever this machine's cache holds."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as C

    monkeypatch.setattr(C, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)
    for name in ALL:
        monkeypatch.delenv(B.weights_env_var(name), raising=False)
    return cache


@pytest.fixture(scope="module")
def effnet224():
    return B.load_backbone("efficientnet_lite0", image_size=224, device="cpu")


@pytest.fixture(scope="module")
def dino_random():
    return B.load_backbone("dinov2_vits14", random_weights=True, device="cpu")


@pytest.fixture(scope="module")
def clip_random():
    return B.load_backbone("openclip_vit_b16", random_weights=True, device="cpu")


def _pil(size=(40, 30), seed=0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# --------------------------------------------------------------------------- registry


def test_registry_lists_every_backbone_with_its_dimension():
    assert B.list_backbones() == ALL
    assert B.list_backbones()[0] == B.DEFAULT_BACKBONE == "efficientnet_lite0"
    for name in ALL:
        spec = B.get_backbone_spec(name)
        assert spec.name == name
        assert spec.feature_dim == DIMS[name]
        assert spec.library in ("timm", "open_clip")
        assert spec.architecture and spec.weights_source and spec.preprocessing
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.feature_dim = 1  # frozen
    with pytest.raises(B.UnknownBackboneError, match="known:"):
        B.get_backbone_spec("resnet9000")


def test_importing_the_registry_is_cheap_and_dagster_free():
    code = (
        "import sys, time; t = time.perf_counter(); "
        "import al_core.models.backbones, al_core.ingest.embed, al_core.cli.backbones; "
        "dt = time.perf_counter() - t; "
        "heavy = [m for m in ('torch', 'timm', 'open_clip', 'dagster', 'torchvision') if m in sys.modules]; "
        "print(dt, heavy); assert not heavy, heavy"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr + out.stdout
    assert float(out.stdout.split()[0]) < 1.0


def test_giant_models_by_configuration_only():
    """vitl14/vitg14 and ViT-L-14/bigG-14 are never built: their library configs must agree with the registry."""
    import open_clip
    import timm

    for name in ("dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14", "dinov2_vitg14"):
        spec = B.get_backbone_spec(name)
        full = f"{spec.architecture}.{spec.pretrained_tag}"
        assert timm.is_model(spec.architecture)
        cfg = timm.get_pretrained_cfg(full).to_dict()
        assert cfg["hf_hub_id"] == spec.hf_repo
        assert tuple(cfg["mean"]) == spec.mean and tuple(cfg["std"]) == spec.std
        assert cfg["interpolation"] == "bicubic"
        assert spec.default_input_size == 224 and spec.patch_size == 14
    for name in ("openclip_vit_b16", "openclip_vit_l14", "openclip_vit_bigg14"):
        spec = B.get_backbone_spec(name)
        assert open_clip.get_model_config(spec.architecture)["embed_dim"] == spec.feature_dim
        pcfg = open_clip.get_pretrained_cfg(spec.architecture, spec.pretrained_tag)
        assert pcfg, (spec.architecture, spec.pretrained_tag)
        assert pcfg["hf_hub"].rstrip("/") == spec.hf_repo
        assert tuple(pcfg["mean"]) == tuple(spec.mean) and tuple(pcfg["std"]) == tuple(spec.std)
        assert open_clip.get_model_config(spec.architecture)["vision_cfg"]["image_size"] == 224


def test_the_spec_decides_the_input_size_and_the_builder():
    """Callers pass the project's image size whatever the backbone: a CNN takes it, a ViT keeps
    the size its position embeddings were trained at; an explicit image_size applies to both."""
    eff, dino = B.get_backbone_spec("efficientnet_lite0"), B.get_backbone_spec("dinov2_vits14")
    assert [n for n in ALL if B.get_backbone_spec(n).takes_input_size] == ["efficientnet_lite0"]
    assert [n for n in ALL if B.get_backbone_spec(n).has_classifier] == ["efficientnet_lite0"]
    assert eff.input_size() == 128 and eff.input_size(project_image_size=96) == 96
    assert dino.input_size(project_image_size=128) == 224
    assert dino.input_size(image_size=252, project_image_size=128) == 252
    with pytest.raises(B.BackboneError, match="too small"):
        eff.input_size(project_image_size=8)
    assert all(callable(B.get_backbone_spec(n).builder) for n in ALL)
    assert len({B.get_backbone_spec(n).builder for n in ALL}) == 3  # one builder per family
    assert "builder" not in B.spec_dict("dinov2_vits14") and B.spec_dict("efficientnet_lite0")["bundled"]["file"]
    with pytest.raises(ValueError, match="registered twice"):
        register_backbone(eff)(eff.builder)
    lb = B.load_backbone("efficientnet_lite0", project_image_size=64, random_weights=True, device="cpu")
    assert lb.image_size == 64 and lb.config["preprocessing"]["input_size"] == 64
    with pytest.raises(B.BackboneError, match="no classifier"):
        B.load_backbone("dinov2_vits14", project_image_size=128, random_weights=True, device="cpu").logits(None)


def test_vit_input_size_must_fit_the_patch():
    with pytest.raises(B.BackboneError, match="multiple of 14"):
        B.load_backbone("dinov2_vits14", image_size=100, random_weights=True)


# --------------------------------------------------------------------------- efficientnet_lite0, real weights


def test_effnet_weights_are_real_coffee_is_espresso(effnet224):
    import skimage.data
    from PIL import Image

    lb = effnet224
    assert lb.config["weights_sha256"] == B.EFFNET_LITE0_SHA256
    assert lb.weights_path.endswith("efficientnet-lite0-57934424.pth")
    x = lb.transform(Image.fromarray(skimage.data.coffee()))[None]
    assert tuple(x.shape) == (1, 3, 224, 224)
    top5 = lb.logits(x).topk(5).indices[0].tolist()
    assert 967 in top5, top5  # ImageNet class 967: espresso
    f = lb.forward(x)
    assert tuple(f.shape) == (1, 1280) and str(f.dtype) == "torch.float32"


def test_effnet_key_mapping_is_exact(effnet224):
    """Every lukemelas key maps onto one timm key: 0 missing, 0 unexpected, same shapes."""
    import torch

    sd = torch.load(effnet224.weights_path, map_location="cpu", weights_only=True)
    mapped = effnet_lukemelas_to_timm(sd, effnet224.model)
    target = effnet224.model.state_dict()
    assert len(mapped) == len(sd) == len(target) == 296
    assert set(mapped) == set(target)
    assert all(mapped[k].shape == target[k].shape for k in target)


def test_effnet_config_and_config_id(effnet224):
    cfg = effnet224.config
    for key in ("backbone", "weights_sha256", "preprocessing", "dtype", "feature_dim", "device", "library_versions"):
        assert key in cfg
    assert cfg["preprocessing"]["input_size"] == 224 and cfg["dtype"] == "float32" and cfg["device"] == "cpu"
    assert cfg["library_versions"]["timm"] and cfg["library_versions"]["torch"]
    json.dumps(cfg)  # serialisable
    cid = effnet224.config_id
    assert re.fullmatch(r"[0-9a-f]{16}", cid), cid  # a hex digest prefix (int(cid, 16) >= 0 could not fail)
    assert B.config_id_of(cfg) == cid
    # device and library versions do not enter the id; the input size and dtype do
    assert B.config_id_of(dict(cfg, device="cuda:0", library_versions={})) == cid
    assert B.config_id_of(dict(cfg, dtype="float16")) != cid
    pre128 = dict(cfg["preprocessing"], input_size=128)
    assert B.config_id_of(dict(cfg, preprocessing=pre128)) != cid


# --------------------------------------------------------------------------- DINOv2 / OpenCLIP code paths


def test_dinov2_vits14_random_weights(dino_random):
    import torch

    lb = dino_random
    assert lb.config["weights_sha256"].startswith("random-init")
    pre = lb.config["preprocessing"]
    assert (pre["input_size"], pre["resize_shorter_side"], pre["center_crop"]) == (224, 256, 224)
    assert pre["mean"] == list(B.IMAGENET_MEAN) and pre["std"] == list(B.IMAGENET_STD)
    x = torch.stack([lb.transform(_pil((50, 40), s)) for s in range(2)])
    assert tuple(x.shape) == (2, 3, 224, 224)
    a, b = lb.forward(x), lb.forward(x)
    assert tuple(a.shape) == (2, 384) and a.dtype == torch.float32
    assert torch.equal(a, b) and torch.isfinite(a).all()


def test_openclip_vit_b16_random_weights(clip_random):
    import torch

    lb = clip_random
    pre = lb.config["preprocessing"]
    assert pre["input_size"] == 224 and pre["mean"][0] == pytest.approx(0.48145466)
    assert "CenterCrop" in repr(lb.transform)  # open_clip's own eval transform
    x = torch.stack([lb.transform(_pil((64, 48), s)) for s in range(2)])
    a, b = lb.forward(x), lb.forward(x)
    assert tuple(a.shape) == (2, 512) and a.dtype == torch.float32
    assert torch.equal(a, b) and torch.isfinite(a).all()


def test_dinov2_from_a_local_safetensors_file(dino_random, tmp_path, monkeypatch):
    import safetensors.torch as st
    import torch

    path = tmp_path / "dinov2_vits14.safetensors"
    st.save_file({k: v.contiguous() for k, v in dino_random.model.state_dict().items()}, str(path))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    want = dino_random.forward(x)

    lb = B.load_backbone("dinov2_vits14", weights_path=path, device="cpu")
    assert torch.equal(lb.forward(x), want)
    assert lb.config["weights_sha256"] == B.sha256_file(path)
    assert lb.config_id != dino_random.config_id

    # the same file through the environment setting
    monkeypatch.setenv(B.weights_env_var("dinov2_vits14"), str(path))
    assert B.weights_available("dinov2_vits14")
    assert B.load_backbone("dinov2_vits14", device="cpu").config_id == lb.config_id
    with pytest.raises(B.WeightsRejectedError, match="sha256"):
        B.load_backbone("dinov2_vits14", expected_sha256="0" * 64)


def test_weights_of_another_model_are_rejected(dino_random, tmp_path):
    import safetensors.torch as st

    path = tmp_path / "vits14.safetensors"
    st.save_file({k: v.contiguous() for k, v in dino_random.model.state_dict().items()}, str(path))
    with pytest.raises(B.WeightsRejectedError, match="do not fit"):
        B.load_backbone("dinov2_vitb14", weights_path=path, device="cpu")


@pytest.mark.slow  # make test-fast stays under 2 minutes; make test runs it
def test_openclip_from_a_local_torch_file(clip_random, tmp_path):
    import open_clip
    import torch

    torch.manual_seed(3)
    model, _, _ = open_clip.create_model_and_transforms("ViT-B-16", pretrained=None)
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), path)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model.eval().visual(x)
    lb = B.load_backbone("openclip_vit_b16", weights_path=path, device="cpu")
    assert torch.allclose(lb.forward(x), want, atol=1e-5)
    assert not torch.allclose(clip_random.forward(x), want, atol=1e-3)


# --------------------------------------------------------------------------- missing and hostile weights


@pytest.mark.parametrize("name", ["dinov2_vits14", "openclip_vit_b16", "dinov2_vitg14", "openclip_vit_bigg14"])
def test_missing_weights_offline_fail_fast_and_clearly(name, empty_hf_cache):
    assert not B.weights_available(name)
    t = time.perf_counter()
    with pytest.raises(B.WeightsUnavailableError) as e:
        B.load_backbone(name)
    assert time.perf_counter() - t < 5
    msg = str(e.value)
    assert name in msg and "weights_path" in msg and B.weights_env_var(name) in msg and "HF_HUB_OFFLINE" in msg


def test_missing_local_weights_file(tmp_path):
    with pytest.raises(B.WeightsUnavailableError, match="does not exist"):
        B.load_backbone("dinov2_vits14", weights_path=tmp_path / "nope.safetensors")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("fmt", ["torch_zip", "legacy_pickle"])
def test_planted_malicious_pickle_is_refused(fmt, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    evil = plant_pickle(tmp_path / "efficientnet-lite0-57934424.pth", "_conv_stem.weight", marker, fmt)

    # where the bundled weights are expected: refused on sha256 before any unpickling
    monkeypatch.setattr(W, "bundled_weights_path", lambda spec: evil)
    with pytest.raises(B.WeightsRejectedError, match="sha256"):
        B.load_backbone("efficientnet_lite0")
    # as an explicit file for efficientnet: same
    with pytest.raises(B.WeightsRejectedError, match="sha256"):
        B.load_backbone("efficientnet_lite0", weights_path=evil)
    # as a file for a backbone without a known hash: the restricted loader refuses it
    with pytest.raises(B.WeightsRejectedError, match="weights_only"):
        B.load_backbone("dinov2_vits14", weights_path=evil)
    with pytest.raises(B.WeightsRejectedError, match="weights_only"):
        B.load_backbone("openclip_vit_b16", weights_path=evil)
    assert not marker.exists()


# --------------------------------------------------------------------------- al backbones


def test_al_backbones_lists_names_dims_and_availability(capsys, empty_hf_cache):
    from al_core.cli.backbones import main

    assert main([]) == 0
    out = capsys.readouterr().out
    for name in ALL:
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert str(DIMS[name]) in line
        assert (" yes " in line) == (name == "efficientnet_lite0")
    assert main(["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ALL
    assert {r["name"]: r["weights_available"] for r in rows} == {n: n == "efficientnet_lite0" for n in ALL}
