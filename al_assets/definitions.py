"""The one Definitions object of the code location (kept thin)."""

import dagster as dg

from al_assets import assets, checks
from al_assets.jobs import ingest_job
from resources.backbone import BackboneResource
from resources.store import StoreJsonIOManager, StoreResource

_store = StoreResource()

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([assets]),
    asset_checks=dg.load_asset_checks_from_modules([checks]),
    jobs=[ingest_job],
    resources={
        "store": _store,
        "store_io_manager": StoreJsonIOManager(store=_store),
        "backbone": BackboneResource(),
    },
)
