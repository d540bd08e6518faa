"""Shared set-up for loop tests: a small real project on sample images."""

import os
import shutil
import time
from pathlib import Path

import yaml

from tests.conftest import SAMPLE_ROOT


def make_project(
    tmp: Path,
    *,
    classes=("airplane", "cat", "frog", "ship"),
    per_class=15,
    holdout=12,
    budget=4,
    total=16,
    fraction=1.0,
    seed_strategy="centroid",
    query_strategy="dropquery",
    image_size=64,
) -> Path:
    root = tmp / "images"
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for f in sorted((SAMPLE_ROOT / c).iterdir())[:per_class]:
            shutil.copy(f, root / c / f.name)
    conf = {
        "images": {"root": "images"},
        "classes": list(classes),
        "backbone": {"name": "efficientnet_lite0", "image_size": image_size, "batch_size": 32},
        "selection": {
            "seed_strategy": seed_strategy,
            "query_strategy": query_strategy,
            "budget_per_round": budget,
            "total_budget": total,
            "answered_fraction": fraction,
            "seed": 0,
        },
        "evaluation": {"holdout": holdout, "labels_from_ground_truth": True},
        "paths": {"data_dir": "data", "inbox": "data/inbox", "outbox": "data/outbox"},
        "sensor": {"interval_s": 1, "settle_s": 0.0, "ingest_before_round": False},
        "store": {"lock_timeout_s": 5},
    }
    p = tmp / "al.yaml"
    p.write_text(yaml.safe_dump(conf))
    return p


def answer_batch(cfg, store, round_: int, name: str | None = None, *, wrong: int = 0, only: int | None = None) -> Path:
    """Write a CSV label file answering batch `round_` from the ground truth."""
    rows = store.fetch(
        """SELECT q.image_id, any_value(g.class_name) FROM queries q JOIN ground_truth g USING (image_id)
                          WHERE q.round = ? GROUP BY q.image_id, q.rank ORDER BY q.rank""",
        [round_],
    )
    if only is not None:
        rows = rows[:only]
    classes = list(cfg.classes)
    lines = ["image_id,label,annotator"]
    for i, (iid, label) in enumerate(rows):
        if i < wrong:
            label = classes[(classes.index(label) + 1) % len(classes)]
        lines.append(f"{iid},{label},sim")
    cfg.inbox.mkdir(parents=True, exist_ok=True)
    p = cfg.inbox / (name or f"labels-round-{round_:04d}.csv")
    p.write_text("\n".join(lines) + "\n")
    old = time.time() - 10
    os.utime(p, (old, old))
    return p


def run_requests(defs, instance, sensor_name="inbox_sensor"):
    import dagster as dg

    sensor = defs.resolve_sensor_def(sensor_name)
    ctx = dg.build_sensor_context(instance=instance, resources={"project": defs.resources["project"]})
    result = sensor(ctx)
    return result


def execute(defs, instance, request):
    """Run a RunRequest in process, as the daemon would (partition added first)."""
    job = defs.resolve_job_def(request.job_name)
    if request.partition_key is not None:
        instance.add_dynamic_partitions("rounds", [request.partition_key])
    return job.execute_in_process(
        instance=instance, partition_key=request.partition_key, run_config=request.run_config or None, tags=request.tags
    )


__all__ = ["make_project", "answer_batch", "run_requests", "execute", "yaml", "shutil"]
