import os
import shutil
import subprocess
import sys

import dagster as dg
import numpy as np
import pytest

from tests.conftest import ROOT


def test_raw_images_then_embeddings_in_process(tmp_path, sample_root):
    from al_assets.checks import embeddings_cover_images, raw_images_statuses
    from al_assets.ingest import embeddings, raw_images
    from resources.backbone import BackboneResource
    from resources.project import ProjectResource
    from resources.store import StoreJsonIOManager, StoreResource

    root = tmp_path / "images"
    for cls in ("airplane", "frog"):
        (root / cls).mkdir(parents=True)
        for f in sorted((sample_root / cls).iterdir())[:15]:
            shutil.copy(f, root / cls / f.name)
    (root / "frog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    store = StoreResource(db_path=str(tmp_path / "w.duckdb"), vectors_dir=str(tmp_path / "vectors"), lock_timeout_s=5)
    resources = {
        "store": store,
        "store_io_manager": StoreJsonIOManager(store=store),
        "backbone": BackboneResource(image_size=64, batch_size=16),
        "project": ProjectResource(),
    }
    run_config = {"ops": {"raw_images": {"config": {"image_root": str(root)}}}}
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [raw_images, embeddings, raw_images_statuses, embeddings_cover_images],
        resources=resources,
        run_config=run_config,
        instance=instance,
    )
    assert result.success
    mats = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("embeddings")}
    assert mats["embeddings"]["embedded_now"].value == 30
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    s = store.get()
    out = s.get_asset_output("embeddings", "")
    assert out["n_embedded"] == 30 and out["dim"] == 1280 and out["n_failed"] == 0
    # the value is one typed record (al_core.ingest.pipeline.EmbeddingsSummary) stored as its dict
    from al_core.ingest.pipeline import EmbeddingsSummary

    summary = EmbeddingsSummary.from_dict(out)
    assert summary.as_dict() == out and summary.backbone == "efficientnet_lite0" and summary.committed_from_shards == 0
    assert summary.sharded is None and summary.source == str(root)
    with pytest.raises(ValueError, match="unknown keys"):
        EmbeddingsSummary.from_dict({**out, "n_vectors": 30})
    with pytest.raises(ValueError, match=r"missing keys \['config_id'\]"):
        EmbeddingsSummary.from_dict({k: v for k, v in out.items() if k != "config_id"})
    assert s.fetch("SELECT count(*) FROM image_paths WHERE status = 'corrupt'")[0][0] == 1
    emb = s.load_embeddings(out["config_id"])
    assert emb.features.shape == (30, 1280) and np.isfinite(emb.features).all()
    # incremental: a second materialisation embeds nothing new
    again = dg.materialize([raw_images, embeddings], resources=resources, run_config=run_config, instance=instance)
    assert again.success
    out2 = s.get_asset_output("embeddings", "")
    assert out2["n_embedded"] == 0 and out2["n_skipped"] == 30 and out2["n_total"] == 30


def test_code_location_validates_and_loads_without_heavy_imports():
    env = dict(os.environ, DAGSTER_HOME=str(ROOT / "data" / "dagster_home"))
    os.makedirs(env["DAGSTER_HOME"], exist_ok=True)
    bin_dir = os.path.dirname(sys.executable)
    r = subprocess.run(
        [os.path.join(bin_dir, "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    code = (
        "import sys, al_assets.definitions as d; d.defs.resolve_asset_graph(); "
        "heavy = [m for m in ('torch', 'timm', 'open_clip', 'faiss', 'sklearn') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"heavy modules imported at code-location load: {r.stdout}"


def test_al_core_never_imports_dagster():
    import pkgutil

    import al_core

    # prefix="al_core." makes walk_packages descend into every sub-package (with prefix="" it silently
    # listed only the top level)
    mods = [m.name for m in pkgutil.walk_packages(al_core.__path__, prefix="al_core.")]
    assert {"al_core.learn.strategies.dropquery", "al_core.bench.select", "al_core.catalogue.store"} <= set(mods)
    code = f"import importlib, sys\nfor m in {mods!r}:\n    importlib.import_module(m)\nprint('dagster' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_broken_project_file_fails_the_code_location_with_one_line(tmp_path):
    """No silent defaults: the code location does not load, and the message names the file and the key."""
    bad = tmp_path / "al.yaml"
    bad.write_text("selection:\n  query_strategy: dropqeury\n")
    env = {**os.environ, "AL_CONFIG": str(bad)}
    r = subprocess.run(
        [sys.executable, "-c", "import al_assets.definitions"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last == (
        f"al_core.config.validate.ConfigError: {bad}: selection.query_strategy: unknown value "
        "'dropqeury'; did you mean 'dropquery'? (known: "
        + ", ".join(__import__("al_core.learn.strategy_names", fromlist=["x"]).strategy_names())
        + ")"
    ), last


def test_schedule_cron_comes_from_the_project_file(tmp_path):
    from al_assets.definitions import build_defs
    from al_core.config import from_dict

    on = build_defs(from_dict({"schedule": {"retrain_cron": "15 2 * * *"}}, base_dir=tmp_path))
    off = build_defs(from_dict({}, base_dir=tmp_path))
    s_on, s_off = on.resolve_schedule_def("retrain_schedule"), off.resolve_schedule_def("retrain_schedule")
    assert s_on.cron_schedule == "15 2 * * *" and s_on.default_status == dg.DefaultScheduleStatus.RUNNING
    assert s_off.default_status == dg.DefaultScheduleStatus.STOPPED


def test_the_local_ingest_does_not_depend_on_the_scale_out_assets(tmp_path):
    """Launching ingest_job must not bring a never-materialised scale-out asset in as an upstream."""
    from al_assets.definitions import build_defs
    from al_core.config import from_dict

    defs = build_defs(from_dict({}, base_dir=tmp_path))
    graph = defs.resolve_asset_graph()
    ingest_keys = {k for k in graph.get_all_asset_keys() if graph.get(k).group_name == "ingest"}
    upstream = set().union(*(graph.get(k).parent_keys for k in ingest_keys))
    assert upstream <= ingest_keys, upstream - ingest_keys
    assert dg.AssetKey("embedding_shards") in graph.get_all_asset_keys()  # still there, in its own group
    assert graph.get(dg.AssetKey("embedding_shards")).group_name == "scale_out"
