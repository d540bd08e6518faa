"""The probe's fit, fresh process and warm, against the plain torch training loop: `al bench probe`.

    al bench probe --sizes 1000x768x100,8000x768x100 --repeats 3 --json data/bench/speed-probe.json

Data: ``--classes`` Gaussian clusters (unit-variance centres, spread 0.5-1.5, as
`al bench select` draws them) of N rows, the labels their cluster ids. Two sides,
each in its own fresh process per repeat, run alternately (which goes first alternates
too), so both see the same background load:

- ``al_core``: :class:`al_core.learn.probe.Probe` ``.fit`` (hand-written gradients, no
  ``torch.optim``: :mod:`al_core.learn.probe_train`);
- ``reference``: the same specification trained the plain torch way
  (:func:`reference_fit`: Probe's hyperparameters and mini-batches, ``nn.Sequential`` with ``nn.Dropout``, autograd,
  ``torch.optim.AdamW``, ``torch.randperm`` every epoch, the best epoch's
  ``state_dict`` cloned), which is what ``Probe.fit`` was before.

Each child reports the import of torch and the probe module (``import_seconds``), its
first fit (``first_fit_seconds``: everything a fresh process pays on top of the imports,
the optimiser's import chain included), then ``--warm`` more fits (``warm_seconds``, the
median; ``ms_per_epoch``). The 1-minute load average (``/proc/loadavg``) is recorded
before and after every child. JSON: ``sizes.<NxDxK>.<side>`` per repeat and
``sizes.<NxDxK>.ratio`` (reference / al_core, medians over repeats).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from al_core.bench import child_command

SIDES = ("al_core", "reference")


def loadavg() -> list[float]:
    """The 1, 5 and 15-minute load averages from /proc/loadavg."""
    with open("/proc/loadavg") as fh:
        return [float(v) for v in fh.read().split()[:3]]


def clustered(n: int, dim: int, classes: int, seed: int):
    """N x D float32 rows around ``classes`` Gaussian centres, and their cluster ids (int64)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, dim), dtype=np.float32)
    spread = rng.uniform(0.5, 1.5, size=classes).astype(np.float32)
    ids = rng.integers(0, classes, size=n).astype(np.int64)
    x = rng.standard_normal((n, dim), dtype=np.float32) * spread[ids, None] + centers[ids]
    return x, ids


def reference_fit(x, labels, n_classes: int, *, seed: int = 0, **params) -> int:
    """The specification's probe trained the plain torch way (module docstring), on one torch thread: the
    hyperparameters and mini-batches of :class:`al_core.learn.probe.Probe` (its defaults, or ``params``); returns
    the number of epochs run."""
    import math

    import torch
    from torch import nn
    from torch.nn import functional as F

    from al_core.learn.probe import Probe
    from al_core.learn.probe_train import batch_bounds

    spec = Probe(n_classes, seed=seed, **params)
    n, d = x.shape
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = nn.Sequential(nn.Dropout(p=spec.dropout), nn.BatchNorm1d(d, affine=False), nn.Linear(d, n_classes))
            opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
            xt, yt = torch.from_numpy(x), torch.from_numpy(labels)
            best_loss = ref_loss = math.inf
            wait, best_state, epochs = 0, None, 0
            model.train()
            for _ in range(spec.max_epochs):
                epochs += 1
                order = torch.randperm(n)
                total = 0.0
                for s, e in batch_bounds(n, spec.batch_size):
                    idx = order[s:e]
                    opt.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(model(xt[idx]), yt[idx])
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * idx.shape[0]
                epoch_loss = total / n
                if epoch_loss < best_loss:
                    best_loss = epoch_loss
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if epoch_loss < ref_loss - spec.min_delta:
                    ref_loss, wait = epoch_loss, 0
                else:
                    wait += 1
                    if wait >= spec.patience:
                        break
            model.load_state_dict(best_state)
    finally:
        torch.set_num_threads(prev)
    return epochs


def _child(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    import numpy as np
    import torch  # noqa: F401 (timed: the import every fresh process pays)

    from al_core.learn.probe import Probe

    import_s = time.perf_counter() - t0
    x, y = clustered(args.n, args.dim, args.classes, args.seed)

    def fit() -> int:
        if args.child == "al_core":
            return Probe(args.classes, seed=args.seed).fit(x, y).n_epochs_
        return reference_fit(x, y, args.classes, seed=args.seed)

    t = time.perf_counter()
    epochs = fit()
    first = time.perf_counter() - t
    warm = []
    for _ in range(args.warm):
        t = time.perf_counter()
        fit()
        warm.append(time.perf_counter() - t)
    med = float(np.median(warm)) if warm else float("nan")
    out = {
        "import_seconds": round(import_s, 3),
        "first_fit_seconds": round(first, 3),
        "warm_seconds": round(med, 4),
        "warm_all": [round(w, 4) for w in warm],
        "epochs": int(epochs),
        "ms_per_epoch": round(1000 * med / epochs, 2),
    }
    with open(args.result, "w") as fh:
        json.dump(out, fh)
    return 0


def _run(side: str, size: tuple[int, int, int], args: argparse.Namespace, workdir: str) -> dict:
    n, d, k = size
    result = os.path.join(workdir, f"{side}.json")
    cmd = child_command("al_core.bench.probe", args, ("warm", "seed"), child=side, n=n, dim=d, classes=k, result=result)
    before = loadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"status": "error", "output_tail": (proc.stdout + proc.stderr)[-1500:]}
    with open(result) as fh:
        out = json.load(fh)
    out.update(status="ok", process_seconds=round(wall, 3), load_1m_before=before, load_1m_after=loadavg()[0])
    return out


def _parse_sizes(text: str) -> list[tuple[int, int, int]]:
    try:
        sizes = [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(len(s) != 3 or min(s) < 2 for s in sizes):
        raise SystemExit(f"al bench probe: --sizes takes NxDxK[,NxDxK...] with N, D, K >= 2, got {text!r}")
    return sizes  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    ap = argparse.ArgumentParser(prog="al bench probe", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--sizes",
        default="200x768x100,1000x768x100,2000x768x100,8000x768x100,1000x1280x10",
        help="comma list of NxDxK (labelled rows x feature dimension x classes)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per side and size")
    ap.add_argument("--warm", type=int, default=3, help="fits after the first one, per process")
    ap.add_argument("--sides", default=",".join(SIDES))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--dim", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--classes", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)
    sides = [s for s in args.sides.split(",") if s]
    if any(s not in SIDES for s in sides):
        raise SystemExit(f"al bench probe: --sides takes {', '.join(SIDES)}")
    sizes = _parse_sizes(args.sizes)
    out: dict = {
        "command": "al bench probe " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "loadavg_at_start": loadavg()},
        "sizes": {},
    }
    from al_core.bench import emit

    with tempfile.TemporaryDirectory(prefix="al-bench-probe-") as workdir:
        for size in sizes:
            key = "x".join(map(str, size))
            entry = out["sizes"][key] = {s: [] for s in sides}
            for rep in range(args.repeats):
                order = sides if rep % 2 == 0 else sides[::-1]
                for side in order:
                    r = _run(side, size, args, workdir)
                    entry[side].append(r)
                    print(
                        f"{key} {side} #{rep}: first {r.get('first_fit_seconds')} s, warm {r.get('warm_seconds')}"
                        f" s, {r.get('epochs')} epochs, import {r.get('import_seconds')} s, load "
                        f"{r.get('load_1m_before')}",
                        file=sys.stderr,
                        flush=True,
                    )
            if len(sides) == 2:

                def med(side: str, field: str, entry: dict = entry) -> float:
                    vals = [r[field] for r in entry[side] if r.get("status") == "ok"]
                    return float(np.median(vals)) if vals else float("nan")

                entry["ratio"] = {
                    f: round(med("reference", f) / med("al_core", f), 2)
                    for f in ("first_fit_seconds", "warm_seconds", "ms_per_epoch", "import_seconds")
                }
    out["machine"]["loadavg_at_end"] = loadavg()
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
