"""alfa_mix: candidates whose prediction flips when mixed towards a labelled class anchor (Parvaneh et al.)."""

from __future__ import annotations

import math

import numpy as np
import torch

from al_core.learn.points import Points
from al_core.learn.strategies._cluster import cluster_representatives
from al_core.learn.strategies.base import Strategy, random_fill
from al_core.learn.strategies.context import PoolEmbeddings, SelectionContext
from al_core.learn.strategies.errors import InvalidParameterError

# Rows per block of the interpolation test: two reused buffers (the difference
# and alpha) of 256 x 768 x 4 B = 0.8 MB each, small enough to stay in the
# core's cache across the ~8 passes each anchor makes over them, plus 256 x K
# logits.
ALFA_BLOCK_ROWS = 256

_STREAM_FILL = 4


class AlfaMixStrategy(Strategy):
    """ALFA-Mix (closed-form alpha, as the specification gives it).

    Anchors z*_k: the mean embedding of the labelled points of class k (classes
    with no label have no anchor). For a pool point with embedding z and
    predicted class y, g = the gradient of the (sum-reduced) cross-entropy of
    the probe's linear layer at z with target y, i.e. W^T (softmax(Wz + b) -
    onehot(y)); eps = 0.2 / sqrt(D); per dimension
    alpha_d = eps * ||z* - z|| * g_d / (||g|| * (z*_d - z_d) + 1e-8),
    clamped to [1e-8, eps] (a 0/0 counts as 1e-8); z~ = alpha * z* + (1 - alpha) * z.
    z is a candidate if the linear layer's prediction on z~ differs from y for
    any anchor. Then k-means (k = B) on the L2-normalised embeddings of the
    candidates, the member nearest each centroid (order: cluster size, largest
    first); with fewer candidates than B: every candidate (most flips first,
    ties by index) then uniform random pool rows.

    Memory: the pool's embeddings are computed block by block from the
    features (PoolEmbeddings), never held as an n x D matrix; the candidates'
    embeddings are computed where k-means reads them (its training sample, then
    block by block for the assignment).

    Scores: the number of anchors whose mix flips the prediction (0 for the
    random fill).
    """

    name = "alfa_mix"
    needs_labels = True
    uses_probe = True

    def __init__(self, *, eps_scale: float = 0.2):
        self._store_params(locals())

    def validate_params(self) -> None:
        if isinstance(self.eps_scale, bool) or not isinstance(self.eps_scale, (int, float, np.floating)):
            raise InvalidParameterError(f"eps_scale must be a positive number, got {self.eps_scale!r}")
        if not (math.isfinite(self.eps_scale) and self.eps_scale > 0):
            raise InvalidParameterError(f"eps_scale must be a positive number, got {self.eps_scale!r}")

    def _select(self, ctx: SelectionContext):
        probe = ctx.get_probe()
        emb = PoolEmbeddings(ctx, probe)  # blocks of z from the features: no n x D matrix
        n, d = emb.n, emb.dim
        z_lab = probe.embed(np.asarray(ctx.features[ctx.labeled], dtype=np.float32))
        classes = np.unique(ctx.labels)
        anchors = np.stack([z_lab[ctx.labels == k].mean(axis=0, dtype=np.float64) for k in classes]).astype(np.float32)
        eps = float(self.eps_scale) / math.sqrt(d)
        w = torch.from_numpy(probe.linear_weight)  # K x D
        flips = np.zeros(n, dtype=np.int64)
        bufs = [torch.empty((ALFA_BLOCK_ROWS, d), dtype=torch.float32) for _ in range(2)]
        with torch.inference_mode():
            at = torch.from_numpy(anchors)
            for first, zblock in emb.blocks():
                for off in range(0, zblock.shape[0], ALFA_BLOCK_ROWS):
                    zb = zblock[off : off + ALFA_BLOCK_ROWS]
                    start = first + off
                    logits = probe.embedding_logits(zb)
                    y = logits.max(dim=1).indices  # (torch.argmax: 2x the time here)
                    p = torch.softmax(logits, dim=1)
                    p[torch.arange(p.shape[0]), y] -= 1.0
                    g = p @ w  # rows x D: d CE / d z
                    g_norm = torch.linalg.vector_norm(g, dim=1, keepdim=True)
                    g.mul_(eps)
                    count = torch.zeros(zb.shape[0], dtype=torch.int64)
                    rows = zb.shape[0]
                    diff, alpha = bufs[0][:rows], bufs[1][:rows]
                    for anchor in at:
                        torch.sub(anchor[None, :], zb, out=diff)
                        diff_norm = torch.linalg.vector_norm(diff, dim=1, keepdim=True)
                        # alpha = eps ||z* - z|| g / (||g|| (z* - z) + 1e-8), in place on two buffers
                        torch.mul(diff, g_norm, out=alpha).add_(1e-8)
                        torch.div(g * diff_norm, alpha, out=alpha)
                        alpha.nan_to_num_(nan=1e-8).clamp_(min=1e-8, max=eps)
                        # z~ = alpha z* + (1 - alpha) z = z + alpha (z* - z): its logits are
                        # the clean logits plus the linear layer's weight times alpha (z* - z)
                        mixed_logits = torch.addmm(logits, alpha.mul_(diff), w.t())
                        count += (mixed_logits.max(dim=1).indices != y).long()
                    flips[start : start + zb.shape[0]] = count.numpy()
        cand = np.flatnonzero(flips > 0)
        if cand.shape[0] >= ctx.budget:
            # the candidates' embeddings, computed from the features only where k-means reads
            # them (its training sample, then block by block): no candidates x D matrix
            mean, inv_std = probe.embedding_normalization
            points = Points(ctx.features, ctx.pool[cand], normalize=True, shift=mean.numpy(), scale=inv_std.numpy())
            pos, _ = cluster_representatives(points, ctx.budget, ctx.seed)
            picked = cand[pos]
            return ctx.pool[picked], flips[picked].astype(np.float64)
        order = cand[np.lexsort((cand, -flips[cand]))]
        fill = random_fill(ctx, ctx.pool[order], ctx.budget - order.shape[0], _STREAM_FILL)
        indices = np.concatenate([ctx.pool[order], fill])
        scores = np.concatenate([flips[order].astype(np.float64), np.zeros(fill.shape[0])])
        return indices, scores
