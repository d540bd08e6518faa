"""Label-quality measurements on cached CIFAR-10 features: `al bench quality noise|balance|relabel`.

    al bench quality noise   --features data/cache/cifar10_effnet_lite0_128.npz --json data/bench/quality-noise.json
    al bench quality balance --features ... --json data/bench/quality-balance.json
    al bench quality relabel --features ... --json data/bench/quality-relabel.json

The pool is the file's ``train_features``/``train_targets``; accuracy is measured
on ``test_features``/``test_targets`` (never part of the pool). Seeds are the
study's (1, 10, 100, ...: al_core.learn.simulate.study_seeds); round r of a run
with seed s is seeded ``round_seed(s, r)``. Every number comes from the
product's functions: al_core.quality.suspects.assess_labels (out-of-fold probe,
cleanlab), al_core.learn.strategies (centroid seed pool, dropquery with or
without ``class_balance``), the standard probe.

- ``noise``: a random labelled set of ``--sizes`` images (seeded), ``--rates`` of
  its labels flipped to another class uniformly; the k = flipped labels of
  lowest label quality are flagged (precision = recall at this k), as is
  cleanlab's find_label_issues set, against k labels flagged at random.
- ``balance``: a long-tailed pool per imbalance ratio (class c keeps
  ``n_max x ratio^(-c / (K - 1))`` of its training images, a seeded subsample,
  so the largest and smallest class differ by the ratio), ``--rounds`` rounds of
  K labels (centroid seed pool, then dropquery with and without
  ``class_balance``), balanced accuracy on the (balanced) test set per round.
- ``relabel``: the whole pool, an annotator wrong with probability ``--noise``
  (another class uniformly, drawn afresh for every answer), ``--rounds`` rounds of
  K answers; with ``--fractions`` f > 0 the first round(f x K) answers of each
  query round go to training images to label again (lowest out-of-fold label
  quality first, at most RELABEL_MAX_PER_IMAGE times each, as
  al_core.loop.batch_rules; the newest answer wins, as in the loop), the rest to
  dropquery's picks: the same number of answers either way.

The JSON is rewritten after every run; the markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import sys
import time

import numpy as np

from al_core.bench import md_row
from al_core.learn.simulate import round_seed, study_seeds

ROUNDS_SHOWN = (1, 5, 10, 15, 20)  # the rounds a study's table shows (those its runs reach)


def _load(path: str):
    z = np.load(path)
    return (
        np.asarray(z["train_features"], np.float32),
        np.asarray(z["train_targets"], np.int64),
        np.asarray(z["test_features"], np.float32),
        np.asarray(z["test_targets"], np.int64),
        [str(c) for c in z["class_names"]],
    )


def _header(args, kind: str) -> dict:
    return {
        "kind": kind,
        "features": os.path.abspath(args.features),
        "seeds": study_seeds(args.seeds),
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "load_1m_at_start": os.getloadavg()[0]},
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "runs": {},
    }


def _dump(out: dict, path: str | None) -> None:
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as fh:
            json.dump(out, fh, indent=1)
        os.replace(tmp, path)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)


def _summary(per_seed: list[list[float]]) -> dict:
    a = np.asarray(per_seed, dtype=np.float64)
    return {
        "mean": a.mean(axis=0).round(5).tolist(),
        "std": a.std(axis=0).round(5).tolist(),
        "per_seed": a.round(5).tolist(),
    }


def _rounds_summary(series: dict[str, list[list[float]]]) -> dict:
    """Each series' per-round summary (``_summary`` of its runs, one per seed), then ``seeds_done``."""
    return {name: _summary(runs) for name, runs in series.items()} | {"seeds_done": len(next(iter(series.values())))}


def _study(out: dict, settings: dict[str, dict], seeds: list[int], run_seed, path: str | None) -> dict:
    """Run a study of rounds: every setting (study key -> the fields recorded with it) with every seed.
    ``run_seed(key, setting, seed)`` returns the run's per-round values (name -> list) and more fields to record; the
    study key's record is its fields and the per-round summaries of its runs so far (``_rounds_summary``), and the
    JSON at ``path`` is rewritten after every run."""
    for key, fields in settings.items():
        series: dict[str, list] = {}
        for seed in seeds:
            run, more = run_seed(key, fields, seed)
            for name, values in run.items():
                series.setdefault(name, []).append(values)
            out["runs"][key] = fields | more | _rounds_summary(series)
            _dump(out, path)
    return out


@dataclasses.dataclass(frozen=True)
class RoundsTable:
    """The markdown table of a study of rounds: the ``lead`` columns, ``metric``'s mean ± std after each of
    ``rounds_shown`` (those the runs reach; headed by the runs' ``per_round`` count and ``unit``), then the ``tail``
    columns. ``lead`` and ``tail``: (header, run -> cell) pairs."""

    per_round: str
    unit: str
    metric: str
    lead: list
    tail: list

    def __call__(self, out: dict, rounds_shown=ROUNDS_SHOWN) -> str:
        first = next(iter(out["runs"].values()))
        shown = [r for r in rounds_shown if r <= len(first[self.per_round])]
        headers = [h for h, _ in self.lead] + [f"{first[self.per_round][r - 1]} {self.unit}" for r in shown]
        headers += [h for h, _ in self.tail]
        lines = [md_row(headers), md_row(["---"] * len(headers))]
        for r in out["runs"].values():
            m, s = r[self.metric]["mean"], r[self.metric]["std"]
            cells = [f"{m[i - 1]:.4f} ± {s[i - 1]:.4f}" for i in shown if i <= len(m)]
            row = [cell(r) for _, cell in self.lead] + cells + [cell(r) for _, cell in self.tail]
            lines.append(md_row(row))
        return "\n".join(lines)


# ----------------------------------------------------------------------------- noise
def noise(args) -> dict:
    from al_core.quality.suspects import CV_FOLDS, assess_labels

    x, y, _, _, classes = _load(args.features)
    k_cls = len(classes)
    out = _header(args, "noise") | {"folds": CV_FOLDS}
    for size in [int(s) for s in args.sizes.split(",")]:
        for rate in [float(r) for r in args.rates.split(",")]:
            rows = []
            for seed in study_seeds(args.seeds):
                rng = np.random.default_rng([seed, size, round(rate * 1000)])
                idx = np.sort(rng.choice(len(y), size=size, replace=False))
                given = y[idx].copy()
                k = round(rate * size)
                flip = rng.choice(size, size=k, replace=False)
                given[flip] = (given[flip] + rng.integers(1, k_cls, size=k)) % k_cls
                t = time.perf_counter()
                q = assess_labels(x[idx], given, k_cls, seed=seed)
                flipped = set(flip.tolist())
                top = set(q.order[:k].tolist())
                issues = set(np.flatnonzero(q.is_issue).tolist())
                rand = set(rng.choice(size, size=k, replace=False).tolist())
                rows.append(
                    {
                        "seed": seed,
                        "k": k,
                        "seconds": round(time.perf_counter() - t, 2),
                        "topk_precision": len(top & flipped) / k,
                        "issues": len(issues),
                        "issues_precision": len(issues & flipped) / max(1, len(issues)),
                        "issues_recall": len(issues & flipped) / k,
                        "random_precision": len(rand & flipped) / k,
                        "oof_accuracy_vs_true": float(np.mean(q.suggested == y[idx])),
                    }
                )
                _log(f"noise {size} labels, {rate:.0%} flipped, seed {seed}: top-k {rows[-1]['topk_precision']:.3f}")
            keys = (
                "topk_precision",
                "issues",
                "issues_precision",
                "issues_recall",
                "random_precision",
                "oof_accuracy_vs_true",
                "seconds",
            )
            out["runs"][f"{size}@{rate:g}"] = {
                "size": size,
                "rate": rate,
                "k": rows[0]["k"],
                "per_seed": rows,
                **{f"mean_{c}": float(np.mean([r[c] for r in rows])) for c in keys},
                **{f"std_{c}": float(np.std([r[c] for r in rows])) for c in keys},
            }
            _dump(out, args.json)
    return out


def noise_table(out: dict) -> str:
    lines = [
        "| labels | flipped | k | top-k precision = recall | cleanlab issues: flagged, precision, recall | "
        "random flagging: precision = recall | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in out["runs"].values():
        lines.append(
            f"| {r['size']} | {r['rate']:.0%} | {r['k']} | {r['mean_topk_precision']:.3f} ± "
            f"{r['std_topk_precision']:.3f} | {r['mean_issues']:.0f}, {r['mean_issues_precision']:.3f}, "
            f"{r['mean_issues_recall']:.3f} | {r['mean_random_precision']:.3f} (expected {r['rate']:.2f}) | "
            f"{r['mean_seconds']:.1f} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- balance
def long_tailed(y: np.ndarray, n_classes: int, ratio: float, seed: int) -> np.ndarray:
    """Pool rows of a long-tailed subsample: class c keeps n_max x ratio^(-c / (K - 1)) of its rows (seeded)."""
    rng = np.random.default_rng([seed, round(ratio)])
    n_max = min(int((y == c).sum()) for c in range(n_classes))
    rows = []
    for c in range(n_classes):
        n_c = max(1, int(n_max * ratio ** (-c / (n_classes - 1))))
        rows.append(rng.choice(np.flatnonzero(y == c), size=n_c, replace=False))
    return np.sort(np.concatenate(rows))


def _seed_pool(cache: dict, key, x, k_cls: int, budget: int, seed: int) -> np.ndarray:
    from al_core.learn.strategies import get_strategy

    if key not in cache:
        t = time.perf_counter()
        empty = np.empty(0, np.int64)
        cache[key] = (
            get_strategy("centroid").select(x, empty, empty, budget, n_classes=k_cls, seed=round_seed(seed, 0)).indices
        )
        _log(f"seed pool {key}: {time.perf_counter() - t:.0f} s")
    return cache[key]


def balance(args) -> dict:
    from sklearn.metrics import balanced_accuracy_score

    from al_core.learn.probe import Probe
    from al_core.learn.strategies import get_strategy

    x_all, y_all, tx, ty, classes = _load(args.features)
    k_cls = len(classes)
    out = _header(args, "balance") | {"rounds": args.rounds, "budget_per_round": k_cls}
    cache: dict = {}
    labels_per_round = [k_cls * (r + 1) for r in range(args.rounds)]

    def run_seed(key: str, setting: dict, seed: int):
        rows = long_tailed(y_all, k_cls, setting["ratio"], seed)
        x, y = x_all[rows], y_all[rows]
        labeled = _seed_pool(cache, (setting["ratio"], seed), x, k_cls, k_cls, seed)
        strategy = get_strategy("dropquery", class_balance=setting["class_balance"])
        run: dict[str, list] = {"balanced_accuracy": [], "accuracy": [], "labels_of_smaller_half": []}
        probe = None
        for r in range(args.rounds):
            rseed = round_seed(seed, r)
            if r > 0:
                picks = strategy.select(x, labeled, y[labeled], k_cls, n_classes=k_cls, seed=rseed, probe=probe).indices
                labeled = np.concatenate([labeled, picks])
            probe = Probe(k_cls, seed=rseed).fit(x[labeled], y[labeled])
            pred = probe.predict(tx)
            run["balanced_accuracy"].append(float(balanced_accuracy_score(ty, pred)))
            run["accuracy"].append(float(np.mean(pred == ty)))
            run["labels_of_smaller_half"].append(int(np.sum(y[labeled] >= k_cls // 2)))  # the smaller half's labels
        _log(f"{key}, seed {seed}: balanced accuracy {run['balanced_accuracy'][-1]:.4f} at {len(labeled)} labels")
        return run, {"pool_size": int(len(rows)), "labels_per_round": labels_per_round}

    settings = {
        f"ratio {ratio:g}, class_balance {'on' if flag else 'off'}": {"ratio": ratio, "class_balance": flag}
        for ratio in [float(r) for r in args.ratios.split(",")]
        for flag in (False, True)
    }
    return _study(out, settings, study_seeds(args.seeds), run_seed, args.json)


balance_table = RoundsTable(
    per_round="labels_per_round",
    unit="labels",
    metric="balanced_accuracy",
    lead=[
        ("pool", lambda r: f"ratio {r['ratio']:g} ({r['pool_size']} images)"),
        ("class_balance", lambda r: "on" if r["class_balance"] else "off"),
    ],
    tail=[
        ("labels of the 5 smallest classes (last round)", lambda r: f"{r['labels_of_smaller_half']['mean'][-1]:.1f}")
    ],
)


# ----------------------------------------------------------------------------- relabel
def _answer(rng, truth: np.ndarray, rows: np.ndarray, noise: float, k_cls: int) -> np.ndarray:
    wrong = rng.random(len(rows)) < noise
    return np.where(wrong, (truth[rows] + rng.integers(1, k_cls, size=len(rows))) % k_cls, truth[rows])


def relabel(args) -> dict:
    from al_core.learn.probe import Probe
    from al_core.learn.strategies import get_strategy
    from al_core.loop.batch_rules import RELABEL_MAX_PER_IMAGE
    from al_core.quality.suspects import assess_labels

    x, y, tx, ty, classes = _load(args.features)
    k_cls = len(classes)
    out = _header(args, "relabel") | {
        "rounds": args.rounds,
        "budget_per_round": k_cls,
        "noise": args.noise,
        "relabel_max_per_image": RELABEL_MAX_PER_IMAGE,
    }
    cache: dict = {}
    answers_per_round = [k_cls * (r + 1) for r in range(args.rounds)]

    def run_seed(key: str, setting: dict, seed: int):
        n_rel = setting["relabel_per_round"]
        rng = np.random.default_rng([seed, 0xA11])
        labeled = _seed_pool(cache, seed, x, k_cls, k_cls, seed)
        current = np.full(len(y), -1, np.int64)
        current[labeled] = _answer(rng, y, labeled, args.noise, k_cls)
        asked = np.zeros(len(y), np.int64)
        strategy = get_strategy("dropquery")
        run: dict[str, list] = {"accuracy": [], "wrong_training_labels": [], "relabelled": []}
        probe = None
        for r in range(args.rounds):
            rseed = round_seed(seed, r)
            if r > 0:
                again = np.empty(0, np.int64)
                if n_rel:
                    q = assess_labels(x[labeled], current[labeled], k_cls, seed=rseed)
                    order = labeled[q.order]
                    again = order[asked[order] < RELABEL_MAX_PER_IMAGE][:n_rel]
                    asked[again] += 1
                    current[again] = _answer(rng, y, again, args.noise, k_cls)
                new = strategy.select(
                    x, labeled, current[labeled], k_cls - len(again), n_classes=k_cls, seed=rseed, probe=probe
                ).indices
                current[new] = _answer(rng, y, new, args.noise, k_cls)
                labeled = np.concatenate([labeled, new])
            probe = Probe(k_cls, seed=rseed).fit(x[labeled], current[labeled])
            run["accuracy"].append(float(np.mean(probe.predict(tx) == ty)))
            run["wrong_training_labels"].append(int(np.sum(current[labeled] != y[labeled])))
            run["relabelled"].append(int(asked.sum()))
        _log(
            f"{key}, seed {seed}: accuracy {run['accuracy'][-1]:.4f}, {run['wrong_training_labels'][-1]} wrong "
            f"of {len(labeled)} labels, {run['relabelled'][-1]} relabelled"
        )
        return run, {"answers_per_round": answers_per_round}

    settings = {
        f"relabel_fraction {frac:g}": {
            "relabel_fraction": frac,
            "relabel_per_round": int(np.floor(frac * k_cls + 0.5)),  # al_core.loop.batch_rules.n_relabel
        }
        for frac in [float(f) for f in args.fractions.split(",")]
    }
    return _study(out, settings, study_seeds(args.seeds), run_seed, args.json)


relabel_table = RoundsTable(
    per_round="answers_per_round",
    unit="answers",
    metric="accuracy",
    lead=[("relabel_fraction", lambda r: f"{r['relabel_fraction']:g}")],
    tail=[
        ("wrong training labels (last round)", lambda r: f"{r['wrong_training_labels']['mean'][-1]:.1f}"),
        ("images labelled again", lambda r: f"{r['relabelled']['mean'][-1]:.1f}"),
    ],
)


KINDS = {"noise": (noise, noise_table), "balance": (balance, balance_table), "relabel": (relabel, relabel_table)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="al bench quality", description=__doc__.split("\n\n")[0])
    ap.add_argument("kind", choices=[*KINDS, "table"])
    ap.add_argument("files", nargs="*", help="with `table`: the JSON files to print")
    ap.add_argument("--features", default="data/cache/cifar10_effnet_lite0_128.npz")
    ap.add_argument("--json", default=None)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--sizes", default="200,1000", help="noise: labelled-set sizes")
    ap.add_argument("--rates", default="0.1,0.2", help="noise: shares of flipped labels")
    ap.add_argument("--ratios", default="10,100", help="balance: imbalance ratios")
    ap.add_argument("--noise", type=float, default=0.15, help="relabel: the annotator's error rate")
    ap.add_argument("--fractions", default="0,0.1", help="relabel: relabel_fraction values")
    args = ap.parse_args(argv)
    if args.kind == "table":
        for f in args.files:
            with open(f) as fh:
                out = json.load(fh)
            print(KINDS[out["kind"]][1](out) + "\n")
        return 0
    if not os.path.exists(args.features):
        print(
            f"al bench quality: no features file {args.features} (al bench cifar_features writes it)", file=sys.stderr
        )
        return 2
    run, table = KINDS[args.kind]
    out = run(args)
    out["machine"]["load_1m_at_end"] = os.getloadavg()[0]
    _dump(out, args.json)
    print(table(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
