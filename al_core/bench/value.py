"""What the labels bought, measured on CIFAR-10: `al bench value backtest | stop | table`.

    al bench value backtest --doc docs/benchmarks.md --json data/bench/value-backtest.json
    al bench value stop --features data/cache/cifar10_effnet_lite0_128.npz \
        --runs dropquery@centroid,random@centroid,margin@centroid,typiclust@centroid --seeds 3 \
        --json data/bench/value-stop.json
    al bench value table data/bench/value-stop.json [--backtest data/bench/value-backtest.json]

``backtest`` fits the learning curve of al_core.value.curve to the first 5, 8 and 12 rounds (``--fits``)
of every mean curve of the "Learning curves on CIFAR-10" table of docs/benchmarks.md and projects the
accuracy at round 20 (``--project``), against the measured one. Each point's sigma: the standard error
of a mean over the table's seeds (std / sqrt(seeds)) and the binomial error of one measurement on the
10,000 test images (``--n-test``), added in quadrature. With ``--from-json`` (a ``stop`` result) it
backtests each seed's own curve instead, each point's sigma from its Wilson interval, as the loop does.

``stop`` runs the study's simulation (al_core.learn.simulate.run_simulation: K labels per round,
``--rounds`` labelled-set sizes, the study's seeds) with a hook that predicts a stop set (STOP_SET_SIZE
images drawn from the pool with the run's seed, before round 0) after every round, and records Cohen's
kappa between successive rounds, the round where the stop rule (al_core.value.stopping) fires for each
threshold of ``--thresholds`` with ``--window``, and the accuracy there against the last round. The
seed round is computed once per seed (al_core.bench.curves.cached_seed_strategy). The JSON is rewritten
after every (strategy, seed).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import sys
import time

import numpy as np

from al_core.bench import emit, md_row

FITS = (5, 8, 12)  # rounds fitted on
PROJECT_ROUND = 20  # the round projected (labelled-set size 20 K)
THRESHOLDS = (0.99, 0.95, 0.9)
WINDOW = 3
N_TEST = 10_000  # CIFAR-10 test images (the binomial error of one accuracy measurement)
_CELL = re.compile(r"^\s*([0-9.]+)\s*±\s*([0-9.]+)\s*$")


def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_doc_table(path: str) -> dict:
    """The mean curves of docs/benchmarks.md's CIFAR-10 table: {run: {"seeds": [...], "n": [...], "mean": [...],
    "std": [...]}} (fractions, not %)."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    section = text.split("## Learning curves on CIFAR-10", 1)[1].split("\n## ", 1)[0]  # that section only
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    sizes = [int(c) for c in head[2:-1]]
    out = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        if len(cells) != len(head) or "@" not in cells[0]:
            continue
        pairs = [_CELL.match(c) for c in cells[2:-1]]
        if not all(pairs):
            continue
        out[cells[0]] = {
            "seeds": [int(s) for s in cells[1].split(",")],
            "n": sizes,
            "mean": [float(m.group(1)) / 100 for m in pairs],
            "std": [float(m.group(2)) / 100 for m in pairs],
        }
    if not out:
        raise SystemExit(f"{path}: no learning-curve table found under '## Learning curves on CIFAR-10'")
    return out


def backtest_curve(n, y, sigma, fits, project_round) -> list[dict]:
    """For each k of ``fits``: fit on the first k points, project point ``project_round`` (1-based)."""
    from al_core.value.curve import fit_curve

    n, y, sigma = (np.asarray(v, dtype=np.float64) for v in (n, y, sigma))
    target_n, measured = n[project_round - 1], y[project_round - 1]
    rows = []
    for k in fits:
        fit = fit_curve(n[:k], y[:k], sigma[:k])
        if isinstance(fit, str):
            rows.append({"fitted_rounds": k, "status": fit})
            continue
        pred = float(fit.predict(target_n))
        lo, hi = (float(v[0]) for v in fit.band(target_n))
        rows.append(
            {
                "fitted_rounds": k,
                "status": "fitted",
                "a": fit.a,
                "b": fit.b,
                "c": fit.c,
                "projected": pred,
                "low": lo,
                "high": hi,
                "measured": float(measured),
                "error": pred - float(measured),
                "covered": bool(lo <= measured <= hi),
            }
        )
    return rows


def backtest(args) -> dict:
    from al_core.value.intervals import wilson_interval

    out = {
        "command": "al bench value backtest " + " ".join(args.argv),
        "fits": args.fits,
        "project_round": args.project,
        "runs": {},
    }
    if args.from_json:
        data = _load(args.from_json)
        for key, entry in data["runs"].items():
            per = {}
            for seed, r in entry["per_seed"].items():
                y = np.asarray(r["accuracy"])
                ci = [wilson_interval(int(round(a * args.n_test)), args.n_test) for a in y]
                sigma = [(hi - lo) / (2 * 1.959963984540054) for lo, hi in ci]
                per[seed] = backtest_curve(data["n_labeled"], y, sigma, args.fits, args.project)
            out["runs"][key] = {"per_seed": per, "sigma": "Wilson interval of each seed's accuracy"}
        out["source"] = args.from_json
        return out
    table = read_doc_table(args.doc)
    for key, c in table.items():
        m, sd, k = np.asarray(c["mean"]), np.asarray(c["std"]), len(c["seeds"])
        sigma = np.sqrt(sd**2 / k + m * (1 - m) / args.n_test)
        out["runs"][key] = {"seeds": c["seeds"], "rows": backtest_curve(c["n"], m, sigma, args.fits, args.project)}
    out["source"] = args.doc
    out["sigma"] = "sqrt(std^2 / seeds + p (1 - p) / n_test) per point"
    return out


def stop(args) -> dict:
    from al_core.bench.curves import STUDY_SEEDS, StudyData, parse_runs, save_study
    from al_core.value.stopping import STOP_SET_SIZE, first_firing, kappa

    data = StudyData.load(args.features)
    x, n_classes = data.x, data.n_classes
    runs = parse_runs(args.runs)
    out = data.record("al bench value stop", args.argv, args.features) | {
        "stop_set_size": STOP_SET_SIZE,
        "thresholds": args.thresholds,
        "window": args.window,
        "n_labeled": [n_classes * (r + 1) for r in range(args.rounds)],
        "runs": {},
    }
    if args.json and os.path.exists(args.json) and args.resume:
        out["runs"] = _load(args.json).get("runs", {})
    seeds = list(STUDY_SEEDS[: args.seeds])
    for seed_name, query in runs:
        key = f"{query}@{seed_name}"
        entry = out["runs"].setdefault(key, {"per_seed": {}})
        for seed in seeds:
            if str(seed) in entry["per_seed"]:
                continue
            rng = np.random.default_rng([seed, 14])
            stop_idx = np.sort(rng.choice(x.shape[0], size=STOP_SET_SIZE, replace=False))
            preds: list[np.ndarray] = []

            def predict_stop_set(r, probe, labelled, preds=preds, stop_idx=stop_idx) -> None:  # after every round
                preds.append(probe.predict(x[stop_idx]))

            t0 = time.perf_counter()
            res = data.simulate(
                seed_name, query, per_round=n_classes, rounds=args.rounds, seed=seed, on_probe=predict_stop_set
            )
            kappas = [None] + [kappa(a, b) for a, b in zip(preds[:-1], preds[1:], strict=True)]
            acc = [float(a) for a in res.accuracy]
            fired = {}
            for t in args.thresholds:
                i = first_firing(kappas, t, args.window)
                fired[str(t)] = (
                    None
                    if i is None
                    else {"round": i + 1, "labels": out["n_labeled"][i], "accuracy": acc[i], "last_accuracy": acc[-1]}
                )
            entry["per_seed"][str(seed)] = {
                "accuracy": [round(a, 5) for a in acc],
                "kappa": [None if k is None else round(k, 5) for k in kappas],
                "fired": fired,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            print(
                f"{key} seed {seed}: last acc {acc[-1]:.4f}, kappa {kappas[-1]:.4f}, fired {fired} "
                f"({time.perf_counter() - t0:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            save_study(out, args.json)
    return out


def table(paths: list[str], backtest_path: str | None, thresholds: list[float] | None = None) -> str:
    """Markdown: per run, the mean kappa at a few rounds and where the rule fires per threshold (from the stored
    kappas: ``thresholds``, default the run's; rounds are 1-based: round 1 = the seed pool), then the backtest
    if given."""
    from al_core.value.stopping import first_firing

    lines = []
    for path in paths:
        data = _load(path)
        ts = thresholds or data["thresholds"]
        fires = [f"fires (kappa >= {t:g} x {data['window']}): round, accuracy vs the last round" for t in ts]
        lines.append(
            md_row(["query @ seed pool", "seeds", "kappa at rounds 5 / 10 / 15 / 20 (/ 50 / 100) (mean)", *fires])
        )
        lines.append(md_row(["---"] * (3 + len(ts))))
        for key, e in data["runs"].items():
            per = e["per_seed"]
            ks = np.array([[np.nan if k is None else k for k in r["kappa"]] for r in per.values()])
            at = " / ".join(f"{np.nanmean(ks[:, i]):.3f}" for i in (4, 9, 14, 19, 49, 99) if i < ks.shape[1])
            cells = []
            for t in ts:
                f = []
                for r in per.values():
                    i = first_firing(r["kappa"], t, data["window"])
                    f.append(
                        None
                        if i is None
                        else {"round": i + 1, "accuracy": r["accuracy"][i], "last_accuracy": r["accuracy"][-1]}
                    )
                done = [v for v in f if v is not None]
                if not done:
                    cells.append(f"never in {ks.shape[1]} rounds (0 of {len(f)} seeds)")
                    continue
                rounds = ", ".join(str(v["round"]) if v else "-" for v in f)
                gap = np.mean([100 * (v["accuracy"] - v["last_accuracy"]) for v in done])
                cells.append(f"{rounds} ({len(done)} of {len(f)} seeds); {gap:+.1f} points")
            lines.append(f"| {key} | {','.join(per)} | {at} | " + " | ".join(cells) + " |")
        lines.append("")
    if backtest_path:
        bt = _load(backtest_path)
        fits = bt["fits"]
        if any(e.get("rows") for e in bt["runs"].values()):
            projected = [f"fitted on {k} rounds: projected (95 % band), error" for k in fits]
            lines.append(md_row(["query @ seed pool", "measured at round 20", *projected]))
            lines.append(md_row(["---", "---:", *["---"] * len(fits)]))
        for key, e in bt["runs"].items():
            rows = {r["fitted_rounds"]: r for r in e.get("rows", [])}
            if not rows:
                continue
            measured = next((r["measured"] for r in rows.values() if r["status"] == "fitted"), None)
            cells = [
                rows[k]["status"]
                if rows[k]["status"] != "fitted"
                else f"{100 * rows[k]['projected']:.1f} ({100 * rows[k]['low']:.1f} – {100 * rows[k]['high']:.1f}"
                f"{'' if rows[k]['covered'] else ', misses'}), {100 * rows[k]['error']:+.1f}"
                for k in fits
            ]
            lines.append(
                f"| {key} | {'–' if measured is None else format(100 * measured, '.1f')} | " + " | ".join(cells) + " |"
            )
        if any(e.get("per_seed") for e in bt["runs"].values()):
            if lines and lines[-1]:
                lines.append("")
            lines.append(
                "| query @ seed pool (per seed) | fitted on rounds | projected round 20 (mean) | "
                "measured (mean) | error, mean ± sd (points) | band covers the measured |"
            )
            lines.append("| --- | ---: | ---: | ---: | ---: | --- |")
        for key, e in bt["runs"].items():
            per = e.get("per_seed", {})
            for k in bt["fits"] if per else []:
                rows = [next(r for r in seed_rows if r["fitted_rounds"] == k) for seed_rows in per.values()]
                fitted = [r for r in rows if r["status"] == "fitted"]
                if not fitted:
                    lines.append(f"| {key} | {k} | {rows[0]['status']} | | | |")
                    continue
                err = np.array([100 * r["error"] for r in fitted])
                lines.append(
                    f"| {key} ({len(fitted)} seeds) | {k} | "
                    f"{np.mean([100 * r['projected'] for r in fitted]):.1f} | "
                    f"{np.mean([100 * r['measured'] for r in fitted]):.1f} | "
                    f"{err.mean():+.1f} ± {err.std():.1f} | "
                    f"{sum(r['covered'] for r in fitted)} of {len(fitted)} |"
                )
        every_row = [
            r
            for e in bt["runs"].values()
            for r in [*e.get("rows", []), *(x for rs in e.get("per_seed", {}).values() for x in rs)]
        ]
        fitted_on = {
            k: [r for r in every_row if r["status"] == "fitted" and r["fitted_rounds"] == k] for k in bt["fits"]
        }
        errs = {k: [abs(r["error"]) for r in rows] for k, rows in fitted_on.items()}
        cover = {k: [r["covered"] for r in rows] for k, rows in fitted_on.items()}
        lines.append("")
        lines.append(
            "Mean absolute error (points): "
            + ", ".join(
                f"fitted on {k} rounds {100 * np.mean(v):.2f} (band covers {sum(cover[k])} of {len(cover[k])})"
                for k, v in errs.items()
                if v
            )
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="al bench value", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("backtest", help="project round 20 from the first rounds of each CIFAR-10 curve")
    b.add_argument("--doc", default="docs/benchmarks.md")
    b.add_argument("--from-json", default=None, help="a `stop` result: backtest every seed's curve instead")
    b.add_argument("--fits", type=lambda s: [int(v) for v in s.split(",")], default=list(FITS))
    b.add_argument("--project", type=int, default=PROJECT_ROUND)
    b.add_argument("--n-test", type=int, default=N_TEST)
    b.add_argument("--json", default=None)
    s = sub.add_parser("stop", help="where the stabilising-predictions rule fires on CIFAR-10")
    s.add_argument("--features", required=True)
    s.add_argument("--runs", default="dropquery@centroid,random@centroid,margin@centroid,typiclust@centroid")
    s.add_argument("--seeds", type=int, default=3)
    s.add_argument("--rounds", type=int, default=20)
    s.add_argument("--thresholds", type=lambda v: [float(t) for t in v.split(",")], default=list(THRESHOLDS))
    s.add_argument("--window", type=int, default=WINDOW)
    s.add_argument("--resume", action="store_true", help="keep the (run, seed) pairs already in --json")
    s.add_argument("--json", default=None)
    t = sub.add_parser("table", help="markdown tables of `stop` results (and a backtest)")
    t.add_argument("paths", nargs="*")
    t.add_argument("--backtest", default=None)
    t.add_argument("--thresholds", type=lambda v: [float(x) for x in v.split(",")], default=None)
    args = ap.parse_args(argv)
    args.argv = argv
    if args.cmd == "table":
        print(table(args.paths, args.backtest, args.thresholds), end="")
        return 0
    result = backtest(args) if args.cmd == "backtest" else stop(args)
    if args.cmd == "stop":
        result["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
        if args.json:  # the final state (stop() rewrote it after every run)
            with open(args.json, "w") as fh:
                json.dump(result, fh, indent=1)
        print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
        return 0
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
