"""The frozen backbone as a Dagster resource (loaded lazily inside the asset body)."""

import dagster as dg
from pydantic import Field

from al_core.config import BackboneConfig

_D = BackboneConfig()


class BackboneResource(dg.ConfigurableResource):
    """Which backbone embeds the images, and how."""

    name: str = Field(default=_D.name, description="a name from `al backbones`")
    image_size: int = Field(default=_D.image_size, description="input size in px (efficientnet_lite0 only)")
    weights_path: str | None = Field(default=None, description="local weights file (air-gapped sites)")
    batch_size: int = _D.batch_size
    device: str | None = Field(default=None, description="'cpu', 'cuda'; default: cuda when present")

    def load(self):
        from al_core.models.backbones import load_backbone

        return load_backbone(
            self.name, project_image_size=self.image_size, weights_path=self.weights_path, device=self.device
        )
