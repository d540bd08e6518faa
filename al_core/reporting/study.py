"""The study's comparison for this project: labels each strategy of the newest `al simulate` run needed to reach
the target, with the range over its seeds (al_core.reporting.simulation writes the runs).

Per strategy and seed, the labels needed are the first labelled-set size whose accuracy is at or above the
target (no interpolation); a seed that never gets there counts as "more than" the largest size simulated.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def newest_simulation(reports_dir: str | os.PathLike) -> tuple[Path, dict] | None:
    """(path, parsed JSON) of the newest readable ``simulate*.json`` under ``reports_dir``, or None."""
    d = Path(reports_dir)
    if not d.is_dir():
        return None
    for f in sorted(d.glob("simulate*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            if isinstance(data.get("strategies"), dict) and data["strategies"]:
                return f, data
        except (OSError, ValueError):
            continue
    return None


def labels_to_reach(labels: list[int], accuracy: list[float], target: float) -> int | None:
    """The first labelled-set size whose accuracy is >= target, or None when none is."""
    return next((int(n) for n, a in zip(labels, accuracy, strict=True) if a >= target), None)


def study_comparison(reports_dir: str | os.PathLike, target: float | None) -> dict | None:
    """Per strategy of the newest simulation: labels to reach ``target`` per seed, how many seeds reached it,
    the median over the seeds (None when the seeds that never reached it hold the median), the range
    (``high`` None when a seed never reached it), and the largest size simulated; None without a simulation
    or a target."""
    found = newest_simulation(reports_dir)
    if found is None or target is None:
        return None
    path, data = found
    out = {}
    for name, s in data["strategies"].items():
        labels = [int(n) for n in s["labels_per_round"]]
        per_seed = [labels_to_reach(labels, accs, target) for accs in s["accuracy_per_seed"]]
        reached = sorted(n for n in per_seed if n is not None)
        ranked = reached + [math.inf] * (len(per_seed) - len(reached))  # a seed that never got there: beyond all
        k = len(ranked)
        median = (ranked[k // 2] if k % 2 else (ranked[k // 2 - 1] + ranked[k // 2]) / 2) if k else math.inf
        median = median if math.isfinite(median) else None
        out[name] = {
            "per_seed": per_seed,
            "seeds": list(s["seeds"]),
            "reached": len(reached),
            "median": median,
            "low": reached[0] if reached else None,
            "high": reached[-1] if len(reached) == len(per_seed) and reached else None,
            "max_labels": labels[-1],
        }
    return {
        "file": str(path),
        "seed_strategy": data.get("seed_strategy"),
        "target": target,
        "strategies": out,
        "n_pool": data.get("n_pool"),
        "n_eval": data.get("n_eval"),
    }
