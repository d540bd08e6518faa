"""Matrix-product backends on this machine, side by side: `al bench matmul`.

    al bench matmul --repeats 5 --json data/bench/speed-matmul.json

For the product shapes the library runs (the probe's training steps and inference, the dropout
passes, the k-means assignment and k-means++ steps), the same float32 product by torch (MKL)
and by numpy (its BLAS), each on 1 and on 2 threads, and torch on two worker threads of one
thread each (:func:`al_core.learn.tensors.map_blocks`, how the library runs blocks), in
alternating order, ``--repeats`` times each; the median GFLOP/s of each and the 1-minute load
average before each shape. Also whether torch's result is the same bytes on 1 and 2 threads
and for a sub-block of the rows (results independent of the thread count and of the block
size), and the row squared norms by torch's einsum, numpy's einsum and torch's vector_norm.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time

import numpy as np

# (rows, inner, cols, what): the products the library runs
SHAPES = (
    (1000, 768, 100, "probe training step, 1,000 labels, K = 100"),
    (4096, 768, 100, "dropout pass / k-means assignment block, K = B = 100"),
    (16384, 768, 100, "probe inference block, K = 100"),
    (16384, 1280, 10, "probe inference block, K = 10 (CIFAR-10 features)"),
    (65536, 768, 6, "k-means++ step: 6 candidates against 65,536 training points"),
)


def _loadavg() -> float:
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


def _cases(a: np.ndarray, b: np.ndarray) -> dict:
    """The product a @ b run each way (module docstring)."""
    import torch
    from threadpoolctl import threadpool_limits

    from al_core.learn.tensors import map_blocks, torch_threads

    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    half = a.shape[0] // 2

    def torch_on(threads: int):
        def run():
            with torch_threads(threads):
                torch.mm(at, bt)

        return run

    def numpy_on(threads: int):
        def run():
            with threadpool_limits(threads):
                a @ b

        return run

    def workers():
        map_blocks(lambda _, s: torch.mm(at[s : s + half], bt), [0, half])

    return {
        "torch_1": torch_on(1),
        "torch_2": torch_on(2),
        "numpy_1": numpy_on(1),
        "numpy_2": numpy_on(2),
        "torch_2_workers": workers,
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    from al_core.bench import emit
    from al_core.learn.tensors import torch_threads

    ap = argparse.ArgumentParser(prog="al bench matmul", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    out: dict = {
        "command": "al bench matmul " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "shapes": [],
    }
    for m, k, n, what in SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        at, bt = torch.from_numpy(a), torch.from_numpy(b)
        cases = _cases(a, b)
        times: dict[str, list[float]] = {c: [] for c in cases}
        load = _loadavg()
        names = list(cases)
        for rep in range(args.repeats):
            for c in names if rep % 2 == 0 else names[::-1]:
                cases[c]()  # warm
                t0 = time.perf_counter()
                cases[c]()
                times[c].append(time.perf_counter() - t0)
        flop = 2.0 * m * k * n
        with torch_threads(1):
            one = torch.mm(at, bt)
        with torch_threads(2):
            two = torch.mm(at, bt)
        sub = torch.mm(at[: m // 3], bt)
        entry = {
            "shape": [m, k, n],
            "what": what,
            "load_1m_before": load,
            "gflops": {c: round(flop / float(np.median(v)) / 1e9, 1) for c, v in times.items()},
            "torch_same_bytes_1_and_2_threads": bool(torch.equal(one, two)),
            "torch_same_bytes_for_a_sub_block": bool(torch.equal(one[: m // 3], sub)),
        }
        out["shapes"].append(entry)
        print(f"{m}x{k}x{n} ({what}): {entry['gflops']} load {load}", file=sys.stderr, flush=True)
    x = rng.standard_normal((16384, 768), dtype=np.float32)
    xt = torch.from_numpy(x)
    norms: dict[str, list[float]] = {"torch_einsum": [], "numpy_einsum": [], "torch_vector_norm": []}
    fns = {
        "torch_einsum": lambda: torch.einsum("ij,ij->i", xt, xt),
        "numpy_einsum": lambda: np.einsum("ij,ij->i", x, x),
        "torch_vector_norm": lambda: torch.linalg.vector_norm(xt, dim=1),
    }
    with torch_threads(1):
        for _ in range(args.repeats):
            for c, f in fns.items():
                f()
                t0 = time.perf_counter()
                f()
                norms[c].append(time.perf_counter() - t0)
    out["row_sq_norms_16384x768_ms_one_thread"] = {c: round(1000 * float(np.median(v)), 2) for c, v in norms.items()}
    out["machine"]["loadavg_at_end"] = os.getloadavg()
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
