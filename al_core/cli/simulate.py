"""`al simulate`: compare selection strategies in process on the project's embedded images (no annotators).

Reads the embeddings and the ground truth (class folders or manifest classes)
from the store, holds out the evaluation images, and runs the study's loop
(al_core.learn.simulate.run_simulation) for every query strategy and seed: round 0
picks BUDGET images with the seed strategy, each later round BUDGET more with
the query strategy, the probe is retrained after every round and scored on the
hold-out. Nothing is written to the database.

Evaluation images: the project's eval_set table when it has rows (labels from
the table, else from the ground truth); otherwise the stratified hold-out of
evaluation.holdout images that the labelling loop would pick (same rule, same
seed: selection.seed).

Seeds: the study's 1, 10, 100, 1000, ... (the first --seeds of them).

Outputs: a table (strategy x round, mean accuracy over seeds) on stdout, progress
on stderr; in --out-dir (default <data_dir>/reports/): simulate-<timestamp>.csv
(strategy, seed, round, labels, accuracy) and simulate-<timestamp>.png (the
comparison plot); always <data_dir>/reports/simulate-<timestamp>.json, which
the HTML report (al_core.reporting.report) picks up; --json OUT writes the same JSON to
OUT (--json alone or --json - prints it on stdout, and the table goes to stderr).

JSON: {"strategies": {name: {"accuracy_per_round": [rounds+1 means over
seeds], "std_per_round": [population std], "labels_per_round": [...],
"seeds": [...], "accuracy_per_seed": [[...], ...], "area_under_curve": mean
accuracy over the label range (trapezoid area / label span; the single
accuracy when --rounds 0)}}, "seed_strategy", "n_pool", "n_eval", "budget",
"rounds", ...}.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from al_core.loop.holdout import stratified_holdout  # the loop's own hold-out rule
from al_core.catalogue import open_store

DEFAULT_STRATEGIES = "dropquery,margin,random"


class SimulateError(RuntimeError):
    """The simulation cannot run as asked; the message says why and what to do."""


def study_seeds(n: int) -> list[int]:
    """The study's seeds: 1, 10, 100, ... (n of them)."""
    return [10 ** i for i in range(n)]


def area_under_curve(labels: Sequence[float], accuracy: Sequence[float]) -> float:
    """Mean accuracy over the label range: trapezoid area divided by the label span."""
    x = np.asarray(labels, dtype=np.float64)
    y = np.asarray(accuracy, dtype=np.float64)
    if len(y) == 0:
        return float("nan")
    if len(y) == 1 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def latest_config_id(store) -> str:
    rows = store.fetch("""SELECT c.config_id FROM embedding_configs c
                          WHERE EXISTS (SELECT 1 FROM embedding_index i WHERE i.config_id = c.config_id)
                          ORDER BY c.created_at DESC, c.config_id LIMIT 1""")
    if not rows:
        raise SimulateError("the store holds no embeddings: run `al ingest` (or `make demo`) first")
    return rows[0][0]


def load_data(store, cfg, classes: Sequence[str], config_id: str, holdout: int | None = None,
              log=lambda m: None) -> dict:
    """Pool and evaluation features and class indices from the store (read only)."""
    cls_index = {c: k for k, c in enumerate(classes)}
    with store.connect(read_only=True, view=False) as con:
        if con.execute("SELECT 1 FROM embedding_configs WHERE config_id = ?", [config_id]).fetchone() is None:
            raise SimulateError(f"unknown embedding config {config_id!r}")
        embedded = {r[0] for r in con.execute(
            "SELECT image_id FROM embedding_index WHERE config_id = ?", [config_id]).fetchall()}
        ok_rows = con.execute(
            """SELECT p.image_id, any_value(g.class_name), count(DISTINCT g.class_name)
               FROM (SELECT DISTINCT image_id FROM image_paths WHERE status = 'ok') p
               LEFT JOIN ground_truth g USING (image_id) GROUP BY p.image_id ORDER BY p.image_id""").fetchall()
        eval_rows = con.execute("SELECT image_id, label FROM eval_set ORDER BY image_id").fetchall()
        proposed = {r[0] for r in con.execute("SELECT image_id FROM queries").fetchall()}
    truth = {iid: gt for iid, gt, n in ok_rows if gt is not None and n == 1}
    n_ambiguous = sum(1 for _, _, n in ok_rows if n > 1)
    if not truth:
        raise SimulateError("no ground truth in the store: `al simulate` needs class folders under images.root "
                            "(or a `class` column in the manifest)")
    if eval_rows:
        eval_source = "eval_set"
        eval_pairs = [(iid, lab if lab is not None else truth.get(iid)) for iid, lab in eval_rows]
    else:
        n_hold = cfg.evaluation.holdout if holdout is None else int(holdout)
        if n_hold <= 0:
            raise SimulateError("no evaluation set: the eval_set table is empty and evaluation.holdout is 0 "
                                "(pass --holdout N)")
        eval_source = "holdout"
        cand = [(iid, gt if n == 1 else None) for iid, gt, n in ok_rows if iid not in proposed]
        eval_pairs = stratified_holdout(cand, n_hold, cfg.selection.seed)
    eval_ids_all = {iid for iid, _ in eval_pairs}
    eval_pairs = [(iid, lab) for iid, lab in eval_pairs if lab in cls_index and iid in embedded]
    pool_pairs = [(iid, gt) for iid, gt in sorted(truth.items())
                  if iid not in eval_ids_all and iid in embedded and gt in cls_index]
    n_other = sum(1 for gt in truth.values() if gt not in cls_index)
    if not eval_pairs:
        raise SimulateError("the evaluation set has no image with a known class and a vector")
    if not pool_pairs:
        raise SimulateError("no pool image with ground truth and a vector outside the evaluation set")
    if n_ambiguous or n_other:
        log(f"left out: {n_ambiguous} images with conflicting ground truth, {n_other} of classes outside the class list")
    emb = store.load_embeddings(config_id)  # all rows once; the two subsets are copied out of it
    row = {iid: i for i, iid in enumerate(emb.image_ids)}
    pool_rows = np.fromiter((row[iid] for iid, _ in pool_pairs), dtype=np.int64, count=len(pool_pairs))
    eval_rows_idx = np.fromiter((row[iid] for iid, _ in eval_pairs), dtype=np.int64, count=len(eval_pairs))
    return {
        "pool_ids": [iid for iid, _ in pool_pairs], "eval_ids": [iid for iid, _ in eval_pairs],
        "features": np.take(emb.features, pool_rows, axis=0),
        "targets": np.array([cls_index[c] for _, c in pool_pairs], dtype=np.int64),
        "test_features": np.take(emb.features, eval_rows_idx, axis=0),
        "test_targets": np.array([cls_index[c] for _, c in eval_pairs], dtype=np.int64),
        "eval_source": eval_source,
    }


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def format_table(result: dict) -> str:
    strategies = result["strategies"]
    if not strategies:
        return ""
    labels = next(iter(strategies.values()))["labels_per_round"]
    w = max(10, *(len(s) for s in strategies)) + 2
    lines = ["mean accuracy over seeds " + str(next(iter(strategies.values()))["seeds"]) + " by labelled images",
             "strategy".ljust(w) + "".join(f"{n:>7}" for n in labels) + "     AUC"]
    for name, s in strategies.items():
        lines.append(name.ljust(w) + "".join(f"{a:7.3f}" for a in s["accuracy_per_round"])
                     + f"{s['area_under_curve']:8.3f}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="al simulate", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--strategies", default=DEFAULT_STRATEGIES,
                    help="comma-separated query strategies (default %(default)s)")
    ap.add_argument("--seed-strategy", help="round-0 strategy (default: selection.seed_strategy of the project)")
    ap.add_argument("--rounds", type=int, default=10, help="query rounds after the seed round (default %(default)s)")
    ap.add_argument("--seeds", type=int, default=3,
                    help="how many seeds, the study's 1, 10, 100, ... (default %(default)s)")
    ap.add_argument("--budget", type=int, help="images per round (default: the number of classes)")
    ap.add_argument("--json", nargs="?", const="-", metavar="OUT",
                    help="write the JSON to OUT (--json alone or --json -: print it on stdout)")
    ap.add_argument("--config", help="project file (default $AL_CONFIG, else ./al.yaml, else the defaults)")
    ap.add_argument("--config-id", help="embedding config (default: the most recent one that has vectors)")
    ap.add_argument("--holdout", type=int,
                    help="hold-out size when the eval_set table is empty (default evaluation.holdout)")
    ap.add_argument("--out-dir", help="where the CSV and the plot go (default <data_dir>/reports/)")
    return ap


def run(args, log) -> dict:
    from al_core.config import load_config

    cfg = load_config(args.config)
    store = open_store(cfg)
    if not store.db_path.exists():
        raise SimulateError(f"no database at {store.db_path}: run `al ingest` (or `make demo`) first")
    classes = list(cfg.class_names(store))
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if not names:
        raise SimulateError("--strategies: give at least one strategy name")
    if len(set(names)) != len(names):
        raise SimulateError("--strategies: a strategy is named twice")
    seed_name = args.seed_strategy or cfg.selection.seed_strategy
    if args.rounds < 0:
        raise SimulateError("--rounds must be >= 0")
    if args.seeds < 1:
        raise SimulateError("--seeds must be >= 1")
    budget = len(classes) if args.budget is None else args.budget
    if budget < 1:
        raise SimulateError("--budget must be >= 1")

    from al_core.learn.strategies import get_strategy, seed_strategies

    for n in [seed_name, *names]:
        get_strategy(n)  # UnknownStrategyError names the known ones
    if seed_name not in seed_strategies():
        raise SimulateError(f"--seed-strategy {seed_name!r} needs labels; seed strategies: {', '.join(seed_strategies())}")

    config_id = args.config_id or latest_config_id(store)
    t0 = time.monotonic()
    log(f"al simulate: loading embeddings of config {config_id} from {store.db_path}")
    data = load_data(store, cfg, classes, config_id, args.holdout, log=log)
    n_pool, n_eval = len(data["pool_ids"]), len(data["eval_ids"])
    needed = (args.rounds + 1) * budget
    if needed > n_pool:
        raise SimulateError(f"{args.rounds + 1} rounds of {budget} need {needed} pool images but the pool has "
                            f"{n_pool}: lower --rounds or --budget")
    seeds = study_seeds(args.seeds)
    log(f"pool {n_pool} images, evaluation {n_eval} ({data['eval_source']}), {len(classes)} classes, "
        f"{data['features'].shape[1]}-d; {len(names)} strategies x {len(seeds)} seeds x {args.rounds + 1} rounds "
        f"of {budget} (seed pool: {seed_name})")

    from al_core.learn.simulate import run_simulation

    per: dict[str, dict] = {}
    rows_csv: list[tuple] = []
    total = len(names) * len(seeds)
    done = 0
    for name in names:
        accs, labels_per_round = [], None
        for seed in seeds:
            t_run = time.monotonic()
            last = [time.monotonic()]

            def progress(r, acc, n_lab, _name=name, _seed=seed, _last=last):
                now_ = time.monotonic()
                log(f"  [{_name} seed {_seed}] round {r}/{args.rounds}: {n_lab} labels, accuracy {acc:.3f} "
                    f"({now_ - _last[0]:.1f} s)")
                _last[0] = now_

            res = run_simulation(
                data["features"], data["targets"], data["test_features"], data["test_targets"],
                n_classes=len(classes), seed_strategy=seed_name, query_strategy=name,
                budget_per_round=budget, rounds=args.rounds, seed=seed, progress=progress)
            done += 1
            accs.append([float(a) for a in res.accuracy])
            labels_per_round = [int(n) for n in res.n_labeled]
            for r, (n_lab, a) in enumerate(zip(labels_per_round, res.accuracy, strict=True)):
                rows_csv.append((name, seed, r, n_lab, float(a)))
            log(f"{name} seed {seed}: final accuracy {res.accuracy[-1]:.3f} in {time.monotonic() - t_run:.1f} s "
                f"({done}/{total} runs, {time.monotonic() - t0:.0f} s so far)")
        a = np.asarray(accs)
        mean = a.mean(axis=0)
        per[name] = {
            "accuracy_per_round": [float(x) for x in mean],
            "std_per_round": [float(x) for x in a.std(axis=0)],
            "labels_per_round": labels_per_round,
            "seeds": seeds,
            "accuracy_per_seed": accs,
            "area_under_curve": area_under_curve(labels_per_round, mean),
        }
    created = _dt.datetime.now(_dt.UTC)
    return {
        "strategies": per,
        "seed_strategy": seed_name,
        "n_pool": n_pool,
        "n_eval": n_eval,
        "budget": budget,
        "rounds": args.rounds,
        "n_classes": len(classes),
        "classes": classes,
        "config_id": config_id,
        "eval_source": data["eval_source"],
        "seed_rule": "the study's seeds 1, 10, 100, ...",
        "std": "population standard deviation over seeds",
        "area_under_curve": "mean accuracy over the label range (trapezoid area / label span)",
        "project": cfg.source_file,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(time.monotonic() - t0, 2),
        "_csv_rows": rows_csv,
        "_reports_dir": str(cfg.reports_dir),
    }


def _unique(path: Path) -> Path:
    if not path.exists():
        return path
    for i in range(1, 1000):
        p = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not p.exists():
            return p
    return path


def write_outputs(result: dict, out_dir: Path, reports_dir: Path, json_out: str | None) -> dict:
    from al_core.reporting.report import learning_curve_png

    rows = result.pop("_csv_rows")
    result.pop("_reports_dir", None)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = _unique(out_dir / f"simulate-{stamp}.csv")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["strategy", "seed", "round", "labels", "accuracy"])
    for name, seed, r, n_lab, a in rows:
        w.writerow([name, seed, r, n_lab, f"{a:.6f}"])
    _atomic_write(csv_path, buf.getvalue().encode("utf-8"))
    curves = {name: list(zip(s["labels_per_round"], s["accuracy_per_round"], s["std_per_round"], strict=True))
              for name, s in result["strategies"].items()}
    png_path = csv_path.with_suffix(".png")
    title = (f"al simulate: seed pool {result['seed_strategy']}, {result['budget']} per round, "
             f"{len(next(iter(result['strategies'].values()))['seeds'])} seeds (mean ± std)")
    _atomic_write(png_path, learning_curve_png(curves, title=title))
    text = json.dumps(result, indent=2) + "\n"
    copy_path = _unique(reports_dir / f"simulate-{stamp}.json")
    _atomic_write(copy_path, text.encode("utf-8"))
    paths = {"csv": str(csv_path), "png": str(png_path), "report_json": str(copy_path)}
    if json_out and json_out != "-":
        _atomic_write(Path(json_out), text.encode("utf-8"))
        paths["json"] = str(Path(json_out).absolute())
    return paths


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    from al_core.config import ConfigError
    from al_core.catalogue.store import StoreError
    from al_core.learn.strategies import SelectionError, UnknownStrategyError

    try:
        result = run(args, log)
    except (SimulateError, ConfigError, StoreError, SelectionError, UnknownStrategyError) as e:
        print(f"al simulate: {e}", file=sys.stderr)
        return 2 if isinstance(e, (UnknownStrategyError, SimulateError, ConfigError)) else 1
    reports_dir = Path(result["_reports_dir"])
    out_dir = Path(args.out_dir) if args.out_dir else reports_dir
    paths = write_outputs(result, out_dir, reports_dir, args.json)
    to_stdout_json = args.json == "-"
    table_out = sys.stderr if to_stdout_json else sys.stdout
    print(format_table(result), file=table_out, flush=True)
    for k, p in paths.items():
        log(f"wrote {k}: {p}")
    if to_stdout_json:
        print(json.dumps(result, indent=2), flush=True)
    return 0
