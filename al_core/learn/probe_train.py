"""Training the probe (``docs/algorithms.md``, "The probe") with hand-written gradients.

The model is ``Dropout(p) -> BatchNorm1d(D, affine=False) -> Linear(D, K)`` and the loss
the mean cross-entropy. Neither dropout nor BatchNorm without affine has parameters, so
the only gradients are the linear layer's: with ``z`` the BatchNorm output of a batch of
``n`` rows and ``G = (softmax(z W^T + b) - onehot(y)) / n``, ``dW = G^T z`` and
``db = sum_rows G``. Nothing flows back through BatchNorm, so no autograd graph is built;
:func:`fit_linear_probe` computes exactly these, and updates the parameters with AdamW as
``torch.optim.AdamW`` does (decoupled weight decay, bias corrections, the same order of
operations), without importing ``torch.optim`` (whose first use imports torch._dynamo:
1.5-2.8 s once per process on the build machine).

Per batch, in training mode (as ``torch.nn.BatchNorm1d`` in training mode):

- input dropout: ``u = x * m`` with a fresh mask ``m`` (kept with probability 1 - p),
  the survivors' scale ``s = 1 / (1 - p)`` folded into the statistics below. The masks
  are random bytes, as the probe's inference-time dropout draws them
  (:mod:`al_core.learn.probe_dropout`): a feature is kept when its byte is below
  ``round(256 * (1 - p))`` (exactly 1/4 for p = 0.75). The bytes are the raw output of
  one numpy SFC64 generator seeded by ``SeedSequence([seed, TRAIN_STREAM])``, consumed in
  order (epoch by epoch, batch by batch), which also draws the batch order;
- BatchNorm: the batch mean ``s * mean(u)`` and biased variance ``s^2 * var(u)``
  normalise (eps 1e-5); the running statistics move by momentum 0.1 toward the batch
  mean and the unbiased variance, ``num_batches_tracked`` counts the steps;
- the normalisation is folded into the weights: ``z W^T = (u - mean(u)) (W * s * inv_std)^T``
  and ``dW = (G^T (u - mean(u))) * s * inv_std``, so no N x D ``z`` is built.

Mini-batches of ``batch_size`` rows in a seeded random order; a trailing batch of one row
(which BatchNorm cannot normalise in training mode) joins the batch before it. While all
rows fit in one batch no order is drawn: the batch loss and its gradient are sums over the
rows, which do not depend on their order. Early stopping on the epoch's mean training loss
(patience, min delta), keeping the parameters and running statistics of the epoch with the
lowest loss.

Products run on torch (MKL) on whatever threads the caller set (the probe: one, so that the
result does not depend on the machine's thread count). The masks and the element-wise work of a
batch (dropout, mean, variance) need no parameter, so they run on numpy in one worker thread,
one batch ahead of the products (``ahead``; the same numbers without it). The same inputs and
seed give the same bytes.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["TRAIN_STREAM", "ProbeState", "TrainResult", "batch_bounds", "fit_linear_probe", "keep_threshold"]

# SeedSequence entry of the training stream (masks and batch order), beside the seed.
TRAIN_STREAM = 0x7AA1

_BN_EPS = 1e-5  # torch.nn.BatchNorm1d's default
_BN_MOMENTUM = 0.1  # torch.nn.BatchNorm1d's default
_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8  # torch.optim.AdamW's defaults


def keep_threshold(p: float) -> int:
    """Bytes below this value keep their feature: ``round(256 * (1 - p))`` (64 for p = 0.75)."""
    return int(round(256 * (1.0 - p)))


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each mini-batch over n rows; a trailing batch of one row joins the one before."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return list(zip(starts, starts[1:] + [n]))


@dataclass
class ProbeState:
    """The probe's parameters and BatchNorm statistics (float32 tensors)."""

    weight: torch.Tensor  # K x D
    bias: torch.Tensor  # K
    running_mean: torch.Tensor  # D
    running_var: torch.Tensor  # D
    num_batches_tracked: int = 0

    def copy_from(self, other: ProbeState) -> None:
        self.weight.copy_(other.weight)
        self.bias.copy_(other.bias)
        self.running_mean.copy_(other.running_mean)
        self.running_var.copy_(other.running_var)
        self.num_batches_tracked = other.num_batches_tracked

    def clone(self) -> ProbeState:
        return ProbeState(
            self.weight.clone(),
            self.bias.clone(),
            self.running_mean.clone(),
            self.running_var.clone(),
            self.num_batches_tracked,
        )


@dataclass
class TrainResult:
    state: ProbeState  # of the epoch with the lowest loss
    n_epochs: int
    best_loss: float
    history: list[float]  # mean training loss of every epoch run


class _AdamW:
    """``torch.optim.AdamW`` (amsgrad off, not maximising) on a list of tensors, step for step."""

    def __init__(self, params: list[torch.Tensor], lr: float, weight_decay: float):
        self.params = params
        self.lr = lr
        self.weight_decay = weight_decay
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.denom = [torch.empty_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[torch.Tensor]) -> None:
        self.t += 1
        bias_correction1 = 1 - _BETA1**self.t
        bias_correction2_sqrt = math.sqrt(1 - _BETA2**self.t)
        step_size = self.lr / bias_correction1
        for p, g, m, v, denom in zip(self.params, grads, self.exp_avg, self.exp_avg_sq, self.denom):
            p.mul_(1 - self.lr * self.weight_decay)
            m.lerp_(g, 1 - _BETA1)
            v.mul_(_BETA2).addcmul_(g, g, value=1 - _BETA2)
            torch.sqrt(v, out=denom).div_(bias_correction2_sqrt).add_(_ADAM_EPS)
            p.addcdiv_(m, denom, value=-step_size)


class _Batch:
    """Reused buffers for batches of at most ``rows`` x ``dim``."""

    def __init__(self, rows: int, dim: int, gather: bool):
        self.u = np.empty((rows, dim), dtype=np.float32)
        self.mask = np.empty((rows, dim), dtype=bool)
        self.gathered = np.empty((rows, dim), dtype=np.float32) if gather else None


@dataclass
class _Prepared:
    """A batch's dropout output, centred, and its statistics: all that does not depend on the parameters."""

    u: np.ndarray  # rows x D: dropout output / s, minus its column mean (a view of a _Batch buffer)
    mean_u: np.ndarray  # D
    var_u: np.ndarray  # D, biased
    labels: torch.Tensor  # rows
    rows: int


# Batches prepared ahead of the one being trained on. The preparation (mask bytes, dropout, mean, variance) needs
# only the rows and the random stream, never the parameters, so a worker thread prepares batch i + 1 while the
# caller's thread runs batch i's two products: two buffers of batch_size x D x 5 B (4,096 x 768 x 5 B = 16 MB each).
_BUFFERS = 2


def _prepare_batches(x, labels, bounds, rng, keep_below, bufs):
    """Every epoch's batches in order, for as long as the caller asks (module docstring, "Per batch").

    The stream is consumed as the sequential loop consumed it: per epoch the batch order (when there is more than
    one batch), then each batch's mask bytes. Batch k is written into ``bufs[k % len(bufs)]``.
    """
    n, d = x.shape
    bits = rng.bit_generator
    xt_all = torch.from_numpy(x)
    k = 0
    while True:
        order = rng.permutation(n) if len(bounds) > 1 else None
        for start, stop in bounds:
            buf = bufs[k % len(bufs)]
            k += 1
            rows = stop - start
            if order is None:
                xb, yb = x, labels
            else:  # torch's row gather: about 3x numpy's take here
                idx = torch.from_numpy(order[start:stop])
                xb = buf.gathered[:rows]
                torch.index_select(xt_all, 0, idx, out=torch.from_numpy(xb))
                yb = labels[idx]
            n_bytes = rows * d
            raw = bits.random_raw(-(-n_bytes // 8)).view(np.uint8)[:n_bytes].reshape(rows, d)
            mask = np.less(raw, keep_below, out=buf.mask[:rows])
            u = np.multiply(xb, mask, out=buf.u[:rows])  # dropout output / s
            mean_u = u.sum(axis=0, dtype=np.float32) / np.float32(rows)
            u -= mean_u
            var_u = np.einsum("ij,ij->j", u, u) / np.float32(rows)  # biased, of u
            yield _Prepared(u, mean_u, var_u, yb, rows)


class _Ahead:
    """Runs ``next(batches)`` one call ahead on a worker thread (numpy and torch release the GIL meanwhile)."""

    def __init__(self, batches):
        self._batches = batches
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe-batches")
        self._next = self._pool.submit(next, batches)

    def __next__(self) -> _Prepared:
        item = self._next.result()
        self._next = self._pool.submit(next, self._batches)
        return item

    def close(self) -> None:
        self._pool.shutdown(wait=True)  # the batch in flight finishes; nothing else is prepared


def fit_linear_probe(
    x: np.ndarray,
    labels: np.ndarray,
    init: ProbeState,
    *,
    n_classes: int,
    seed: int,
    dropout: float,
    lr: float,
    weight_decay: float,
    batch_size: int,
    max_epochs: int,
    patience: int,
    min_delta: float,
    ahead: bool = True,
) -> TrainResult:
    """Train from ``init`` on ``x`` (finite float32, L x D, C-contiguous) and ``labels`` (int64 in [0, K)).

    Returns the state of the epoch with the lowest mean training loss (module docstring).
    ``init`` is not modified. ``ahead``: prepare the next batch on a worker thread while this one trains
    (the same numbers either way: the preparation does not depend on the parameters).
    """
    n, d = x.shape
    bounds = batch_bounds(n, int(batch_size))
    rng = np.random.Generator(np.random.SFC64(np.random.SeedSequence([int(seed), TRAIN_STREAM])))
    keep_below = keep_threshold(dropout)
    s = 1.0 / (1.0 - dropout)
    state = init.clone()
    best = init.clone()
    opt = _AdamW([state.weight, state.bias], lr, weight_decay)
    rows_max = max(e - b for b, e in bounds)
    bufs = [_Batch(rows_max, d, gather=len(bounds) > 1) for _ in range(_BUFFERS if ahead else 1)]
    yt_all = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    prepared = _prepare_batches(x, yt_all, bounds, rng, keep_below, bufs)
    batches = _Ahead(prepared) if ahead else prepared
    best_loss = math.inf  # lowest epoch loss seen: its state is kept
    ref_loss = math.inf  # reference for patience (last improvement by more than min_delta)
    wait = 0
    history: list[float] = []
    try:
        with torch.no_grad():
            for _ in range(int(max_epochs)):
                total = 0.0
                for _batch in bounds:
                    b = next(batches)
                    total += _step(b, state, opt, s) * b.rows
                epoch_loss = total / n
                history.append(epoch_loss)
                if epoch_loss < best_loss:
                    best_loss = epoch_loss
                    best.copy_from(state)
                if epoch_loss < ref_loss - min_delta:
                    ref_loss = epoch_loss
                    wait = 0
                else:
                    wait += 1
                    if wait >= patience:
                        break
    finally:
        if ahead:
            batches.close()
    return TrainResult(best, len(history), best_loss, history)


def _step(b: _Prepared, state: ProbeState, opt: _AdamW, s: float) -> float:
    """One training step on a prepared batch (module docstring); returns the batch's mean loss."""
    rows = b.rows
    # BatchNorm of s * u: mean s * mean_u, biased variance s^2 * var_u
    scale = torch.from_numpy(np.float32(s) / np.sqrt(np.float32(s * s) * b.var_u + np.float32(_BN_EPS)))
    ut = torch.from_numpy(b.u)
    yb = b.labels
    w_folded = state.weight * scale  # K x D
    logits = torch.addmm(state.bias, ut, w_folded.t())
    logp = torch.log_softmax(logits, dim=1)
    ar = torch.arange(rows)
    loss = -float(logp[ar, yb].sum()) / rows
    grad = logp.exp_()
    grad[ar, yb] -= 1.0
    grad /= rows
    grad_w = torch.mm(grad.t(), ut).mul_(scale)
    grad_b = grad.sum(dim=0)
    # running statistics as torch's BatchNorm (momentum 0.1, unbiased variance)
    state.running_mean.mul_(1 - _BN_MOMENTUM).add_(torch.from_numpy(b.mean_u), alpha=_BN_MOMENTUM * s)
    unbiased = rows / (rows - 1)
    state.running_var.mul_(1 - _BN_MOMENTUM).add_(torch.from_numpy(b.var_u), alpha=_BN_MOMENTUM * s * s * unbiased)
    state.num_batches_tracked += 1
    opt.step([grad_w, grad_b])
    return loss
