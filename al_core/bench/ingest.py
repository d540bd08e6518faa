"""`al bench ingest [--files 1000] [--big-rows 1000000] [--pool 1000000] --json OUT`: label ingestion at scale.

A catalogue with ``--pool`` known images (synthetic rows inserted with SQL in one
transaction: no image files, no vectors), then, each measured in its own child
process (time and peak resident memory, VmHWM):

1. ``sensor_burst``: what the inbox sensor does at one tick for a burst of
   ``--files`` small label files (``--rows`` rows each): list, hash and validate
   every file (it runs the same validator as the round run);
2. ``ingest_burst``: the round run's ingestion of the same files (one transaction);
3. ``sensor_big``: the sensor's validation of one file of ``--big-rows`` rows;
4. ``ingest_big``: the round run's ingestion of that file (it gives the burst's images
   other labels, so every delivered row is a new label).

Labels delivered (rows in the files) are compared with labels stored (rows of
``labels``): the benchmark fails if one is lost or doubled. Results go to
docs/benchmarks.md ("Label ingestion").
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from al_core.catalogue import open_store

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _ids_sql(n: int) -> str:
    return f"SELECT sha256('img' || i::VARCHAR) AS image_id, i FROM range({int(n)}) t(i)"


def _config(work: Path):
    from al_core.config import from_dict

    return from_dict(
        {
            "classes": list(CLASSES),
            "paths": {"data_dir": "data", "inbox": "data/inbox"},
            "store": {"lock_timeout_s": 60},
        },
        base_dir=work,
        source_file=str(work / "al.yaml"),
    )


def _vmhwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def prepare(work: Path, n_pool: int, n_files: int, rows: int, big_rows: int) -> dict:
    """The catalogue with the pool, and the label files (burst in inbox-burst/, the big file in inbox-big/)."""
    cfg = _config(work)
    store = open_store(cfg)
    t = time.perf_counter()
    with store.transaction() as con:
        con.execute(f"""INSERT INTO images SELECT image_id, 1000, 32, 32, 'JPEG', now()::TIMESTAMP, 0
                        FROM ({_ids_sql(n_pool)})""")
        con.execute(f"""INSERT INTO image_paths (path, image_id, size_bytes, mtime_ns, status, error, first_seen,
                                                 last_seen, last_scan_id, source)
                        SELECT '/pool/' || i || '.jpg', image_id, 1000, 0, 'ok', NULL,
                        now()::TIMESTAMP, now()::TIMESTAMP, 0, '/pool' FROM ({_ids_sql(n_pool)})""")
    pool_s = time.perf_counter() - t
    with store.connect(read_only=True, view=False) as con:
        ids = [
            r[0]
            for r in con.execute(
                f"SELECT image_id FROM ({_ids_sql(max(n_files * rows, big_rows))}) ORDER BY i"
            ).fetchall()
        ]
    burst = work / "inbox-burst"
    burst.mkdir(parents=True)
    t0 = time.time() - 3600
    for k in range(n_files):
        part = ids[k * rows : (k + 1) * rows]
        text = "image_id,label,annotator\n" + "".join(
            f"{iid},{CLASSES[(k + j) % 10]},a{k % 7}\n" for j, iid in enumerate(part)
        )
        p = burst / f"labels-{k:05d}.csv"
        p.write_text(text)
        os.utime(p, (t0 + k, t0 + k))
    big = work / "inbox-big"
    big.mkdir(parents=True)
    with open(big / "big.csv", "w") as f:
        f.write("image_id,label,annotator\n")
        for j, iid in enumerate(ids[:big_rows]):
            k, jj = divmod(j, rows)  # an image of the burst gets another label than the burst gave it
            label = CLASSES[(k + jj + 1) % 10] if k < n_files else CLASSES[j % 10]
            f.write(f"{iid},{label},bulk\n")
    os.utime(big / "big.csv", (t0, t0))
    return {
        "pool_insert_s": round(pool_s, 2),
        "burst_bytes": sum(p.stat().st_size for p in burst.iterdir()),
        "big_bytes": (big / "big.csv").stat().st_size,
    }


def child(work: Path, scenario: str) -> dict:
    """One measured step (run in its own process, so VmHWM is this step's peak)."""
    from al_core.catalogue.images import known_image_ids
    from al_core.catalogue.store import sha256_file
    from al_core.labels import parse_label_file
    from al_core.loop import ingest_label_files, list_inbox

    cfg = _config(work)
    store = open_store(cfg)
    src = work / ("inbox-burst" if scenario.endswith("burst") else "inbox-big")
    t = time.perf_counter()
    if scenario.startswith("sensor"):  # the sensor's tick: known ids, then list, hash and validate every file
        with store.connect(read_only=True, view=False) as con:
            known = known_image_ids(con)
        files = list_inbox(src, 0)
        n_rows = n_bad = 0
        for f in files:
            sha256_file(f)
            parsed = parse_label_file(f, classes=CLASSES, known_image_ids=known, skip_label="skip")
            n_rows += len(parsed.rows)
            n_bad += not parsed.ok
        out = {"files": len(files), "rows_valid": n_rows, "files_invalid": n_bad}
    else:  # the round run's ingestion; files are moved from the inbox, so copy them in first (not timed)
        shutil.rmtree(cfg.inbox, ignore_errors=True)
        shutil.copytree(src, cfg.inbox)
        before = store.fetch("SELECT count(*) FROM labels")[0][0]
        t = time.perf_counter()
        rep = ingest_label_files(store, cfg, list_inbox(cfg.inbox, 0), round_=1, classes=CLASSES)
        stored = store.fetch("SELECT count(*) FROM labels")[0][0] - before
        out = {
            "files": len(rep.files),
            "accepted": rep.counts.get("accepted", 0),
            "labels_applied": sum(f.n_applied for f in rep.files),
            "labels_stored": stored,
        }
    out["seconds"] = round(time.perf_counter() - t, 2)
    out["peak_rss_mb"] = round(_vmhwm_mb(), 1)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="al bench ingest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--files", type=int, default=1000, help="label files in the burst")
    ap.add_argument("--rows", type=int, default=10, help="rows per burst file")
    ap.add_argument("--big-rows", type=int, default=1_000_000, help="rows of the large file")
    ap.add_argument("--pool", type=int, default=1_000_000, help="known images in the catalogue")
    ap.add_argument("--workdir", help="keep the work here (default: a temporary folder, removed)")
    ap.add_argument("--json", help="also write the JSON result here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.workdir), args.child)))
        return 0
    if max(args.files * args.rows, args.big_rows) > args.pool:
        ap.error("the pool must hold every image the label files name")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="al-bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        res = {"pool": args.pool, "burst_files": args.files, "rows_per_file": args.rows, "big_rows": args.big_rows}
        res.update(prepare(work, args.pool, args.files, args.rows, args.big_rows))
        res["prepare_s"] = round(time.perf_counter() - t, 1)
        for scenario in ("sensor_burst", "ingest_burst", "sensor_big", "ingest_big"):
            proc = subprocess.run(
                [sys.executable, "-m", "al_core.bench.ingest", "--child", scenario, "--workdir", str(work)],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                print(proc.stderr[-4000:], file=sys.stderr)
                return 1
            res[scenario] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{scenario}: {res[scenario]}", file=sys.stderr, flush=True)
        delivered = args.files * args.rows + args.big_rows  # every row a new label (the big file relabels)
        stored = res["ingest_burst"]["labels_stored"] + res["ingest_big"]["labels_stored"]
        res.update(
            labels_delivered=delivered,
            labels_stored=stored,
            db_mb=round((work / "data" / "warehouse.duckdb").stat().st_size / 2**20, 1),
        )
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0 if stored == delivered else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
