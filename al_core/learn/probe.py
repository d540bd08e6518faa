"""The linear probe of the specification (``docs/algorithms.md``, "The probe").

Model: ``Dropout(p=0.75)`` on the input features, ``BatchNorm1d(D,
affine=False)``, ``Linear(D, K)``. Trained from scratch by :meth:`Probe.fit`
with cross-entropy and AdamW (lr 1e-2, weight decay 1e-2) on mini-batches of
4096 shuffled by the seed (one full batch while there are at most 4096
labels), at most 400 epochs, early stopping on the epoch's mean training-mode
loss (dropout on) with patience 20 and min delta 1e-3, keeping the weights of
the epoch with the lowest such loss. ``K`` is given, not inferred.

Estimator conventions as scikit-learn states them (:mod:`al_core.learn.params`):
the constructor only stores its parameters; :meth:`Probe.fit` validates them and
its inputs and sets the fitted state (``model_``, ``dim_``, ``n_epochs_``,
``best_loss_``, ``loss_history_``). An unfitted probe reads ``model_`` as None.

Training (:mod:`al_core.learn.probe_train`) computes the linear layer's gradients by
hand (nothing flows back through dropout or BatchNorm, which have no parameters) and
steps AdamW as ``torch.optim.AdamW`` does, without autograd or ``torch.optim`` (whose
first use in a process imports torch._dynamo, seconds); its input-dropout masks are
random bytes from a numpy SFC64 stream seeded by the probe's seed. It runs on
``n_threads`` torch threads (default 1, restored afterwards), so that the result does
not depend on the machine's thread count: its steps are small matrix products, and on
the 2-core build machine, shared with other work, one thread was faster at every size
measured (e.g. 4096 x 768 x 100 classes: 125-155 ms per epoch on 1 thread against
556-590 ms on 2 with the autograd loop, the second thread spinning against other
processes). ``n_threads=None`` leaves torch's setting alone. Inference uses torch's setting.

Inference (:meth:`Probe.predict_proba`, :meth:`Probe.embed`) runs in eval mode in
blocks of rows. BatchNorm is folded into the linear layer for speed
(``W' = W / sqrt(var + eps)``, ``b' = b - W' mean``), which is the same function
up to float rounding. Dropout passes at inference (:meth:`Probe.dropout_predict`,
:meth:`Probe.bald`) are :mod:`al_core.learn.probe_dropout`'s.

Saved and loaded with safetensors only (no pickle), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from al_core.files.atomic import atomic_write_bytes
from al_core.learn.params import Params
from al_core.learn.probe_dropout import DropoutLinear, bald_into, disagreement_into, predictions_into
from al_core.learn.probe_train import ProbeState, batch_bounds, fit_linear_probe
from al_core.learn.tensors import as_tensor, float_block, torch_threads

__all__ = [
    "Probe",
    "ProbeError",
    "INFERENCE_BLOCK_ROWS",
    "FORMAT_NAME",
]

# Rows per block for clean inference: 16384 x 768 x 4 B = 48 MB of features
# (plus 16384 x K x 4 B of logits: 6.5 MB at K = 100, 65 MB at K = 1000).
INFERENCE_BLOCK_ROWS = 16384

# Stored in the safetensors metadata; load() refuses anything else.
FORMAT_NAME = "al-pipeline-probe"
FORMAT_VERSION = "1"

_BN_EPS = 1e-5  # torch.nn.BatchNorm1d's default


class ProbeError(ValueError):
    """Invalid input to the probe (too few labels, labels outside [0, K), shapes)."""


def _check_labels(labels: np.ndarray, n_rows: int, n_classes: int) -> np.ndarray:
    """``labels`` as int64, one per row, in [0, n_classes); ProbeError otherwise."""
    if labels.ndim != 1 or labels.shape[0] != n_rows:
        raise ProbeError(f"labels must be 1-D with one label per feature row: {labels.shape} labels for {n_rows} rows")
    if labels.shape[0] < 2:
        raise ProbeError(f"the probe needs at least 2 labelled points to train, got {labels.shape[0]}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer) and not np.all(np.equal(np.mod(labels, 1), 0)):
        raise ProbeError("labels must be integers")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ProbeError(
            f"labels must lie in [0, n_classes={n_classes}), got values in [{labels.min()}, {labels.max()}]"
        )
    return labels


def _finite_float32(features: np.ndarray) -> np.ndarray:
    """``features`` as a finite C-contiguous float32 array; ProbeError otherwise."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ProbeError("features contain NaN or infinite values")
    return x


class Probe(Params):
    """Dropout(0.75) -> BatchNorm1d(D, affine=False) -> Linear(D, K), trained per the specification.

    scikit-learn's estimator contract: the constructor only stores parameters; :meth:`fit`
    validates and trains.
    """

    model_: nn.Sequential | None = None  # the fitted model (None until fit, from_arrays or load)

    def __init__(
        self,
        n_classes: int,
        *,
        seed: int = 0,
        dropout: float = 0.75,
        lr: float = 1e-2,
        weight_decay: float = 1e-2,
        batch_size: int = 4096,
        max_epochs: int = 400,
        patience: int = 20,
        min_delta: float = 1e-3,
        n_threads: int | None = 1,
    ):
        self._store_params(locals())

    # ------------------------------------------------------------------ params
    def _check_params(self) -> None:
        if not isinstance(self.n_classes, (int, np.integer)) or self.n_classes < 1:
            raise ProbeError(f"n_classes must be a positive integer, got {self.n_classes!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ProbeError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.batch_size < 2:
            raise ProbeError(f"batch_size must be at least 2 (BatchNorm), got {self.batch_size!r}")

    def _new_model(self, d: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Dropout(p=self.dropout),
            nn.BatchNorm1d(d, affine=False),
            nn.Linear(d, int(self.n_classes)),
        )

    def _set_fitted(self, model: nn.Sequential, d: int, n_epochs: int, best_loss: float, history) -> None:
        model.eval()
        self.model_ = model
        self.dim_ = d
        self.n_epochs_ = n_epochs
        self.best_loss_ = best_loss
        self.loss_history_ = np.asarray(history, dtype=np.float64)
        self._fold()

    # --------------------------------------------------------------- training
    def fit(self, features: np.ndarray, labels: np.ndarray) -> Probe:
        """Train from scratch on ``features`` (L x D) and integer ``labels`` in [0, n_classes)."""
        self._check_params()
        features = np.asarray(features)
        if features.ndim != 2:
            raise ProbeError(f"features must be 2-D (L x D), got shape {features.shape}")
        labels = _check_labels(np.asarray(labels), features.shape[0], self.n_classes)
        x = _finite_float32(features)
        with torch_threads(self.n_threads):
            self._train(x, labels)
        return self

    def _train(self, x: np.ndarray, labels: np.ndarray) -> None:
        n, d = x.shape
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.seed))
            model = self._new_model(d)  # torch's initial weights, drawn under the seed
        bn: nn.BatchNorm1d = model[1]
        lin: nn.Linear = model[2]
        init = ProbeState(lin.weight.detach(), lin.bias.detach(), bn.running_mean, bn.running_var)
        res = fit_linear_probe(
            x,
            labels,
            init,
            n_classes=int(self.n_classes),
            seed=int(self.seed),
            dropout=float(self.dropout),
            lr=float(self.lr),
            weight_decay=float(self.weight_decay),
            batch_size=int(self.batch_size),
            max_epochs=int(self.max_epochs),
            patience=int(self.patience),
            min_delta=float(self.min_delta),
        )
        with torch.no_grad():
            lin.weight.copy_(res.state.weight)
            lin.bias.copy_(res.state.bias)
            bn.running_mean.copy_(res.state.running_mean)
            bn.running_var.copy_(res.state.running_var)
            bn.num_batches_tracked.fill_(res.state.num_batches_tracked)
        self._set_fitted(model, d, res.n_epochs, res.best_loss, res.history)

    def _batches(self, order: torch.Tensor) -> list[torch.Tensor]:
        """Mini-batches of ``batch_size`` in the given order; a trailing batch of one
        row (which BatchNorm cannot normalise in training mode) joins the batch before it."""
        return [order[s:e] for s, e in batch_bounds(order.shape[0], int(self.batch_size))]

    def _fold(self) -> None:
        bn: nn.BatchNorm1d = self.model_[1]
        lin: nn.Linear = self.model_[2]
        with torch.no_grad():
            self._mean = bn.running_mean.detach().clone().float()
            self._inv_std = torch.rsqrt(bn.running_var.detach().float() + _BN_EPS)
            self._weight = lin.weight.detach().clone().float()  # K x D
            self._bias = lin.bias.detach().clone().float()
            w_folded = self._weight * self._inv_std[None, :]
            self._w_folded_t = w_folded.t().contiguous()  # D x K
            self._b_folded = self._bias - w_folded @ self._mean

    # -------------------------------------------------------------- inference
    def _check_fitted(self, features: np.ndarray) -> None:
        if self.model_ is None:
            raise RuntimeError("the probe is not fitted: call fit() or Probe.load() first")
        if features.ndim != 2 or features.shape[1] != self.dim_:
            raise ProbeError(f"features must be N x {self.dim_}, got shape {features.shape}")

    @property
    def linear_weight(self) -> np.ndarray:
        """The linear layer's weight (K x D), acting on the embedding."""
        return self._weight.numpy().copy()

    @property
    def linear_bias(self) -> np.ndarray:
        return self._bias.numpy().copy()

    def _map_rows(
        self, features: np.ndarray, width: int, write: Callable[[torch.Tensor, torch.Tensor], None]
    ) -> np.ndarray:
        """An N x ``width`` float32 array filled block by block (INFERENCE_BLOCK_ROWS rows, inference mode):
        ``write(x, out)`` gets each block of the features as float32 and its rows of the result."""
        features = np.asarray(features)
        self._check_fitted(features)
        n = features.shape[0]
        out = np.empty((n, width), dtype=np.float32)
        with torch.inference_mode():
            ot = torch.from_numpy(out)
            for start in range(0, n, INFERENCE_BLOCK_ROWS):
                xb = as_tensor(float_block(features, start, start + INFERENCE_BLOCK_ROWS))
                write(xb, ot[start : start + xb.shape[0]])
        return out

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Eval-mode logits, float32 N x K."""

        def linear(xb: torch.Tensor, blk: torch.Tensor) -> None:
            torch.addmm(self._b_folded, xb, self._w_folded_t, out=blk)

        return self._map_rows(features, self.n_classes, linear)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities (softmax of eval-mode logits), float32 N x K."""
        logits = self.logits(features)
        with torch.inference_mode():
            lt = torch.from_numpy(logits)
            for start in range(0, lt.shape[0], INFERENCE_BLOCK_ROWS):
                blk = lt[start : start + INFERENCE_BLOCK_ROWS]
                blk.copy_(torch.softmax(blk, dim=1))
        return logits

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted class (argmax of the logits; ties: the lowest class), int64 N."""
        return self.logits(features).argmax(axis=1).astype(np.int64)

    def embed(self, features: np.ndarray) -> np.ndarray:
        """The BatchNorm output for clean inputs (eval mode, no dropout), float32 N x D."""

        def normalise(xb: torch.Tensor, blk: torch.Tensor) -> None:
            torch.sub(xb, self._mean, out=blk)
            blk.mul_(self._inv_std)

        return self._map_rows(features, self.dim_, normalise)

    @property
    def embedding_normalization(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, inv_std), float32 D-vectors (copies): :meth:`embed` computes
        ``(x - mean) * inv_std`` (in that order), so callers can build embeddings, or
        products with them, block by block without an N x D embedding matrix."""
        if self.model_ is None:
            raise RuntimeError("the probe is not fitted: call fit() or Probe.load() first")
        return self._mean.clone(), self._inv_std.clone()

    def embedding_logits(self, embeddings: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The linear layer applied to embeddings (BatchNorm outputs): N x K logits tensor."""
        z = embeddings if isinstance(embeddings, torch.Tensor) else as_tensor(np.asarray(embeddings, np.float32))
        return torch.addmm(self._bias, z, self._weight.t())

    def _dropout_layer(self) -> DropoutLinear:
        return DropoutLinear(self._w_folded_t, self._b_folded, float(self.dropout))

    def map_dropout_logits(
        self,
        features: np.ndarray,
        n_passes: int,
        seed: int,
        fn: Callable[[int, list[torch.Tensor]], None],
        workers: int | None = None,
    ) -> None:
        """Call ``fn(start, logits_per_pass)`` for every block of DROPOUT_BLOCK_ROWS rows.

        ``logits_per_pass``: ``n_passes`` float32 tensors (rows x K), each under a
        fresh input-dropout mask (keep probability 1 - p, survivors scaled by
        1 / (1 - p)), eval-mode BatchNorm. Blocks run on ``workers`` threads
        (default DROPOUT_WORKERS) with one torch thread each; ``fn`` must only
        write its own rows. The masks depend only on (seed, block, pass), so the
        result does not depend on the threads (:mod:`al_core.learn.probe_dropout`).
        """
        features = np.asarray(features)
        self._check_fitted(features)
        if n_passes < 1:
            raise ProbeError(f"n_passes must be at least 1, got {n_passes}")
        self._dropout_layer().map_logits(features, n_passes, seed, fn, workers)

    def iter_dropout_logits(
        self, features: np.ndarray, n_passes: int, seed: int
    ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """Yield (start, pass, logits) for every block and pass, in order, on this thread
        (the same masks as :meth:`map_dropout_logits`)."""
        features = np.asarray(features)
        self._check_fitted(features)
        return self._dropout_layer().iter_logits(features, n_passes, seed)

    def dropout_predict(self, features: np.ndarray, n_passes: int, seed: int) -> np.ndarray:
        """Class predictions under ``n_passes`` fresh input-dropout masks: int64 (n_passes x N)."""
        features = np.asarray(features)
        out = np.empty((n_passes, features.shape[0]), dtype=np.int64)
        self.map_dropout_logits(features, n_passes, seed, predictions_into(out))
        return out

    def dropout_disagreement(self, features: np.ndarray, n_passes: int, seed: int) -> np.ndarray:
        """Per row, the number of ``n_passes`` dropout passes (the masks of :meth:`dropout_predict`)
        whose prediction differs from the clean one (:meth:`predict`): int64 N, in one read of
        the features (each block's clean and dropout logits while it is in cache)."""
        features = np.asarray(features)
        self._check_fitted(features)
        if n_passes < 1:
            raise ProbeError(f"n_passes must be at least 1, got {n_passes}")
        out = np.empty(features.shape[0], dtype=np.int64)
        self._dropout_layer().map_logits(features, n_passes, seed, disagreement_into(out), None, clean=True)
        return out

    def bald(self, features: np.ndarray, n_passes: int, seed: int) -> np.ndarray:
        """BALD mutual information H(mean p) - mean H(p) over ``n_passes`` dropout passes, float64 N."""
        features = np.asarray(features)
        out = np.empty(features.shape[0], dtype=np.float64)
        self.map_dropout_logits(features, n_passes, seed, bald_into(out))
        return out

    @classmethod
    def from_arrays(
        cls,
        weight: np.ndarray,
        bias: np.ndarray,
        *,
        running_mean: np.ndarray | None = None,
        running_var: np.ndarray | None = None,
        **params,
    ) -> Probe:
        """A fitted probe from explicit parameters (K x D linear weight, K bias,
        BatchNorm running statistics; default mean 0 and variance 1 - eps, so that
        the embedding is the input itself). For tests and for probes trained elsewhere."""
        weight = np.asarray(weight, dtype=np.float32)
        bias = np.asarray(bias, dtype=np.float32)
        k, d = weight.shape
        if bias.shape != (k,):
            raise ProbeError(f"bias must have shape ({k},), got {bias.shape}")
        mean = np.zeros(d, np.float32) if running_mean is None else np.asarray(running_mean, np.float32)
        var = np.full(d, 1.0 - _BN_EPS, np.float32) if running_var is None else np.asarray(running_var, np.float32)
        probe = cls(k, **params)
        probe._check_params()
        model = probe._new_model(d)
        with torch.no_grad():
            model[2].weight.copy_(torch.from_numpy(weight))
            model[2].bias.copy_(torch.from_numpy(bias))
            model[1].running_mean.copy_(torch.from_numpy(mean))
            model[1].running_var.copy_(torch.from_numpy(var))
        probe._set_fitted(model, d, 0, float("nan"), [])
        return probe

    # ------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, extra_metadata: dict[str, str] | None = None) -> str:
        """Write the probe to ``path`` as safetensors, atomically; return the file's sha256 (hex).

        ``extra_metadata`` (text values, e.g. the class list as JSON) is stored beside the probe's own metadata
        and read back by :meth:`read_metadata`.
        """
        from safetensors.torch import save

        if self.model_ is None:
            raise RuntimeError("the probe is not fitted: nothing to save")
        bn: nn.BatchNorm1d = self.model_[1]
        lin: nn.Linear = self.model_[2]
        tensors = {
            "linear.weight": lin.weight.detach().contiguous(),
            "linear.bias": lin.bias.detach().contiguous(),
            "batchnorm.running_mean": bn.running_mean.detach().contiguous(),
            "batchnorm.running_var": bn.running_var.detach().contiguous(),
            "batchnorm.num_batches_tracked": bn.num_batches_tracked.detach().reshape(1).contiguous(),
        }
        metadata = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "params": json.dumps(self.get_params(), sort_keys=True),
            "dim": str(self.dim_),
            "n_epochs": str(self.n_epochs_),
            "best_loss": repr(float(self.best_loss_)),
        }
        metadata = {**{str(k): str(v) for k, v in (extra_metadata or {}).items()}, **metadata}
        data = save(tensors, metadata=metadata)
        atomic_write_bytes(path, data)
        return hashlib.sha256(data).hexdigest()

    @staticmethod
    def read_metadata(path: str | os.PathLike) -> dict[str, str]:
        """The safetensors metadata of a probe file (its own keys and any ``extra_metadata``)."""
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="pt") as f:
            return dict(f.metadata() or {})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Probe:
        """Read a probe written by :meth:`save` (safetensors; no pickle)."""
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT_NAME:
                raise ProbeError(f"{path}: not a probe file (format {meta.get('format')!r})")
            if meta.get("format_version") != FORMAT_VERSION:
                raise ProbeError(f"{path}: unsupported probe format version {meta.get('format_version')!r}")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
        probe = cls(**json.loads(meta["params"]))
        probe._check_params()
        d = int(meta["dim"])
        model = probe._new_model(d)
        with torch.no_grad():
            model[2].weight.copy_(tensors["linear.weight"])
            model[2].bias.copy_(tensors["linear.bias"])
            model[1].running_mean.copy_(tensors["batchnorm.running_mean"])
            model[1].running_var.copy_(tensors["batchnorm.running_var"])
            model[1].num_batches_tracked.copy_(tensors["batchnorm.num_batches_tracked"].reshape(()))
        probe._set_fitted(model, d, int(meta.get("n_epochs", "0")), float(meta.get("best_loss", "nan")), [])
        return probe
