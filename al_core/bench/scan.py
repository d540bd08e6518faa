"""`al bench scan --images DIR [--make N] --json OUT`: first scan and unchanged rescan rates, and the fingerprint.

With ``--make N`` the folder is first filled with N small distinct JPEG files
(the sample images with a unique trailer, in class folders of 1,000) unless it
already holds them. Goal: 100,000 unchanged files rescanned in under a minute.
After the scans, the root's fingerprint (al_core.ingest.listing.source_fingerprint:
what the inbox sensor computes before a round) is timed FINGERPRINT_REPEATS
times (the page cache warm from the scans), and checked equal to the one the
rescan recorded.
"""

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

FILES_PER_FOLDER = 1000  # keeps directory listings short, as real datasets do
FINGERPRINT_REPEATS = 3  # fingerprints timed after the scans (each one stat per file)


def make_tree(root: Path, n: int, sample_root: Path) -> None:
    samples = sorted(p for p in sample_root.rglob("*.jpg"))
    blobs = [p.read_bytes() for p in samples]
    done = sum(1 for _ in root.rglob("*.jpg")) if root.exists() else 0
    if done >= n:
        return
    for i in range(done, n):
        d = root / f"c{i // FILES_PER_FOLDER:04d}"
        if i % FILES_PER_FOLDER == 0 or not d.exists():
            d.mkdir(parents=True, exist_ok=True)
        # bytes after the JPEG end marker make each file distinct and still decodable
        (d / f"{i:07d}.jpg").write_bytes(blobs[i % len(blobs)] + i.to_bytes(8, "little"))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="al bench scan", description=__doc__)
    ap.add_argument("--images", help="image folder to scan (default: a temporary folder, with --make)")
    ap.add_argument("--make", type=int, default=0, help="first fill the folder with this many small JPEGs")
    ap.add_argument("--sample", default="examples/cifar10-2k", help="source images for --make")
    ap.add_argument("--json", help="also write the JSON result here")
    args = ap.parse_args(argv)

    from al_core.catalogue import images
    from al_core.catalogue.store import Store
    from al_core.ingest.listing import source_fingerprint
    from al_core.ingest.scan import scan

    tmp = tempfile.mkdtemp(prefix="al-bench-scan-")
    root = Path(args.images or os.path.join(tmp, "images"))
    try:
        if args.make:
            t = time.perf_counter()
            make_tree(root, args.make, Path(args.sample))
            print(f"made {args.make} files in {time.perf_counter() - t:.1f} s", flush=True)
        store = Store(os.path.join(tmp, "warehouse.duckdb"))
        t = time.perf_counter()
        first = scan(store, root, ground_truth_from_folders=False)
        first_s = time.perf_counter() - t
        t = time.perf_counter()
        again = scan(store, root, ground_truth_from_folders=False)
        rescan_s = time.perf_counter() - t
        fingerprint_s = []
        for _ in range(FINGERPRINT_REPEATS):
            t = time.perf_counter()
            source, fp = source_fingerprint(root=root)
            fingerprint_s.append(round(time.perf_counter() - t, 3))
        with store.connect(read_only=True) as con:
            recorded = images.last_scan(con, source)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res = {
        "files": first.n_files,
        "first_scan_s": round(first_s, 2),
        "first_scan_files_per_s": round(first.n_files / first_s, 1),
        "rescan_s": round(rescan_s, 2),
        "rescan_files_per_s": round(again.n_files / rescan_s, 1),
        "rescan_unchanged": again.n_unchanged,
        "rescan_rehashed": again.n_new + again.n_changed,
        "fingerprint_s": fingerprint_s,
        "fingerprint_us_per_file": round(1e6 * min(fingerprint_s) / max(fp.n_files, 1), 2),
        "fingerprint_equals_the_rescans": recorded.fingerprint == fp.digest,
        "root": str(root),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
    }
    print(json.dumps(res, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0
