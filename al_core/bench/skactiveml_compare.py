"""Side by side with scikit-activeml: `al bench skactiveml_compare`.

    al bench skactiveml_compare --features data/cache/cifar10_effnet_lite0_128.npz \
        --n 20000 --labeled 1000 --budget 100 --json data/bench/skactiveml-20k.json

The same N pool rows (a seeded subset of the file's ``train_features``) and the
same labelled set (``--labeled`` seeded rows with their true classes) go to
both sides; each picks ``--budget`` rows. Pairs: DropQuery (3 dropout passes on
both sides), TypiClust, ProbCover, Badge, CoreSet. Each (side, strategy) runs
in its own child process with a timeout; the timed span includes whatever
classifier that side fits:

- al_core: ``Probe(K, seed).fit(labelled rows)`` (strategies that use the
  probe: dropquery, badge, coreset) plus ``get_strategy(name).select(...)``.
- scikit-activeml 1.0.1: ``query(X, y, ...)`` with ``y`` = NaN (MISSING_LABEL)
  for unlabelled rows; DropQuery and Badge get
  ``SklearnClassifier(LogisticRegression(max_iter=1000), classes=0..K-1)`` and
  fit it inside ``query`` (``fit_clf=True``); TypiClust, ProbCover (with
  ``n_classes=K``) and CoreSet use no classifier. Everything else at its
  defaults.

JSON: ``pairs.<name>.al_core_seconds``, ``.skactiveml_seconds``, ``.ratio``
(scikit-activeml / al_core), plus each side's status.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

PAIRS = {  # al_core strategy -> scikit-activeml class
    "dropquery": "DropQuery",
    "typiclust": "TypiClust",
    "probcover": "ProbCover",
    "badge": "Badge",
    "coreset": "CoreSet",
}


def _child(args: argparse.Namespace) -> int:
    d = np.load(args.data)
    x = np.ascontiguousarray(d["x"], dtype=np.float32)
    labeled, labels, k = d["labeled"], d["labels"], int(d["k"])
    out: dict = {}
    if args.side == "al_core":
        from al_core.learn.probe import Probe
        from al_core.learn.strategies import get_strategy

        strategy = get_strategy(args.name) if args.name != "dropquery" else get_strategy("dropquery")
        t0 = time.perf_counter()
        probe = Probe(k, seed=args.seed).fit(x[labeled], labels) if strategy.uses_probe else None
        t_fit = time.perf_counter() - t0
        res = strategy.select(x, labeled, labels, args.budget, n_classes=k, seed=args.seed, probe=probe)
        out["seconds"] = time.perf_counter() - t0
        out["classifier_fit_seconds"] = t_fit if probe is not None else 0.0
        out["params"] = strategy.get_params()
        picked = np.asarray(res.indices)
    else:
        import warnings

        import skactiveml.pool as pool
        from skactiveml.classifier import SklearnClassifier
        from sklearn.linear_model import LogisticRegression

        warnings.filterwarnings("ignore")
        y = np.full(x.shape[0], np.nan)
        y[labeled] = labels
        cls = getattr(pool, PAIRS[args.name])
        kwargs: dict = {"random_state": args.seed}
        if args.name == "dropquery":
            kwargs["n_dropout_samples"] = 3
        if args.name == "probcover":
            kwargs["n_classes"] = k
        qs = cls(**kwargs)
        t0 = time.perf_counter()
        if args.name in ("dropquery", "badge"):
            clf = SklearnClassifier(LogisticRegression(max_iter=1000), classes=np.arange(k),
                                    random_state=args.seed)
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


def _run(side: str, name: str, data: str, args: argparse.Namespace, workdir: str) -> dict:
    result = os.path.join(workdir, f"{side}-{name}.json")
    if os.path.exists(result):
        os.remove(result)
    cmd = [sys.executable, "-m", "al_core.bench.skactiveml_compare", "--child-side", side, "--child-name", name,
           "--data", data, "--budget", str(args.budget), "--seed", str(args.seed), "--result", result]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": None, "timeout_s": args.timeout}
    if proc.returncode != 0 or not os.path.exists(result):
        return {"status": "error", "returncode": proc.returncode, "output_tail": (proc.stdout + proc.stderr)[-1500:]}
    with open(result) as fh:
        out = json.load(fh)
    out["status"] = "ok"
    out["wall_seconds"] = round(time.perf_counter() - t0, 1)
    out["seconds"] = round(out["seconds"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="al bench skactiveml_compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", default="data/cache/cifar10_effnet_lite0_128.npz")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--labeled", type=int, default=1000)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--strategies", default=",".join(PAIRS))
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per (side, strategy)")
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
    src = np.load(args.features)
    feats, targets = src["train_features"], np.asarray(src["train_targets"], dtype=np.int64)
    k = int(len(src["class_names"])) if "class_names" in src.files else int(targets.max() + 1)
    rng = np.random.default_rng(args.seed)
    rows = np.sort(rng.choice(feats.shape[0], size=min(args.n, feats.shape[0]), replace=False))
    x = np.ascontiguousarray(feats[rows], dtype=np.float32)
    y = targets[rows]
    labeled = np.sort(rng.choice(x.shape[0], size=args.labeled, replace=False)).astype(np.int64)
    os.makedirs(args.workdir, exist_ok=True)
    data = os.path.join(args.workdir, "data.npz")
    np.savez(data, x=x, labeled=labeled, labels=y[labeled], k=k)

    import skactiveml

    out: dict = {
        "command": "al bench skactiveml_compare " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()},
        "skactiveml_version": skactiveml.__version__,
        "features": args.features, "n": int(x.shape[0]), "dim": int(x.shape[1]), "classes": k,
        "labeled": args.labeled, "budget": args.budget, "seed": args.seed,
        "pairs": {},
    }

    def dump() -> None:
        if args.json:
            with open(args.json + ".tmp", "w") as fh:
                json.dump(out, fh, indent=1)
            os.replace(args.json + ".tmp", args.json)

    for name in names:
        ours = _run("al_core", name, data, args, args.workdir)
        print(f"{name} al_core: {ours.get('status')} {ours.get('seconds')} s", file=sys.stderr, flush=True)
        theirs = _run("skactiveml", name, data, args, args.workdir)
        print(f"{name} skactiveml: {theirs.get('status')} {theirs.get('seconds')} s", file=sys.stderr, flush=True)
        ratio = (theirs["seconds"] / ours["seconds"]) if ours.get("seconds") and theirs.get("seconds") else None
        out["pairs"][name] = {
            "skactiveml_class": PAIRS[name],
            "al_core_seconds": ours.get("seconds"), "skactiveml_seconds": theirs.get("seconds"),
            "ratio": None if ratio is None else round(ratio, 2),
            "al_core": ours, "skactiveml": theirs, "load_avg_1m": round(os.getloadavg()[0], 2),
        }
        dump()
    out["finished"] = _dt.datetime.now().isoformat(timespec="seconds")
    dump()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
