"""The in-process simulation loop (the study's protocol)."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from al_core.learn.probe import Probe
from al_core.learn.simulate import SimulationResult, round_seed, run_simulation
from al_core.learn.strategies import SelectionError, get_strategy


@pytest.fixture(scope="module")
def data():
    x, y = make_blobs(n_samples=700, n_features=32, centers=5, cluster_std=4.0, random_state=4)
    x = x.astype(np.float32)
    return x[:500], y[:500], x[500:], y[500:]


def _run(data, **kw):
    x, y, xt, yt = data
    args = dict(n_classes=5, seed_strategy="centroid", query_strategy="margin", budget_per_round=5, rounds=3, seed=1)
    args.update(kw)
    return run_simulation(x, y, xt, yt, **args)


def test_protocol_shapes_and_labelled_sets(data):
    calls = []
    res = _run(data, progress=lambda r, acc, n: calls.append((r, acc, n)))
    assert isinstance(res, SimulationResult)
    assert res.accuracy.shape == (4,)  # round 0 (seed pool) + 3 query rounds
    assert res.n_labeled.tolist() == [5, 10, 15, 20]
    for r in range(1, 4):
        assert np.array_equal(res.labeled[r][: 5 * r], res.labeled[r - 1])  # nested
        assert np.array_equal(res.labeled[r][5 * r :], res.selected[r])
    final = res.labeled[-1]
    assert len(set(final.tolist())) == 20 and final.max() < 500  # pool only, no duplicates
    assert [c[0] for c in calls] == [0, 1, 2, 3] and [c[2] for c in calls] == [5, 10, 15, 20]
    assert np.allclose([c[1] for c in calls], res.accuracy)
    assert res.accuracy[-1] > 0.9  # well-separated blobs


def test_round_zero_is_the_seed_strategy_and_accuracy_is_the_retrained_probe(data):
    x, y, xt, yt = data
    res = _run(data)
    seed_pick = get_strategy("centroid").select(x, [], None, 5, n_classes=5, seed=round_seed(1, 0))
    assert np.array_equal(res.selected[0], seed_pick.indices)
    for r in (0, 2):
        lab = res.labeled[r]
        probe = Probe(5, seed=round_seed(1, r)).fit(x[lab], y[lab])  # from scratch, all labels
        assert res.accuracy[r] == pytest.approx(np.mean(probe.predict(xt) == yt))
    # round 1 queries with the probe of round 0
    probe0 = Probe(5, seed=round_seed(1, 0)).fit(x[res.labeled[0]], y[res.labeled[0]])
    q = get_strategy("margin").select(
        x, res.labeled[0], y[res.labeled[0]], 5, n_classes=5, seed=round_seed(1, 1), probe=probe0
    )
    assert np.array_equal(res.selected[1], q.indices)


def test_reproducible_and_seed_dependent(data):
    a = _run(data, seed_strategy="random", query_strategy="dropquery")
    b = _run(data, seed_strategy="random", query_strategy="dropquery")
    c = _run(data, seed_strategy="random", query_strategy="dropquery", seed=10)
    assert a.accuracy.tobytes() == b.accuracy.tobytes()
    assert all(np.array_equal(p, q) for p, q in zip(a.labeled, b.labeled))
    assert not np.array_equal(a.labeled[-1], c.labeled[-1])


def test_candidates_and_strategy_objects(data):
    cand = np.arange(0, 500, 2)
    res = _run(data, candidates=cand, query_strategy=get_strategy("dropquery", n_passes=3))
    assert np.isin(res.labeled[-1], cand).all()
    assert res.query_strategy == "dropquery"


def test_clear_errors(data):
    x, y, xt, yt = data
    with pytest.raises(SelectionError, match="need 30 points but the pool has 25"):
        _run(data, candidates=np.arange(25), budget_per_round=10, rounds=2)
    with pytest.raises(SelectionError, match="n_classes"):
        _run(data, n_classes=3)
    with pytest.raises(SelectionError, match="needs labelled points"):
        _run(data, seed_strategy="margin")
    with pytest.raises(SelectionError, match="one class per pool row"):
        run_simulation(
            x,
            y[:-1],
            xt,
            yt,
            n_classes=5,
            seed_strategy="random",
            query_strategy="random",
            budget_per_round=5,
            rounds=1,
            seed=0,
        )
