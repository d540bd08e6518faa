"""Points: a read-only view of some rows of a feature matrix, L2-normalised on demand, read in blocks.

k-means, :func:`~al_core.learn.neighbours.min_sq_distances` and the strategies take a
:class:`Points`, so that a subset of a (memory-mapped) feature matrix is gathered and
normalised block by block instead of copied whole.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# Rows per block when streaming over a point set (normalising, copying a
# gathered subset, exact distances to centres): 16384 x 768 x 4 B = 48 MB
# (plus the same again for a temporary).
BLOCK_ROWS = 16384

# Floor under a vector's norm when L2-normalising (a zero vector stays zero), as
# sklearn.preprocessing.normalize does.
_NORM_FLOOR = 1e-12

__all__ = ["BLOCK_ROWS", "Points", "as_points", "l2_normalize"]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (float32; a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64)).astype(np.float32)
    np.maximum(norms, _NORM_FLOOR, out=norms)
    return x / norms[:, None]


class Points:
    """A read-only view of some rows of a feature matrix, optionally L2-normalised.

    ``rows`` (int64 indices into ``features``, in the order that defines the
    local positions 0..n-1) selects a subset without copying it whole; rows are
    gathered and normalised block by block.
    """

    def __init__(self, features: np.ndarray, rows: np.ndarray | None = None, *, normalize: bool = False):
        if features.ndim != 2:
            raise ValueError(f"features must be a 2-D array, got shape {features.shape}")
        self.features = features
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.normalize = normalize

    def __len__(self) -> int:
        return self.features.shape[0] if self.rows is None else int(self.rows.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def take(self, local: np.ndarray) -> np.ndarray:
        """The points at local positions ``local``, as a new float32 array."""
        local = np.asarray(local, dtype=np.int64)
        idx = local if self.rows is None else self.rows[local]
        out = np.asarray(self.features[idx], dtype=np.float32)
        return l2_normalize(out) if self.normalize else out

    def blocks(self, block_rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """(start, block) over every point in local order; the last partial block included."""
        n = len(self)
        for start in range(0, n, block_rows):
            stop = min(start + block_rows, n)
            if self.rows is None:
                block = np.asarray(self.features[start:stop], dtype=np.float32)
            else:
                block = np.asarray(self.features[self.rows[start:stop]], dtype=np.float32)
            if self.normalize:
                block = l2_normalize(block)
            yield start, block

    def materialize(self) -> np.ndarray:
        """Every point as one float32 n x D array (a view when no copy is needed)."""
        if self.rows is None and not self.normalize:
            return np.asarray(self.features, dtype=np.float32)
        out = np.empty((len(self), self.dim), dtype=np.float32)
        for start, block in self.blocks():
            out[start : start + block.shape[0]] = block
        return out


def as_points(points: Points | np.ndarray) -> Points:
    return points if isinstance(points, Points) else Points(np.asarray(points, dtype=np.float32))
