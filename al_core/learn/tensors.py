"""numpy <-> torch and torch's thread setting: helpers the probe, k-means and the strategies share."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch

__all__ = ["as_tensor", "float_block", "torch_threads"]


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
