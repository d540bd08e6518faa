"""Embedding throughput of embed_shards_dask_job with 1 and with 2 Dask workers (run by
`al bench scale embed`).

The same images (a copy of the sample images) are scanned into a fresh store
for each run; a Dask scheduler and W workers start on 127.0.0.1 (each worker
its own process, one Dask thread, OMP_NUM_THREADS = cores / W so that W
workers together use the machine's cores, preloaded with
al_assets.tools.dask_preload); then one run of embed_shards_dask_job (plan, 16 shard
steps, commit) is timed from the launching side. For reference, the same
images are embedded in this process by al_core.ingest.pipeline.embed_missing (what the
unpartitioned `embeddings` asset does).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from al_assets.tools.dask_local import ROOT, LocalDask
from al_core.bench import emit
from al_core.catalogue import open_store

SAMPLES = ROOT / "examples" / "cifar10-2k"


def _copy_images(dest: Path, n: int) -> int:
    classes = sorted(p for p in SAMPLES.iterdir() if p.is_dir())
    files = [f for c in classes for f in sorted(c.iterdir())]
    per = -(-n // len(classes))
    chosen = [f for c in classes for f in sorted(c.iterdir())[:per]][:n] if n < len(files) else files
    for f in chosen:
        (dest / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest / f.parent.name / f.name)
    return len(chosen)


def _project(work: Path, images: Path, image_size: int, batch: int) -> Path:
    conf = {
        "images": {"root": str(images)},
        "backbone": {"image_size": image_size, "batch_size": batch},
        "paths": {"data_dir": str(work / "data"), "inbox": str(work / "inbox"), "outbox": str(work / "outbox")},
    }
    p = work / "al.yaml"
    work.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(conf))
    return p


def run_dask(work: Path, images: Path, n_workers: int, image_size: int, batch: int) -> dict:
    import dagster as dg

    from al_assets.definitions import reconstructable_dask_job
    from al_core.config import load_config
    from al_core.ingest.scan import scan

    cfg_path = _project(work, images, image_size, batch)
    cfg = load_config(cfg_path)
    store = open_store(cfg)
    scan(store, root=images)
    home = work / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 2
    threads = max(1, cores // n_workers)
    env = dict(
        os.environ,
        AL_CONFIG=str(cfg_path),
        DAGSTER_HOME=str(home),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        PYTHONPATH=str(ROOT),
    )
    dask = LocalDask(work, env)
    old_env = {k: os.environ.get(k) for k in ("AL_CONFIG", "AL_DASK_SCHEDULER")}
    os.environ.update(AL_CONFIG=str(cfg_path), AL_DASK_SCHEDULER=dask.address)
    try:
        with dask:
            dask.scheduler()
            t0 = time.monotonic()
            for i in range(n_workers):
                dask.worker(f"w{i + 1}", writer=i == 0)
            import distributed

            with distributed.Client(dask.address, timeout=30) as client:
                client.wait_for_workers(n_workers, timeout=300)
            startup = time.monotonic() - t0
            instance = dg.DagsterInstance.local_temp(str(home))
            t0 = time.monotonic()
            result = dg.execute_job(
                dg.reconstructable(reconstructable_dask_job), instance=instance, raise_on_error=False
            )
            wall = time.monotonic() - t0
            if not result.success:
                raise RuntimeError(f"run failed: {[e.message for e in result.all_events if e.is_failure][:3]}")
            steps = {}
            for rec in instance.all_logs(result.run_id):
                ev = rec.dagster_event
                if ev is not None and ev.event_type_value in ("STEP_START", "STEP_SUCCESS") and ev.step_key:
                    steps.setdefault(ev.step_key, {})[ev.event_type_value] = rec.timestamp
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    value = store.get_asset_output("embeddings", "")
    per_worker: dict[str, int] = {}
    for info in value["sharded"]["shards"].values():
        w = info["worker"].get("dask_worker", "?")
        per_worker[w] = per_worker.get(w, 0) + info["n_embedded"]
    shard_steps = [
        v["STEP_SUCCESS"] - v["STEP_START"]
        for k, v in steps.items()
        if k.startswith("embed_shard_") and "STEP_SUCCESS" in v and "STEP_START" in v
    ]
    return {
        "workers": n_workers,
        "threads_per_worker": threads,
        "images": value["n_embedded"],
        "worker_startup_s": startup,
        "run_wall_s": wall,
        "images_per_s": value["n_embedded"] / wall,
        "embed_seconds_in_shards": value["sharded"]["worker_seconds"],
        "shard_step_seconds_total": sum(shard_steps),
        "images_per_worker": per_worker,
    }


def run_in_process(work: Path, images: Path, image_size: int, batch: int) -> dict:
    from al_core.config import load_config
    from al_core.ingest.pipeline import embed_missing
    from al_core.ingest.scan import scan
    from resources.backbone import BackboneResource

    cfg = load_config(_project(work, images, image_size, batch))
    store = open_store(cfg)
    scan(store, root=images)
    t0 = time.monotonic()
    bb = BackboneResource(image_size=image_size, batch_size=batch).load()
    load_s = time.monotonic() - t0
    r = embed_missing(store, bb, batch_size=batch)
    wall = time.monotonic() - t0
    import torch

    return {
        "threads": torch.get_num_threads(),
        "images": r.n_embedded,
        "wall_s": wall,
        "backbone_load_s": load_s,
        "images_per_s": r.n_embedded / wall,
        "images_per_s_embedding_only": r.images_per_s,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="al bench scale embed", description=__doc__)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-baseline", action="store_true", help="skip the in-process embed_missing reference")
    ap.add_argument("--json", help="also write the JSON result here")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="al-bench-scale-embed-"))
    try:
        images = tmp / "images"
        n = _copy_images(images, args.images)
        result = {
            "images": n,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
            "dask": [],
        }
        if not args.no_baseline:
            result["in_process"] = run_in_process(tmp / "inproc", images, args.image_size, args.batch_size)
            print(json.dumps(result["in_process"]), file=sys.stderr, flush=True)
        for w in args.workers:
            r = run_dask(tmp / f"dask{w}", images, w, args.image_size, args.batch_size)
            result["dask"].append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
        result["loadavg_end"] = os.getloadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
