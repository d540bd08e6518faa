"""The round's fixed cost: each plot drawn once, where it is shown, and the next batch proposed before
the evaluation draws its plots."""

import pytest

from tests.test_report import add_rounds, make_project


def test_metadata_images_draw_only_the_pictures_asked_for(tmp_path, monkeypatch):
    import al_core.reporting.report as report

    cfg, store = make_project(tmp_path)
    add_rounds(store)
    drawn = []
    for name in ("learning_curve_png", "confusion_png", "gallery_png"):
        original = getattr(report, name)
        monkeypatch.setattr(report, name, lambda *a, _f=original, _n=name, **kw: drawn.append(_n) or _f(*a, **kw))
    assert set(report.metadata_images(store, cfg, ("proposed_images",))) == {"proposed_images"}
    assert drawn == ["gallery_png"]
    drawn.clear()
    both = report.metadata_images(store, cfg, ("learning_curve", "confusion_matrix"))
    assert set(both) == {"learning_curve", "confusion_matrix"} and sorted(drawn) == [
        "confusion_png",
        "learning_curve_png",
    ]
    with pytest.raises(ValueError, match="unknown metadata images"):
        report.metadata_images(store, cfg, ("learning_curves",))


def test_the_round_job_proposes_before_it_evaluates(tmp_path):
    """query_set and eval_metrics both wait only for the probe; query_set has the higher step
    priority, so Dagster's executors run it first."""
    from dagster._core.storage.tags import PRIORITY_TAG

    from al_assets.loop import eval_metrics, query_set

    def priority(asset) -> int:
        return int(asset.op.tags.get(PRIORITY_TAG, 0))

    assert priority(query_set) > priority(eval_metrics)
    assert {k.to_user_string() for k in eval_metrics.dependency_keys} & {"query_set"} == set()
