"""The project file (al.yaml) as a Dagster resource."""

import dagster as dg
from pydantic import Field


class ProjectResource(dg.ConfigurableResource):
    """Which project file the loop follows (None: $AL_CONFIG, else ./al.yaml, else the defaults)."""

    config_path: str | None = Field(default=None, description="path of the project file")

    def load(self):
        from al_core.config import load_config

        return load_config(self.config_path)
