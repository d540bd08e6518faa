"""The project file (al.yaml) as a Dagster resource, read once per process and file version."""

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from al_core.config import ProjectConfig, find_config_path, load_config

# (absolute path or None for the defaults) -> ((mtime_ns, size), config): a file is parsed and checked once per
# process and version; an edited file is read again (runs are new processes and always read the current file).
_LOADED: dict[str | None, tuple[tuple[int, int] | None, ProjectConfig]] = {}


def load_project(config_path: str | os.PathLike | None = None) -> ProjectConfig:
    """The checked project config (al_core.config.load_config), cached by file version."""
    found = find_config_path(config_path)
    key = str(Path(found).absolute()) if found is not None else None
    try:
        version = (os.stat(key).st_mtime_ns, os.stat(key).st_size) if key else None
    except OSError:
        version = None  # missing: load_config raises the one-line error
    hit = _LOADED.get(key)
    if hit is None or hit[0] != version or version is None and key is not None:
        _LOADED[key] = (version, load_config(key))
    return _LOADED[key][1]


class ProjectResource(dg.ConfigurableResource):
    """Which project file the loop follows (None: $AL_CONFIG, else ./al.yaml, else the defaults)."""

    config_path: str | None = Field(default=None, description="path of the project file")

    def load(self) -> ProjectConfig:
        return load_project(self.config_path)
