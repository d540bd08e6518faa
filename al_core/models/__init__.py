"""Frozen vision backbones: registry, weights, transforms, builders (public API: al_core.models.backbones).

Importing the package imports the builders, which register every backbone (timm's pattern),
so the registry is complete whichever module of the package a caller imports first.
"""

from al_core.models import builders as _builders  # noqa: F401  (registers every backbone)
