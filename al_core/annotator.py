"""A simulated annotator: answers query sets in the outbox from the ground truth.

It behaves like a human team: it reads ``outbox/round-NNNN.csv``, and delivers a
label file (``image_id,label,annotator``) into the inbox, written under a
temporary name and renamed, so the loop takes the same path as for real
deliveries: sensor, validation, ingestion, next round. Optional realism: a share
of wrong labels (``noise``), of "cannot tell" answers (``skip``), and a delay.

Ground truth is read with a short read-only look at the database (retried
while a round run holds the writer lock).
"""

import argparse
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from al_core.config import ProjectConfig, load_config

ROUND_FILE = re.compile(r"^round-(\d{4})\.csv$")
STATE_FILE = ".simulated-annotator"  # in the outbox: rounds already answered, one per line


def _answered(cfg: ProjectConfig) -> set[int]:
    p = cfg.outbox / STATE_FILE
    return {int(x) for x in p.read_text().split()} if p.exists() else set()


def pending_rounds(cfg: ProjectConfig) -> list[int]:
    if not cfg.outbox.is_dir():
        return []
    done = _answered(cfg)
    out = []
    for name in os.listdir(cfg.outbox):
        m = ROUND_FILE.match(name)
        if m and int(m.group(1)) not in done:
            out.append(int(m.group(1)))
    return sorted(out)


def answer_round(cfg: ProjectConfig, round_: int, *, noise: float = 0.0, skip: float = 0.0, seed: int = 0,
                 annotator: str = "simulated") -> Path:
    """Write the label file answering batch ``round_``; returns its inbox path."""
    import csv

    with open(cfg.outbox / f"round-{round_:04d}.csv", newline="", encoding="utf-8") as f:
        ids = [row["image_id"] for row in csv.DictReader(f)]
    store = cfg.store()
    truth = dict(store.fetch(
        "SELECT image_id, any_value(class_name) FROM ground_truth WHERE image_id IN (SELECT unnest(?)) GROUP BY 1",
        [ids]))
    classes = list(cfg.class_names(store))
    rng = np.random.default_rng([seed, round_])
    lines = ["image_id,label,annotator"]
    for iid in ids:
        label = truth.get(iid)
        u = rng.random()
        if label is None or u < skip:
            label = cfg.labels.skip_label
        elif u < skip + noise:
            label = classes[(classes.index(label) + int(rng.integers(1, len(classes)))) % len(classes)]
        lines.append(f"{iid},{label},{annotator}")
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    final = cfg.inbox / f"{annotator}-round-{round_:04d}.csv"
    tmp = cfg.inbox / f".{final.name}.tmp"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, final)
    with open(cfg.outbox / STATE_FILE, "a") as f:
        f.write(f"{round_}\n")
    return final


def answer_pending(cfg: ProjectConfig, **kw) -> list[Path]:
    return [answer_round(cfg, r, **kw) for r in pending_rounds(cfg)]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="al simulate-annotator", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="project file (default: $AL_CONFIG, else ./al.yaml)")
    ap.add_argument("--noise", type=float, default=0.0, help="share of wrong labels (default 0)")
    ap.add_argument("--skip", type=float, default=0.0, help="share of skip answers (default 0)")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to wait before delivering each answer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--watch", action="store_true", help="keep answering new query sets until --timeout")
    ap.add_argument("--timeout", type=float, default=600.0, help="with --watch: stop after this many seconds")
    args = ap.parse_args(argv)
    if not (0 <= args.noise <= 1 and 0 <= args.skip <= 1 and args.noise + args.skip <= 1):
        ap.error("--noise and --skip are shares in [0, 1] whose sum is at most 1")
    cfg = load_config(args.config)
    deadline = time.monotonic() + args.timeout
    while True:
        for r in pending_rounds(cfg):
            time.sleep(args.delay)
            p = answer_round(cfg, r, noise=args.noise, skip=args.skip, seed=args.seed)
            print(f"answered batch {r}: {p}", flush=True)
        if not args.watch or time.monotonic() > deadline:
            return 0
        time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
