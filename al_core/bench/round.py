"""`al bench round --n 100000 --dim 1280 --classes 10 --budget 10 --json OUT`.

Sensor tick to next query set through the real Dagster path. The benchmark
itself lives in al_assets.tools.bench_round (it drives Dagster, which al_core never
imports); this runs it in a child process.
"""

import subprocess
import sys


def main(argv: list[str]) -> int:
    return subprocess.call([sys.executable, "-m", "al_assets.tools.bench_round", *argv])
