"""numpy <-> torch, torch's thread setting and blocks of rows on worker threads: helpers the
probe, k-means and the strategies share."""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

__all__ = ["BLOCK_WORKERS", "as_tensor", "float_block", "map_blocks", "torch_threads"]

# Worker threads of map_blocks, each running whole blocks of rows on one torch thread. The
# build machine has 2 cores shared with other jobs; there, two workers taking blocks from
# one queue beat one torch call on two OpenMP threads, whose every operation waits for
# both threads (with the other cores busy, a small reduction on 2 threads took 5x its time
# on 1: docs/benchmarks.md, "Matrix products").
BLOCK_WORKERS = 2

T = TypeVar("T")


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A torch view of a float32 numpy array (no copy; read-only arrays too)."""
    with warnings.catch_warnings():
        # np.memmap opened read-only: we never write through these views.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch threads (None: unchanged), then restore the setting."""
    prev = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def float_block(features: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows start:stop of ``features`` as a C-contiguous float32 array (a view when they already are)."""
    return np.ascontiguousarray(features[start:stop], dtype=np.float32)


_pools: dict[int, ThreadPoolExecutor] = {}  # worker count -> its pool, kept for the process's life
_inside = threading.local()  # set on a worker while it runs a block


def _pool(n_workers: int) -> ThreadPoolExecutor:
    with _pools_lock:
        if n_workers not in _pools:
            _pools[n_workers] = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="al-blocks")
        return _pools[n_workers]


_pools_lock = threading.Lock()


def map_blocks(fn: Callable[[int, int], T], starts: Sequence[int], workers: int | None = None) -> list[T]:
    """``[fn(i, start) for i, start in enumerate(starts)]``, the calls spread over ``workers``
    threads (default BLOCK_WORKERS), each with one torch thread and in inference mode.

    The results come back in block order. ``fn`` must write only its own block's rows of any
    shared output; then the outcome does not depend on the number of workers (a reduction
    over the results, done by the caller in block order, does not either). torch's products
    and numpy's array operations release the GIL, so the workers run at once. The worker
    threads are kept between calls (a pool per worker count); a call made from inside a
    block runs its blocks on the calling worker.
    """
    n_workers = max(1, min(BLOCK_WORKERS if workers is None else workers, len(starts)))

    def call(item: tuple[int, int]) -> T:
        _inside.active = True
        try:
            with torch.inference_mode():
                return fn(*item)
        finally:
            _inside.active = False

    if getattr(_inside, "active", False):  # nested: stay on this worker
        with torch.inference_mode():
            return [fn(i, s) for i, s in enumerate(starts)]
    with torch_threads(1):
        if n_workers == 1:
            return [call(item) for item in enumerate(starts)]
        return list(_pool(n_workers).map(call, enumerate(starts)))
