"""`al bench round [--via daemon|process] --n 100000 --dim 1280 --classes 10 --budget 10 --json OUT`.

Label file landing to the next outbox CSV: ``--via daemon`` (default) through a
real `dagster dev`, its sensor and run queue; ``--via process`` the sensor and
the round job in one process. The benchmark itself lives in
al_assets.tools.bench_round (it drives Dagster, which al_core never imports);
this runs it in a child process.
"""

import subprocess
import sys


def main(argv: list[str]) -> int:
    return subprocess.call([sys.executable, "-m", "al_assets.tools.bench_round", *argv])
