"""Asset checks, kept apart from the assets."""

import dagster as dg

from al_assets.ingest import embeddings, raw_images
from resources.store import StoreResource
from al_core.catalogue import open_store


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


# ---------------------------------------------------------------- the labelling loop
def _partition(context) -> str:
    return context.run.tags.get("dagster/partition", "")


def _proposal_problems(store, round_: int) -> dict:
    """Images of batch ``round_`` that should not have been proposed."""
    (labelled, in_eval, pending_elsewhere, n, budget) = store.fetch(
        """WITH q AS (SELECT image_id FROM queries WHERE round = ?),
                lab AS (SELECT image_id FROM labels WHERE round <= ?
                        AND file_sha256 NOT IN (SELECT file_sha256 FROM retractions)),
                earlier AS (SELECT image_id FROM queries WHERE round < ?)
           SELECT (SELECT count(*) FROM q WHERE image_id IN (SELECT image_id FROM lab)),
                  (SELECT count(*) FROM q WHERE image_id IN (SELECT image_id FROM eval_set)),
                  (SELECT count(*) FROM q WHERE image_id IN (SELECT image_id FROM earlier)),
                  (SELECT count(*) FROM q),
                  (SELECT budget FROM rounds WHERE round = ?)""", [round_, round_, round_, round_])[0]
    return {"already_labelled_or_skipped": int(labelled), "in_eval_set": int(in_eval),
            "proposed_before": int(pending_elsewhere), "proposed": int(n), "recorded_budget": budget}


def _check_batch(context, project, asset_name: str) -> dg.AssetCheckResult:
    part = _partition(context)
    cfg = project.load()
    store = open_store(cfg)
    value = store.get_asset_output(asset_name, part)
    if value.get("stopped"):
        return dg.AssetCheckResult(passed=True, metadata={"stopped": value["stopped"]})
    p = _proposal_problems(store, int(part))
    ok = (p["already_labelled_or_skipped"] == 0 and p["in_eval_set"] == 0 and p["proposed_before"] == 0
          and p["proposed"] == p["recorded_budget"]
          and (p["proposed"] == value["requested_budget"] or bool(value.get("note"))))
    return dg.AssetCheckResult(passed=ok, metadata={**{k: (v if v is not None else -1) for k, v in p.items()},
                                                    "requested_budget": value["requested_budget"],
                                                    "note": value.get("note") or ""})


from al_assets.loop import eval_metrics, query_set, round_labels, seed_pool  # noqa: E402
from resources.project import ProjectResource  # noqa: E402


@dg.asset_check(asset=seed_pool, blocking=True,
                description="Batch 0 has the budget (or all that remained) and no held-out image")
def seed_pool_is_valid(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
    return _check_batch(context, project, "seed_pool")


@dg.asset_check(asset=query_set, blocking=True,
                description="No proposed image is labelled, skipped, pending in an earlier batch or in the evaluation "
                            "set; the batch has the budget, or all that remained (recorded)")
def query_set_is_valid(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
    return _check_batch(context, project, "query_set")


@dg.asset_check(asset=round_labels, blocking=True, description="Every label refers to a known image and class")
def labels_are_known(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
    cfg = project.load()
    store = open_store(cfg)
    classes = list(cfg.class_names(store)) + [cfg.labels.skip_label]
    unknown_img, unknown_cls = store.fetch(
        """SELECT count(*) FILTER (image_id NOT IN (SELECT image_id FROM images)),
                  count(*) FILTER (label NOT IN (SELECT unnest(?::VARCHAR[]))) FROM labels WHERE round = ?""",
        [classes, int(_partition(context))])[0]
    return dg.AssetCheckResult(passed=unknown_img == 0 and unknown_cls == 0,
                               metadata={"unknown_images": int(unknown_img), "unknown_classes": int(unknown_cls)})


@dg.asset_check(asset=eval_metrics, description="Metrics are finite and within [0, 1]")
def metrics_are_finite(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
    import math

    value = open_store(project.load()).get_asset_output("eval_metrics", _partition(context))
    vals = {k: value.get(k) for k in ("accuracy", "balanced_accuracy", "macro_f1")}
    bad = {k: v for k, v in vals.items() if v is not None and not (math.isfinite(v) and 0.0 <= v <= 1.0)}
    return dg.AssetCheckResult(passed=not bad, metadata={k: (v if v is not None else -1.0) for k, v in vals.items()})
