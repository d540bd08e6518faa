"""badge: k-means++ seeding on gradient embeddings (Ash et al.), without building them."""

from __future__ import annotations

import numpy as np
import torch

from al_core.learn.points import BLOCK_ROWS
from al_core.learn.probe import INFERENCE_BLOCK_ROWS
from al_core.learn.strategies.base import Strategy, derived_rng
from al_core.learn.strategies.context import PoolEmbeddings, SelectionContext
from al_core.learn.tensors import torch_threads

_STREAM_SAMPLING = 3


def _matvec(m: torch.Tensor, v: torch.Tensor, out: np.ndarray) -> np.ndarray:
    ot = torch.from_numpy(out)
    for start in range(0, m.shape[0], BLOCK_ROWS):
        torch.mv(m[start : start + BLOCK_ROWS], v, out=ot[start : start + BLOCK_ROWS])
    return out


def gradient_embedding_sq_distances(
    a: torch.Tensor, z: torch.Tensor | PoolEmbeddings, g_sq: np.ndarray, i: int, ac: np.ndarray, zc: np.ndarray
) -> np.ndarray:
    """||g_j - g_i||^2 for every row j, with g_j = a_j (x) z_j never built:
    |a_j|^2 |z_j|^2 - 2 (a_j . a_i)(z_j . z_i) + |a_i|^2 |z_i|^2 (clamped at 0).
    ``z``: the rows' embeddings, an n x D tensor or a :class:`PoolEmbeddings`
    (products computed block by block from the features); ``g_sq`` = |a|^2 |z|^2
    per row (float64); ``ac``, ``zc``: float32 scratch of length n."""
    _matvec(a, a[i], ac)
    if isinstance(z, PoolEmbeddings):
        z.dot(z.rows([i])[0], zc)
    else:
        _matvec(z, z[i], zc)
    d = g_sq - 2.0 * ac.astype(np.float64) * zc + g_sq[i]
    return np.maximum(d, 0.0, out=d)


class BadgeStrategy(Strategy):
    """BADGE: gradient embedding g_i = (p_i - onehot(argmax p_i)) (x) z_i with z_i
    the probe embedding; B points by k-means++ seeding: the first uniform, each
    next one sampled with probability proportional to its squared distance to
    the nearest chosen point.

    The N x (K*D) matrix of g is never built:
    ||a (x) b - c (x) d||^2 = |a|^2 |b|^2 - 2 (a.c)(b.d) + |c|^2 |d|^2, so each
    pick costs one matrix-vector product with the pool's a (n x K, kept) and
    one with its z. Nor is the pool's n x D matrix of z: one pass over the
    features computes a and |z|^2 from blocks of z, and each pick's z . z_i is
    computed from the features block by block (:class:`PoolEmbeddings`). If
    every remaining distance is 0 the next pick is uniform among the unchosen
    rows. Memory: a (n x K float32) and O(n), plus a gathered copy of the pool's
    rows when it is under DENSE_POOL_FRACTION of them.

    Scores: the squared gradient-embedding distance of the chosen point to the
    nearest previously chosen point at the time it was drawn (NaN for the first,
    uniform, pick).
    """

    name = "badge"
    needs_labels = True
    uses_probe = True

    def _select(self, ctx: SelectionContext):
        probe = ctx.get_probe()
        n = ctx.pool.shape[0]
        emb = ctx.embedding_view(probe)
        # a = p - onehot(argmax p), from the embeddings (the probe's linear layer)
        a = np.empty((n, ctx.n_classes), dtype=np.float32)
        z_sq = np.empty(n, dtype=np.float64)
        with torch.inference_mode():
            for start, zb in emb.blocks():
                zn = zb.numpy()
                z_sq[start : start + zn.shape[0]] = np.einsum("ij,ij->i", zn, zn, dtype=np.float64)
                for s0 in range(0, zb.shape[0], INFERENCE_BLOCK_ROWS):
                    logits = probe.embedding_logits(zb[s0 : s0 + INFERENCE_BLOCK_ROWS])
                    p = torch.softmax(logits, dim=1)
                    p[torch.arange(p.shape[0]), p.argmax(dim=1)] -= 1.0
                    a[start + s0 : start + s0 + p.shape[0]] = p.numpy()
        a_sq = np.einsum("ij,ij->i", a, a, dtype=np.float64)
        g_sq = a_sq * z_sq
        rng = derived_rng(ctx.seed, _STREAM_SAMPLING)
        at = torch.from_numpy(a)
        dist = np.full(n, np.inf)
        chosen = np.empty(ctx.budget, dtype=np.int64)
        scores = np.empty(ctx.budget, dtype=np.float64)
        taken = np.zeros(n, dtype=bool)
        ac = np.empty(n, dtype=np.float32)
        zc = np.empty(n, dtype=np.float32)
        # one torch thread for the small per-pick work; the passes over the features run on workers
        with torch.inference_mode(), torch_threads(1):
            for b in range(ctx.budget):
                if b == 0:
                    i = int(rng.integers(n))
                    scores[b] = np.nan
                else:
                    total = float(dist.sum())
                    if total > 0.0:
                        cum = np.cumsum(dist)
                        # side="right": the first row whose cumulative mass exceeds u,
                        # so a row of zero mass (chosen, or a duplicate) is never drawn
                        i = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
                        i = min(i, n - 1)
                        while taken[i]:  # rounding at the very end of cum
                            i -= 1
                    else:
                        rest = np.flatnonzero(~taken)
                        i = int(rest[rng.integers(rest.shape[0])])
                    scores[b] = dist[i]
                chosen[b] = i
                taken[i] = True
                d_new = gradient_embedding_sq_distances(at, emb, g_sq, i, ac, zc)
                np.minimum(dist, d_new, out=dist)
                dist[taken] = 0.0
        return ctx.pool[chosen], scores
