"""Scale-out: sharded embedding (al_core.ingest.shards), fsspec vector locations, and
embed_shards_dask_job on a Dask scheduler with two workers, each a separate
process on 127.0.0.1 (docs/scale-out.md)."""

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from al_core.catalogue import open_store
from tests.conftest import CLASSES, ROOT

IMAGE_SIZE = 32
BATCH = 16


def _ids(n, salt="x"):
    return [hashlib.sha256(f"{salt}{i}".encode()).hexdigest() for i in range(n)]


def _copy_per_shard(sample_root: Path, dest: Path, per_shard: int) -> Path:
    """``per_shard`` images of every shard (the first by image id), class folders kept."""
    from al_core.ingest.shards import all_shards

    files = sorted(
        (hashlib.sha256(f.read_bytes()).hexdigest(), f)
        for c in CLASSES
        for f in sorted((sample_root / c).iterdir())[:40]
    )
    for h in all_shards():
        chosen = [f for iid, f in files if iid.startswith(h)][:per_shard]
        assert len(chosen) == per_shard
        for f in chosen:
            (dest / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest / f.parent.name / f.name)
    return dest


def _copy_images(sample_root: Path, dest: Path, per_class: int) -> Path:
    for cls in CLASSES:
        (dest / cls).mkdir(parents=True, exist_ok=True)
        for f in sorted((sample_root / cls).iterdir())[:per_class]:
            shutil.copy(f, dest / cls / f.name)
    return dest


# ---------------------------------------------------------------------------- locations
@pytest.mark.parametrize("kind", ["memory", "file"])
def test_url_vectors_location_roundtrip(tmp_path, kind):
    from al_core.catalogue.store import Store

    url = f"memory://al-test-{tmp_path.name}/vectors" if kind == "memory" else f"file://{tmp_path}/vectors"
    s = Store(tmp_path / "w.duckdb", url, lock_timeout_s=2)
    s.register_embedding_config("c", {"backbone": "x", "dim": 6})
    ids = _ids(40)
    x = np.random.default_rng(1).standard_normal((40, 6)).astype(np.float32)
    parts = s.write_embeddings("c", ids, x)
    assert all(s.vectors_loc.exists(p["rel_path"]) for p in parts)
    if kind == "file":
        assert all((tmp_path / "vectors" / p["rel_path"]).is_file() for p in parts)
    e = s.load_embeddings("c")
    order = np.argsort(ids)
    assert list(e.image_ids) == sorted(ids) and np.array_equal(e.features, x[order])
    # SQL over the parts: DuckDB reads them through the registered fsspec filesystem (no httpfs)
    n, dim = s.fetch("SELECT count(*), min(dim) FROM embeddings WHERE config_id = 'c'")[0]
    assert (n, dim) == (40, 6)
    blob = s.fetch("SELECT vector FROM embeddings WHERE image_id = ?", [ids[3]])[0][0]
    assert np.array_equal(np.frombuffer(blob, "<f4"), x[3])


# ---------------------------------------------------------------------------- commit (single writer)
def test_commit_pending_dedups_and_is_idempotent(tmp_path):
    from al_core.catalogue.parts import shard_of, write_part
    from al_core.catalogue.store import Store
    from al_core.ingest.commit import commit_pending
    from al_core.ingest.shards import manifest_names, write_manifest, written_ids

    s = Store(tmp_path / "w.duckdb", lock_timeout_s=2)
    loc = s.vectors_loc
    cfg = {"backbone": "x", "dim": 4, "preprocessing": {}}
    ids = [i for i in _ids(200) if shard_of(i) == "a"][:9]
    vec = {i: np.full(4, k, np.float32) for k, i in enumerate(ids)}

    def put(sub):
        rec = write_part(loc, "c", "a", sub, np.stack([vec[i] for i in sub]))
        write_manifest(loc, rec, cfg)
        return rec

    put(ids[:4])  # a worker's part
    time.sleep(0.01)
    put(ids[:4])  # the same shard run twice (a duplicate part)
    time.sleep(0.01)
    put(ids[2:7])  # overlaps: rewritten without ids[2:4]
    assert written_ids(loc, "c", "a") == set(ids[:7])
    # written parts are invisible until committed, and the garbage collector leaves them alone
    assert s.gc_orphan_parts(min_age_s=0) == []
    out = commit_pending(s, "c", run_id="r1")
    assert out["parts_committed"] == 2 and out["parts_rewritten"] == 1 and out["parts_dropped"] == 1
    assert out["rows_committed"] == 7 and out["rows_duplicate"] == 4 + 2
    e = s.load_embeddings("c")
    assert sorted(e.image_ids) == sorted(ids[:7])
    for iid, row in zip(e.image_ids, e.features):
        assert np.array_equal(row, vec[iid])
    # idempotent: nothing left to commit; manifests of committed parts stay (re-runs skip their ids)
    assert commit_pending(s, "c")["parts_committed"] == 0
    assert len(manifest_names(loc, "c")) == 2
    # a late duplicate of committed ids is dropped, a new id is committed
    put([ids[0], ids[8]])
    out = commit_pending(s, "c")
    assert out["parts_rewritten"] == 1 and out["rows_committed"] == 1
    assert s.fetch("SELECT count(*), count(DISTINCT image_id) FROM embedding_index")[0] == (8, 8)
    assert s.fetch("SELECT count(*) FROM embedding_configs WHERE config_id = 'c'")[0][0] == 1


def test_embed_shard_rerun_writes_only_what_is_missing(tmp_path, sample_root):
    from al_core.ingest.commit import commit_pending
    from al_core.ingest.scan import scan
    from al_core.ingest.shards import embed_shard, plan_shards
    from al_core.models.backbones import load_backbone

    root = _copy_images(sample_root, tmp_path / "images", 3)
    from al_core.catalogue.store import Store

    s = Store(tmp_path / "w.duckdb", f"file://{tmp_path}/vectors", lock_timeout_s=2)
    scan(s, root=root)
    bb = load_backbone("efficientnet_lite0", image_size=IMAGE_SIZE)
    plans = plan_shards(s, bb.config_id)
    shard, items = max(plans.items(), key=lambda kv: len(kv[1]))
    assert len(items) >= 3 and all(i.startswith(shard) for i, _ in items)
    # "crash" after the first part: only the first images were written
    first = embed_shard(s.vectors_loc, bb, shard, items[:2], batch_size=1, flush_rows=1)
    assert first["n_embedded"] == 2 and len(first["parts"]) == 2
    again = embed_shard(s.vectors_loc, bb, shard, items, batch_size=BATCH)
    assert again["n_already_written"] == 2 and again["n_embedded"] == len(items) - 2
    assert embed_shard(s.vectors_loc, bb, shard, items)["n_embedded"] == 0
    # the plan leaves out what is written (pending) as well as what is committed
    assert plan_shards(s, bb.config_id, shards=[shard])[shard] == []
    out = commit_pending(s, bb.config_id)
    assert out["rows_committed"] == len(items) and out["rows_duplicate"] == 0
    with pytest.raises(ValueError, match="other shards"):
        other = next(h for h, v in plans.items() if v and h != shard)
        embed_shard(s.vectors_loc, bb, shard, plans[other])


def test_partition_asset_then_embeddings_commits(tmp_path, sample_root):
    """Materialising shard partitions writes parts only; `embeddings` commits them and embeds the rest."""
    import dagster as dg

    from al_assets.ingest import embeddings, raw_images
    from al_assets.shards import embedding_shards
    from resources.backbone import BackboneResource
    from resources.project import ProjectResource
    from resources.store import StoreJsonIOManager, StoreResource

    root = _copy_images(sample_root, tmp_path / "images", 2)
    store = StoreResource(db_path=str(tmp_path / "w.duckdb"), vectors_dir=str(tmp_path / "vectors"), lock_timeout_s=5)
    resources = {
        "store": store,
        "store_io_manager": StoreJsonIOManager(store=store),
        "backbone": BackboneResource(image_size=IMAGE_SIZE, batch_size=BATCH),
        "project": ProjectResource(),
    }
    instance = dg.DagsterInstance.ephemeral()
    run_config = {"ops": {"raw_images": {"config": {"image_root": str(root)}}}}
    assert dg.materialize([raw_images], resources=resources, run_config=run_config, instance=instance).success
    s = store.get()
    counts = dict(s.fetch("SELECT left(image_id, 1), count(*) FROM images GROUP BY 1"))
    shards = sorted(counts, key=lambda h: -counts[h])[:2]
    for h in shards:
        r = dg.materialize(
            [embedding_shards], partition_key=h, resources=resources, instance=instance, selection=[embedding_shards]
        )
        assert r.success
        md = r.asset_materializations_for_node("embedding_shards")[0].metadata
        assert md["embedded_now"].value == counts[h]
    assert s.fetch("SELECT count(*) FROM embedding_index")[0][0] == 0  # workers never write the catalogue
    r = dg.materialize([raw_images, embeddings], resources=resources, instance=instance, selection=[embeddings])
    assert r.success
    out = s.get_asset_output("embeddings", "")
    n_ok = sum(counts.values())
    assert out["committed_from_shards"] == counts[shards[0]] + counts[shards[1]]
    assert out["n_embedded"] == n_ok - out["committed_from_shards"] and out["n_total"] == n_ok


# ---------------------------------------------------------------------------- Dask: scheduler + two workers
def _tree(pid: int):
    import psutil

    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _listening(procs) -> list[tuple[int, str, int]]:
    import psutil

    out = []
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    out.append((p.pid, c.laddr.ip, c.laddr.port))
        except psutil.NoSuchProcess:
            continue
    return out


@pytest.mark.slow
def test_embed_shards_on_dask_with_two_workers(tmp_path, sample_root, monkeypatch):
    import dagster as dg
    import distributed

    from al_assets.definitions import reconstructable_dask_job
    from al_assets.ingest import embeddings, raw_images
    from al_assets.tools.dask_local import LocalDask
    from al_core.config import load_config
    from al_core.ingest.pipeline import EmbeddingsSummary
    from al_core.ingest.scan import scan
    from resources.backbone import BackboneResource
    from resources.project import ProjectResource
    from resources.store import StoreJsonIOManager, StoreResource

    t_start = time.monotonic()
    # 64 images, 4 per shard, batches of 4: a shard's batch is then exactly a batch of the
    # single-process run (which goes through the images in id order), so the vectors must be
    # bit-identical. (With other batches, oneDNN's kernels differ by up to ~2e-5: docs/scale-out.md.)
    root = _copy_per_shard(sample_root, tmp_path / "images", 4)
    batch = 4
    conf = {
        "images": {"root": str(root)},
        "backbone": {"image_size": IMAGE_SIZE, "batch_size": batch},
        "evaluation": {"holdout": 10, "labels_from_ground_truth": True},
        "selection": {"budget_per_round": 5, "total_budget": 20},
        "paths": {
            "data_dir": str(tmp_path / "data"),
            "inbox": str(tmp_path / "inbox"),
            "outbox": str(tmp_path / "outbox"),
        },
        # the sharded store's parts go through fsspec (a file:// URL here; s3://... on a cluster)
        "store": {"vectors_url": f"file://{tmp_path}/data/vectors", "lock_timeout_s": 20},
    }
    cfg_path = tmp_path / "al.yaml"
    cfg_path.write_text(yaml.safe_dump(conf))
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    env = dict(
        os.environ,
        AL_CONFIG=str(cfg_path),
        DAGSTER_HOME=str(dagster_home),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONPATH=str(ROOT),
        DASK_DISTRIBUTED__WORKER__DAEMON="False",
    )
    dask = LocalDask(tmp_path, env)  # each process in its own group: stopped as a group at the end
    monkeypatch.setenv("AL_CONFIG", str(cfg_path))
    monkeypatch.setenv("AL_DASK_SCHEDULER", dask.address)

    cfg = load_config(cfg_path)
    store = open_store(cfg)
    scan(store, root=root)  # the catalogue's single writer (this process), before any worker starts
    n_ok = store.fetch("SELECT count(*) FROM images")[0][0]
    assert n_ok == 64

    with dask:
        sched = dask.scheduler()
        # w1 sits beside the DuckDB file: only it runs the plan and commit steps (CATALOGUE resource)
        w1 = dask.worker("w1", writer=True)
        w2 = dask.worker("w2")
        with distributed.Client(dask.address, timeout=30) as client:
            client.wait_for_workers(2, timeout=90)
            workers = client.scheduler_info()["workers"]
        names = {w["name"]: addr for addr, w in workers.items()}
        assert set(names) == {"w1", "w2"}

        instance = dg.DagsterInstance.local_temp(str(dagster_home))
        t0 = time.monotonic()
        result = dg.execute_job(dg.reconstructable(reconstructable_dask_job), instance=instance, raise_on_error=False)
        dask_seconds = time.monotonic() - t0
        if not result.success:
            tails = {n: dask.log_tail(n) for n in ("scheduler", "w1", "w2")}
            failures = [e.message for e in result.all_events if e.is_failure]
            pytest.fail(f"dask run failed: {failures}\n{json.dumps(tails, indent=1)}")

        # everything the test started listens on 127.0.0.1 only
        started = [p for proc in dask.procs for p in _tree(proc.pid)]
        listening = _listening(started)
        assert listening, "the scheduler and workers should be listening"
        assert all(ip == "127.0.0.1" for _, ip, _ in listening), listening
        assert {pid for pid, _, _ in listening} >= {sched.pid, w1.pid, w2.pid}
    assert all(p.poll() is not None for p in dask.procs)

    value = store.get_asset_output("embeddings", "")
    sharded = value["sharded"]
    by_worker: dict[str, list[str]] = {}
    for h, info in sharded["shards"].items():
        by_worker.setdefault(info["worker"]["dask_worker"], []).append(h)
    # both workers embedded shards, different ones; the plan and the commit ran on the CATALOGUE worker
    assert set(by_worker) == {names["w1"], names["w2"]}, by_worker
    assert not set(by_worker[names["w1"]]) & set(by_worker[names["w2"]])
    assert {info["worker"]["pid"] for info in sharded["shards"].values()} == {w1.pid, w2.pid}
    assert sharded["planned_by"]["dask_worker"] == names["w1"] == sharded["committed_by"]["dask_worker"]
    assert value["n_embedded"] == 64 and value["n_total"] == 64 and value["n_failed"] == 0
    assert EmbeddingsSummary.from_dict(value).as_dict() == value  # the same typed record as an in-process run
    assert sharded["commit"]["rows_duplicate"] == 0
    # every shard step recorded a materialisation of its embedding_shards partition
    from al_assets.shards import SHARD_KEYS

    mats = instance.fetch_materializations(dg.AssetKey("embedding_shards"), limit=100).records
    assert sorted(m.partition_key for m in mats) == SHARD_KEYS

    # the same images embedded by the single-process `embeddings` asset into another store, on one
    # thread as the workers (OMP_NUM_THREADS=1): a different thread count changes the sums' order
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ref = StoreResource(db_path=str(tmp_path / "ref" / "w.duckdb"), vectors_dir=str(tmp_path / "ref" / "vectors"))
    resources = {
        "store": ref,
        "store_io_manager": StoreJsonIOManager(store=ref),
        "backbone": BackboneResource(image_size=IMAGE_SIZE, batch_size=batch),
        "project": ProjectResource(),
    }
    try:
        r = dg.materialize(
            [raw_images, embeddings],
            resources=resources,
            instance=dg.DagsterInstance.ephemeral(),
            run_config={"ops": {"raw_images": {"config": {"image_root": str(root)}}}},
        )
        assert r.success
    finally:
        torch.set_num_threads(threads)
    ref_value = ref.get().get_asset_output("embeddings", "")
    assert ref_value["config_id"] == value["config_id"]
    a = store.load_embeddings(value["config_id"])
    b = ref.get().load_embeddings(value["config_id"])
    assert list(a.image_ids) == list(b.image_ids)
    diff = np.abs(a.features - b.features).max(axis=1)
    assert float(diff.max()) <= 1e-5
    identical = int((diff == 0).sum())
    assert identical == 64  # same batches, same thread count: bit-identical
    print(
        f"\ndask run {dask_seconds:.1f} s; 64 vectors, max |diff| {float(diff.max()):.2e}, "
        f"{identical}/64 bit-identical; shards per worker "
        f"{ {k[-5:]: len(v) for k, v in by_worker.items()} }; test {time.monotonic() - t_start:.1f} s"
    )

    # the labelling loop reads the sharded catalogue through the same `embeddings` contract
    from al_assets.definitions import build_defs

    defs = build_defs(cfg)
    loop_instance = dg.DagsterInstance.ephemeral()
    loop_instance.add_dynamic_partitions("rounds", ["0"])
    seed = defs.resolve_job_def("seed_job").execute_in_process(instance=loop_instance, partition_key="0")
    assert seed.success
    assert store.fetch("SELECT count(*) FROM queries WHERE round = 0")[0][0] == 5


# ---------------------------------------------------------------------------- selection beyond one matrix
def test_sharded_selection_matches_the_full_pool(tmp_path):
    from al_core.bench import _scale_select as scale_select
    from al_core.catalogue.store import Store
    from al_core.learn.probe import Probe
    from al_core.learn.strategies import get_strategy

    rng = np.random.default_rng(0)
    n, d, k = 3000, 16, 4
    ids = _ids(n, "sel")
    y = rng.integers(0, k, n)
    x = (rng.standard_normal((k, d)) * 1.5)[y] + rng.standard_normal((n, d))
    s = Store(tmp_path / "w.duckdb", lock_timeout_s=2)
    s.register_embedding_config("c", {"backbone": "x", "dim": d})
    for a in range(0, n, 1000):  # several parts per shard
        s.write_embeddings("c", ids[a : a + 1000], x[a : a + 1000].astype(np.float32))
    e = s.load_embeddings("c")
    row = {iid: i for i, iid in enumerate(e.image_ids)}
    ys = y[[ids.index(i) for i in e.image_ids]]
    labeled = np.sort(rng.choice(n, 60, replace=False))
    probe = Probe(k, seed=0).fit(e.features[labeled], ys[labeled])
    excl = set(e.image_ids[labeled])
    full = get_strategy("margin").select(e.features, labeled, ys[labeled], 25, n_classes=k, seed=0, probe=probe)
    got, _ = scale_select.sharded_margin(s, "c", probe, 25, exclude=excl)
    assert set(got) == set(e.image_ids[full.indices])
    # a set of shards is a sub-pool, read without the others
    sub_ids, sub_x = scale_select.load_shards(s, "c", ["3", "a"])
    assert set(i[0] for i in sub_ids) == {"3", "a"} and list(sub_ids) == sorted(sub_ids)
    assert np.array_equal(sub_x, e.features[[row[i] for i in sub_ids]])
    r = scale_select.sharded_dropquery(s, "c", probe, 20, seed=0, exclude=excl)
    assert len(set(r["ids"])) == 20 and set(r["ids"]) <= set(r["candidate_ids"]) and not set(r["ids"]) & excl
