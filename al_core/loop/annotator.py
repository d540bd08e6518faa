"""A simulated annotator: answers query sets in the outbox from the ground truth.

It behaves like a human team: it reads ``outbox/round-NNNN.csv``, and delivers a
label file (``image_id,label,annotator``) into the inbox, written under a
temporary name and renamed, so the loop takes the same path as for real
deliveries: sensor, validation, ingestion, next round. Optional realism: a share
of wrong labels (``noise``), of "cannot tell" answers (``skip``), and a delay.

Ground truth is read with a short read-only look at the database (retried
while a round run holds the writer lock).
"""

import os
import re
from pathlib import Path

import numpy as np

from al_core.config import ProjectConfig
from al_core.catalogue import open_store

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
    store = open_store(cfg)
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
