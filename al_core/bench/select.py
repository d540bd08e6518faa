"""Selection time, peak memory and the floor of each strategy's dense work: `al bench select`.

    al bench select --n 1000000 --dim 768 --classes 100 --budget 100 \
        --labeled 1000 --strategies all --data easy,hard --json data/bench/select-1m.json

Synthetic clustered float32 features (``--classes`` Gaussian clusters; the
labels of the labelled set are the cluster ids), one matrix per data set in
``--data``: ``easy`` (unit-variance centres: separable clusters; the probe is
right almost everywhere and dropquery finds few candidates) and ``hard`` (the
same clusters with centres scaled by HARD_CENTRE_SCALE: overlapping, so that
most rows become dropquery candidates and its k-means runs on most of the
pool). Each matrix is written once to a memory-mapped .npy in a temporary
folder. Each (data set, strategy) then runs in its own child process
(``python -m al_core.bench.select --child ...``), which opens the .npy
memory-mapped, trains the standard probe on the labelled set (not timed), then
times ``get_strategy(name).select(..., probe=probe)`` (timed: selection
including probe inference and the input checks). Just before and just after it,
the child measures the machine's read time of the matrix and product throughput
(:mod:`al_core.bench._floors`), from which it reports the strategy's floor
(``floor_seconds``: its unavoidable reads and products at those rates) and
``seconds / floor_seconds``. Peak memory is the child's own ``VmHWM`` from
``/proc/self/status`` (file-backed pages of the memory map that the strategy
touched count too), read by the child at the end; while the child runs the
parent also polls it, so a child stopped by ``--timeout`` still has a figure
(a lower bound). JSON: ``strategies_by_data.<data>.<name>`` with ``seconds``,
``peak_rss_mb``, ``floor_seconds``, ``seconds_per_floor``, the measurements and
the counted work (plus ``probe_fit_seconds``, ``status``); ``strategies`` is the
first data set's.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from al_core.bench import child_command

# Centre scale of the hard data set: at 0.15 the clusters overlap (768-D, 100 classes,
# 1,000 labels: the probe is right on about a third of the rows and 90 % of the rows
# become dropquery candidates, measured at 50,000 rows); 1.0 is the easy data set.
HARD_CENTRE_SCALE = 0.15
DATA_SETS = {"easy": 1.0, "hard": HARD_CENTRE_SCALE}

# Strategies with a goal first, so that a stopped run keeps those.
ORDER = (
    "dropquery",
    "margin",
    "entropy",
    "least_confidence",
    "coreset",
    "badge",
    "typiclust",
    "random",
    "centroid",
    "bald",
    "power_bald",
    "alfa_mix",
    "probcover",
)


def _vm_kb(field: str, pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def write_features(
    path: str, n: int, dim: int, classes: int, seed: int, chunk: int = 100_000, centre_scale: float = 1.0
) -> np.ndarray:
    """Write N x D float32 clustered features to ``path`` (.npy); return the cluster id of each row.

    Cluster centres are standard normal times ``centre_scale``; each cluster's spread is
    uniform in [0.5, 1.5] per dimension."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, dim), dtype=np.float32) * np.float32(centre_scale)
    spread = rng.uniform(0.5, 1.5, size=classes).astype(np.float32)
    ids = rng.integers(0, classes, size=n).astype(np.int64)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
        block *= spread[ids[start:stop], None]
        block += centers[ids[start:stop]]
        mm[start:stop] = block
    mm.flush()
    del mm
    return ids


def add_pool_options(ap: argparse.ArgumentParser, n: int) -> None:
    """The options of the synthetic pool (``write_features``, ``labelled_rows``): --n rows (default ``n``), --dim,
    --classes (clusters), --budget (the batch), --labeled (labelled rows), --seed."""
    ap.add_argument("--n", type=int, default=n)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--labeled", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)


def labelled_rows(args: argparse.Namespace) -> np.ndarray:
    """The labelled rows of the pool: --labeled of the --n rows, sorted, drawn with seed --seed + 1."""
    rng = np.random.default_rng(args.seed + 1)
    return np.sort(rng.choice(args.n, size=args.labeled, replace=False)).astype(np.int64)


def pool_record(prog: str, argv: list[str] | None, args: argparse.Namespace) -> dict:
    """The head of a pool benchmark's JSON: its command line, date, machine and the pool's options."""
    return {
        "command": f"{prog} " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()},
        "n": args.n,
        "dim": args.dim,
        "classes": args.classes,
        "budget": args.budget,
        "labeled": args.labeled,
    }


def run_child(args: argparse.Namespace) -> int:
    from al_core.bench import _floors
    from al_core.learn.probe import Probe
    from al_core.learn.strategies import get_strategy

    features = np.load(args.features, mmap_mode="r")
    meta = np.load(args.meta)
    labeled, labels = meta["labeled"], meta["labels"]
    strategy = get_strategy(args.child)
    out: dict = {"rss_before_mb": (_vm_kb("VmRSS") or 0) / 1024}
    probe = None
    if labeled.shape[0] and strategy.uses_probe:
        t0 = time.perf_counter()
        probe = Probe(args.classes, seed=args.seed).fit(np.asarray(features[labeled], dtype=np.float32), labels)
        out["probe_fit_seconds"] = round(time.perf_counter() - t0, 3)
    n_cols = max(args.classes, args.budget)
    before = _floors.measure(features, n_cols)
    with _floors.record_kmeans() as kmeans_calls:
        t0 = time.perf_counter()
        res = strategy.select(
            features, labeled, labels, args.budget, n_classes=args.classes, seed=args.seed, probe=probe
        )
        out["seconds"] = round(time.perf_counter() - t0, 3)
    after = _floors.measure(features, n_cols)
    sizes = _floors.Sizes(
        int(features.shape[0]), int(features.shape[1]), args.classes, args.budget, int(labeled.shape[0])
    )
    work = _floors.dense_work(args.child, sizes, kmeans_calls)
    out.update(_floors.floor(work, before, after))
    out["seconds_per_floor"] = round(out["seconds"] / out["floor_seconds"], 2) if out.get("floor_seconds") else None
    out.update(work=work, kmeans_calls=kmeans_calls, measured_before=before, measured_after=after)
    out["n_selected"] = int(res.indices.shape[0])
    out["peak_rss_mb"] = round((_vm_kb("VmHWM") or 0) / 1024, 1)
    out["status"] = "ok"
    with open(args.result, "w") as fh:
        json.dump(out, fh)
    return 0


def run_one(name: str, features: str, meta: str, args: argparse.Namespace, workdir: str) -> dict:
    result = os.path.join(workdir, f"{name}.json")
    cmd = child_command(
        "al_core.bench.select",
        args,
        ("classes", "budget", "seed"),
        child=name,
        features=features,
        meta=meta,
        result=result,
    )
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    polled_kb = 0
    status = None
    while proc.poll() is None:
        polled_kb = max(polled_kb, _vm_kb("VmHWM", proc.pid) or 0)
        if time.perf_counter() - t0 > args.timeout:
            proc.kill()
            status = "timeout"
            break
        time.sleep(0.25)
    output = proc.communicate()[0] or ""
    wall = time.perf_counter() - t0
    if status == "timeout":
        return {
            "status": "timeout",
            "seconds": None,
            "timeout_s": args.timeout,
            "peak_rss_mb_at_stop": round(polled_kb / 1024, 1),
            "wall_seconds": round(wall, 1),
        }
    if proc.returncode != 0 or not os.path.exists(result):
        return {
            "status": "error",
            "returncode": proc.returncode,
            "output_tail": output[-2000:],
            "peak_rss_mb_polled": round(polled_kb / 1024, 1),
        }
    with open(result) as fh:
        out = json.load(fh)
    out["wall_seconds"] = round(wall, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="al bench select", description=__doc__.split("\n\n")[0])
    add_pool_options(ap, n=100_000)
    ap.add_argument("--strategies", default="all", help="comma list, or all")
    ap.add_argument("--data", default="easy,hard", help=f"comma list of data sets: {', '.join(DATA_SETS)}")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per strategy (child killed after)")
    ap.add_argument("--workdir", default=None, help="where the .npy goes (default: a new temp folder)")
    ap.add_argument("--json", default=None)
    # internal: the child process
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--features", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--meta", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return run_child(args)

    from al_core.learn.strategies import list_strategies

    known = list(list_strategies())
    if args.strategies == "all":
        names = [s for s in ORDER if s in known] + [s for s in known if s not in ORDER]
    else:
        names = [s.strip() for s in args.strategies.split(",") if s.strip()]
        bad = [s for s in names if s not in known]
        if bad:
            print(f"al bench select: unknown strategies {bad}; known: {known}", file=sys.stderr)
            return 2
    if args.labeled >= args.n:
        print("al bench select: --labeled must be below --n", file=sys.stderr)
        return 2
    data_sets = [d.strip() for d in args.data.split(",") if d.strip()]
    if not data_sets or any(d not in DATA_SETS for d in data_sets):
        print(f"al bench select: --data takes a comma list of {', '.join(DATA_SETS)}", file=sys.stderr)
        return 2

    tmp = None
    if args.workdir:
        workdir = args.workdir
        os.makedirs(workdir, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="al-bench-select-")
        workdir = tmp.name
    try:
        matrix_mb = args.n * args.dim * 4 / 2**20
        out: dict = pool_record("al bench select", argv, args) | {
            "seed": args.seed,
            "timeout_s": args.timeout,
            "feature_matrix_mb": round(matrix_mb, 1),
            "memory_goal_mb": round(2 * matrix_mb + 1024, 1),
            "data": {d: {"centre_scale": DATA_SETS[d]} for d in data_sets},
            "strategies_by_data": {},
        }

        def dump() -> None:
            out["strategies"] = out["strategies_by_data"].get(data_sets[0], {})
            if args.json:
                d = os.path.dirname(os.path.abspath(args.json))
                os.makedirs(d, exist_ok=True)
                with open(args.json + ".tmp", "w") as fh:
                    json.dump(out, fh, indent=1)
                os.replace(args.json + ".tmp", args.json)

        for data in data_sets:  # one matrix on disk at a time
            features = os.path.join(workdir, f"features-{data}.npy")
            t0 = time.perf_counter()
            ids = write_features(features, args.n, args.dim, args.classes, args.seed, centre_scale=DATA_SETS[data])
            out["data"][data]["write_seconds"] = round(time.perf_counter() - t0, 1)
            labeled = labelled_rows(args)
            meta = os.path.join(workdir, f"meta-{data}.npz")
            np.savez(meta, labeled=labeled, labels=ids[labeled])
            results = out["strategies_by_data"].setdefault(data, {})
            for name in names:
                r = run_one(name, features, meta, args, workdir)
                r["load_avg_1m"] = round(os.getloadavg()[0], 2)
                results[name] = r
                print(
                    f"{data} {name}: {r.get('status')} {r.get('seconds')} s, floor {r.get('floor_seconds')} s "
                    f"(x{r.get('seconds_per_floor')}), peak "
                    f"{r.get('peak_rss_mb', r.get('peak_rss_mb_at_stop'))} MB, load {r['load_avg_1m']}",
                    file=sys.stderr,
                    flush=True,
                )
                dump()
            os.remove(features)
        out["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
        out["machine"]["loadavg_at_end"] = os.getloadavg()
        dump()
        print(json.dumps(out, indent=1))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
