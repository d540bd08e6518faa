"""Asset checks, kept apart from the assets; their queries are named functions of ``al_core.catalogue``."""

import math

import dagster as dg

from al_assets.ingest import embeddings, raw_images
from al_assets.loop import eval_metrics, query_set, round_labels, seed_pool
from al_core.catalogue import embeddings as embeddings_q
from al_core.catalogue import images as images_q
from al_core.catalogue import labels as labels_q
from al_core.catalogue import open_store
from al_core.catalogue import rounds as rounds_q
from resources.project import ProjectResource
from resources.store import StoreResource


def _read(store):
    return store.connect(read_only=True, view=False)


@dg.asset_check(asset=raw_images, description="Every path of the source has a status; corrupt files are reported")
def raw_images_statuses(context: dg.AssetCheckExecutionContext, store: StoreResource) -> dg.AssetCheckResult:
    s = store.get()
    value = s.get_asset_output("raw_images", "")
    with _read(s) as con:
        counts = images_q.path_status_counts(con, value["source"])
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
    with _read(s) as con:
        missing, dup = embeddings_q.coverage_gaps(con, value["source"], value["config_id"])
    return dg.AssetCheckResult(
        passed=missing == 0 and dup == 0,
        metadata={"ok_images_without_vector": missing, "duplicate_vectors": dup},
    )


# ---------------------------------------------------------------- the labelling loop
def _partition(context) -> str:
    return context.run.tags.get("dagster/partition", "")


def _check_batch(context, project, asset_name: str) -> dg.AssetCheckResult:
    part = _partition(context)
    cfg = project.load()
    store = open_store(cfg)
    value = store.get_asset_output(asset_name, part)
    if value.get("stopped"):
        return dg.AssetCheckResult(passed=True, metadata={"stopped": value["stopped"], "budget_left": 0})
    with _read(store) as con:
        p = rounds_q.proposal_problems(con, int(part), skipped_may_return=cfg.labels.propose_skipped_again)
    ok = (
        p["already_labelled_or_skipped"] == 0
        and p["in_eval_set"] == 0
        and p["proposed_before"] == 0
        and p["proposed"] == p["recorded_budget"]
        and (p["proposed"] == value["requested_budget"] or bool(value.get("note")))
    )
    return dg.AssetCheckResult(
        passed=ok,
        metadata={
            **{k: (v if v is not None else -1) for k, v in p.items()},
            "requested_budget": value["requested_budget"],
            "budget_left": value.get("budget_left", -1),
            "note": value.get("note") or "",
        },
    )


@dg.asset_check(
    asset=seed_pool, blocking=True, description="Batch 0 has the budget (or all that remained) and no held-out image"
)
def seed_pool_is_valid(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
    return _check_batch(context, project, "seed_pool")


@dg.asset_check(
    asset=query_set,
    blocking=True,
    description="No proposed image is labelled, disputed (but for adjudication), skipped (unless "
    "labels.propose_skipped_again), pending in an open batch or in the evaluation set; the "
    "batch has the budget, or all that remained (recorded)",
)
def query_set_is_valid(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
    return _check_batch(context, project, "query_set")


@dg.asset_check(asset=round_labels, blocking=True, description="Every label refers to a known image and class")
def labels_are_known(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
    cfg = project.load()
    store = open_store(cfg)
    classes = [*cfg.class_names(store), cfg.labels.skip_label]
    with _read(store) as con:
        unknown_img, unknown_cls = labels_q.unknown_labels_of_round(con, int(_partition(context)), classes)
    return dg.AssetCheckResult(
        passed=unknown_img == 0 and unknown_cls == 0,
        metadata={"unknown_images": unknown_img, "unknown_classes": unknown_cls},
    )


@dg.asset_check(asset=eval_metrics, description="Metrics are finite and within [0, 1]")
def metrics_are_finite(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
    from al_core.loop.evaluation import METRIC_NAMES

    value = open_store(project.load()).get_asset_output("eval_metrics", _partition(context))
    vals = {k: value.get(k) for k in METRIC_NAMES}
    bad = {k: v for k, v in vals.items() if v is not None and not (math.isfinite(v) and 0.0 <= v <= 1.0)}
    return dg.AssetCheckResult(passed=not bad, metadata={k: (v if v is not None else -1.0) for k, v in vals.items()})


@dg.asset_check(
    asset=eval_metrics,
    blocking=False,
    description="The stop rule (stabilising predictions): warns once the model's predictions on the stop "
    "set have stopped changing, with the projected gain and cost of the next batch",
)
def labelling_still_changes_the_model(
    context: dg.AssetCheckExecutionContext, project: ProjectResource
) -> dg.AssetCheckResult:
    from al_core.reporting.value_text import lines
    from al_core.value.summary import value_summary

    cfg = project.load()
    s = value_summary(open_store(cfg), cfg)
    st, text = s["stop"], lines(s)
    return dg.AssetCheckResult(
        passed=not st["stop"],
        severity=dg.AssetCheckSeverity.WARN,
        description=("consider stopping: " if st["stop"] else "go on: ") + st["reason"],
        metadata={
            "kappa": dg.MetadataValue.text("–" if st["last_kappa"] is None else f"{st['last_kappa']:.4f}"),
            "threshold": dg.MetadataValue.text(f"{st['threshold']:g} for {st['window']} rounds"),
            "stable_rounds": dg.MetadataValue.text(str(st["stable_rounds"])),
            "fired_at_round": dg.MetadataValue.text("–" if st["fired_round"] is None else str(st["fired_round"])),
            "loop_stops_by_itself": dg.MetadataValue.text(str(st["obeyed"]).lower()),
            "next_batch": dg.MetadataValue.text(text["next_batch"]),
            "projection": dg.MetadataValue.text(text["projection"]),
        },
    )
