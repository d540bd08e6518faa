"""`al bench store --n 1000000 --dim 768 --json OUT`: the store's N x D read against np.load.

Writes N random float32 vectors through the store (part files + catalogue) and
the same array as a .npy beside it, fills the file cache with one read of each,
then times 3 reads of each in a fresh child process (median reported) so that
``peak_rss_mb`` is the peak of the reading process alone.
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

import numpy as np

WRITE_CHUNK = 131072  # vectors per store write: 131072 x 768 x 4 B = 400 MB


_CHILD = r"""
import json, sys, time
import numpy as np
from al_core.catalogue.store import Store
kind, db, npy, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
times = []
for _ in range(reps):
    t = time.perf_counter()
    if kind == "store":
        x = Store(db).load_embeddings("bench").features
    else:
        x = np.load(npy)
    times.append(time.perf_counter() - t)
    shape = list(x.shape)
    del x  # the only reference: the next repetition's peak holds one matrix, not two
# VmHWM (not ru_maxrss, which Linux carries over from the parent across fork+exec)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"times": times, "peak_rss_mb": hwm / 1024, "shape": shape}))
"""


def _child(kind: str, db: str, npy: str, reps: int) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, kind, db, npy, str(reps)], capture_output=True, text=True, check=False
    )
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="al bench store", description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--dir", help="work folder (default: a temporary folder, removed afterwards)")
    ap.add_argument("--json", help="also write the JSON result here")
    args = ap.parse_args(argv)

    from al_core.catalogue.store import Store

    work = args.dir or tempfile.mkdtemp(prefix="al-bench-store-")
    os.makedirs(work, exist_ok=True)
    try:
        db = os.path.join(work, "warehouse.duckdb")
        npy = os.path.join(work, "vectors.npy")
        for old in (db, db + ".wal", os.path.join(work, "vectors")):  # a re-run starts from an empty store
            shutil.rmtree(old, ignore_errors=True) if os.path.isdir(old) else (os.path.exists(old) and os.remove(old))
        store = Store(db)
        store.register_embedding_config("bench", {"backbone": "synthetic", "dim": args.dim})
        rng = np.random.default_rng(0)
        ids = np.array([hashlib.sha256(str(i).encode()).hexdigest() for i in range(args.n)], dtype=object)
        order = np.argsort(ids.astype(str))
        full = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(args.n, args.dim))
        t = time.perf_counter()
        for s in range(0, args.n, WRITE_CHUNK):
            e = min(args.n, s + WRITE_CHUNK)
            x = rng.standard_normal((e - s, args.dim), dtype=np.float32)
            store.write_embeddings("bench", list(ids[s:e]), x)
            full[s:e] = x
        write_s = time.perf_counter() - t
        # the .npy holds the same rows in the store's order (ascending image_id)
        full.flush()
        arr = np.load(npy, mmap_mode="r")[order]
        np.save(npy, arr)
        del arr, full
        _child("store", db, npy, 1)  # warm the file cache
        _child("npy", db, npy, 1)
        st = _child("store", db, npy, 3)
        nf = _child("npy", db, npy, 3)
        array_mb = args.n * args.dim * 4 / 2**20
        res = {
            "n": args.n,
            "dim": args.dim,
            "array_mb": round(array_mb, 1),
            "store_write_s": round(write_s, 2),
            "store_load_s": round(float(np.median(st["times"])), 3),
            "store_load_times": [round(x, 3) for x in st["times"]],
            "npy_load_s": round(float(np.median(nf["times"])), 3),
            "npy_load_times": [round(x, 3) for x in nf["times"]],
            "peak_rss_mb": round(st["peak_rss_mb"], 1),
            "npy_peak_rss_mb": round(nf["peak_rss_mb"], 1),
        }
        res["ratio_store_to_npy"] = round(res["store_load_s"] / res["npy_load_s"], 2)
        res["peak_rss_to_array"] = round(res["peak_rss_mb"] / array_mb, 2)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(res, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0
