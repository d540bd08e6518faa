"""The validated inputs of one select call, and the pool's probe embeddings computed block by block.

:class:`SelectionContext` is what :func:`~al_core.learn.strategies.validation.validate`
returns and every strategy's ``_select`` receives; :class:`PoolEmbeddings` gives the
strategies that work in the probe's embedding space (coreset, badge, alfa_mix) the pool's
embeddings without an N x D embedding matrix.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from al_core.learn.probe import Probe
from al_core.learn.tensors import as_tensor, map_blocks

__all__ = ["DENSE_POOL_FRACTION", "EMBED_BLOCK_ROWS", "PRODUCT_BLOCK_ROWS", "PoolEmbeddings", "SelectionContext"]

# When the pool holds at least this share of the rows, probe inference runs over
# every row (contiguous blocks, no copy) and the pool's rows are taken from the
# small N x K (or N) outputs; below it the pool's rows are gathered once into a
# copy of at most DENSE_POOL_FRACTION x N x D.
DENSE_POOL_FRACTION = 0.5

# Rows per block when gathering the pool's embeddings: 16384 x 768 x 4 B = 48 MB
# (the gathered features plus their embedding); also the reused embedding buffer
# of PoolEmbeddings.blocks (48 MB).
EMBED_BLOCK_ROWS = 16384

# Rows per block of the products z . v computed from the features
# (PoolEmbeddings.dot): 4096 x 768 x 4 B = 12 MB of centred rows, reused, small
# enough to stay in cache between the subtraction and the product. Measured on
# one shared core at 200,000 x 768: 110-185 ms per pass with 4096 rows, 280 ms
# with 16384 (a product with a stored embedding matrix: 60-75 ms).
PRODUCT_BLOCK_ROWS = 4096


@dataclass
class SelectionContext:
    """Validated inputs of one select call."""

    features: np.ndarray  # N x D float32
    labeled: np.ndarray  # int64, as given (order kept)
    labels: np.ndarray  # int64, one per labeled
    budget: int
    n_classes: int
    seed: int
    pool: np.ndarray  # int64, ascending: candidates (or all rows) minus labeled
    probe: Probe | None

    @property
    def n_rows(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def get_probe(self) -> Probe:
        """The given probe, or the standard probe trained on features[labeled], labels."""
        if self.probe is None:
            x = np.asarray(self.features[self.labeled], dtype=np.float32)
            self.probe = Probe(self.n_classes, seed=self.seed).fit(x, self.labels)
        return self.probe

    def pool_features(self) -> tuple[np.ndarray, np.ndarray | slice]:
        """(X, sel): run row-wise inference on X, then take ``[sel]`` to get the pool's rows.

        X is ``features`` itself when the pool covers at least
        DENSE_POOL_FRACTION of the rows, else a gathered copy of the pool's rows.
        """
        n = self.pool.shape[0]
        if n == self.n_rows:
            return self.features, slice(None)
        if n >= DENSE_POOL_FRACTION * self.n_rows:
            return self.features, self.pool
        return np.asarray(self.features[self.pool], dtype=np.float32), slice(None)

    def pool_embeddings(self, probe: Probe, rows: np.ndarray | None = None) -> np.ndarray:
        """Probe embeddings of ``rows`` (default: the pool), float32, gathered block by block."""
        rows = self.pool if rows is None else rows
        out = np.empty((rows.shape[0], self.dim), dtype=np.float32)
        # every row in ascending order: plain slices, no gather
        contiguous = rows.shape[0] == self.n_rows and bool(np.all(rows[1:] > rows[:-1]))
        for start in range(0, rows.shape[0], EMBED_BLOCK_ROWS):
            stop = min(start + EMBED_BLOCK_ROWS, rows.shape[0])
            block = self.features[start:stop] if contiguous else self.features[rows[start:stop]]
            out[start:stop] = probe.embed(np.asarray(block, dtype=np.float32))
        return out

    def embedding_view(self, probe: Probe) -> PoolEmbeddings:
        """The pool's probe embeddings, computed block by block (no N x D embedding matrix)."""
        return PoolEmbeddings(self, probe)


class PoolEmbeddings:
    """The probe embeddings z = (x - mean) * inv_std of the pool's rows (positions
    0..n-1 in pool order), never held as an N x D matrix.

    As in :meth:`SelectionContext.pool_features`: when the pool covers at least
    DENSE_POOL_FRACTION of the rows, every pass reads ``features`` in contiguous
    blocks (no copy; a memory map stays a memory map) and centres each block on
    the fly, rows outside the pool being dropped from the results; below it the
    pool's rows are gathered once into a copy (at most DENSE_POOL_FRACTION x N x D,
    the copy pool_features makes) that is centred in place.

    Embedding blocks (:meth:`blocks`, :meth:`rows`) are bit for bit
    :meth:`Probe.embed`'s: the same subtraction, then the same multiplication.
    Products (:meth:`dot`) are computed as z . v = (x - mean) . (inv_std * v):
    centring first rounds each element once, so every term is as accurate as
    with z itself, at the cost of one subtraction per element and pass (about
    twice the time of a product with a stored z). The purely algebraic
    x . w - mean . w (w = inv_std * v), which needs no subtraction, is not
    used: with features that carry a large common offset (non-negative ReLU
    features, any dimension whose mean is large against its standard
    deviation) its two float32 sums are large and nearly equal, and their
    difference loses the digits that distances between nearby points depend
    on (test_products_are_centred_first_no_cancellation).
    """

    def __init__(self, ctx: SelectionContext, probe: Probe):
        self._mean, self._inv_std = probe.embedding_normalization
        self._features = ctx.features
        self._pool = ctx.pool
        self.n = int(ctx.pool.shape[0])
        self.dim = ctx.dim
        x, sel = ctx.pool_features()
        self._sel = sel
        if x is ctx.features:
            self._centred = None  # dense: computed per block from the features
            self._source_rows = ctx.n_rows
        else:
            # our own gathered copy: centre it in place, block by block
            self._centred = x
            self._source_rows = self.n
            xt = as_tensor(x)
            with torch.inference_mode():
                for start in range(0, self.n, EMBED_BLOCK_ROWS):
                    xt[start : start + EMBED_BLOCK_ROWS].sub_(self._mean)
        self._product_bufs = threading.local()  # each worker's buffer of centred rows (dot)
        self._source_out: np.ndarray | None = None

    def _feature_block(self, start: int, stop: int) -> torch.Tensor:
        return as_tensor(np.asarray(self._features[start:stop], dtype=np.float32))

    def blocks(self):
        """(start, z) for consecutive blocks of pool positions: z (float32 tensor,
        rows x D) holds the embeddings of positions start..start+rows-1. z is a
        reused buffer (EMBED_BLOCK_ROWS x D), valid until the next step."""
        # (no grad mode set here: a generator's context would leak into its caller)
        block_rows = EMBED_BLOCK_ROWS
        buf = torch.empty((min(block_rows, self._source_rows), self.dim), dtype=torch.float32)
        if self._centred is not None:
            ct = as_tensor(self._centred)
            for start in range(0, self.n, block_rows):
                blk = buf[: min(block_rows, self.n - start)]
                torch.mul(ct[start : start + block_rows], self._inv_std, out=blk)
                yield start, blk
            return
        everything = isinstance(self._sel, slice)
        pos = 0  # first pool position not yet yielded
        for start in range(0, self._source_rows, block_rows):
            stop = min(start + block_rows, self._source_rows)
            if everything:
                local = None
            else:
                end = int(np.searchsorted(self._pool, stop))
                if end == pos:
                    continue
                local = torch.from_numpy(self._pool[pos:end] - start)
            blk = buf[: stop - start]
            torch.sub(self._feature_block(start, stop), self._mean, out=blk)
            blk.mul_(self._inv_std)
            if local is None:
                yield start, blk
            else:
                yield pos, blk[local]
                pos = end

    def rows(self, positions) -> np.ndarray:
        """The embeddings of the given pool positions, a new float32 array (len x D)."""
        positions = np.asarray(positions, dtype=np.int64)
        if self._centred is not None:
            out = self._centred[positions]
            with torch.inference_mode():
                as_tensor(out).mul_(self._inv_std)
            return out
        out = np.asarray(self._features[self._pool[positions]], dtype=np.float32)
        with torch.inference_mode():
            ot = as_tensor(out)
            ot.sub_(self._mean)
            ot.mul_(self._inv_std)
        return out

    def dot(self, v, out: np.ndarray) -> np.ndarray:
        """out[p] = z_p . v for every pool position p (``out``: float32, length n),
        as (x_p - mean) . (inv_std * v), in blocks of PRODUCT_BLOCK_ROWS rows on worker
        threads (each block's centred rows in that worker's own buffer)."""
        block_rows = PRODUCT_BLOCK_ROWS
        with torch.inference_mode():
            w = torch.as_tensor(np.asarray(v, dtype=np.float32)).mul(self._inv_std)
        if self._centred is not None:
            ct, ot = as_tensor(self._centred), torch.from_numpy(out)
            map_blocks(
                lambda _, s: torch.mv(ct[s : s + block_rows], w, out=ot[s : s + block_rows]),
                range(0, self.n, block_rows),
            )
            return out
        everything = isinstance(self._sel, slice)
        if everything:
            target = out
        else:  # every row's product, then the pool's
            if self._source_out is None:
                self._source_out = np.empty(self._source_rows, dtype=np.float32)
            target = self._source_out
        tt = torch.from_numpy(target)
        local = self._product_bufs

        def block(_: int, start: int) -> None:
            if not hasattr(local, "buf"):
                local.buf = torch.empty((min(block_rows, self._source_rows), self.dim), dtype=torch.float32)
            stop = min(start + block_rows, self._source_rows)
            blk = local.buf[: stop - start]
            torch.sub(self._feature_block(start, stop), self._mean, out=blk)
            torch.mv(blk, w, out=tt[start:stop])

        map_blocks(block, range(0, self._source_rows, block_rows))
        if not everything:
            np.take(target, self._sel, out=out)
        return out
