"""`al simulate`: compare selection strategies in process on the project's embedded images (no annotators).

Reads the embeddings and the ground truth (class folders or manifest classes)
from the store, holds out the evaluation images, and runs the study's loop
(al_core.reporting.simulation.run_study, al_core.learn.simulate.run_simulation)
for every query strategy and seed: round 0
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
the HTML report (al_core.reporting.report) picks up; --json OUT writes the same
JSON to OUT (--json alone or --json - prints it on stdout, and the table goes to
stderr). A name already taken gets -1, -2, ...: no run replaces an earlier one.

JSON: {"strategies": {name: {"accuracy_per_round": [rounds+1 means over
seeds], "std_per_round": [population std], "labels_per_round": [...],
"seeds": [...], "accuracy_per_seed": [[...], ...], "area_under_curve": mean
accuracy over the label range (trapezoid area / label span; the single
accuracy when --rounds 0)}}, "seed_strategy", "n_pool", "n_eval", "budget",
"rounds", ...}.

Exit status (al_core.cli.exit_codes.Exit): USAGE for a wrong argument (an
unknown strategy, a pool too small for --rounds x --budget, no embeddings),
FAILED for a problem with the data, LOCKED when the database stayed locked.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from al_core.cli.common import CONFIG_HELP, run_with_store

DEFAULT_STRATEGIES = "dropquery,margin,random"


def format_table(result: dict) -> str:
    """Mean accuracy of every strategy by labelled images, and its area under the curve."""
    strategies = result["strategies"]
    if not strategies:
        return ""
    labels = next(iter(strategies.values()))["labels_per_round"]
    w = max(10, *(len(s) for s in strategies)) + 2
    lines = [
        "mean accuracy over seeds " + str(next(iter(strategies.values()))["seeds"]) + " by labelled images",
        "strategy".ljust(w) + "".join(f"{n:>7}" for n in labels) + "     AUC",
    ]
    for name, s in strategies.items():
        lines.append(
            name.ljust(w) + "".join(f"{a:7.3f}" for a in s["accuracy_per_round"]) + f"{s['area_under_curve']:8.3f}"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="al simulate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1],
    )
    ap.add_argument(
        "--strategies", default=DEFAULT_STRATEGIES, help="comma-separated query strategies (default %(default)s)"
    )
    ap.add_argument("--seed-strategy", help="round-0 strategy (default: selection.seed_strategy of the project)")
    ap.add_argument("--rounds", type=int, default=10, help="query rounds after the seed round (default %(default)s)")
    ap.add_argument(
        "--seeds", type=int, default=3, help="how many seeds, the study's 1, 10, 100, ... (default %(default)s)"
    )
    ap.add_argument("--budget", type=int, help="images per round (default: the number of classes)")
    ap.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="OUT",
        help="write the JSON to OUT (--json alone or --json -: print it on stdout)",
    )
    ap.add_argument("--config", metavar="PATH", default=None, help=CONFIG_HELP)
    ap.add_argument("--config-id", help="embedding config (default: the most recent one that has vectors)")
    ap.add_argument(
        "--holdout", type=int, help="hold-out size when the eval_set table is empty (default evaluation.holdout)"
    )
    ap.add_argument("--out-dir", help="where the CSV and the plot go (default <data_dir>/reports/)")
    return ap


def _study_arguments(args, cfg, store) -> dict:
    """The keyword arguments of run_study from the command line and the project; SimulateError when wrong."""
    from al_core.learn.simulate import study_seeds
    from al_core.learn.strategies import get_strategy, seed_strategies
    from al_core.reporting.simulation import SimulateError, latest_config_id

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
    for n in [seed_name, *names]:
        get_strategy(n)  # UnknownStrategyError names the known ones
    if seed_name not in seed_strategies():
        raise SimulateError(
            f"--seed-strategy {seed_name!r} needs labels; seed strategies: {', '.join(seed_strategies())}"
        )
    return {
        "classes": classes,
        "strategies": names,
        "seed_strategy": seed_name,
        "rounds": args.rounds,
        "seeds": study_seeds(args.seeds),
        "budget": budget,
        "config_id": args.config_id or latest_config_id(store),
        "holdout": args.holdout,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    from al_core.learn.strategies import UnknownStrategyError
    from al_core.reporting.simulation import SimulateError, run_study, write_outputs

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def body(cfg, store):
        result = run_study(store, cfg, **_study_arguments(args, cfg, store), log=log)
        out_dir = Path(args.out_dir) if args.out_dir else cfg.reports_dir
        paths = write_outputs(result, out_dir, cfg.reports_dir, args.json)
        to_stdout_json = args.json == "-"
        print(format_table(result), file=sys.stderr if to_stdout_json else sys.stdout, flush=True)
        if result["oracle"]["kind"] != "ground_truth":  # said plainly beside the table, not only in the log
            print(result["oracle"]["note"], file=sys.stderr if to_stdout_json else sys.stdout, flush=True)
        for k, p in paths.items():
            log(f"wrote {k}: {p}")
        if to_stdout_json:
            print(json.dumps(result, indent=2), flush=True)

    return run_with_store("al simulate", args.config, body, usage_errors=(SimulateError, UnknownStrategyError))
