"""What the report shows, read from the catalogue (al_core.catalogue.reports / .audit) and the reports folder.

Each function opens one short read-only connection. Tables are polars frames.

- :func:`latest_metrics`: the metrics of every round's latest probe.
- :func:`loop_curves`: the running project's learning curve.
- :func:`simulate_curves`: the curves of every ``al simulate`` run saved under
  ``<data_dir>/reports/simulate*.json``; :func:`all_curves`: both.
- :func:`latest_query_set`: the latest proposed batch.
- :func:`project_summary`: the numbers of the report's summary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl

from al_core.catalogue import reports as Q
from al_core.catalogue.audit import latest_probe_per_round, latest_round_config_id

METRIC_COLUMNS = (
    "round",
    "version",
    "probe_id",
    "n_labels",
    "n_eval",
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "per_class_recall",
    "confusion",
    "evaluated_at",
    "trigger",
    "classes",
    "per_class_n_eval",
)


def _json_or(s, default):
    if s is None:
        return default
    try:
        return json.loads(s)
    except (TypeError, ValueError):
        return default


def _class_names(cfg, store) -> list[str]:
    """The project's classes, or [] when it has no class list yet (the report still renders)."""
    from al_core.catalogue.store import StoreError
    from al_core.config import ConfigError

    try:
        return list(cfg.class_names(store))
    except (ConfigError, StoreError):
        return []


def latest_metrics(store) -> pl.DataFrame:
    """One row per round whose latest probe (al_core.catalogue.probes.LATEST_PROBE_ORDER) is evaluated.

    Columns METRIC_COLUMNS: n_labels is the probe's training labels;
    per_class_recall and confusion are JSON text (:func:`metrics_record` parses them).
    """
    with store.connect(read_only=True, view=False) as con:
        probes = latest_probe_per_round(con)
    return probes.filter(pl.col("evaluated_at").is_not_null()).select(METRIC_COLUMNS).sort("round")


def metrics_record(row: dict) -> dict:
    """A row of :func:`latest_metrics` with per_class_recall (dict), confusion (list of lists) and
    per_class_n_eval (dict; {} for metrics recorded before it was kept) parsed."""
    return {
        **row,
        "per_class_recall": _json_or(row["per_class_recall"], {}),
        "confusion": _json_or(row["confusion"], []),
        "per_class_n_eval": _json_or(row.get("per_class_n_eval"), {}),
    }


def last_confusion(metrics: pl.DataFrame) -> dict | None:
    """The latest round of ``metrics`` that has a confusion matrix (:func:`metrics_record`), or None."""
    for row in reversed(metrics.to_dicts()):
        m = metrics_record(row)
        if m["confusion"]:
            return m
    return None


def confusion_classes(m: dict, cfg, store) -> list[str]:
    """Names of the rows of ``m['confusion']``: the class list the probe was trained with, else its recall keys,
    else the project's classes, else 'class i'."""
    k = len(m["confusion"])
    recorded = _json_or(m.get("classes"), [])
    if isinstance(recorded, list) and len(recorded) == k:
        return [str(c) for c in recorded]
    names = list(m["per_class_recall"].keys()) if isinstance(m["per_class_recall"], dict) else []
    if len(names) == k:
        return names
    names = _class_names(cfg, store)
    return names if len(names) == k else [f"class {i}" for i in range(k)]


def loop_label(rounds: list[dict]) -> str:
    """'dropquery (seed: centroid)' from the rounds' kind and strategy; strategies joined by ' → ' if changed."""
    seeds = [r["strategy"] for r in rounds if r["kind"] == "seed"]
    queries: list[str] = []
    for r in rounds:
        if r["kind"] == "query" and (not queries or queries[-1] != r["strategy"]):
            queries.append(r["strategy"])
    seed = seeds[0] if seeds else None
    if queries:
        name = " → ".join(queries)
        return f"{name} (seed: {seed})" if seed else name
    if seed:
        return f"seed pool only (seed: {seed})"
    return "labelling loop"


def round_overview(store) -> pl.DataFrame:
    """Every proposed batch: round, kind, strategy, budget, status (al_core.catalogue.reports.round_overview)."""
    with store.connect(read_only=True, view=False) as con:
        return Q.round_overview(con)


def loop_curves(store) -> dict[str, list[tuple[int, float]]]:
    """The live loop's learning curve: ``{label: [(n_labels, accuracy), ...]}`` (empty dict before any metrics).

    One point per round whose latest probe has an accuracy. The label names the
    query strategy of the project's rounds and its seed strategy, e.g.
    ``"dropquery (seed: centroid)"`` (several query strategies, when the
    configuration changed, are joined by ``→``).
    """
    metrics = latest_metrics(store).filter(pl.col("accuracy").is_not_null())
    if metrics.is_empty():
        return {}
    label = loop_label(round_overview(store).to_dicts())
    return {label: [(int(n), float(a)) for n, a in metrics.select("n_labels", "accuracy").iter_rows()]}


def simulate_curves(reports_dir: str | os.PathLike) -> tuple[dict[str, list[tuple]], list[str]]:
    """Curves of every ``simulate*.json`` under ``reports_dir`` (oldest first; a later run of the same
    strategy and seed strategy replaces an earlier one), as ``(n, mean, std)`` points; and the
    problems met (unreadable files are skipped, named in the list)."""
    d = Path(reports_dir)
    curves: dict[str, list[tuple]] = {}
    problems: list[str] = []
    if not d.is_dir():
        return curves, problems
    files = sorted(d.glob("simulate*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            seed = data.get("seed_strategy")
            for name, s in data["strategies"].items():
                acc = s["accuracy_per_round"]
                labels = s["labels_per_round"]
                std = s.get("std_per_round") or [None] * len(acc)
                key = f"simulated: {name}" + (f" (seed: {seed})" if seed else "")
                curves[key] = [(int(n), a, sd) for n, a, sd in zip(labels, acc, std, strict=True)]
        except Exception as e:  # a foreign or broken file must not break the report
            problems.append(f"{f.name}: {type(e).__name__}: {e}")
    return curves, problems


def all_curves(store, cfg) -> tuple[dict[str, list[tuple]], list[str]]:
    """The live loop's curve plus every saved simulation's (see :func:`simulate_curves`)."""
    curves = dict(loop_curves(store))
    sim, problems = simulate_curves(cfg.reports_dir)
    curves.update(sim)
    return curves, problems


def latest_query_set(store) -> tuple[int | None, str | None, list[dict]]:
    """(round, strategy, [{rank, image_id, path, score}]) of the latest proposed batch."""
    with store.connect(read_only=True, view=False) as con:
        batch = Q.latest_batch(con)
        if batch is None:
            return None, None, []
        queries = Q.batch_queries(con, batch[0])
    return batch[0], batch[1], queries.to_dicts()


def project_summary(store, cfg) -> dict:
    """The report's summary: project file, database, counts (al_core.catalogue.reports.project_counts),
    the embedding config of the latest batch (else the newest with vectors), classes, strategies, budgets."""
    with store.connect(read_only=True, view=False) as con:
        counts = Q.project_counts(con)
        cid = latest_round_config_id(con) or Q.newest_embedded_config_id(con)
        emb = Q.embedding_config_summary(con, cid) if cid else None
    return {
        "project": cfg.source_file or str(Path(cfg.base_dir) / "(default settings, no al.yaml)"),
        "database": str(store.db_path),
        **counts,
        "embedding": emb,
        "classes": _class_names(cfg, store),
        "configured_backbone": cfg.backbone.name,
        "seed_strategy": cfg.selection.seed_strategy,
        "query_strategy": cfg.selection.query_strategy,
        "budget_per_round": cfg.selection.budget_per_round,
        "total_budget": cfg.selection.total_budget,
    }
