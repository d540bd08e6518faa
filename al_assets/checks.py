"""Asset checks, kept apart from the assets."""

import dagster as dg

from al_assets.assets import embeddings, raw_images
from resources.store import StoreResource


@dg.asset_check(asset=raw_images, description="Every path of the source has a status; corrupt files are reported")
def raw_images_statuses(context: dg.AssetCheckExecutionContext, store: StoreResource) -> dg.AssetCheckResult:
    value = store.get().get_asset_output("raw_images", "")
    rows = store.get().fetch(
        "SELECT status, count(*) FROM image_paths WHERE source = ? GROUP BY status ORDER BY status", [value["source"]]
    )
    counts = {s: int(n) for s, n in rows}
    return dg.AssetCheckResult(
        passed=counts.get("ok", 0) > 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={f"paths_{k}": v for k, v in counts.items()},
        description="at least one readable image" if counts.get("ok") else "no readable image in the source",
    )


@dg.asset_check(asset=embeddings, blocking=True, description="Every ok image has exactly one vector of the config")
def embeddings_cover_images(context: dg.AssetCheckExecutionContext, store: StoreResource) -> dg.AssetCheckResult:
    s = store.get()
    value = s.get_asset_output("embeddings", "")
    missing, dup = s.fetch(
        """WITH ok AS (SELECT DISTINCT image_id FROM image_paths WHERE status = 'ok' AND source = ?),
                idx AS (SELECT image_id FROM embedding_index WHERE config_id = ?),
                failed AS (SELECT DISTINCT image_id FROM embedding_failures WHERE config_id = ?)
           SELECT (SELECT count(*) FROM ok WHERE image_id NOT IN (SELECT image_id FROM idx)
                                        AND image_id NOT IN (SELECT image_id FROM failed)),
                  (SELECT count(*) - count(DISTINCT image_id) FROM idx)""",
        [value["source"], value["config_id"], value["config_id"]],
    )[0]
    return dg.AssetCheckResult(
        passed=missing == 0 and dup == 0,
        metadata={"ok_images_without_vector": int(missing), "duplicate_vectors": int(dup)},
    )
