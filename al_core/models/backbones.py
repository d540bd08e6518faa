"""Backbones: frozen vision models that turn an image into a feature vector (the public API).

:func:`load_backbone` builds a registered backbone, loads its weights safely and
returns a :class:`LoadedBackbone` with the backbone's own preprocessing
(``.transform``), a ``.forward`` that returns float32 features, and the embedding
configuration (``.config``, ``.config_id``). The package's rooms:

- :mod:`al_core.models.registry`: :class:`BackboneSpec` and the registry
  (``list_backbones``, ``get_backbone_spec``); a spec carries its builder and its
  input-size rule, so no caller tests a backbone's name;
- :mod:`al_core.models.weights`: finding, checking and reading weights files
  (sha256, ``torch.load(weights_only=True)``, the offline rules);
- :mod:`al_core.models.transforms`: the resize / crop / normalise preprocessing;
- :mod:`al_core.models.builders`: the EfficientNet, DINOv2 and OpenCLIP builders,
  each registered with the specs it builds.

This module re-exports the names callers need from those. Importing it is cheap:
torch, timm and open_clip are imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from al_core.files.hashing import sha256_file, short
from al_core.models.builders import EFFNET_LITE0_SHA256
from al_core.models.errors import BackboneError, UnknownBackboneError, WeightsRejectedError, WeightsUnavailableError
from al_core.models.registry import (
    DEFAULT_BACKBONE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneSpec,
    get_backbone_spec,
    list_backbones,
    spec_dict,
    weights_env_var,
)
from al_core.models.weights import load_state_dict_file, resolve_weights_file, weights_available

__all__ = [
    "DEFAULT_BACKBONE",
    "EFFNET_LITE0_SHA256",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
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
    "spec_dict",
    "weights_available",
    "weights_env_var",
]

RANDOM_WEIGHTS_SEED = 0

_ID_FIELDS = ("backbone", "weights_sha256", "preprocessing", "dtype")


def config_id_of(config: dict) -> str:
    """Short stable id of an embedding config: sha256 of backbone, weights sha256,
    preprocessing (input size included) and dtype, as canonical JSON; SHORT_ID_CHARS hex digits."""
    core = {k: config[k] for k in _ID_FIELDS}
    blob = json.dumps(core, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return short(hashlib.sha256(blob.encode("utf-8")).hexdigest())


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
        """ImageNet logits (backbones whose spec ``has_classifier``: efficientnet_lite0)."""
        import torch

        if not self.spec.has_classifier:
            raise BackboneError(f"backbone {self.spec.name!r} has no classifier head")
        with torch.inference_mode():
            x = batch.to(self.device).contiguous(memory_format=torch.channels_last)
            return self.model(x).float().cpu()


def load_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    image_size: int | None = None,
    project_image_size: int | None = None,
    weights_path: str | os.PathLike | None = None,
    device: str | None = None,
    dtype: str | None = None,
    random_weights: bool = False,
    expected_sha256: str | None = None,
) -> LoadedBackbone:
    """Build backbone ``name`` with its weights and preprocessing.

    image_size: model input in px, applied to any backbone (ViTs: a multiple of their patch size).
    project_image_size: the project's ``backbone.image_size``, passed whatever the backbone: the
        input of a backbone whose spec takes an input size (efficientnet_lite0); the others keep
        their own ``default_input_size``. See :meth:`BackboneSpec.input_size`.
    weights_path: local weights file (safetensors or a torch state dict; loaded with
        ``weights_only=True``); default ``$AL_WEIGHTS_<NAME>``, then the bundled file / hub cache.
    device: "cpu", "cuda", "cuda:1", ...; default CUDA when present.
    dtype: "float32" | "float16" | "bfloat16"; default float16 autocast on CUDA, float32 on CPU.
    random_weights: build with random weights (seed 0) for tests of the code paths; nothing is read.
    expected_sha256: refuse a weights file whose sha256 differs.
    """
    t0 = time.perf_counter()
    spec = get_backbone_spec(name)
    size = spec.input_size(image_size, project_image_size)

    weights_file: Path | None = None
    origin = "random init (tests only)"
    if random_weights:
        sha = f"random-init-seed{RANDOM_WEIGHTS_SEED}"
    else:
        weights_file, origin = resolve_weights_file(spec, weights_path)
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

    # read (and vet) the weights before spending time on building the model
    sd = None if random_weights else load_state_dict_file(weights_file, name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        model, transform, pre, features = spec.builder(spec, size, sd)
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
