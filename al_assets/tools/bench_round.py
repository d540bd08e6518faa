"""Round latency through the real Dagster path (run by `al bench round`): label file in, next outbox CSV out.

A synthetic pool of N images (clustered float32 features of dimension D, K
classes) is put in a fresh project. Its image root is a real folder holding K
tiny PNG files (one per class folder ``c0`` ... ``cK-1``), scanned for real, so
the scan records the root's fingerprint and the inbox sensor's check before a
round (al_core.ingest.freshness) runs on it; the other N - K images are rows
under that root with vectors and ground truth but no file (nothing opens them:
a round reads vectors). Then the seed pool is proposed, a label file answering
it lands in the inbox, and the clock runs to the rename of the next CSV in the
outbox.

``--via daemon`` (default; al_assets.tools.bench_round_daemon): a real `dagster
dev` on 127.0.0.1 with the project's own workspace.yaml and dagster.yaml; the
sensor proposes the seed batch by itself, and the time is from the label file
landing to the outbox rename, split from the records of the instance the daemon
used (sensor tick, queue, launch, run process start, each step).

``--via process``: the sensor function is called and the round job executed in
this process (the in-process executor): the work alone, split from the run's
step events, with a fresh interpreter timing what a run process would import.

The temporary project is removed at the end (``--keep`` keeps it).
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from al_core.catalogue import open_store

_STEPS = ("round_labels", "probe", "label_quality", "eval_metrics", "query_set")  # the rest: checks
CHUNK = 50_000  # vectors per store write: 50000 x 1280 x 4 B = 256 MB
HOLDOUT_MAX = 500  # evaluation images: the smaller of this and a tenth of the pool
TINY_PX = 8  # the real files of the image root: 8 x 8 PNGs, one per class (a few hundred bytes each)


def write_project(tmp: Path, args: argparse.Namespace, sensor: dict | None = None):
    """The temporary project file (``tmp/al.yaml``) and its config: inbox, outbox and data under ``tmp``."""
    from al_core.config import load_config

    conf = {
        "images": {"root": str(tmp / "images")},
        "classes": [f"c{i}" for i in range(args.classes)],
        "selection": {
            "seed_strategy": "centroid",
            "query_strategy": args.strategy,
            "budget_per_round": args.budget,
            "total_budget": args.budget * 100,
        },
        "evaluation": {"holdout": min(HOLDOUT_MAX, args.n // 10), "labels_from_ground_truth": True},
        "paths": {"data_dir": str(tmp / "data"), "inbox": str(tmp / "inbox"), "outbox": str(tmp / "outbox")},
        "sensor": sensor or {},
    }
    (tmp / "al.yaml").write_text(yaml.safe_dump(conf))
    return load_config(tmp / "al.yaml")


def _tiny_root(root: Path, k: int) -> None:
    from PIL import Image

    for c in range(k):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        colour = ((37 * c) % 256, (91 * c) % 256, (151 * c + 7) % 256)
        Image.new("RGB", (TINY_PX, TINY_PX), colour).save(root / f"c{c}" / "tiny.png")


def make_store(cfg, n: int, d: int, k: int, seed: int) -> None:
    """The real tiny root scanned, then N - K synthetic image rows under it, vectors for all N, and the
    ``embeddings`` asset's value naming the synthetic config (what the round reads)."""
    from al_core.catalogue import images
    from al_core.catalogue.store import now
    from al_core.ingest.scan import scan

    root = Path(cfg.image_root)
    _tiny_root(root, k)
    store = open_store(cfg)
    report = scan(store, root=root)
    real = store.fetch("SELECT image_id, path FROM image_paths WHERE status = 'ok' ORDER BY path")
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)).astype(np.float32) * 2.0
    m = n - len(real)
    y = np.concatenate([[int(Path(p).parent.name[1:]) for _, p in real], rng.integers(0, k, m)])
    syn_ids = [hashlib.sha256(f"bench-{i}".encode()).hexdigest() for i in range(m)]
    syn_paths = [str(root / f"c{c}" / f"synthetic-{i:07d}.png") for i, c in enumerate(y[len(real) :])]
    columns = {
        "path": syn_paths,
        "image_id": syn_ids,
        "size_bytes": [1000] * m,
        "mtime_ns": [0] * m,
        "status": ["ok"] * m,
        "error": [None] * m,
        "width": [32] * m,
        "height": [32] * m,
        "format": ["PNG"] * m,
        "fs_path": [None] * m,
    }
    with store.transaction() as con:
        images.record_paths(con, columns, seen_at=now(), scan_id=report.scan_id, source=report.source)
        truth = [(i, p, f"c{c}") for i, p, c in zip(syn_ids, syn_paths, y[len(real) :], strict=True)]
        images.upsert_ground_truth(con, truth, "folder")
    ids = [i for i, _ in real] + syn_ids
    config = {"backbone": "synthetic", "dim": d, "preprocessing": {}, "dtype": "float32"}
    store.register_embedding_config("synthetic", config)
    for s in range(0, n, CHUNK):
        e = min(n, s + CHUNK)
        x = centers[y[s:e]] + rng.standard_normal((e - s, d), dtype=np.float32)
        store.write_embeddings("synthetic", ids[s:e], x)
    store.put_asset_output("embeddings", "", None, {"config_id": "synthetic", "backbone": "synthetic", "dim": d})


def answer_rows(cfg, round_: int) -> list[tuple[str, str]]:
    """(image_id, class) answering batch ``round_`` from the ground truth."""
    return open_store(cfg).fetch(
        "SELECT q.image_id, any_value(g.class_name) FROM queries q JOIN ground_truth g USING (image_id) "
        "WHERE q.round = ? GROUP BY 1",
        [round_],
    )


def label_csv(rows: list[tuple[str, str]]) -> str:
    return "image_id,label\n" + "".join(f"{i},{c}\n" for i, c in rows)


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="al bench round", description=__doc__)
    ap.add_argument("--via", choices=("daemon", "process"), default="daemon")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--budget", type=int, default=10)
    ap.add_argument("--strategy", default="dropquery")
    ap.add_argument("--interval-s", type=int, default=5, help="sensor.interval_s (daemon; project default 30)")
    ap.add_argument("--settle-s", type=float, help="sensor.settle_s (default: the project's, 2.0)")
    ap.add_argument("--timeout-s", type=float, default=900.0, help="daemon: give up waiting after this long")
    ap.add_argument("--json", help="also write the JSON result here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary project (default: removed at the end)")
    args = ap.parse_args(argv)
    if args.n <= args.classes * 20:
        ap.error(f"--n must be above 20 x --classes ({args.classes * 20})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="al-bench-round-"))
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM: clean up as for Ctrl-C
    try:
        if args.via == "daemon":
            from al_assets.tools.bench_round_daemon import bench_daemon

            res = bench_daemon(args, tmp)
        else:
            res = _bench_process(args, tmp)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if args.keep:
            print(f"project kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


# What a round run imports, timed in a fresh interpreter (a run under the daemon pays it in its own process),
# then a first probe fit and evaluation metrics there (their one-off warm-up)
FRESH_RUN_CODE = """
import time
t0 = time.perf_counter()
import al_assets.definitions, al_core.loop.train, al_core.loop.evaluation, al_core.loop.proposal
import al_core.learn.probe, al_core.learn.strategies, al_core.learn.metrics
t1 = time.perf_counter()
import numpy as np
x = np.random.default_rng(0).standard_normal((200, 64)).astype(np.float32)
p = al_core.learn.probe.Probe(10).fit(x, np.arange(200) % 10)
al_core.learn.metrics.classification_metrics(np.arange(200) % 10, p.predict(x), 10)
print(t1 - t0, time.perf_counter() - t1)
"""


def _fresh_run_process() -> dict:
    """Seconds a fresh interpreter spends importing what a round run needs, then on a first small fit."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", FRESH_RUN_CODE], capture_output=True, text=True, check=True)
    imports, first_fit = (float(v) for v in out.stdout.split())
    return {
        "interpreter_total": round(time.perf_counter() - t0, 3),
        "imports": round(imports, 3),
        "first_small_fit_and_metrics": round(first_fit, 3),
    }


def step_times(records) -> dict[str, dict]:
    """step key -> {"start", "end"} (epoch seconds) from a run's event log records."""
    steps: dict[str, dict] = {}
    for entry in records:
        ev = entry.dagster_event
        if ev is None or not ev.step_key:
            continue
        if ev.event_type_value == "STEP_START":
            steps.setdefault(ev.step_key, {})["start"] = entry.timestamp
        elif ev.event_type_value == "STEP_SUCCESS":
            steps.setdefault(ev.step_key, {})["end"] = entry.timestamp
    return steps


def _bench_process(args: argparse.Namespace, tmp: Path) -> dict:
    cfg = write_project(tmp, args, {"settle_s": 0.0})
    os.environ["AL_CONFIG"] = str(tmp / "al.yaml")  # the code location (and the fresh interpreter) loads this one

    import dagster as dg

    from al_assets.definitions import build_defs
    from al_core.loop.inbox import list_inbox
    from al_core.loop.outbox import batch_csv

    t = time.perf_counter()
    make_store(cfg, args.n, args.dim, args.classes, 0)
    print(f"synthetic store of {args.n} x {args.dim} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    defs = build_defs(cfg)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("rounds", ["0", "1"])
    assert defs.resolve_job_def("seed_job").execute_in_process(instance=instance, partition_key="0").success
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    (cfg.inbox / "labels.csv").write_text(label_csv(answer_rows(cfg, 0)))
    os.utime(cfg.inbox / "labels.csv", (time.time() - 5, time.time() - 5))
    assert list_inbox(cfg.inbox, 0.0)

    fresh = _fresh_run_process()
    load_before = loadavg()
    sensor = defs.resolve_sensor_def("inbox_sensor")
    t0 = time.time()
    res = sensor(dg.build_sensor_context(instance=instance, resources={"project": defs.resources["project"]}))
    t_sensor = time.time()
    req = [r for r in res.run_requests if r.job_name == "round_job"][0]
    result = defs.resolve_job_def("round_job").execute_in_process(
        instance=instance, partition_key=req.partition_key, run_config=req.run_config, tags=req.tags
    )
    t_end = time.time()
    assert result.success
    renamed_at = batch_csv(cfg.outbox, 1).stat().st_mtime
    steps = step_times(instance.all_logs(result.run_id))
    dur = {k: round(v["end"] - v["start"], 3) for k, v in steps.items() if "start" in v and "end" in v}
    first_step = min(v["start"] for v in steps.values() if "start" in v)
    qs = open_store(cfg).get_asset_output("query_set", "1")
    return {
        "via": "process",
        "n": args.n,
        "dim": args.dim,
        "classes": args.classes,
        "budget": args.budget,
        "strategy": args.strategy,
        "tick_to_outbox_rename_s": round(renamed_at - t0, 3),
        "split_s": {
            "sensor_tick": round(t_sensor - t0, 3),
            "run_start": round(first_step - t_sensor, 3),
            "ingest (round_labels)": dur.get("round_labels"),
            "train (probe)": dur.get("probe"),
            "label quality (label_quality)": dur.get("label_quality"),
            "evaluate (eval_metrics)": dur.get("eval_metrics"),
            "select (query_set strategy)": round(qs["select_seconds"], 3),
            "query_set step (load pool, select, write)": dur.get("query_set"),
            "asset checks": round(sum(v for k, v in dur.items() if k not in _STEPS), 3),
        },
        "steps_s": dur,
        "ingest_requested_before_round": any(r.job_name == "ingest_job" for r in res.run_requests),
        "ingest_check": req.tags.get("al/ingest_check"),
        "run_total_s": round(t_end - t_sensor, 3),
        "proposed": qs["budget"],
        "step_order": [k for k, _ in sorted(steps.items(), key=lambda kv: kv[1].get("start", 0.0))],
        "fresh_run_process_s": fresh,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }


if __name__ == "__main__":
    sys.exit(main())
