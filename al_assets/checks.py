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


def _output(context, project: ProjectResource, asset_name: str) -> dict:
    """The stored value of ``asset_name`` for the run's partition."""
    return open_store(project.load()).get_asset_output(asset_name, _partition(context))


def _warning_check(asset):
    """A check of ``asset`` that warns and never blocks what follows, described by the decorated function's
    docstring: ``fn(cfg, store, partition)`` (the project, its store, the run's partition) returns the (passed,
    description, metadata) of a result of severity WARN."""

    def wrap(fn):
        def check(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
            cfg = project.load()
            passed, text, metadata = fn(cfg, open_store(cfg), _partition(context))
            return dg.AssetCheckResult(
                passed=passed, severity=dg.AssetCheckSeverity.WARN, description=text, metadata=metadata
            )

        description = " ".join(fn.__doc__.split())
        return dg.asset_check(asset=asset, blocking=False, description=description, name=fn.__name__)(check)

    return wrap


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


@_warning_check(round_labels)
def deliveries_accepted(cfg, store, partition: str):
    """Every label file delivered to this run was accepted (warns on a rejected delivery, with its first error;
    the file and its .errors.json are in inbox/rejected/)"""
    value = store.get_asset_output("round_labels", partition)
    rejected = [f for f in value.get("files", []) if f.get("status") == "rejected"]
    text = (
        f"{len(rejected)} delivery(ies) rejected: {rejected[0]['name']}: {rejected[0]['reason']}"
        if rejected
        else f"{len(value.get('files', []))} delivery(ies), none rejected"
    )
    errors = [{"name": f["name"], "first_error": f.get("reason")} for f in rejected]
    return not rejected, text, {"rejected": dg.MetadataValue.json(errors)}


@dg.asset_check(asset=eval_metrics, description="Metrics are finite and within [0, 1]")
def metrics_are_finite(context: dg.AssetCheckExecutionContext, project: ProjectResource) -> dg.AssetCheckResult:
    from al_core.loop.evaluation import METRIC_NAMES

    value = _output(context, project, "eval_metrics")
    vals = {k: value.get(k) for k in METRIC_NAMES}
    bad = {k: v for k, v in vals.items() if v is not None and not (math.isfinite(v) and 0.0 <= v <= 1.0)}
    return dg.AssetCheckResult(passed=not bad, metadata={k: (v if v is not None else -1.0) for k, v in vals.items()})


@_warning_check(eval_metrics)
def round_is_evaluated(cfg, store, partition: str):
    """The round was scored on labelled evaluation images (warns while the evaluation set has no label: the
    metrics say 'not evaluated')"""
    from al_core.loop.holdout import eval_set_state

    value = store.get_asset_output("eval_metrics", partition)
    ev = eval_set_state(store, cfg)
    n = int(value.get("n_eval") or 0)
    status = value.get("status") or ("not evaluated" if not n else f"evaluated on {n} image(s)")
    return (
        n > 0,
        status + (f"; {ev['todo']}" if ev["todo"] and not n else ""),
        {
            "eval_images": dg.MetadataValue.text(str(n)),
            "eval_set_labelled": dg.MetadataValue.text(f"{ev['labelled']}/{ev['size']}"),
            "todo": dg.MetadataValue.text(ev["todo"] or "-"),
        },
    )


@_warning_check(eval_metrics)
def labelling_still_changes_the_model(cfg, store, partition: str):
    """The stop rule (stabilising predictions): warns once the model's predictions on the stop set have stopped
    changing, with the projected gain and cost of the next batch"""
    from al_core.reporting.value_text import lines
    from al_core.value.summary import value_summary

    s = value_summary(store, cfg)
    st, text = s["stop"], lines(s)
    return (
        not st["stop"],
        ("consider stopping: " if st["stop"] else "go on: ") + st["reason"],
        {
            "kappa": dg.MetadataValue.text("–" if st["last_kappa"] is None else f"{st['last_kappa']:.4f}"),
            "threshold": dg.MetadataValue.text(f"{st['threshold']:g} for {st['window']} rounds"),
            "stable_rounds": dg.MetadataValue.text(str(st["stable_rounds"])),
            "fired_at_round": dg.MetadataValue.text("–" if st["fired_round"] is None else str(st["fired_round"])),
            "loop_stops_by_itself": dg.MetadataValue.text(str(st["obeyed"]).lower()),
            "next_batch": dg.MetadataValue.text(text["next_batch"]),
            "projection": dg.MetadataValue.text(text["projection"]),
        },
    )
