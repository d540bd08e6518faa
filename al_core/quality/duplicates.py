"""Near-duplicates: pairs of embeddings whose cosine similarity is at least a threshold, and a batch without two.

The search never builds an N x N matrix and never copies the features whole:
rows are read in blocks, divided by their norms (computed once: N floats), and
compared tile by tile; only the pairs at or above the threshold are kept (at
most ``MAX_PAIRS_PER_IMAGE`` x N of them: more is an error that names the
setting). Two methods, chosen by size (``method="auto"``):

- ``exact`` (up to ``EXACT_MAX_ROWS`` rows): every pair, the upper triangle of
  the similarity matrix in tiles of ``QUERY_BLOCK_ROWS`` x ``QUERY_BLOCK_ROWS``;
  N^2 / 2 x D multiply-adds.
- ``partitioned`` (above): the L2-normalised rows are split into cells by
  k-means (al_core.learn.kmeans, trained on ``PARTITION_TRAIN_PER_CELL`` rows per
  cell, ``PARTITION_KMEANS_ITER`` iterations); every row is compared with the
  members of its ``N_PROBE`` most similar cells (an inverted-file search, as
  faiss's IVF): about N x N_PROBE x ``CELL_ROWS`` x D multiply-adds. A pair is
  found when one row's cell is among the other's N_PROBE nearest; the recall
  against the exact method is measured in docs/benchmarks.md ("Near-duplicates").

:func:`replace_near_duplicates` applies the batch rule: walking the picks in
selection order, a pick that is a near-duplicate of an earlier kept pick is
dropped and replaced by re-selection among the candidates that are no twin of a
kept pick (up to ``RESELECTIONS`` times, then a seeded uniform draw), each
replacement recorded.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "CELL_ROWS",
    "EXACT_MAX_ROWS",
    "MAX_PAIRS_PER_IMAGE",
    "N_PROBE",
    "QUERY_BLOCK_ROWS",
    "RESELECTIONS",
    "BatchPicks",
    "NearDuplicateOverflow",
    "NearDuplicates",
    "find_near_duplicates",
    "replace_near_duplicates",
    "twin_matrix",
]

# Up to this many rows the exact method compares every pair: N^2 / 2 x D multiply-adds (50,000 x 768: 1.9e12;
# measured on the 2-core build machine under load: 233 s at 100,000 x 768, so about 60 s here); above it, the
# partitioned method (20 s at 100,000 x 768, 401 s at 1,000,000, every planted pair found: docs/benchmarks.md).
EXACT_MAX_ROWS = 50_000
# Rows per block of either method: a 4096 x 4096 float32 similarity tile = 64 MB, plus two 4096 x 768 blocks of
# normalised rows (12 MB each).
QUERY_BLOCK_ROWS = 4096
# Partitioned method: cells of about this many rows (1,000,000 rows: 977 cells); each row is compared with the
# members of its N_PROBE most similar cells: 1,000,000 x 2 x 1024 x 768 = 1.6e12 multiply-adds.
CELL_ROWS = 1024
N_PROBE = 2
# k-means of the cells trains on this many rows per cell (977 cells: 31,264 x 768 x 4 B = 96 MB) for at most
# PARTITION_KMEANS_ITER Lloyd iterations (the cells only need to be coherent, not converged).
PARTITION_TRAIN_PER_CELL = 32
PARTITION_KMEANS_ITER = 20
# Pairs kept at most, per row of the pool: 16 x N pairs x 20 B (two int64, one float32) = 320 MB at N = 1,000,000.
MAX_PAIRS_PER_IMAGE = 16
# Times a batch re-selects replacements for dropped near-duplicates before drawing them uniformly.
RESELECTIONS = 3
_NORM_FLOOR = 1e-12  # a zero vector has similarity 0 with everything
_FILL_STREAM = 0xD0B1  # seed-sequence entry of the uniform fill of replace_near_duplicates


class NearDuplicateOverflow(ValueError):
    """More pairs than MAX_PAIRS_PER_IMAGE x N at the threshold: the threshold is too low for near-duplicates."""


@dataclass(frozen=True)
class NearDuplicates:
    """Pairs (i < j, row positions) with cosine similarity >= threshold, sorted by (i, j)."""

    i: np.ndarray  # int64
    j: np.ndarray  # int64
    cosine: np.ndarray  # float32
    n_rows: int
    threshold: float
    method: str  # 'exact' | 'partitioned'
    n_cells: int = 0  # partitioned: the k-means cells

    def __len__(self) -> int:
        return int(self.i.shape[0])

    def groups(self) -> np.ndarray:
        """Connected component of every row (rows without a twin are components of one), int64 N."""
        from scipy.sparse.csgraph import connected_components

        _, comp = connected_components(twin_matrix(self), directed=False)
        return comp.astype(np.int64)


def _inverse_norms(features: np.ndarray) -> np.ndarray:
    inv = np.empty(features.shape[0], dtype=np.float32)
    for s in range(0, features.shape[0], QUERY_BLOCK_ROWS):
        b = np.asarray(features[s : s + QUERY_BLOCK_ROWS], dtype=np.float32)
        inv[s : s + b.shape[0]] = 1.0 / np.maximum(np.sqrt(np.einsum("ij,ij->i", b, b, dtype=np.float64)), _NORM_FLOOR)
    return inv


def _unit(features: np.ndarray, inv: np.ndarray, rows) -> torch.Tensor:
    """Rows (a slice or an index array) divided by their norms, as a new float32 tensor."""
    return torch.from_numpy(np.asarray(features[rows], dtype=np.float32) * inv[rows, None])


class _Collector:
    """The pairs found so far, with the overflow guard."""

    def __init__(self, n_rows: int, threshold: float):
        self.limit = MAX_PAIRS_PER_IMAGE * max(n_rows, 1)
        self.threshold = threshold
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.n = 0

    def add(self, sims: torch.Tensor, q_rows: np.ndarray, r_rows: np.ndarray, mask: torch.Tensor | None = None):
        hit = sims >= self.threshold
        if mask is not None:
            hit &= mask
        qi, ri = (t.numpy() for t in torch.nonzero(hit, as_tuple=True))
        if qi.size == 0:
            return
        a, b = q_rows[qi], r_rows[ri]
        keep = a != b
        a, b, c = a[keep], b[keep], sims[qi, ri].numpy()[keep]
        self.parts.append((np.minimum(a, b), np.maximum(a, b), c.astype(np.float32)))
        self.n += a.size
        if self.n > 2 * self.limit:  # pairs may be found twice before they are made unique
            self.overflow()

    def overflow(self):
        raise NearDuplicateOverflow(
            f"more than {MAX_PAIRS_PER_IMAGE} near-duplicate pairs per image at cosine >= {self.threshold:g}: that "
            "is no longer near-duplicates; raise quality.near_duplicate_cosine"
        )

    def result(self, n_rows: int, method: str, n_cells: int = 0) -> NearDuplicates:
        if not self.parts:
            e = np.empty(0, np.int64)
            return NearDuplicates(e, e.copy(), np.empty(0, np.float32), n_rows, self.threshold, method, n_cells)
        i = np.concatenate([p[0] for p in self.parts])
        j = np.concatenate([p[1] for p in self.parts])
        c = np.concatenate([p[2] for p in self.parts])
        key, first = np.unique(i * np.int64(n_rows) + j, return_index=True)  # sorted by (i, j)
        if key.size > self.limit:
            self.overflow()
        return NearDuplicates(i[first], j[first], c[first], n_rows, self.threshold, method, n_cells)


def _exact(features: np.ndarray, inv: np.ndarray, out: _Collector) -> None:
    n = features.shape[0]
    b = QUERY_BLOCK_ROWS
    for a0 in range(0, n, b):
        qa = _unit(features, inv, slice(a0, a0 + b))
        q_rows = np.arange(a0, a0 + qa.shape[0])
        for b0 in range(a0, n, b):
            rb = qa if b0 == a0 else _unit(features, inv, slice(b0, b0 + b))
            sims = qa @ rb.t()
            mask = None
            if b0 == a0:  # the diagonal tile: the upper triangle only
                mask = torch.ones(sims.shape, dtype=torch.bool).triu_(diagonal=1)
            out.add(sims, q_rows, np.arange(b0, b0 + rb.shape[0]), mask)


def _cells(features: np.ndarray, inv: np.ndarray, n_cells: int, seed: int) -> np.ndarray:
    """The N_PROBE most similar cells of every row (N x N_PROBE int64, most similar first)."""
    from al_core.learn.kmeans import kmeans

    n = features.shape[0]
    rng = np.random.default_rng([int(seed), 0xCE11])
    m = min(n, PARTITION_TRAIN_PER_CELL * n_cells)
    sample = np.sort(rng.choice(n, size=m, replace=False))
    centres = kmeans(
        _unit(features, inv, sample).numpy(), n_cells, seed=int(seed), max_iter=PARTITION_KMEANS_ITER
    ).centroids
    centres = torch.from_numpy(centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), _NORM_FLOOR))
    probe = min(N_PROBE, n_cells)
    cells = np.empty((n, probe), dtype=np.int64)
    for s in range(0, n, QUERY_BLOCK_ROWS):
        q = _unit(features, inv, slice(s, s + QUERY_BLOCK_ROWS))
        cells[s : s + q.shape[0]] = torch.topk(q @ centres.t(), probe, dim=1).indices.numpy()
    return cells


def _partitioned(features: np.ndarray, inv: np.ndarray, out: _Collector, seed: int) -> int:
    n = features.shape[0]
    n_cells = max(1, math.ceil(n / CELL_ROWS))
    cells = _cells(features, inv, n_cells, seed)
    by_primary = np.argsort(cells[:, 0], kind="stable")
    starts = np.searchsorted(cells[by_primary, 0], np.arange(n_cells + 1))
    flat_cell = cells.ravel()
    by_any = np.argsort(flat_cell, kind="stable")
    any_starts = np.searchsorted(flat_cell[by_any], np.arange(n_cells + 1))
    for c in range(n_cells):
        members = by_primary[starts[c] : starts[c + 1]]
        if members.size == 0:
            continue
        queries = np.unique(by_any[any_starts[c] : any_starts[c + 1]] // cells.shape[1])
        for m0 in range(0, members.size, QUERY_BLOCK_ROWS):
            m_rows = members[m0 : m0 + QUERY_BLOCK_ROWS]
            r = _unit(features, inv, m_rows)
            for q0 in range(0, queries.size, QUERY_BLOCK_ROWS):
                q_rows = queries[q0 : q0 + QUERY_BLOCK_ROWS]
                out.add(_unit(features, inv, q_rows) @ r.t(), q_rows, m_rows)
    return n_cells


def find_near_duplicates(
    features: np.ndarray, threshold: float, *, method: str = "auto", seed: int = 0
) -> NearDuplicates:
    """Every pair of rows of ``features`` (N x D) with cosine similarity >= ``threshold`` (module docstring).

    ``method``: 'exact', 'partitioned', or 'auto' (exact up to EXACT_MAX_ROWS rows). ``seed`` drives the
    partitioned method's k-means. Raises NearDuplicateOverflow past MAX_PAIRS_PER_IMAGE x N pairs.
    """
    if method not in ("auto", "exact", "partitioned"):
        raise ValueError(f"method must be 'auto', 'exact' or 'partitioned', got {method!r}")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"a cosine threshold lies in [-1, 1], got {threshold!r}")
    if features.ndim != 2:
        raise ValueError(f"features must be N x D, got shape {features.shape}")
    n = features.shape[0]
    out = _Collector(n, float(threshold))
    if method == "auto":
        method = "exact" if n <= EXACT_MAX_ROWS else "partitioned"
    if n < 2:
        return out.result(n, method)
    inv = _inverse_norms(features)
    with torch.inference_mode():
        if method == "exact":
            _exact(features, inv, out)
            return out.result(n, method)
        n_cells = _partitioned(features, inv, out, seed)
    return out.result(n, method, n_cells)


def twin_matrix(pairs: NearDuplicates):
    """The symmetric N x N sparse matrix (scipy CSR) of the pairs, cosine as the value: row r lists r's twins."""
    from scipy.sparse import coo_matrix

    n = pairs.n_rows
    rows = np.concatenate([pairs.i, pairs.j])
    cols = np.concatenate([pairs.j, pairs.i])
    vals = np.concatenate([pairs.cosine, pairs.cosine]).astype(np.float32)
    return coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsr()


@dataclass
class BatchPicks:
    """A batch after the near-duplicate rule: picks in selection order, and what was replaced."""

    indices: np.ndarray  # int64 rows, in order (kept picks first, then replacements)
    scores: np.ndarray  # float64, one per row (NaN for a uniform fill)
    replacements: list[dict] = field(default_factory=list)  # {dropped, twin, cosine, replacement, how}


def replace_near_duplicates(
    indices: np.ndarray,
    scores: np.ndarray,
    twins,
    candidates: np.ndarray,
    reselect: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    *,
    seed: int = 0,
    reselections: int = RESELECTIONS,
) -> BatchPicks:
    """Apply the batch rule (module docstring) to the picks ``indices`` (rows, in selection order).

    ``twins``: :func:`twin_matrix` over the same rows (or None: nothing to do). ``candidates``: every row the
    batch may take. ``reselect(allowed_rows, count)`` returns (rows, scores) of ``count`` new picks among
    ``allowed_rows`` (the strategy called again). Replacements: ``dropped`` (the later pick), ``twin`` (the kept
    pick it duplicates), ``cosine``, ``replacement`` (the row taken instead, None when no candidate was left) and
    ``how`` ('reselected' | 'uniform'). The batch is shorter only when the candidates run out.
    """
    indices = np.asarray(indices, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if twins is None or twins.nnz == 0:
        return BatchPicks(indices, scores)
    kept, kept_scores, replaced = [], [], []
    blocked: dict[int, tuple[int, float]] = {}  # row -> (the kept pick it duplicates, cosine)
    taken = set(indices.tolist())
    queue, attempt, how = list(zip(indices.tolist(), scores.tolist(), strict=True)), 0, "reselected"
    pending: list[dict] = []  # dropped picks waiting for their replacement
    while queue:
        dropped_now = []
        for row, score in queue:
            if row in blocked:
                twin, cos = blocked[row]
                dropped_now.append({"dropped": row, "twin": twin, "cosine": cos})
                continue
            kept.append(row)
            kept_scores.append(score)
            lo, hi = twins.indptr[row], twins.indptr[row + 1]
            for t, cos in zip(twins.indices[lo:hi].tolist(), twins.data[lo:hi].tolist(), strict=True):
                blocked.setdefault(t, (row, float(cos)))
        for k, rec in enumerate(pending):  # the picks just walked replace the picks dropped before, in order
            rec["replacement"], rec["how"] = (queue[k][0], how) if k < len(queue) else (None, "none left")
        replaced += pending
        pending, queue = dropped_now, []
        if not pending:
            break
        cand = np.asarray(candidates, dtype=np.int64)
        allowed = cand[~np.isin(cand, np.fromiter(taken | set(blocked), np.int64))]
        need = min(len(pending), allowed.size)
        if need == 0:
            break
        if attempt < reselections:
            new_rows, new_scores = reselect(allowed, need)
            how = "reselected"
        else:
            rng = np.random.default_rng([int(seed), _FILL_STREAM, attempt])
            new_rows, new_scores = np.sort(rng.choice(allowed, size=need, replace=False)), np.full(need, np.nan)
            how = "uniform"
        attempt += 1
        taken |= set(np.asarray(new_rows).tolist())
        queue = list(
            zip(np.asarray(new_rows, np.int64).tolist(), np.asarray(new_scores, np.float64).tolist(), strict=True)
        )
    for rec in pending:
        rec["replacement"], rec["how"] = None, "none left"
    replaced += pending
    return BatchPicks(np.asarray(kept, np.int64), np.asarray(kept_scores, np.float64), replaced)
