"""Learning curves on cached features: `al bench curves`.

    al bench curves --features data/cache/cifar10_effnet_lite0_128.npz \
        --rounds 20 --seeds 3 --json data/bench/curves-cifar10.json

The study's protocol (``docs/algorithms.md``): K labels per round
(K = the number of classes), ``--rounds`` labelled-set sizes K, 2K, ..., R*K
(round 0 is the seed pool, so ``run_simulation(rounds=R-1)``), the seeds 1, 10,
100, 1000, 10000 (the first ``--seeds`` of them). The pool is the file's
``train_features``/``train_targets``; accuracy is measured on
``test_features``/``test_targets``. Every query strategy runs with centroid
seeding; random and dropquery also run with random seeding.

The loop is :func:`al_core.learn.simulate.run_simulation`. The JSON is rewritten
after every (strategy, seed) so that a stopped run keeps what it finished.
``al bench curves table A.json [B.json ...]`` prints the markdown table of
finished runs (merged by run key).

A strategy whose round takes longer than ``--max-round-seconds`` is stopped
(checked after each query round; a hard alarm at 3x the limit stops a query
round still running; the seed round is not limited) and recorded under ``stopped`` with its measured seconds per round.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import signal
import sys
import time

import numpy as np

STUDY_SEEDS = (1, 10, 100, 1000, 10000)

# (seed strategy, query strategy), most informative first; probcover and typiclust last.
DEFAULT_RUNS: tuple[tuple[str, str], ...] = (
    ("centroid", "dropquery"),
    ("centroid", "margin"),
    ("centroid", "random"),
    ("random", "random"),
    ("random", "dropquery"),
    ("centroid", "least_confidence"),
    ("centroid", "entropy"),
    ("centroid", "coreset"),
    ("centroid", "badge"),
    ("centroid", "bald"),
    ("centroid", "power_bald"),
    ("centroid", "alfa_mix"),
    ("centroid", "typiclust"),
    ("centroid", "probcover"),
)


class RoundTooSlow(RuntimeError):
    pass


def cached_seed_strategy(name: str):
    """The registered seed strategy ``name``, with its picks memoised per (seed, budget, pool).

    The seed round does not depend on the query strategy, so every query
    strategy with the same run seed gets the same seed pool; computing it once
    per seed (centroid seeding: a k-means on the whole pool, ~80 s here) instead
    of once per (strategy, seed) saves most of an hour. Same picks, same scores.
    """
    from al_core.learn.strategies import Strategy, get_strategy

    inner = get_strategy(name)

    class _Cached(Strategy):
        needs_labels = inner.needs_labels
        uses_probe = inner.uses_probe
        _cache: dict = {}

        def select(self, features, labeled, labels, budget, *, n_classes, seed, probe=None, candidates=None):
            key = (
                id(features),
                features.shape,
                len(labeled),
                int(budget),
                int(seed),
                n_classes,
                None if candidates is None else hash(np.asarray(candidates).tobytes()),
            )
            if len(labeled) != 0 or key not in self._cache:
                res = inner.select(
                    features,
                    labeled,
                    labels,
                    budget,
                    n_classes=n_classes,
                    seed=seed,
                    probe=probe,
                    candidates=candidates,
                )
                if len(labeled) != 0:
                    return res
                self._cache[key] = res
            return self._cache[key]

    _Cached.name = inner.name
    return _Cached()


def run_key(seed_strategy: str, query_strategy: str) -> str:
    return f"{query_strategy}@{seed_strategy}"


def save_study(out: dict, path: str | None) -> None:
    """Stamp ``out["updated"]`` and, with a ``path``, rewrite the study's JSON there (atomically: a stopped run
    keeps every (strategy, seed) it finished)."""
    from al_core.files.atomic import atomic_write_text

    out["updated"] = _dt.datetime.now().isoformat(timespec="seconds")
    if path:
        atomic_write_text(path, json.dumps(out, indent=1))


def parse_runs(text: str) -> list[tuple[str, str]]:
    """``QUERY@SEED,...`` as (seed strategy, query strategy) pairs; a QUERY alone is seeded by centroid."""
    return [tuple(reversed(r.split("@"))) if "@" in r else ("centroid", r) for r in text.split(",")]


@dataclasses.dataclass(frozen=True)
class StudyData:
    """A features file of the study: the pool (``train_features``/``train_targets``: x, y), the test set
    (``test_features``/``test_targets``: xt, yt) and K (``class_names``, else the largest pool label + 1)."""

    x: np.ndarray
    y: np.ndarray
    xt: np.ndarray
    yt: np.ndarray
    n_classes: int
    # seed strategy name -> cached_seed_strategy(name): each seed pool computed once for this pool
    seed_strategies: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, path: str) -> StudyData:
        data = np.load(path)
        y = np.asarray(data["train_targets"], dtype=np.int64)
        return cls(
            np.ascontiguousarray(data["train_features"], dtype=np.float32),
            y,
            np.ascontiguousarray(data["test_features"], dtype=np.float32),
            np.asarray(data["test_targets"], dtype=np.int64),
            int(len(data["class_names"])) if "class_names" in data.files else int(y.max() + 1),
        )

    def record(self, prog: str, argv: list[str], path: str) -> dict:
        """The head of a study's JSON: its command line, start, machine, features file and pool and test sizes."""
        return {
            "command": f"{prog} " + " ".join(argv),
            "started": _dt.datetime.now().isoformat(timespec="seconds"),
            "machine": {"host": platform.node(), "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()},
            "features": path,
            "n_pool": int(self.x.shape[0]),
            "n_test": int(self.xt.shape[0]),
        }

    def simulate(self, seed_strategy: str, query_strategy: str, *, per_round: int, rounds: int, seed: int, **hooks):
        """The study's run (al_core.learn.simulate.run_simulation): ``rounds`` labelled-set sizes of
        ``per_round`` labels each, round 0 the seed pool (``cached_seed_strategy``: computed once per seed);
        ``hooks``: its ``progress`` / ``on_probe``."""
        from al_core.learn.simulate import run_simulation

        if seed_strategy not in self.seed_strategies:
            self.seed_strategies[seed_strategy] = cached_seed_strategy(seed_strategy)
        return run_simulation(
            self.x,
            self.y,
            self.xt,
            self.yt,
            n_classes=self.n_classes,
            seed_strategy=self.seed_strategies[seed_strategy],
            query_strategy=query_strategy,
            budget_per_round=per_round,
            rounds=rounds - 1,
            seed=seed,
            **hooks,
        )


def area_under_curve(mean_acc: list[float]) -> float:
    """Normalised area under the accuracy curve: trapezoids over rounds, divided by the rounds spanned."""
    y = np.asarray(mean_acc, dtype=np.float64)
    if y.size < 2:
        return float(y[0]) if y.size else float("nan")
    return float(np.trapezoid(y) / (y.size - 1)) if hasattr(np, "trapezoid") else float(np.trapz(y) / (y.size - 1))


def summarise(entry: dict) -> None:
    runs = [r for r in entry["per_seed"].values() if r.get("complete")]
    entry["seeds_done"] = sorted(int(s) for s, r in entry["per_seed"].items() if r.get("complete"))
    if not runs:
        return
    acc = np.array([r["accuracy"] for r in runs], dtype=np.float64)
    entry["mean"] = acc.mean(axis=0).round(5).tolist()
    entry["std"] = acc.std(axis=0, ddof=0).round(5).tolist()
    entry["auc"] = round(area_under_curve(entry["mean"]), 5)
    entry["auc_per_seed"] = [round(area_under_curve(list(a)), 5) for a in acc]
    secs = [s for r in runs for s in r["round_seconds"]]
    entry["mean_round_seconds"] = round(float(np.mean(secs)), 3)


def markdown_table(paths: list[str]) -> str:
    """The learning-curve table (mean +- std per labelled-set size, AUC) of one or
    more result files, merged by run key (per key, the entry with the most
    finished seeds), best AUC first; then the mean seconds per round."""
    entries: dict = {}
    sizes = None
    for path in paths:
        with open(path) as fh:
            data = json.load(fh)
        sizes = sizes or data["n_labeled"]
        if data["n_labeled"] != sizes:
            raise SystemExit(f"{path}: another protocol (labelled-set sizes differ)")
        for key, entry in data["strategies"].items():
            # the same run key in several files: the entry with the most finished seeds wins
            if entry.get("seeds_done") and len(entry["seeds_done"]) >= len(entries.get(key, {}).get("seeds_done", [])):
                entries[key] = entry
    head = "| query @ seed pool | seeds | " + " | ".join(str(n) for n in sizes) + " | AUC |"
    rule = "| --- | --- | " + " | ".join("---:" for _ in sizes) + " | ---: |"
    lines = [head, rule]
    for key, e in sorted(entries.items(), key=lambda kv: -kv[1]["auc"]):
        cells = [f"{100 * m:.1f} ± {100 * sd:.1f}" for m, sd in zip(e["mean"], e["std"])]
        seeds = ",".join(str(s) for s in e["seeds_done"])
        lines.append(f"| {key} | {seeds} | " + " | ".join(cells) + f" | {100 * e['auc']:.1f} |")
    secs = ", ".join(
        f"{k} {e['mean_round_seconds']:.1f}" for k, e in sorted(entries.items(), key=lambda kv: -kv[1]["auc"])
    )
    return "\n".join(lines) + "\n\nMean seconds per round (all rounds, seed round included): " + secs + "\n"


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "table":  # al bench curves table RESULT.json [MORE.json ...]
        print(markdown_table(argv[1:]), end="")
        return 0
    ap = argparse.ArgumentParser(prog="al bench curves", description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", required=True, help=".npz with train_/test_ features and targets")
    ap.add_argument("--rounds", type=int, default=20, help="labelled-set sizes K..R*K, round 0 included (default 20)")
    ap.add_argument("--seeds", type=int, default=5, help="how many of the study's seeds 1, 10, 100, 1000, 10000")
    ap.add_argument("--per-round", type=int, default=None, help="labels per round (default: the number of classes)")
    ap.add_argument(
        "--runs",
        default=None,
        help="comma list of QUERY@SEED entries (default: every query strategy @centroid, "
        "random@random, dropquery@random)",
    )
    ap.add_argument("--max-round-seconds", type=float, default=60.0)
    ap.add_argument("--json", default=None, help="write (and keep rewriting) the result here")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the (strategy, seed) runs already complete in --json and run only the missing ones",
    )
    args = ap.parse_args(argv)
    if args.resume and not args.json:
        ap.error("--resume needs --json (the file to resume)")

    data = StudyData.load(args.features)
    n_classes = data.n_classes
    per_round = args.per_round or n_classes
    seeds = list(STUDY_SEEDS[: args.seeds])
    runs = parse_runs(args.runs) if args.runs else list(DEFAULT_RUNS)

    out: dict = data.record("al bench curves", argv, args.features) | {
        "dim": int(data.x.shape[1]),
        "n_classes": n_classes,
        "per_round": per_round,
        "rounds": args.rounds,
        "seeds": seeds,
        "n_labeled": [per_round * (r + 1) for r in range(args.rounds)],
        "max_round_seconds": args.max_round_seconds,
        "strategies": {},
        "stopped": {},
        "errors": {},
    }
    if args.resume and os.path.exists(args.json):
        with open(args.json) as fh:
            old = json.load(fh)
        same = ("n_pool", "n_test", "dim", "n_classes", "per_round", "rounds")
        if any(old.get(k) != out[k] for k in same):
            ap.error(f"--resume: {args.json} was made with other data or protocol ({', '.join(same)} differ)")
        out["strategies"] = old.get("strategies", {})
        out["resumed_from"] = {
            "command": old.get("command"),
            "started": old.get("started"),
            "updated": old.get("updated"),
        }
        out["commands"] = old.get("commands", [old.get("command")]) + [out["command"]]
        out["seeds"] = sorted(set(old.get("seeds", [])) | set(seeds))
        # a stop or error is retried: keep the old record apart
        out["stopped_before"] = {**old.get("stopped_before", {}), **old.get("stopped", {})}
        out["errors_before"] = {**old.get("errors_before", {}), **old.get("errors", {})}

    def dump() -> None:
        save_study(out, args.json)

    hard = max(1, int(3 * args.max_round_seconds))  # armed for query rounds only

    def on_alarm(signum, frame):
        raise RoundTooSlow(f"a round ran past the hard limit of {hard} s")

    signal.signal(signal.SIGALRM, on_alarm)
    dump()
    t_all = time.perf_counter()
    for seed_name, query_name in runs:
        key = run_key(seed_name, query_name)
        entry = out["strategies"].setdefault(
            key, {"seed_strategy": seed_name, "query_strategy": query_name, "per_seed": {}}
        )
        for seed in seeds:
            if entry["per_seed"].get(str(seed), {}).get("complete"):
                print(f"{key} seed {seed}: complete in {args.json}, kept", flush=True)
                continue
            times: list[float] = []
            accs: list[float] = []
            last = [time.perf_counter()]

            def progress(
                r: int, acc: float, n_lab: int, times=times, accs=accs, last=last, key=key, seed=seed
            ) -> None:  # this iteration's lists, bound (called within the iteration)
                now = time.perf_counter()
                times.append(now - last[0])
                accs.append(acc)
                print(
                    f"[{time.perf_counter() - t_all:7.0f}s] {key} seed {seed} round {r}: {n_lab} labels, "
                    f"acc {acc:.4f} ({times[-1]:.1f} s)",
                    flush=True,
                )
                # round 0 (seed pool) may legitimately cost more; judge query rounds
                if r > 0 and times[-1] > args.max_round_seconds:
                    raise RoundTooSlow(f"round {r} took {times[-1]:.1f} s > {args.max_round_seconds:.0f} s")
                last[0] = time.perf_counter()
                signal.alarm(hard)

            signal.alarm(0)  # the seed round (k-means on the whole pool for centroid) is not limited
            try:
                res = data.simulate(
                    seed_name, query_name, per_round=per_round, rounds=args.rounds, seed=seed, progress=progress
                )
            except RoundTooSlow as exc:
                signal.alarm(0)
                elapsed = time.perf_counter() - last[0]
                out["stopped"][key] = {
                    "seed": seed,
                    "reason": str(exc),
                    "rounds_done": len(accs),
                    "round_seconds": [round(t, 2) for t in times],
                    "seconds_in_stopped_round": round(
                        times[-1] if times and str(exc).startswith("round") else elapsed, 1
                    ),
                    "accuracy_so_far": [round(a, 5) for a in accs],
                }
                print(f"STOPPED {key} seed {seed}: {exc}", flush=True)
                dump()
                break
            except Exception as exc:  # record and go on with the next strategy
                signal.alarm(0)
                out["errors"][key] = {"seed": seed, "error": f"{type(exc).__name__}: {exc}"}
                print(f"ERROR {key} seed {seed}: {type(exc).__name__}: {exc}", flush=True)
                dump()
                break
            signal.alarm(0)
            entry["per_seed"][str(seed)] = {
                "accuracy": [round(float(a), 5) for a in res.accuracy],
                "round_seconds": [round(t, 2) for t in times],
                "complete": True,
            }
            summarise(entry)
            dump()
        print(f"== {key}: auc {entry.get('auc')} seeds {entry.get('seeds_done')}", flush=True)
    out["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    out["total_seconds"] = round(time.perf_counter() - t_all, 1)
    dump()
    summary = {
        k: {"auc": v.get("auc"), "first": (v.get("mean") or [None])[0], "last": (v.get("mean") or [None])[-1]}
        for k, v in out["strategies"].items()
    }
    print(json.dumps({"summary": summary, "stopped": out["stopped"], "errors": out["errors"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
