"""`al bench labels_csv [--rows 1000000] [--repeat 3] --json OUT`: the two CSV readers of label files, measured.

One CSV label file of ``--rows`` rows (``image_id,label``: 64-hex ids, ten
classes) is read by ``parse_label_file`` with its full validation, every id
known to the validator, once per reader and repeat, alternating, each run in
its own child process:

- ``reference``: ``csv_reader`` over the bounded line reader (the polars path
  switched off);
- ``polars``: ``csv_polars.read_csv_fast`` (the polars path for every size).

Per run: wall seconds and CPU seconds (user + system, every thread) of the
call (polars is imported before it; ``import_s`` is that import), and peak
resident memory (VmHWM) of the child, whole and above its resident memory just
before the call (the known-id set and the interpreter are already there).
Both readers must return the same rows, and the polars path must accept the
file itself (``polars_path``; not hand it back). The load average (/proc/loadavg) is
recorded at the start and the end: on a shared machine the wall times move
with it. Results go to docs/benchmarks.md ("CSV label files").
"""

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from al_core.bench import emit

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
READERS = ("reference", "polars")
NEVER = 1 << 62  # a POLARS_CSV_MIN_BYTES no file reaches


def image_id(i: int) -> str:
    return hashlib.sha256(i.to_bytes(8, "little")).hexdigest()


def make_file(path: Path, n: int) -> int:
    """Write the label file of ``n`` rows; its size in bytes."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("image_id,label\n")
        for i in range(n):
            f.write(f"{image_id(i)},{CLASSES[i % len(CLASSES)]}\n")
    return path.stat().st_size


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(reader: str, path: str, n: int) -> dict:
    """One measured read (run in its own process, so VmHWM is this reader's peak)."""
    from al_core.labels import csv_polars, parse_label_file

    csv_polars.POLARS_CSV_MIN_BYTES = 0 if reader == "polars" else NEVER
    answers = []  # what the polars path returned: None would mean it handed the file to the reference reader
    fast = csv_polars.read_csv_fast
    csv_polars.read_csv_fast = lambda *a: answers.append(fast(*a)) or answers[-1]
    known = frozenset(image_id(i) for i in range(n))
    import_s = 0.0
    if reader == "polars":  # imported before the clock starts, as in a process that has read one file already
        t = time.perf_counter()
        import polars  # noqa: F401

        import_s = time.perf_counter() - t
    before = _status_mb("VmRSS")
    ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    parsed = parse_label_file(path, classes=CLASSES, known_image_ids=known, skip_label="skip")
    seconds = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    peak = _status_mb("VmHWM")
    digest = hashlib.sha256()
    for r in parsed.rows:
        digest.update(f"{r.line},{r.image_id},{r.label},{r.is_skip}\n".encode())
    return {
        "reader": reader,
        "polars_path": answers == [n] if reader == "polars" else answers == [],
        "ok": parsed.ok,
        "rows": len(parsed.rows),
        "n_errors": parsed.n_errors,
        "seconds": round(seconds, 3),
        "import_s": round(import_s, 3),
        "cpu_s": round(ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime, 3),
        "peak_mb": round(peak, 1),
        "peak_above_start_mb": round(peak - before, 1),
        "rows_sha256": digest.hexdigest(),
    }


def _loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="al bench labels_csv", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the label file")
    ap.add_argument("--repeat", type=int, default=3, help="runs per reader (alternating)")
    ap.add_argument("--workdir", help="keep the file here (default: a temporary folder, removed)")
    ap.add_argument("--json", help="also write the JSON result here")
    ap.add_argument("--child", nargs=3, metavar=("READER", "PATH", "ROWS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        reader, path, n = args.child
        print(json.dumps(child(reader, path, int(n))))
        return 0
    from al_core.labels.csv_polars import POLARS_CSV_MIN_BYTES

    res: dict = {
        "rows": args.rows,
        "loadavg_start": _loadavg(),
        "cpus": os.cpu_count(),
        "polars_csv_min_bytes": POLARS_CSV_MIN_BYTES,
    }
    work = Path(args.workdir or tempfile.mkdtemp(prefix="al-bench-labels-csv-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"labels-{args.rows}.csv"
    runs = []
    try:
        t = time.perf_counter()
        res["file_bytes"] = path.stat().st_size if path.exists() else make_file(path, args.rows)
        res["make_s"] = round(time.perf_counter() - t, 1)
        for k in range(args.repeat):
            for reader in READERS if k % 2 == 0 else READERS[::-1]:
                proc = subprocess.run(
                    [sys.executable, "-m", "al_core.bench.labels_csv", "--child", reader, str(path), str(args.rows)],
                    capture_output=True,
                    text=True,
                )
                if proc.returncode != 0:
                    print(proc.stderr[-4000:], file=sys.stderr)
                    return 1
                run = json.loads(proc.stdout.strip().splitlines()[-1])
                runs.append(run)
                print(f"{reader}: {run}", file=sys.stderr, flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    res["loadavg_end"] = _loadavg()
    for reader in READERS:
        mine = [r for r in runs if r["reader"] == reader]
        res[reader] = {
            key: statistics.median(r[key] for r in mine)
            for key in ("seconds", "cpu_s", "import_s", "peak_mb", "peak_above_start_mb")
        }
        res[reader]["seconds_all"] = [r["seconds"] for r in mine]
    res["speedup_wall"] = round(res["reference"]["seconds"] / res["polars"]["seconds"], 2)
    res["speedup_cpu"] = round(res["reference"]["cpu_s"] / res["polars"]["cpu_s"], 2)
    same = len({(r["ok"], r["rows"], r["rows_sha256"]) for r in runs}) == 1
    res["same_rows"] = same
    res["all_ok"] = all(r["ok"] and r["rows"] == args.rows and r["polars_path"] for r in runs)
    emit(res, args.json)
    return 0 if same and res["all_ok"] else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
