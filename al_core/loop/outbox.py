"""The outbox: the files that hand a batch to the annotators, and the one definition of their names.

For batch N (``batch_stem(N)`` = ``round-NNNN``):

- ``round-NNNN.csv``: ``image_id,path,rank,score,strategy``, written last, so its
  appearance means the batch is complete (the annotators, the simulated
  annotator and the demo wait for it; the sensor's ``pending_work`` looks for it);
  an image to label again has the strategy ``relabel``, one proposed again for adjudication ``adjudication``;
- ``round-NNNN.label-studio.json``: the same batch as Label Studio import tasks
  (al_core.labels.label_studio: image URLs under ``label_studio.document_root``,
  the task data with each row's strategy, ``relabel: true`` for an image to label
  again, the probe's pre-labels);
- ``label-studio-config.xml``: the labelling interface for the project's classes;
- ``eval-holdout.csv``: the held-out images to label, when the ground truth does
  not label them (``evaluation.labels_from_ground_truth: false``).

Every file is written atomically (``al_core.files.atomic``: a temporary file
created exclusively under an unpredictable name, then renamed, so a link planted
in the outbox is replaced, never followed); an entry under one of these names
that is not a regular file (a folder, a link) is set aside first
(``set_aside``), and a batch CSV counts as written only when it is a regular
file (``has_batch_csv``). Outbox files are read without following a link.
"""

import csv
import io
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

from al_core.catalogue import rounds as rounds_q
from al_core.catalogue.rounds import RELABEL
from al_core.config import ProjectConfig
from al_core.faults import fault_point  # named SIGKILL points (tests/test_reliability.py)
from al_core.files import safe
from al_core.files.atomic import atomic_write_text
from al_core.files.safe import is_regular_file, open_regular
from al_core.labels.label_studio import label_studio_config, label_studio_tasks

BATCH_CSV = re.compile(r"^round-(\d{4})\.csv$")  # the name batch_csv gives; its group is the batch's round
BATCH_CSV_HEADER = ("image_id", "path", "rank", "score", "strategy")
LABEL_STUDIO_CONFIG = "label-studio-config.xml"
EVAL_HOLDOUT_CSV = "eval-holdout.csv"


def batch_stem(round_: int) -> str:
    """``round-NNNN``: the stem of every file of batch ``round_`` (the simulated annotator's deliveries too)."""
    return f"round-{round_:04d}"


def batch_csv(outbox: Path, round_: int) -> Path:
    return outbox / f"{batch_stem(round_)}.csv"


def batch_tasks_json(outbox: Path, round_: int) -> Path:
    return outbox / f"{batch_stem(round_)}.label-studio.json"


def has_batch_csv(outbox: Path, round_: int) -> bool:
    """Whether batch ``round_``'s CSV is in ``outbox`` as a regular file (a link or folder of that name is not it)."""
    return is_regular_file(batch_csv(outbox, round_))


def batches_in(outbox: Path) -> list[int]:
    """Rounds whose batch CSV is in ``outbox`` (a regular file), ascending."""
    if not outbox.is_dir():
        return []
    return sorted(
        int(m.group(1))
        for name in os.listdir(outbox)
        if (m := BATCH_CSV.match(name)) and is_regular_file(outbox / name)
    )


def read_batch_ids(outbox: Path, round_: int) -> list[str]:
    """The image ids of batch ``round_`` as its CSV lists them, in rank order (never through a link)."""
    with open_regular(batch_csv(outbox, round_)) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as f:
        return [row["image_id"] for row in csv.DictReader(f)]


def set_aside(path: Path) -> str | None:
    """Rename an entry at ``path`` that is not a regular file (a folder or link planted in the outbox) to a hidden
    ``.NAME.refused-KIND-STAMP`` beside it (kept, never followed), so the file can be written there; returns the
    new name, or None (al_core.files.safe.set_aside)."""
    return safe.set_aside(path, hidden=True)


def csv_field(v) -> str:
    """One CSV field, quoted when it holds a comma, a quote or a line break (a lone carriage return included,
    which Python 3.11's csv writer leaves bare)."""
    s = "" if v is None else str(v)
    if any(c in s for c in ',"\n\r'):
        s = '"' + s.replace('"', '""') + '"'
    return s


def _csv_text(header: Sequence[str], rows) -> str:
    return "".join(",".join(csv_field(v) for v in row) + "\n" for row in [header, *rows])


def _score(s: float | None) -> float | None:
    return None if s is None or math.isnan(s) else float(s)


# ----------------------------------------------------------------------------- Label Studio
# ----------------------------------------------------------------------------- writing
def write_outbox(
    cfg: ProjectConfig,
    round_: int,
    strategy: str,
    ids: list[str],
    scores: list[float],
    paths: dict,
    classes: Sequence[str],
    *,
    strategies: Sequence[str] | None = None,
    predictions: dict | None = None,
    model_version: str | None = None,
) -> list[str]:
    """round-NNNN.csv, round-NNNN.label-studio.json and label-studio-config.xml, each written atomically.

    ``strategies``: each row's strategy (default ``strategy``; ``relabel`` for an image to label again, its task
    marked ``relabel: true``); ``predictions``: image id -> (class, probability)
    of the probe ``model_version`` (the tasks' pre-labels). The CSV is written last: its appearance means the batch
    is complete. Returns the three paths, CSV first.
    """
    out = cfg.outbox
    csv_path, ls_path, xml_path = batch_csv(out, round_), batch_tasks_json(out, round_), out / LABEL_STUDIO_CONFIG
    for p in (csv_path, ls_path, xml_path):
        set_aside(p)
    strategies = list(strategies) if strategies is not None else [strategy] * len(ids)
    tasks = label_studio_tasks(
        round_,
        strategy,
        ids,
        scores,
        paths,
        cfg.labels.image_url_template,
        document_root=cfg.document_root,
        strategies=strategies,
        predictions={k: v for k, v in (predictions or {}).items() if v[0] is not None},
        model_version=model_version if cfg.label_studio.prelabels else None,
    )
    for task, st in zip(tasks, strategies, strict=True):
        if st == RELABEL:
            task["data"]["relabel"] = True
    atomic_write_text(ls_path, json.dumps(tasks, indent=1) + "\n")
    atomic_write_text(xml_path, label_studio_config(classes, cfg.labels.skip_label))
    fault_point("outbox.before_csv")
    rows = [
        [iid, paths[iid], rank, "" if _score(sc) is None else repr(sc), st]
        for rank, (iid, sc, st) in enumerate(zip(ids, scores, strategies, strict=True), 1)
    ]
    atomic_write_text(csv_path, _csv_text(BATCH_CSV_HEADER, rows))
    return [str(csv_path), str(ls_path), str(xml_path)]


def repair_outbox(store, cfg: ProjectConfig, classes: Sequence[str]) -> list[str]:
    """Write the outbox files of every open batch whose CSV is missing, from the committed queries.

    Returns the CSVs written (a run that stopped between a batch's commit and its CSV leaves one).
    """
    with store.connect(read_only=True, view=False) as con:
        todo = [(r, strategy) for r, strategy in rounds_q.open_batches(con) if not has_batch_csv(cfg.outbox, r)]
        batches = {r: (rounds_q.batch_rows(con, r), rounds_q.round_probe_id(con, r)) for r, _ in todo}
    written = []
    for r, strategy in todo:
        rows, probe_id = batches[r]
        scores = [float("nan") if q[2] is None else float(q[2]) for q in rows]
        written += write_outbox(
            cfg,
            r,
            strategy,
            [q[0] for q in rows],
            scores,
            {q[0]: q[1] for q in rows},
            classes,
            strategies=[q[3] for q in rows],
            predictions={q[0]: (q[4], q[5]) for q in rows},
            model_version=probe_id,
        )[:1]
    return written


def write_eval_holdout(cfg: ProjectConfig, chosen: Sequence[str], paths: dict) -> Path:
    """eval-holdout.csv: ``image_id,path`` of the held-out images for the annotators to label."""
    set_aside(cfg.outbox / EVAL_HOLDOUT_CSV)
    return atomic_write_text(
        cfg.outbox / EVAL_HOLDOUT_CSV, _csv_text(("image_id", "path"), [[iid, paths.get(iid, "")] for iid in chosen])
    )
