"""Side by side with scikit-activeml: `al bench skactiveml_compare`.

    al bench skactiveml_compare --features data/cache/cifar10_effnet_lite0_128.npz \\
        --n 20000 --labeled 200,1000 --budget 100 --repeats 3 --json data/bench/skactiveml-20k.json
    al bench skactiveml_compare --synthetic 768x100 --n 20000 --labeled 200,1000 --budget 100 ...

Data: N seeded rows of the file's ``train_features`` (``--features``), or N rows of
``--synthetic DxK`` clustered features (`al bench select`'s easy data set: K Gaussian
clusters in D dimensions, the labels their cluster ids). For each labelled-set size of
``--labeled`` the same seeded labelled rows (with their true classes) go to both sides; each
picks ``--budget`` rows. Pairs: DropQuery (3 dropout passes on both sides), TypiClust,
ProbCover, Badge, CoreSet, margin (scikit-activeml's UncertaintySampling with
``method="margin_sampling"``). Each (side, strategy, size) runs ``--repeats`` times, each in
its own fresh child process; the two sides alternate, and which goes first alternates from
repeat to repeat, so both see the same background load (the 1-minute load average from
/proc/loadavg is recorded before every child). A child first imports its side (timed apart:
``import_seconds``, a one-off cost of every fresh process), then times what a selection
costs (``seconds``), whatever classifier that side fits included:

- al_core: ``Probe(K, seed).fit(labelled rows)`` for the strategies that use the probe
  (dropquery, badge, coreset, margin) plus ``get_strategy(name).select(...)``;
- scikit-activeml 1.0.1: ``query(X, y, ...)`` with ``y`` = NaN (MISSING_LABEL) for unlabelled
  rows; DropQuery, Badge and margin get ``SklearnClassifier(LogisticRegression(max_iter=1000),
  classes=0..K-1)`` and fit it inside ``query`` (``fit_clf=True``); TypiClust, ProbCover (with
  ``n_classes=K``) and CoreSet use no classifier. Everything else at its defaults.

Each child runs under an address-space limit (``--memory-limit-gb``), so a side that would
take the machine's memory stops with ``status: out_of_memory`` instead. JSON:
``pairs.<name>@<labelled>`` with each side's runs, the medians and ``ratio`` (scikit-activeml
/ al_core, of the median seconds).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

from al_core.bench import child_command

PAIRS = {  # al_core strategy -> scikit-activeml class
    "dropquery": "DropQuery",
    "typiclust": "TypiClust",
    "probcover": "ProbCover",
    "badge": "Badge",
    "coreset": "CoreSet",
    "margin": "UncertaintySampling",
}
SIDES = ("al_core", "skactiveml")
_WITH_CLASSIFIER = ("dropquery", "badge", "margin")  # scikit-activeml's query fits the classifier


def _loadavg() -> float:
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


def _child(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out: dict = {}
    if args.side == "al_core":
        import torch  # noqa: F401 (timed with the imports)

        from al_core.learn.probe import Probe
        from al_core.learn.strategies import get_strategy
    else:
        import warnings

        import skactiveml.pool as pool
        from skactiveml.classifier import SklearnClassifier
        from sklearn.linear_model import LogisticRegression

        warnings.filterwarnings("ignore")
    out["import_seconds"] = time.perf_counter() - t0
    d = np.load(args.data)
    x = np.ascontiguousarray(d["x"], dtype=np.float32)
    labeled, labels, k = d["labeled"], d["labels"], int(d["k"])
    if args.side == "al_core":
        strategy = get_strategy(args.name)
        t0 = time.perf_counter()
        probe = Probe(k, seed=args.seed).fit(x[labeled], labels) if strategy.uses_probe else None
        t_fit = time.perf_counter() - t0
        res = strategy.select(x, labeled, labels, args.budget, n_classes=k, seed=args.seed, probe=probe)
        out["seconds"] = time.perf_counter() - t0
        out["classifier_fit_seconds"] = t_fit if probe is not None else 0.0
        out["params"] = strategy.get_params()
        picked = np.asarray(res.indices)
    else:
        y = np.full(x.shape[0], np.nan)
        y[labeled] = labels
        cls = getattr(pool, PAIRS[args.name])
        kwargs: dict = {"random_state": args.seed}
        if args.name == "dropquery":
            kwargs["n_dropout_samples"] = 3
        if args.name == "probcover":
            kwargs["n_classes"] = k
        if args.name == "margin":
            kwargs["method"] = "margin_sampling"
        qs = cls(**kwargs)
        t0 = time.perf_counter()
        if args.name in _WITH_CLASSIFIER:
            clf = SklearnClassifier(LogisticRegression(max_iter=1000), classes=np.arange(k), random_state=args.seed)
            picked = qs.query(X=x, y=y, clf=clf, fit_clf=True, batch_size=args.budget)
        else:
            picked = qs.query(X=x, y=y, batch_size=args.budget)
        out["seconds"] = time.perf_counter() - t0
        out["params"] = {kk: repr(v) for kk, v in kwargs.items()}
    picked = np.asarray(picked, dtype=np.int64)
    out["n_selected"] = int(np.unique(picked).shape[0])
    out["overlap_labeled"] = int(np.isin(picked, labeled).sum())
    with open(args.result, "w") as fh:
        json.dump(out, fh)
    return 0


def _limit_memory(gb: float):
    def apply() -> None:
        limit = int(gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def _run(side: str, name: str, data: str, args: argparse.Namespace, workdir: str) -> dict:
    result = os.path.join(workdir, f"{side}-{name}.json")
    if os.path.exists(result):
        os.remove(result)
    cmd = child_command(
        "al_core.bench.skactiveml_compare",
        args,
        ("budget", "seed"),
        child_side=side,
        child_name=name,
        data=data,
        result=result,
    )
    load = _loadavg()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.timeout, preexec_fn=_limit_memory(args.memory_limit_gb)
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": None, "timeout_s": args.timeout, "load_1m_before": load}
    tail = (proc.stdout + proc.stderr)[-1500:]
    if proc.returncode != 0 or not os.path.exists(result):
        oom = "MemoryError" in tail or "Unable to allocate" in tail or "std::bad_alloc" in tail
        return {
            "status": "out_of_memory" if oom else "error",
            "returncode": proc.returncode,
            "output_tail": tail,
            "load_1m_before": load,
            "memory_limit_gb": args.memory_limit_gb,
        }
    with open(result) as fh:
        out = json.load(fh)
    out.update(status="ok", wall_seconds=round(time.perf_counter() - t0, 1), load_1m_before=load)
    out["seconds"] = round(out["seconds"], 3)
    out["import_seconds"] = round(out["import_seconds"], 3)
    return out


def _median(runs: list[dict], field: str) -> float | None:
    vals = [r[field] for r in runs if r.get("status") == "ok" and r.get(field) is not None]
    return round(float(np.median(vals)), 3) if vals else None


def _data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, int, str]:
    """(x, true classes, K, description) of the N rows both sides select from."""
    rng = np.random.default_rng(args.seed)
    if args.synthetic:
        from al_core.bench.probe import clustered

        try:
            dim, k = (int(v) for v in args.synthetic.lower().split("x"))
        except ValueError:
            raise SystemExit(f"al bench skactiveml_compare: --synthetic takes DxK, got {args.synthetic!r}") from None
        x, y = clustered(args.n, dim, k, args.seed)
        return x, y, k, f"synthetic {args.n} x {dim}, {k} clusters"
    src = np.load(args.features)
    feats, targets = src["train_features"], np.asarray(src["train_targets"], dtype=np.int64)
    k = int(len(src["class_names"])) if "class_names" in src.files else int(targets.max() + 1)
    rows = np.sort(rng.choice(feats.shape[0], size=min(args.n, feats.shape[0]), replace=False))
    return np.ascontiguousarray(feats[rows], dtype=np.float32), targets[rows], k, args.features


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="al bench skactiveml_compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", default="data/cache/cifar10_effnet_lite0_128.npz")
    ap.add_argument("--synthetic", default=None, help="DxK: clustered synthetic features instead of --features")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--labeled", default="200,1000", help="comma list of labelled-set sizes")
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--strategies", default=",".join(PAIRS))
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per side, strategy and size")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per child")
    ap.add_argument("--memory-limit-gb", type=float, default=8.0, help="address-space limit of each child")
    ap.add_argument("--workdir", default="data/bench/skactiveml-work")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child-side", dest="side", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-name", dest="name", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.side:
        return _child(args)

    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    bad = [s for s in names if s not in PAIRS]
    if bad:
        print(f"unknown pairs {bad}; known: {list(PAIRS)}", file=sys.stderr)
        return 2
    sizes = [int(v) for v in args.labeled.split(",") if v.strip()]
    x, y, k, described = _data(args)
    os.makedirs(args.workdir, exist_ok=True)

    import skactiveml

    out: dict = {
        "command": "al bench skactiveml_compare " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()},
        "skactiveml_version": skactiveml.__version__,
        "data": described,
        "n": int(x.shape[0]),
        "dim": int(x.shape[1]),
        "classes": k,
        "labeled": sizes,
        "budget": args.budget,
        "seed": args.seed,
        "repeats": args.repeats,
        "memory_limit_gb": args.memory_limit_gb,
        "pairs": {},
    }

    def dump() -> None:
        if args.json:
            with open(args.json + ".tmp", "w") as fh:
                json.dump(out, fh, indent=1)
            os.replace(args.json + ".tmp", args.json)

    rng = np.random.default_rng(args.seed + 1)
    for n_lab in sizes:
        labeled = np.sort(rng.choice(x.shape[0], size=n_lab, replace=False)).astype(np.int64)
        data = os.path.join(args.workdir, f"data-{n_lab}.npz")
        np.savez(data, x=x, labeled=labeled, labels=y[labeled], k=k)
        for name in names:
            runs: dict[str, list[dict]] = {s: [] for s in SIDES}
            for rep in range(args.repeats):
                for side in SIDES if rep % 2 == 0 else SIDES[::-1]:
                    r = _run(side, name, data, args, args.workdir)
                    runs[side].append(r)
                    print(
                        f"{name}@{n_lab} {side} #{rep}: {r.get('status')} {r.get('seconds')} s "
                        f"(import {r.get('import_seconds')} s), load {r['load_1m_before']}",
                        file=sys.stderr,
                        flush=True,
                    )
            ours, theirs = _median(runs["al_core"], "seconds"), _median(runs["skactiveml"], "seconds")
            out["pairs"][f"{name}@{n_lab}"] = {
                "strategy": name,
                "labeled": n_lab,
                "skactiveml_class": PAIRS[name],
                "al_core_seconds": ours,
                "skactiveml_seconds": theirs,
                "ratio": round(theirs / ours, 2) if ours and theirs else None,
                "al_core_import_seconds": _median(runs["al_core"], "import_seconds"),
                "skactiveml_import_seconds": _median(runs["skactiveml"], "import_seconds"),
                "al_core_classifier_fit_seconds": _median(runs["al_core"], "classifier_fit_seconds"),
                "statuses": {s: [r["status"] for r in runs[s]] for s in SIDES},
                "runs": runs,
            }
            dump()
    out["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    out["machine"]["loadavg_at_end"] = os.getloadavg()
    dump()
    print(
        json.dumps(
            {
                k2: {f: v[f] for f in ("al_core_seconds", "skactiveml_seconds", "ratio", "statuses")}
                for k2, v in out["pairs"].items()
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
