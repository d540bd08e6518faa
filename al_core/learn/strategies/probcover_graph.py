"""ProbCover's geometry on L2-normalised rows: delta-ball graphs and nearest-other-label distances.

Everything here works from dot products (||x_i - x_j||^2 = 2 - 2 x_i . x_j for unit
rows). The all-pairs passes compute them in square tiles of PROBCOVER_TILE_ROWS rows, only
on or above the diagonal (the products are symmetric); the sampled distances take blocks of
PROBCOVER_TILE_ROWS rows against the sample. No N x N matrix is built. The graph is stored
as two CSR halves (:class:`RadiusGraph`). :mod:`al_core.learn.strategies.probcover`
holds the strategy: the radius search, the greedy coverage and the sampled mode.
"""

from __future__ import annotations

import numpy as np
import torch

from al_core.learn.points import Points

__all__ = [
    "PROBCOVER_TILE_ROWS",
    "RadiusGraph",
    "cut_graph",
    "dots_to_sq_distances",
    "graph_pass",
    "nearest_other_label_sq_distances",
    "radius_graph",
    "sample_nearest_other_label_sq_distances",
]

# Square tile of the all-pairs passes (radius search, graph); only tiles on or
# above the diagonal are computed (the dot product is symmetric): 4096 x 4096
# x 4 B = 64 MB of dot products plus a 16 MB boolean mask per tile.
PROBCOVER_TILE_ROWS = 4096


def _tiles(n: int):
    """(i0, i1, j0, j1) for every tile on or above the diagonal, the last partial ones included."""
    t = PROBCOVER_TILE_ROWS
    for i0 in range(0, n, t):
        for j0 in range(i0, n, t):
            yield i0, min(i0 + t, n), j0, min(j0 + t, n)


def _label_bounds(sorted_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels present, start of each one's segment, end) for labels sorted ascending."""
    change = np.flatnonzero(np.diff(sorted_labels)) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [sorted_labels.shape[0]]]).astype(np.int64)
    return starts, ends


def _mask_same_label(g: torch.Tensor, starts, ends, i0, i1, j0, j1) -> None:
    """Set to -inf the entries of tile g (rows i0:i1, columns j0:j1) whose row and
    column share a label, for rows sorted by label (segments [starts, ends))."""
    lo = np.searchsorted(ends, max(i0, j0), side="right")
    for s, e in zip(starts[lo:], ends[lo:]):
        if s >= min(i1, j1):
            break
        r0, r1 = max(s, i0), min(e, i1)
        c0, c1 = max(s, j0), min(e, j1)
        if r0 < r1 and c0 < c1:
            g[r0 - i0 : r1 - i0, c0 - j0 : c1 - j0] = float("-inf")


def _sorted_nearest_other_label_best_dots(xs: np.ndarray, sorted_labels: np.ndarray) -> np.ndarray:
    """For rows sorted by label: the largest dot product of each row with a row of
    another label (-inf if none). The same-label pairs of a tile are then a few
    rectangles, masked by slicing (no N x N or tile-sized comparison)."""
    n = xs.shape[0]
    starts, ends = _label_bounds(sorted_labels)
    best = torch.full((n,), float("-inf"))
    with torch.inference_mode():
        xt = torch.from_numpy(np.ascontiguousarray(xs, dtype=np.float32))
        for i0, i1, j0, j1 in _tiles(n):
            g = torch.mm(xt[i0:i1], xt[j0:j1].t())
            _mask_same_label(g, starts, ends, i0, i1, j0, j1)
            torch.maximum(best[i0:i1], g.max(dim=1).values, out=best[i0:i1])
            torch.maximum(best[j0:j1], g.max(dim=0).values, out=best[j0:j1])
    return best.numpy()


def dots_to_sq_distances(best: np.ndarray) -> np.ndarray:
    b = best.astype(np.float64)
    return np.where(np.isneginf(b), np.inf, np.maximum(2.0 - 2.0 * b, 0.0))


def nearest_other_label_sq_distances(x: np.ndarray, pseudo: np.ndarray) -> np.ndarray:
    """Squared distance of each L2-normalised row to the nearest row with another
    pseudo-label (inf if none), computed as 2 - 2 x_i . x_j.

    A point's delta-ball is pure (holds only its own pseudo-label) exactly when
    this distance is at least delta^2.
    """
    pseudo = np.asarray(pseudo)
    order = np.argsort(pseudo, kind="stable")
    r2 = np.empty(x.shape[0], dtype=np.float64)
    r2[order] = dots_to_sq_distances(_sorted_nearest_other_label_best_dots(x[order], pseudo[order]))
    return r2


def sample_nearest_other_label_sq_distances(points: Points, pseudo: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The same distance for the rows ``rows`` only, each against every row of
    ``points`` (L2-normalised): exact for those rows, len(rows) x N x D work."""
    q = torch.from_numpy(points.take(rows))
    q_lab = torch.from_numpy(np.asarray(pseudo)[rows])
    best = torch.full((rows.shape[0],), float("-inf"))
    lab = torch.from_numpy(np.asarray(pseudo))
    with torch.inference_mode():
        for start, block in points.blocks(PROBCOVER_TILE_ROWS):
            g = torch.mm(q, torch.from_numpy(block).t())
            g.masked_fill_(q_lab[:, None] == lab[None, start : start + block.shape[0]], float("-inf"))
            torch.maximum(best, g.max(dim=1).values, out=best)
    return dots_to_sq_distances(best.numpy())


class RadiusGraph:
    """The symmetric delta-graph (self edges implied) as two CSR halves:
    ``upper`` (i -> j, j > i) and ``lower`` (i -> j, j < i), int32 columns.

    Memory: 2 x 4 B per undirected edge plus 2 x 8 B per row (no N x N matrix,
    no global sort: each row block's edges are already in column order, and the
    lower half is a counting-sort transpose).
    """

    def __init__(self, n: int, up_ptr: np.ndarray, up_idx: np.ndarray):
        self.n = n
        self.up_ptr, self.up_idx = up_ptr, up_idx
        self._lo: tuple[np.ndarray, np.ndarray] | None = None

    def _lower(self) -> tuple[np.ndarray, np.ndarray]:
        """The lower half (the transpose of the upper one), built on first use:
        scipy's CSR -> CSC conversion is a counting sort in C++ (1 B of dummy
        data per edge, no int64 sort keys), and leaves each row's columns ascending."""
        if self._lo is None:
            from scipy import sparse

            nnz = self.up_idx.shape[0]
            # int32 row pointers when they fit, else scipy upcasts the column indices to int64 (a copy)
            ptr = self.up_ptr.astype(self.up_idx.dtype) if nnz < np.iinfo(self.up_idx.dtype).max else self.up_ptr
            upper = sparse.csr_matrix((np.ones(nnz, dtype=np.int8), self.up_idx, ptr), shape=(self.n, self.n))
            lower = upper.tocsc()
            del upper
            self._lo = (lower.indptr.astype(np.int64), lower.indices)
        return self._lo

    @property
    def lo_ptr(self) -> np.ndarray:
        return self._lower()[0]

    @property
    def lo_idx(self) -> np.ndarray:
        return self._lower()[1]

    @property
    def n_edges(self) -> int:
        """Directed edges i -> j, i != j (twice the undirected edges)."""
        return int(2 * self.up_idx.shape[0])

    def degrees(self) -> np.ndarray:
        """Neighbours of each row, itself included."""
        return np.diff(self.up_ptr) + np.diff(self.lo_ptr) + 1

    def uncovered_degrees(self, covered: np.ndarray) -> np.ndarray:
        """For each row, how many of its neighbours (itself included) are not covered:
        segment sums over the edge lists (1 B per edge in flight, no neighbour list copy)."""
        u = (~covered).view(np.uint8)
        deg = u.astype(np.int64)
        for ptr, idx in ((self.up_ptr, self.up_idx), (self.lo_ptr, self.lo_idx)):
            deg += _segment_sums(ptr, u[idx])
        return deg

    def neighbours_of(self, rows: np.ndarray) -> np.ndarray:
        """Concatenated neighbour lists of ``rows`` (each row itself included)."""
        rows = np.asarray(rows, dtype=np.int64)
        return np.concatenate([_gather(self.up_ptr, self.up_idx, rows), _gather(self.lo_ptr, self.lo_idx, rows), rows])


def _segment_sums(indptr: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Sum of ``values[indptr[i]:indptr[i + 1]]`` for every row i (0 for an empty row)."""
    n = indptr.shape[0] - 1
    out = np.zeros(n, dtype=np.int64)
    nonempty = np.flatnonzero(np.diff(indptr) > 0)
    if nonempty.size:
        # consecutive non-empty rows' starts bound each segment (empty rows hold nothing)
        out[nonempty] = np.add.reduceat(values, indptr[nonempty], dtype=np.int64)
    return out


def _gather(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    if rows.size == 0:
        return np.empty(0, dtype=np.int64)
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    total = int(lengths.sum())
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return indices[offsets + np.arange(total)].astype(np.int64)


def graph_pass(
    x: np.ndarray, delta: float, sorted_labels: np.ndarray | None = None, keep_dots: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """One all-pairs pass over tiles on or above the diagonal.

    Always: the upper half of the delta-graph (x_i . x_j > 1 - delta^2 / 2,
    j > i) as (indptr, int32 columns), built one row block at a time, each
    block's edges already in column order (no global sort). With
    ``keep_dots``: each edge's dot product too (float32), so that the graph of
    any smaller radius can be cut from it exactly. With ``sorted_labels`` (rows
    sorted by label): also each row's largest dot product with a row of
    another label (the radius search's input), from the same products.
    """
    n = x.shape[0]
    idx_dtype = np.int32 if n < 2**31 else np.int64
    dot_min = 1.0 - 0.5 * delta * delta
    up_counts = np.zeros(n, dtype=np.int64)
    parts: list[np.ndarray] = []
    dot_parts: list[np.ndarray] = []
    best = None
    if sorted_labels is not None:
        starts, ends = _label_bounds(sorted_labels)
        best = torch.full((n,), float("-inf"))
    t = PROBCOVER_TILE_ROWS
    with torch.inference_mode():
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        for i0 in range(0, n, t):
            i1 = min(i0 + t, n)
            rows_parts, cols_parts, dots = [], [], []
            for j0 in range(i0, n, t):
                j1 = min(j0 + t, n)
                g = torch.mm(xt[i0:i1], xt[j0:j1].t())
                close = g > dot_min
                if i0 == j0:
                    close = torch.triu(close, diagonal=1)  # i < j only; self edges implied
                ii, jj = torch.nonzero(close, as_tuple=True)
                del close
                if ii.numel():
                    rows_parts.append(ii.to(torch.int32).numpy())
                    cols_parts.append((jj + j0).to(torch.int32).numpy().astype(idx_dtype, copy=False))
                    if keep_dots:
                        dots.append(g[ii, jj].numpy())
                if best is not None:
                    _mask_same_label(g, starts, ends, i0, i1, j0, j1)
                    torch.maximum(best[i0:i1], g.amax(dim=1), out=best[i0:i1])
                    torch.maximum(best[j0:j1], g.amax(dim=0), out=best[j0:j1])
                del g
            if rows_parts:
                r = np.concatenate(rows_parts)
                o = np.argsort(r, kind="stable")  # row order; columns stay ascending within a row
                parts.append(np.concatenate(cols_parts)[o])
                if keep_dots:
                    dot_parts.append(np.concatenate(dots)[o])
                up_counts[i0:i1] = np.bincount(r, minlength=i1 - i0)
    up_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(up_counts, out=up_ptr[1:])
    up_idx = np.concatenate(parts) if parts else np.empty(0, dtype=idx_dtype)
    parts.clear()  # one copy at a time: columns, then products
    up_dot = None
    if keep_dots:
        up_dot = np.concatenate(dot_parts) if dot_parts else np.empty(0, dtype=np.float32)
        dot_parts.clear()
    return up_ptr, up_idx, up_dot, (None if best is None else best.numpy())


def cut_graph(
    up_ptr: np.ndarray, up_idx: np.ndarray, up_dot: np.ndarray, delta: float
) -> tuple[np.ndarray, np.ndarray]:
    """The upper half of the graph of a smaller radius, from the edges and dot products of a larger one."""
    keep = up_dot > 1.0 - 0.5 * delta * delta  # the comparison radius_graph makes, on the same products
    n = up_ptr.shape[0] - 1
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(up_ptr))
    counts = np.bincount(rows[keep], minlength=n)
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    return ptr, up_idx[keep]


def radius_graph(x: np.ndarray, delta: float) -> RadiusGraph:
    """Edges i - j with ||x_i - x_j|| < delta for L2-normalised rows x, i.e.
    x_i . x_j > 1 - delta^2 / 2 (computed from the dot products)."""
    up_ptr, up_idx, _, _ = graph_pass(x, delta)
    return RadiusGraph(x.shape[0], up_ptr, up_idx)
