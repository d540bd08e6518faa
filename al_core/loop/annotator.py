"""A simulated annotator: answers query sets in the outbox from the ground truth.

It behaves like a human team: it reads ``outbox/round-NNNN.csv``, and delivers a
label file (``image_id,label,annotator``) into the inbox, written under a
temporary name and renamed, so the loop takes the same path as for real
deliveries: sensor, validation, ingestion, next round. Optional realism: a share
of wrong labels (``noise``), of "cannot tell" answers (``skip``), and a delay;
and a second annotator (``second_opinion``) who answers a share of each batch
with its own noise, delivered just before the first annotator's file (so the
first annotator's answer is the newest: the final label), which gives the
agreement figures of the report something to measure.

Ground truth is read with a short read-only look at the database (retried
while a round run holds the writer lock).
"""

from pathlib import Path

import numpy as np

from al_core.catalogue import images, open_store
from al_core.config import ProjectConfig
from al_core.files.atomic import atomic_write_text
from al_core.files.safe import UnsafeEntry, read_regular
from al_core.loop import outbox

STATE_FILE = ".simulated-annotator"  # in the outbox: rounds already answered, one per line


STATE_MAX_BYTES = 1 << 20  # the state file: one line per answered round (a million rounds at most)


def _answered(cfg: ProjectConfig) -> set[int]:
    """Rounds answered so far (the state file, read without following a link; a link planted there counts as
    no state: it is replaced, never followed, when the next round is recorded)."""
    try:
        text = read_regular(cfg.outbox / STATE_FILE, max_bytes=STATE_MAX_BYTES).decode("utf-8", "replace")
    except FileNotFoundError:
        return set()
    except UnsafeEntry:
        return set()
    return {int(x) for x in text.split() if x.isdigit()}


def pending_rounds(cfg: ProjectConfig) -> list[int]:
    """Batches in the outbox this annotator has not answered yet, ascending."""
    done = _answered(cfg)
    return [r for r in outbox.batches_in(cfg.outbox) if r not in done]


def delivery_name(annotator: str, round_: int) -> str:
    """The name of the label file answering batch ``round_``: ``ANNOTATOR-round-NNNN.csv``."""
    return f"{annotator}-{outbox.batch_stem(round_)}.csv"


def answer_round(
    cfg: ProjectConfig,
    round_: int,
    *,
    noise: float = 0.0,
    skip: float = 0.0,
    seed: int = 0,
    annotator: str = "simulated",
) -> Path:
    """Write the label file answering batch ``round_``; returns its inbox path."""
    ids = outbox.read_batch_ids(cfg.outbox, round_)
    store = open_store(cfg)
    with store.connect(read_only=True, view=False) as con:
        truth = images.ground_truth_of(con, ids)
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
    final = atomic_write_text(cfg.inbox / delivery_name(annotator, round_), "\n".join(lines) + "\n")
    done = sorted(_answered(cfg) | {round_})
    outbox.set_aside(cfg.outbox / STATE_FILE)
    atomic_write_text(cfg.outbox / STATE_FILE, "".join(f"{r}\n" for r in done))  # never appended through a link
    return final


SECOND_ANNOTATOR = "simulated-2"  # the second annotator's name in its label files


def second_opinion(
    cfg: ProjectConfig, round_: int, *, share: float, noise: float, seed: int = 0, annotator: str = SECOND_ANNOTATOR
) -> Path | None:
    """A second annotator's label file for a seeded ``share`` of batch ``round_``, wrong with probability
    ``noise``; None when the share picks no image. Does not mark the batch answered."""
    ids = outbox.read_batch_ids(cfg.outbox, round_)
    rng = np.random.default_rng([seed, round_, 2])
    ids = [iid for iid in ids if rng.random() < share]
    if not ids:
        return None
    store = open_store(cfg)
    with store.connect(read_only=True, view=False) as con:
        truth = images.ground_truth_of(con, ids)
    classes = list(cfg.class_names(store))
    lines = ["image_id,label,annotator"]
    for iid in ids:
        label = truth.get(iid)
        if label is None:
            continue
        if rng.random() < noise:
            label = classes[(classes.index(label) + int(rng.integers(1, len(classes)))) % len(classes)]
        lines.append(f"{iid},{label},{annotator}")
    return atomic_write_text(cfg.inbox / delivery_name(annotator, round_), "\n".join(lines) + "\n")


def answer_pending(cfg: ProjectConfig, **kw) -> list[Path]:
    return [answer_round(cfg, r, **kw) for r in pending_rounds(cfg)]
