"""What the labels bought, in Dagster: the metadata of ``eval_metrics`` (only the metrics are numbers, the learning
curve small enough to show inline, the manager's numbers as text), the stop rule's warning check, and the budget
left on ``query_set``."""

import dagster as dg

from al_core.catalogue import open_store
from al_core.config import load_config
from tests.loop_helpers import answer_batch, execute, make_project, run_requests


def _requests(result):
    return [] if isinstance(result, dg.SkipReason) else list(result.run_requests or [])


def test_round_run_carries_the_managers_numbers_and_the_stop_check(tmp_path):
    from al_assets.definitions import build_defs
    from al_core.reporting.value_metadata import INLINE_MD_MAX_CHARS

    cfg = load_config(make_project(tmp_path, total=12))
    defs = build_defs(cfg)
    instance = dg.DagsterInstance.ephemeral()
    store = open_store(cfg)
    assert defs.resolve_job_def("ingest_job").execute_in_process(instance=instance).success
    assert execute(defs, instance, _requests(run_requests(defs, instance))[0]).success  # the seed pool
    answer_batch(cfg, store, 0)
    (req,) = _requests(run_requests(defs, instance))
    res = execute(defs, instance, req)
    assert res.success

    mat = next(m for m in res.get_asset_materialization_events() if m.asset_key == dg.AssetKey("eval_metrics"))
    meta = mat.materialization.metadata
    numeric = {k for k, v in meta.items() if isinstance(v, dg.FloatMetadataValue | dg.IntMetadataValue)}
    assert numeric == {"accuracy", "balanced_accuracy", "macro_f1"}  # what the UI plots over the rounds
    assert meta["round"] == dg.MetadataValue.text("1") and isinstance(meta["eval_images"], dg.TextMetadataValue)
    curve = meta["learning_curve"].value
    assert curve.startswith("![learning curve](data:image/svg+xml;base64,") and len(curve) <= INLINE_MD_MAX_CHARS
    assert meta["learning_curve_detail"].value.startswith("![learning curve against labels and cost](data:image/png")
    assert meta["cost_so_far"].value == "no prices set (cost: in the project file)"
    assert meta["projection"].value.startswith("no target set")
    # 4 delivered; batch 1 (4 images) waits when query_set ran before eval_metrics (the order is free)
    assert meta["budget"].value in ("4 of 12 labels left", "8 of 12 labels left")

    checks = {c.check_name: c for c in res.get_asset_check_evaluations()}
    stop = checks["labelling_still_changes_the_model"]
    assert stop.passed and stop.severity == dg.AssetCheckSeverity.WARN
    assert "no two successive rounds" in stop.description
    assert checks["query_set_is_valid"].metadata["budget_left"] == dg.MetadataValue.int(4)
    assert store.fetch("SELECT count(*) FROM probe_intervals") == [(3,)]
