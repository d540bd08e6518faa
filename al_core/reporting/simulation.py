"""`al simulate`'s study over a project's store, without annotators and without writing to the database.

- :func:`load_data`: the pool and the evaluation images, their vectors and
  classes (al_core.catalogue.simulation; the loop's hold-out rule,
  al_core.loop.holdout.stratified_holdout, when the eval_set table is empty).
  The classes are the ground truth (class folders, a manifest's column) when
  the project has it; on a real project without one, the labels delivered so
  far are the oracle on the labelled subset (ORACLE_DELIVERED): the result says
  so, with how many labels and which strategy chose them, because that subset
  was picked by the strategy in use and the comparison is optimistic for it;
- :func:`run_study`: every query strategy and seed
  (al_core.learn.simulate.compare_strategies) and the result as JSON-ready data;
- :func:`write_outputs`: the runs as CSV (polars), the comparison plot (PNG)
  and the JSON the HTML report reads (al_core.reporting.data.simulate_curves),
  each written atomically (al_core.files.atomic); the CSV and the report's
  JSON never replace an earlier run's.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from al_core.catalogue import simulation as Q
from al_core.files.atomic import atomic_write_bytes, atomic_write_text, atomic_write_unique

CSV_COLUMNS = ("strategy", "seed", "round", "labels", "accuracy")
ORACLE_GROUND_TRUTH = "ground_truth"
ORACLE_DELIVERED = "delivered_labels"
CSV_ACCURACY_DECIMALS = 6


MIN_DELIVERED_LABELS = 20  # fewer delivered labels cannot seed, query and evaluate even one round


class SimulateError(RuntimeError):
    """The simulation cannot run as asked; the message says why and what to do."""


def latest_config_id(store) -> str:
    """The most recently registered embedding config with vectors; SimulateError when there is none."""
    from al_core.catalogue.reports import newest_embedded_config_id

    with store.connect(read_only=True, view=False) as con:
        config_id = newest_embedded_config_id(con)
    if config_id is None:
        raise SimulateError("the store holds no embeddings: run `al ingest` (or `make demo`) first")
    return config_id


def _eval_pairs(
    cfg, rows: list, eval_rows: list, truth: dict, proposed: set, holdout: int | None, oracle: str = ORACLE_GROUND_TRUTH
):
    """(source, [(image_id, class or None)]): the eval_set table when it has rows (labels from it, else
    from the ground truth), else the loop's stratified hold-out of the images not proposed yet. With the
    delivered labels as the oracle every candidate was proposed: the hold-out is then taken from them, unless
    the evaluation set has labels of its own."""
    from al_core.loop.holdout import stratified_holdout  # the loop's own hold-out rule

    if oracle == ORACLE_DELIVERED:
        labelled = [(iid, lab) for iid, lab in eval_rows if lab is not None]
        if labelled:
            return "eval_set", labelled
        proposed = set()
    elif eval_rows:
        return "eval_set", [(iid, lab if lab is not None else truth.get(iid)) for iid, lab in eval_rows]
    from al_core.loop.holdout import holdout_size

    n_hold = holdout_size(cfg, len(rows), len(set(truth.values()))) if holdout is None else int(holdout)
    if n_hold <= 0:
        raise SimulateError(
            "no evaluation set: the eval_set table is empty and evaluation.holdout is 0 (pass --holdout N)"
        )
    candidates = [(iid, gt if n == 1 else None) for iid, gt, n in rows if iid not in proposed]
    return "holdout", stratified_holdout(candidates, n_hold, cfg.selection.seed)


def load_data(
    store,
    cfg,
    classes: Sequence[str],
    config_id: str,
    holdout: int | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> dict:
    """Pool and evaluation features and class indices from the store (read only).

    Keys: pool_ids, eval_ids, features (pool, N x D), targets (class indices),
    test_features, test_targets, eval_source ('eval_set' or 'holdout'). The
    pool: every readable image with one ground-truth class of ``classes`` and a
    vector, outside the evaluation set; images with conflicting ground truth or
    a class outside the list are left out (and counted in ``log``).
    """
    from al_core.catalogue.reports import embedding_config_summary

    cls_index = {c: k for k, c in enumerate(classes)}
    with store.connect(read_only=True, view=False) as con:
        if embedding_config_summary(con, config_id) is None:
            raise SimulateError(f"unknown embedding config {config_id!r}")
        rows = Q.readable_images_with_truth(con)
        eval_rows = Q.eval_set_labels(con)
        proposed = Q.proposed_image_ids(con)
    embedded = store.embedded_ids(config_id)
    truth = {iid: gt for iid, gt, n in rows if gt is not None and n == 1}
    oracle = {"kind": ORACLE_GROUND_TRUTH}
    if not truth:
        truth, rows, oracle = _delivered_oracle(store, eval_rows)
        log(oracle["note"])
    eval_source, eval_pairs = _eval_pairs(cfg, rows, eval_rows, truth, proposed, holdout, oracle["kind"])
    eval_ids_all = {iid for iid, _ in eval_pairs}
    eval_pairs = [(iid, lab) for iid, lab in eval_pairs if lab in cls_index and iid in embedded]
    pool_pairs = [
        (iid, gt)
        for iid, gt in sorted(truth.items())
        if iid not in eval_ids_all and iid in embedded and gt in cls_index
    ]
    if not eval_pairs:
        raise SimulateError("the evaluation set has no image with a known class and a vector")
    if not pool_pairs:
        raise SimulateError("no pool image with ground truth and a vector outside the evaluation set")
    n_ambiguous = sum(1 for _, _, n in rows if n > 1)
    n_other = sum(1 for gt in truth.values() if gt not in cls_index)
    if n_ambiguous or n_other:
        log(
            f"left out: {n_ambiguous} images with conflicting ground truth, {n_other} of classes outside the class list"
        )
    emb = store.load_embeddings(config_id)  # all rows once; the two subsets are copied out of it
    row = {iid: i for i, iid in enumerate(emb.image_ids)}
    take = lambda pairs: np.fromiter((row[iid] for iid, _ in pairs), dtype=np.int64, count=len(pairs))
    return {
        "pool_ids": [iid for iid, _ in pool_pairs],
        "eval_ids": [iid for iid, _ in eval_pairs],
        "features": np.take(emb.features, take(pool_pairs), axis=0),
        "targets": np.array([cls_index[c] for _, c in pool_pairs], dtype=np.int64),
        "test_features": np.take(emb.features, take(eval_pairs), axis=0),
        "test_targets": np.array([cls_index[c] for _, c in eval_pairs], dtype=np.int64),
        "eval_source": eval_source,
        "oracle": oracle,
    }


def _delivered_oracle(store, eval_rows: list) -> tuple[dict, list, dict]:
    """Without ground truth: the delivered training labels as the oracle (truth, rows as for ground truth, and
    the oracle's description); SimulateError when there are too few."""
    with store.connect(read_only=True, view=False) as con:
        labels = Q.delivered_training_labels(con)
        chose = Q.strategies_that_chose(con)
    eval_ids = {iid for iid, _ in eval_rows}
    truth = {iid: lab for iid, lab in labels if iid not in eval_ids}
    if len(truth) < MIN_DELIVERED_LABELS:
        raise SimulateError(
            f"no ground truth in the store and only {len(truth)} labels delivered (at least {MIN_DELIVERED_LABELS} "
            "needed to simulate on them): label a few rounds first, or give class folders under images.root"
        )
    by = ", ".join(f"{s} ({n})" for s, n in chose) or "no batch"
    note = (
        f"no ground truth: the {len(truth)} labels delivered so far are the oracle, on the labelled subset "
        f"only. That subset was chosen by the strategies of this project's batches ({by}), so the comparison "
        "is optimistic for the strategy in use; it is a sanity check, not a measurement."
    )
    return (
        truth,
        [(iid, lab, 1) for iid, lab in sorted(truth.items())],
        {"kind": ORACLE_DELIVERED, "n_labels": len(truth), "chosen_by": dict(chose), "note": note},
    )


def run_study(
    store,
    cfg,
    *,
    classes: Sequence[str],
    strategies: Sequence[str],
    seed_strategy: str,
    rounds: int,
    seeds: Sequence[int],
    budget: int,
    config_id: str,
    holdout: int | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> dict:
    """Load the data, run every strategy and seed, and return the result (the JSON of `al simulate`).

    SimulateError when the pool is too small for ``rounds + 1`` rounds of ``budget``.
    """
    from al_core.learn.simulate import compare_strategies

    t0 = time.monotonic()
    log(f"al simulate: loading embeddings of config {config_id} from {store.db_path}")
    data = load_data(store, cfg, classes, config_id, holdout, log=log)
    n_pool, n_eval = len(data["pool_ids"]), len(data["eval_ids"])
    needed = (rounds + 1) * budget
    if needed > n_pool:
        raise SimulateError(
            f"{rounds + 1} rounds of {budget} need {needed} pool images but the pool has "
            f"{n_pool}: lower --rounds or --budget"
        )
    log(
        f"pool {n_pool} images, evaluation {n_eval} ({data['eval_source']}), {len(classes)} classes, "
        f"{data['features'].shape[1]}-d; {len(strategies)} strategies x {len(seeds)} seeds x {rounds + 1} rounds "
        f"of {budget} (seed pool: {seed_strategy})"
    )
    clock = {"round": time.monotonic(), "run": time.monotonic(), "done": 0}

    def progress(name, seed, r, acc, n_lab):
        t = time.monotonic()
        log(
            f"  [{name} seed {seed}] round {r}/{rounds}: {n_lab} labels, accuracy {acc:.3f} "
            f"({t - clock['round']:.1f} s)"
        )
        clock["round"] = t

    def finished(name, seed, res):
        t = time.monotonic()
        clock["done"] += 1
        log(
            f"{name} seed {seed}: final accuracy {res.accuracy[-1]:.3f} in {t - clock['run']:.1f} s "
            f"({clock['done']}/{len(strategies) * len(seeds)} runs, {t - t0:.0f} s so far)"
        )
        clock["run"] = clock["round"] = t

    per = compare_strategies(
        data["features"],
        data["targets"],
        data["test_features"],
        data["test_targets"],
        n_classes=len(classes),
        seed_strategy=seed_strategy,
        query_strategies=strategies,
        budget_per_round=budget,
        rounds=rounds,
        seeds=seeds,
        progress=progress,
        finished=finished,
    )
    return {
        "strategies": per,
        "seed_strategy": seed_strategy,
        "n_pool": n_pool,
        "n_eval": n_eval,
        "budget": budget,
        "rounds": rounds,
        "n_classes": len(classes),
        "classes": list(classes),
        "config_id": config_id,
        "eval_source": data["eval_source"],
        "oracle": data["oracle"],
        "seed_rule": "the study's seeds 1, 10, 100, ...",
        "std": "population standard deviation over seeds",
        "area_under_curve": "mean accuracy over the label range (trapezoid area / label span)",
        "project": cfg.source_file,
        "created_at": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(time.monotonic() - t0, 2),
    }


def result_frame(result: dict) -> pl.DataFrame:
    """One row per strategy, seed and round (CSV_COLUMNS) of a :func:`run_study` result."""
    rows = [
        (name, seed, r, n_lab, acc)
        for name, s in result["strategies"].items()
        for seed, accs in zip(s["seeds"], s["accuracy_per_seed"], strict=True)
        for r, (n_lab, acc) in enumerate(zip(s["labels_per_round"], accs, strict=True))
    ]
    return pl.DataFrame(
        rows,
        schema={"strategy": pl.String, "seed": pl.Int64, "round": pl.Int64, "labels": pl.Int64, "accuracy": pl.Float64},
        orient="row",
    )


def write_outputs(result: dict, out_dir: Path, reports_dir: Path, json_out: str | None) -> dict:
    """Write ``simulate-<UTC stamp>.csv`` and ``.png`` to ``out_dir`` and the JSON to ``reports_dir`` (and to
    ``json_out`` unless None or '-'); return their paths by kind (csv, png, report_json, json).

    The CSV and the report's JSON copy never replace an earlier file: a taken
    name gets ``-1``, ``-2``, ... (al_core.files.atomic.atomic_write_unique).
    """
    from al_core.reporting.plots import learning_curve_png

    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    csv = result_frame(result).write_csv(float_precision=CSV_ACCURACY_DECIMALS)  # small: strategies x seeds x rounds
    csv_path = atomic_write_unique(Path(out_dir) / f"simulate-{stamp}.csv", csv.encode("utf-8"))
    curves = {
        name: list(zip(s["labels_per_round"], s["accuracy_per_round"], s["std_per_round"], strict=True))
        for name, s in result["strategies"].items()
    }
    n_seeds = len(next(iter(result["strategies"].values()))["seeds"])
    title = (
        f"al simulate: seed pool {result['seed_strategy']}, {result['budget']} per round, {n_seeds} seeds (mean ± std)"
    )
    png_path = atomic_write_bytes(csv_path.with_suffix(".png"), learning_curve_png(curves, title=title))
    text = json.dumps(result, indent=2) + "\n"
    copy_path = atomic_write_unique(Path(reports_dir) / f"simulate-{stamp}.json", text.encode("utf-8"))
    paths = {"csv": str(csv_path), "png": str(png_path), "report_json": str(copy_path)}
    if json_out and json_out != "-":
        paths["json"] = str(atomic_write_text(Path(json_out), text).absolute())
    return paths
