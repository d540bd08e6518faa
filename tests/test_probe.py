"""The linear probe of the specification."""

import hashlib
import json
import struct

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs

import al_core.learn.probe as probe_mod
import al_core.learn.probe_dropout as dropout_mod
from al_core.learn.probe import Probe, ProbeError


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(n_samples=600, n_features=16, centers=4, cluster_std=2.0, random_state=0)
    return x.astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="module")
def fitted(blobs):
    x, y = blobs
    return Probe(4, seed=3).fit(x[:120], y[:120])


def test_architecture_is_the_specified_one(fitted):
    m = fitted.model_
    assert isinstance(m[0], torch.nn.Dropout) and m[0].p == 0.75
    assert isinstance(m[1], torch.nn.BatchNorm1d) and not m[1].affine and m[1].num_features == 16
    assert isinstance(m[2], torch.nn.Linear) and (m[2].in_features, m[2].out_features) == (16, 4)
    assert len(m) == 3
    assert not m.training  # eval mode after fit


def test_constructor_only_stores_params():
    p = Probe(7, seed=5, max_epochs=3)
    assert p.get_params()["n_classes"] == 7 and p.model_ is None
    with pytest.raises(RuntimeError, match="not fitted"):
        p.predict_proba(np.zeros((2, 3), np.float32))


def test_scikit_learn_estimator_contract(blobs, fitted):
    """Parameters come from __init__'s signature; the constructor stores them and nothing else;
    validation and fitted state wait for fit; sklearn's clone rebuilds an unfitted copy."""
    from sklearn.base import clone

    p = Probe(7, seed=5, dropout=2.0)  # invalid, but only stored
    assert vars(p) == p.get_params() and list(p.get_params())[:2] == ["n_classes", "seed"]
    assert repr(p) == "Probe(n_classes=7, seed=5, dropout=2.0)"
    with pytest.raises(ProbeError, match="dropout"):
        p.fit(*blobs)
    assert p.set_params(dropout=0.5, max_epochs=2) is p and p.dropout == 0.5
    with pytest.raises(ValueError, match="invalid parameter 'lr_'"):
        p.set_params(lr_=1.0)
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params() and copy.model_ is None and "dim_" not in vars(copy)
    assert {k for k in vars(fitted) if k.endswith("_")} >= {"model_", "dim_", "n_epochs_", "best_loss_"}


def test_learns_and_predicts(blobs, fitted):
    x, y = blobs
    proba = fitted.predict_proba(x[120:])
    assert proba.shape == (480, 4) and proba.dtype == np.float32
    assert np.allclose(proba.sum(1), 1.0, atol=1e-5)
    assert (fitted.predict(x[120:]) == y[120:]).mean() > 0.9


def test_deterministic_under_a_seed(blobs, fitted):
    x, y = blobs
    again = Probe(4, seed=3).fit(x[:120], y[:120])
    assert fitted.predict_proba(x).tobytes() == again.predict_proba(x).tobytes()
    other = Probe(4, seed=4).fit(x[:120], y[:120])
    assert not np.array_equal(fitted.linear_weight, other.linear_weight)


def test_k_is_given_not_inferred(blobs):
    x, y = blobs
    keep = y[:200] < 2  # only classes 0 and 1 labelled
    p = Probe(10, seed=0, max_epochs=30).fit(x[:200][keep], y[:200][keep])
    assert p.predict_proba(x).shape == (600, 10)


def test_clear_errors(blobs):
    x, y = blobs
    with pytest.raises(ProbeError, match="at least 2"):
        Probe(4).fit(x[:1], y[:1])
    with pytest.raises(ProbeError, match="at least 2"):
        Probe(4).fit(x[:0], y[:0])
    with pytest.raises(ProbeError, match=r"\[0, n_classes=4\)"):
        Probe(4).fit(x[:10], np.full(10, 4))
    with pytest.raises(ProbeError, match=r"\[0, n_classes=4\)"):
        Probe(4).fit(x[:10], np.full(10, -1))
    with pytest.raises(ProbeError, match="one label per"):
        Probe(4).fit(x[:10], y[:9])
    bad = x[:10].copy()
    bad[3, 2] = np.nan
    with pytest.raises(ProbeError, match="NaN"):
        Probe(4).fit(bad, y[:10])


def test_early_stopping_rule_and_best_weights(blobs):
    x, y = blobs
    p = Probe(4, seed=1).fit(x[:100], y[:100])
    h = p.loss_history_
    assert 1 <= len(h) <= 400
    assert p.best_loss_ == h.min()  # the weights kept are those of the lowest loss
    # replay the stopping rule: patience 20 on improvements larger than 1e-3
    ref, wait, stop = np.inf, 0, None
    for e, loss in enumerate(h):
        if loss < ref - 1e-3:
            ref, wait = loss, 0
        else:
            wait += 1
            if wait >= 20:
                stop = e
                break
    assert stop == len(h) - 1 or (stop is None and len(h) == 400)


def test_minibatches_of_4096_with_a_trailing_single_row():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4097, 4)).astype(np.float32)  # 4096 + 1: BatchNorm needs >1 row
    y = (x[:, 0] > 0).astype(np.int64)
    p = Probe(2, seed=0, max_epochs=2).fit(x, y)
    assert p.n_epochs_ == 2
    batches = p._batches(torch.arange(8193))
    assert [len(b) for b in batches] == [4096, 4097]
    assert [len(b) for b in Probe(2)._batches(torch.arange(5000))] == [4096, 904]
    assert [len(b) for b in Probe(2)._batches(torch.arange(300))] == [300]


def test_embed_is_batchnorm_output_and_folding_is_exact(blobs, fitted):
    x, _ = blobs
    bn = fitted.model_[1]
    z = fitted.embed(x)
    expected = (x - bn.running_mean.numpy()) / np.sqrt(bn.running_var.numpy() + 1e-5)
    assert np.allclose(z, expected, atol=1e-5)
    with torch.no_grad():
        ref = fitted.model_(torch.from_numpy(x)).numpy()  # eval mode: no dropout
    assert np.allclose(fitted.logits(x), ref, atol=1e-4)
    assert np.allclose(fitted.embedding_logits(z).numpy(), ref, atol=1e-4)


def test_dropout_masks_keep_a_quarter_and_rescale_by_four():
    d = 64
    p = Probe.from_arrays(np.eye(d), np.zeros(d))  # logits = masked input exactly
    x = np.ones((50, d), np.float32)
    vals = np.concatenate([lg.numpy() for _, _, lg in p.iter_dropout_logits(x, 4, seed=0)])
    kept = vals != 0
    assert set(np.unique(vals).tolist()) == {0.0, 4.0}  # survivors scaled by 1 / (1 - 0.75)
    assert abs(kept.mean() - 0.25) < 0.02
    # unbiased: the mean over many passes is the clean logit
    assert abs(vals.mean() - 1.0) < 0.05


def test_dropout_predict_fresh_masks_and_seeded(blobs, fitted):
    x, _ = blobs
    a = fitted.dropout_predict(x, 3, seed=11)
    assert a.shape == (3, 600) and a.dtype == np.int64
    assert np.array_equal(a, fitted.dropout_predict(x, 3, seed=11))
    assert not np.array_equal(a, fitted.dropout_predict(x, 3, seed=12))
    assert not np.array_equal(a[0], a[1])  # each pass its own mask
    assert a.min() >= 0 and a.max() < 4


def test_dropout_masks_do_not_depend_on_threads(monkeypatch, blobs, fitted):
    x, _ = blobs
    monkeypatch.setattr(dropout_mod, "DROPOUT_BLOCK_ROWS", 64)  # 600 rows: 10 blocks, the last partial
    preds = {}
    for workers in (1, 2, 3):
        out = np.full((3, 600), -1)

        def write(start, logits, out=out):
            for p, lg in enumerate(logits):
                out[p, start : start + lg.shape[0]] = lg.argmax(1).numpy()

        fitted.map_dropout_logits(x, 3, 7, write, workers=workers)
        preds[workers] = out
    assert np.array_equal(preds[1], preds[2]) and np.array_equal(preds[1], preds[3])
    assert (preds[1] >= 0).all()  # every row of every block written
    seq = np.full((3, 600), -1)
    for start, p, lg in fitted.iter_dropout_logits(x, 3, 7):
        seq[p, start : start + lg.shape[0]] = lg.argmax(1).numpy()
    assert np.array_equal(seq, preds[1])
    assert np.array_equal(fitted.dropout_predict(x, 3, 7), preds[1])


def test_no_partial_block_dropped(monkeypatch, blobs):
    x, y = blobs
    monkeypatch.setattr(probe_mod, "INFERENCE_BLOCK_ROWS", 7)
    monkeypatch.setattr(dropout_mod, "DROPOUT_BLOCK_ROWS", 5)
    p = Probe(4, seed=0, dropout=0.0, max_epochs=20).fit(x[:60], y[:60])
    xs = x[:23]  # 23 = 3 x 7 + 2 = 4 x 5 + 3
    clean = p.predict(xs)
    # with p = 0 every dropout pass is the clean prediction, for every row
    assert np.array_equal(p.dropout_predict(xs, 2, seed=0), np.stack([clean, clean]))
    assert np.allclose(p.embed(xs)[-2:], p.embed(xs[-2:]))
    assert np.allclose(p.predict_proba(xs).sum(1), 1.0, atol=1e-5)


def test_bald_is_mutual_information(fitted, blobs):
    x, _ = blobs
    b = fitted.bald(x, 20, seed=0)
    assert b.shape == (600,) and (b > -1e-9).all() and (b <= np.log(4) + 1e-9).all()
    assert np.array_equal(b, fitted.bald(x, 20, seed=0))


def test_save_load_safetensors_without_pickle(tmp_path, blobs, fitted):
    x, _ = blobs
    path = tmp_path / "probe.safetensors"
    digest = fitted.save(path)
    raw = path.read_bytes()
    assert digest == hashlib.sha256(raw).hexdigest()
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_len])  # a safetensors header is plain JSON
    assert header["__metadata__"]["format"] == "al-pipeline-probe"
    assert b"\x80\x04" not in raw[:2]  # not a pickle stream
    loaded = Probe.load(path)
    assert loaded.predict_proba(x).tobytes() == fitted.predict_proba(x).tobytes()
    assert loaded.get_params() == fitted.get_params()
    assert np.array_equal(loaded.dropout_predict(x, 3, 5), fitted.dropout_predict(x, 3, 5))
    other = tmp_path / "other.safetensors"
    from safetensors.numpy import save_file

    save_file({"a": np.zeros(2, np.float32)}, str(other))
    with pytest.raises(ProbeError, match="not a probe file"):
        Probe.load(other)


def _autograd_reference(x, y, k, seed, epochs, batch_size=4096):
    """The probe trained the plain torch way (nn.Sequential forward, autograd, torch.optim.AdamW),
    fed the masks and batch order of al_core.learn.probe_train's stream: the hand-written
    gradients, BatchNorm statistics and AdamW must follow it step for step."""
    from al_core.learn.probe_train import TRAIN_STREAM, batch_bounds, keep_threshold

    n, d = x.shape
    torch.manual_seed(seed)
    model = Probe(k)._new_model(d)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2)
    rng = np.random.Generator(np.random.SFC64(np.random.SeedSequence([seed, TRAIN_STREAM])))
    bounds = batch_bounds(n, batch_size)
    history, best = [], None
    model.train()
    for _ in range(epochs):
        order = rng.permutation(n) if len(bounds) > 1 else np.arange(n)
        total = 0.0
        for s, e in bounds:
            idx = order[s:e]
            raw = rng.bit_generator.random_raw(-(-(e - s) * d // 8)).view(np.uint8)[: (e - s) * d]
            mask = torch.from_numpy((raw < keep_threshold(0.75)).reshape(e - s, d))
            xb = torch.from_numpy(x[idx]) * mask * 4.0  # inverted dropout, by hand
            loss = torch.nn.functional.cross_entropy(model[2](model[1](xb)), torch.from_numpy(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * (e - s)
        history.append(total / n)
        if history[-1] == min(history):
            best = {key: v.detach().clone() for key, v in model.state_dict().items()}
    return best, np.array(history)


@pytest.mark.parametrize("n, batch_size", [(120, 4096), (301, 128)])  # one batch; three shuffled batches
def test_hand_written_training_follows_torch_autograd_and_adamw(blobs, n, batch_size):
    x, y = blobs
    x, y = x[:n], y[:n]
    epochs = 25
    ref, ref_history = _autograd_reference(x, y, 4, seed=5, epochs=epochs, batch_size=batch_size)
    p = Probe(4, seed=5, max_epochs=epochs, patience=10**6, min_delta=0.0, batch_size=batch_size).fit(x, y)
    assert p.n_epochs_ == epochs
    assert np.allclose(p.loss_history_, ref_history, rtol=1e-4, atol=1e-6)
    # the kept state is that of the epoch with the lowest loss, on both sides the same epoch
    assert p.best_loss_ == p.loss_history_.min() and np.argmin(p.loss_history_) == np.argmin(ref_history)
    mine = p.model_.state_dict()
    for key in ("2.weight", "2.bias", "1.running_mean", "1.running_var"):
        assert np.allclose(mine[key].numpy(), ref[key].numpy(), rtol=1e-4, atol=1e-5), key
    assert int(mine["1.num_batches_tracked"]) == int(ref["1.num_batches_tracked"]) > 0


def test_fit_does_not_depend_on_torch_s_thread_setting(blobs):
    x, y = blobs
    prev = torch.get_num_threads()
    try:
        fits = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            fits.append(Probe(4, seed=2).fit(x[:300], y[:300]))
    finally:
        torch.set_num_threads(prev)
    assert fits[0].linear_weight.tobytes() == fits[1].linear_weight.tobytes()
    assert np.array_equal(fits[0].loss_history_, fits[1].loss_history_)


@pytest.mark.parametrize("n, batch_size", [(300, 4096), (301, 128)])  # one batch; three shuffled batches
def test_batches_prepared_ahead_give_the_same_bits_as_one_thread(blobs, n, batch_size):
    """The worker thread that prepares the next batch (masks, dropout, statistics) changes no number: the fit
    with it equals the fit without it bit for bit, early stopping included (a batch prepared ahead but never
    trained on consumes nothing that is used)."""
    from al_core.learn.probe_train import ProbeState, fit_linear_probe

    x, y = blobs
    x, y = np.ascontiguousarray(x[:n], dtype=np.float32), y[:n].astype(np.int64)
    k, d = 4, x.shape[1]
    g = torch.Generator().manual_seed(0)
    init = ProbeState(torch.randn(k, d, generator=g), torch.zeros(k), torch.zeros(d), torch.ones(d))
    kw = dict(n_classes=k, seed=7, dropout=0.75, lr=1e-2, weight_decay=1e-2, batch_size=batch_size)
    for max_epochs, patience in ((30, 10**6), (400, 3)):  # all epochs run; stopped early
        fits = [
            fit_linear_probe(x, y, init, **kw, max_epochs=max_epochs, patience=patience, min_delta=1e-3, ahead=a)
            for a in (False, True)
        ]
        assert fits[0].n_epochs == fits[1].n_epochs and (patience > 1000 or fits[0].n_epochs < max_epochs)
        assert fits[0].history == fits[1].history
        for name in ("weight", "bias", "running_mean", "running_var"):
            assert getattr(fits[0].state, name).numpy().tobytes() == getattr(fits[1].state, name).numpy().tobytes()
        assert fits[0].state.num_batches_tracked == fits[1].state.num_batches_tracked


def test_fit_imports_no_optimiser():
    """The first torch.optim.AdamW of a process imports torch._dynamo (seconds): the fit must not need it."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from al_core.learn.probe import Probe; "
        "x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32); "
        "Probe(3).fit(x, np.arange(50) % 3); print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_dropout_disagreement_counts_passes_against_the_clean_prediction(monkeypatch, blobs, fitted):
    x, _ = blobs
    monkeypatch.setattr(dropout_mod, "DROPOUT_BLOCK_ROWS", 64)  # 600 rows: 10 blocks, the last partial
    got = fitted.dropout_disagreement(x, 3, seed=9)
    passes = fitted.dropout_predict(x, 3, seed=9)  # the same masks
    expected = (passes != fitted.predict(x)[None, :]).sum(axis=0)
    assert got.dtype == np.int64 and np.array_equal(got, expected)
    assert got.sum() > 0 and got.max() <= 3
    with pytest.raises(ProbeError, match="n_passes"):
        fitted.dropout_disagreement(x, 0, seed=9)
