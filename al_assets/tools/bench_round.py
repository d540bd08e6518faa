"""Round latency through the real Dagster path (run by `al bench round`).

A synthetic pool of N images (clustered float32 features of dimension D, K
classes) is put in a fresh store; the seed pool is proposed; a label file
answering it lands in the inbox; then the clock runs from the sensor tick that
sees the file to the rename of the next query set in the outbox. The round run
executes in process (the in-process executor), and the split comes from the
run's own step events. Before the round, a fresh interpreter times what a run
process under the daemon pays on top (``fresh_run_process_s``: the imports of
a round run, then a first small probe fit and metrics). The temporary project
is removed at the end (``--keep`` keeps it).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from al_core.catalogue import open_store

CHUNK = 50_000  # vectors per store write: 50000 x 1280 x 4 B = 256 MB


def _make_store(cfg, n: int, d: int, k: int, seed: int) -> None:
    import pyarrow as pa

    from al_core.catalogue.store import now

    store = open_store(cfg)
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)).astype(np.float32) * 2.0
    ids = [hashlib.sha256(f"bench-{i}".encode()).hexdigest() for i in range(n)]
    y = rng.integers(0, k, n)
    ts = now()
    with store.transaction() as con:
        con.execute(
            "INSERT INTO scans (scan_id, source, source_kind, started_at) VALUES (1, 'synthetic', 'root', ?)", [ts]
        )
        t = pa.table(
            {
                "image_id": ids,
                "path": [f"/synthetic/{c}/{i}.jpg" for i, c in enumerate(y)],
                "class_name": [f"c{c}" for c in y],
            }
        )
        con.register("_t", t)
        con.execute("INSERT INTO images SELECT image_id, 1000, 32, 32, 'JPEG', ?, 1 FROM _t", [ts])
        con.execute(
            "INSERT INTO image_paths (path, image_id, size_bytes, mtime_ns, status, error, first_seen, "
            "last_seen, last_scan_id, source) "
            "SELECT path, image_id, 1000, 0, 'ok', NULL, ?, ?, 1, 'synthetic' FROM _t",
            [ts, ts],
        )
        con.execute("INSERT INTO ground_truth SELECT image_id, path, class_name, 'folder' FROM _t")
        con.unregister("_t")
    config = {"backbone": "synthetic", "dim": d, "preprocessing": {}, "dtype": "float32"}
    store.register_embedding_config("synthetic", config)
    for s in range(0, n, CHUNK):
        e = min(n, s + CHUNK)
        x = centers[y[s:e]] + rng.standard_normal((e - s, d), dtype=np.float32)
        store.write_embeddings("synthetic", ids[s:e], x)
    store.put_asset_output("embeddings", "", None, {"config_id": "synthetic", "backbone": "synthetic", "dim": d})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="al bench round", description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--budget", type=int, default=10)
    ap.add_argument("--strategy", default="dropquery")
    ap.add_argument("--json", help="also write the JSON result here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary project (default: removed at the end)")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="al-bench-round-"))
    try:
        return _bench(args, tmp)
    finally:
        if args.keep:
            print(f"project kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


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


def _loadavg() -> list[float]:
    with open("/proc/loadavg") as fh:
        return [float(v) for v in fh.read().split()[:3]]


def _bench(args: argparse.Namespace, tmp: Path) -> int:
    import dagster as dg

    from al_assets.definitions import build_defs
    from al_core.config import load_config
    from al_core.loop.inbox import list_inbox
    from al_core.loop.outbox import batch_csv

    conf = {
        "images": {"root": str(tmp)},
        "classes": [f"c{i}" for i in range(args.classes)],
        "selection": {
            "seed_strategy": "centroid",
            "query_strategy": args.strategy,
            "budget_per_round": args.budget,
            "total_budget": args.budget * 100,
        },
        "evaluation": {"holdout": 500, "labels_from_ground_truth": True},
        "paths": {"data_dir": str(tmp / "data"), "inbox": str(tmp / "inbox"), "outbox": str(tmp / "outbox")},
        "sensor": {"settle_s": 0.0, "ingest_before_round": False},
    }
    (tmp / "al.yaml").write_text(yaml.safe_dump(conf))
    cfg = load_config(tmp / "al.yaml")
    t = time.perf_counter()
    _make_store(cfg, args.n, args.dim, args.classes, 0)
    print(f"synthetic store of {args.n} x {args.dim} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    defs = build_defs(cfg)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("rounds", ["0", "1"])
    assert defs.resolve_job_def("seed_job").execute_in_process(instance=instance, partition_key="0").success
    store = open_store(cfg)
    rows = store.fetch("""SELECT q.image_id, any_value(g.class_name) FROM queries q JOIN ground_truth g USING (image_id)
                          WHERE q.round = 0 GROUP BY 1""")
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    (cfg.inbox / "labels.csv").write_text("image_id,label\n" + "".join(f"{i},{c}\n" for i, c in rows))
    os.utime(cfg.inbox / "labels.csv", (time.time() - 5, time.time() - 5))
    assert list_inbox(cfg.inbox, 0.0)

    fresh = _fresh_run_process()
    load_before = _loadavg()
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
    out = batch_csv(cfg.outbox, 1)
    renamed_at = out.stat().st_mtime
    steps: dict[str, dict] = {}
    for entry in instance.all_logs(result.run_id):
        ev = entry.dagster_event
        if ev is None or not ev.step_key:
            continue
        if ev.event_type_value == "STEP_START":
            steps.setdefault(ev.step_key, {})["start"] = entry.timestamp
        elif ev.event_type_value == "STEP_SUCCESS":
            steps.setdefault(ev.step_key, {})["end"] = entry.timestamp
    dur = {k: round(v["end"] - v["start"], 3) for k, v in steps.items() if "start" in v and "end" in v}
    first_step = min(v["start"] for v in steps.values() if "start" in v)
    qs = store.get_asset_output("query_set", "1")
    res = {
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
            "evaluate (eval_metrics)": dur.get("eval_metrics"),
            "select (query_set strategy)": round(qs["select_seconds"], 3),
            "query_set step (load pool, select, write)": dur.get("query_set"),
            "asset checks": round(
                sum(v for k, v in dur.items() if k not in ("round_labels", "probe", "eval_metrics", "query_set")), 3
            ),
        },
        "run_total_s": round(t_end - t_sensor, 3),
        "proposed": qs["budget"],
        "step_order": [k for k, _ in sorted(steps.items(), key=lambda kv: kv[1].get("start", 0.0))],
        "fresh_run_process_s": fresh,
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
    }
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
