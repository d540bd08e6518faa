"""coreset: greedy k-center in the probe's embedding space (Sener & Savarese)."""

from __future__ import annotations

import numpy as np
import torch

from al_core.kmeans import BLOCK_ROWS, min_sq_distances
from al_core.strategies.base import SelectionContext, Strategy


def _sq_norms(z: np.ndarray) -> np.ndarray:
    out = np.empty(z.shape[0], dtype=np.float32)
    for start in range(0, z.shape[0], BLOCK_ROWS):
        blk = z[start : start + BLOCK_ROWS]
        out[start : start + blk.shape[0]] = np.einsum("ij,ij->i", blk, blk)
    return out


class CoresetStrategy(Strategy):
    """Greedy k-center on the probe embeddings (BatchNorm output, eval mode).

    Keeps each pool row's squared distance to its nearest labelled or already
    chosen point; B times takes the farthest (ties: smallest index) and lowers
    the distances by the new centre. Distances use the expanded form
    |z|^2 - 2 z.c + |c|^2 (a matrix-vector product per pick), in blocks; no
    N x N matrix. Memory: the pool's embeddings (n x D float32) and O(n).

    Scores: the Euclidean embedding distance of the chosen point to its nearest
    labelled or previously chosen point at the time it was chosen; descending
    in selection order.
    """

    name = "coreset"
    needs_labels = True
    uses_probe = True

    def _select(self, ctx: SelectionContext):
        probe = ctx.get_probe()
        z = ctx.pool_embeddings(probe)
        z_lab = probe.embed(np.asarray(ctx.features[ctx.labeled], dtype=np.float32))
        dist, _ = min_sq_distances(z, z_lab)
        dist = dist.astype(np.float64)
        z_sq64 = _sq_norms(z).astype(np.float64)
        zt = torch.from_numpy(z)
        n = z.shape[0]
        chosen = np.empty(ctx.budget, dtype=np.int64)
        scores = np.empty(ctx.budget, dtype=np.float64)
        prod = np.empty(n, dtype=np.float32)
        with torch.inference_mode():
            pt = torch.from_numpy(prod)
            for b in range(ctx.budget):
                i = int(np.argmax(dist))  # first maximum: ties by smallest index
                chosen[b] = i
                scores[b] = np.sqrt(max(dist[i], 0.0))
                c = zt[i]
                for start in range(0, n, BLOCK_ROWS):
                    torch.mv(zt[start : start + BLOCK_ROWS], c, out=pt[start : start + BLOCK_ROWS])
                d_new = z_sq64 - 2.0 * prod + z_sq64[i]
                np.maximum(d_new, 0.0, out=d_new)
                np.minimum(dist, d_new, out=dist)
                dist[chosen[: b + 1]] = -1.0  # never again
        return ctx.pool[chosen], scores
