"""Selection strategies: hand-built geometry with known answers, score directions,
reproducibility, validation, and the defects of public implementations listed in
docs/algorithms.md."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs

import al_core.learn.kmeans as km
import al_core.learn.neighbours as nb
import al_core.learn.probe as probe_mod
import al_core.learn.probe_dropout as dropout_mod
import al_core.learn.strategies.alfa_mix as alfa_mod
import al_core.learn.strategies.badge as badge_mod
import al_core.learn.strategies.context as ctx_mod
import al_core.learn.strategies.coreset as coreset_mod
import al_core.learn.strategies.probcover as pc_mod
import al_core.learn.strategies.probcover_graph as pcg_mod
import al_core.learn.strategies.uncertainty as unc_mod
import al_core.learn.strategies.validation as val_mod
from al_core.learn.probe import Probe
from al_core.learn.strategies import (
    BudgetTooLargeError,
    DuplicateIndexError,
    EmptyPoolError,
    InvalidFeaturesError,
    InvalidIndicesError,
    InvalidLabelsError,
    InvalidParameterError,
    LabelsRequiredError,
    SelectionError,
    SelectionResult,
    get_strategy,
    list_strategies,
    seed_strategies,
)
from al_core.learn.strategies.badge import gradient_embedding_sq_distances
from al_core.learn.strategies.dropquery import candidate_threshold, disagreement_histogram
from al_core.learn.strategies.probcover import search_delta
from al_core.learn.strategies.probcover_graph import nearest_other_label_sq_distances, radius_graph
from al_core.learn.strategies.typiclust import typicality

ALL = [
    "random",
    "centroid",
    "typiclust",
    "probcover",
    "least_confidence",
    "margin",
    "entropy",
    "bald",
    "power_bald",
    "coreset",
    "badge",
    "alfa_mix",
    "dropquery",
]
SEED_STRATEGIES = ["random", "centroid", "typiclust", "probcover"]
LABEL_STRATEGIES = [s for s in ALL if s not in SEED_STRATEGIES]


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def pool():
    """N = 240, D = 12, K = 4 blobs; 24 labelled rows; a probe trained on them."""
    x, y = make_blobs(n_samples=240, n_features=12, centers=4, cluster_std=3.0, random_state=0)
    x = x.astype(np.float32)
    labeled = np.random.default_rng(0).choice(240, size=24, replace=False)
    probe = Probe(4, seed=0).fit(x[labeled], y[labeled])
    return x, y.astype(np.int64), labeled, probe


def _select(name, pool, budget=10, seed=0, **kw):
    x, y, labeled, probe = pool
    strat = get_strategy(name)
    use_probe = kw.pop("probe", probe if strat.uses_probe else None)
    return strat.select(x, labeled, y[labeled], budget, n_classes=4, seed=seed, probe=use_probe, **kw)


# --------------------------------------------------------------------- registry
def test_registry_lists_every_strategy():
    assert list_strategies() == ALL
    assert seed_strategies() == SEED_STRATEGIES
    with pytest.raises(KeyError, match="unknown strategy 'nope'"):
        get_strategy("nope")
    with pytest.raises(InvalidParameterError, match="dropquery"):
        get_strategy("dropquery", n_pases=5)
    assert get_strategy("bald", n_passes=7).n_passes == 7


def test_estimator_conventions():
    """Parameters come from __init__; constructors only store them; they are checked when a
    strategy is configured (get_strategy) and at every select, not in the constructor."""
    from sklearn.base import clone

    from al_core.learn.strategies.dropquery import DropQueryStrategy
    from al_core.learn.strategies.probcover import PROBCOVER_SAMPLE_ROWS, ProbCoverStrategy

    for name in ALL:
        s = get_strategy(name)
        assert vars(s) == s.get_params()  # nothing but the parameters before a call
        assert repr(s) == f"{type(s).__name__}()" and clone(s).get_params() == s.get_params()
    assert list(ProbCoverStrategy().get_params()) == [
        "delta",
        "purity_threshold",
        "approximate",
        "exact_max_rows",
        "graph_sample_rows",
        "purity_sample_rows",
    ]
    assert ProbCoverStrategy().graph_sample_rows == PROBCOVER_SAMPLE_ROWS
    bad = DropQueryStrategy(n_passes=0)  # stored, not checked
    assert bad.n_passes == 0 and repr(bad) == "DropQueryStrategy(n_passes=0)"
    x = np.ones((5, 2), np.float32)
    with pytest.raises(InvalidParameterError, match="n_passes"):
        bad.select(x, [0, 1], [0, 1], 1, n_classes=2, seed=0)
    with pytest.raises(InvalidParameterError, match="n_passes"):
        get_strategy("dropquery", n_passes=0)
    with pytest.raises(InvalidParameterError, match="graph_sample_rows"):
        get_strategy("probcover", graph_sample_rows=0)
    with pytest.raises(InvalidParameterError, match="eps_scale"):
        get_strategy("alfa_mix", eps_scale=-1.0)
    assert bad.set_params(n_passes=4).n_passes == 4
    with pytest.raises(ValueError, match="invalid parameter 'n_pases'"):
        bad.set_params(n_pases=4)
    # a strategy records what it found only when it runs
    pc = get_strategy("probcover", delta=0.5)
    assert not hasattr(pc, "last_info_")
    pc.select(x + np.arange(5, dtype=np.float32)[:, None], [], None, 2, n_classes=2, seed=0)
    assert pc.last_info_["delta"] == 0.5


# ----------------------------------------------------------- common invariants
@pytest.mark.parametrize("name", ALL)
def test_invariants_and_reproducibility(name, pool):
    x, y, labeled, _ = pool
    a = _select(name, pool, budget=10, seed=5)
    assert isinstance(a, SelectionResult)
    assert a.indices.dtype == np.int64 and a.scores.dtype == np.float64
    assert a.indices.shape == (10,) and a.scores.shape == (10,)
    assert len(set(a.indices.tolist())) == 10  # no duplicates
    assert not np.isin(a.indices, labeled).any()  # nothing already labelled
    assert ((a.indices >= 0) & (a.indices < len(x))).all()
    b = _select(name, pool, budget=10, seed=5)
    assert a.indices.tobytes() == b.indices.tobytes()  # same inputs and seed: same bytes
    assert a.scores.tobytes() == b.scores.tobytes()
    with pytest.raises(ValueError):
        a.indices[0] = 1  # read-only result
    assert a == b
    # within candidates, whatever their order
    cand = np.setdiff1d(np.arange(0, 240, 3), labeled)[::-1].copy()
    c = _select(name, pool, budget=6, seed=5, candidates=cand)
    assert np.isin(c.indices, cand).all() and len(set(c.indices.tolist())) == 6
    d = _select(name, pool, budget=6, seed=5, candidates=np.sort(cand))
    assert np.array_equal(c.indices, d.indices)


@pytest.mark.parametrize("name", ALL)
def test_budget_equal_to_candidates(name, pool):
    _, _, labeled, _ = pool
    cand = np.setdiff1d(np.arange(40), labeled)[:8]
    res = _select(name, pool, budget=8, candidates=cand)
    assert sorted(res.indices.tolist()) == sorted(cand.tolist())
    with pytest.raises(BudgetTooLargeError, match="budget 9 exceeds the 8"):
        _select(name, pool, budget=9, candidates=cand)


@pytest.mark.parametrize("name", SEED_STRATEGIES)
def test_seed_strategies_work_without_labels(name, pool):
    x = pool[0]
    res = get_strategy(name).select(x, [], None, 12, n_classes=4, seed=0)
    assert len(set(res.indices.tolist())) == 12


@pytest.mark.parametrize("name", LABEL_STRATEGIES)
def test_label_strategies_refuse_an_empty_labelled_set(name, pool):
    x = pool[0]
    with pytest.raises(LabelsRequiredError, match=name):
        get_strategy(name).select(x, [], [], 5, n_classes=4, seed=0)


@pytest.mark.parametrize("name", ["margin", "coreset", "dropquery"])
def test_without_a_probe_the_standard_probe_is_trained(name, pool):
    x, y, labeled, _ = pool
    own = get_strategy(name).select(x, labeled, y[labeled], 5, n_classes=4, seed=3)
    standard = Probe(4, seed=3).fit(x[labeled], y[labeled])
    given = get_strategy(name).select(x, labeled, y[labeled], 5, n_classes=4, seed=3, probe=standard)
    assert np.array_equal(own.indices, given.indices)


# ------------------------------------------------------------------ validation
def test_validation_errors(pool):
    x, y, labeled, probe = pool
    s = get_strategy("margin")
    kw = dict(n_classes=4, seed=0, probe=probe)
    assert issubclass(BudgetTooLargeError, ValueError) and issubclass(SelectionError, ValueError)
    with pytest.raises(BudgetTooLargeError, match="exceeds"):
        s.select(x, labeled, y[labeled], 217, **kw)
    with pytest.raises(EmptyPoolError, match="empty"):
        s.select(x, np.arange(240), y, 1, **kw)
    with pytest.raises(EmptyPoolError, match="no rows"):
        get_strategy("random").select(np.zeros((0, 4), np.float32), [], None, 1, n_classes=2, seed=0)
    bad = x.copy()
    bad[239, 3] = np.nan
    with pytest.raises(InvalidFeaturesError, match="row 239"):
        s.select(bad, labeled, y[labeled], 3, **kw)
    bad[239, 3] = np.inf
    with pytest.raises(InvalidFeaturesError, match="NaN or infinite"):
        get_strategy("random").select(bad, [], None, 3, n_classes=4, seed=0)
    with pytest.raises(InvalidLabelsError, match=r"\[0, n_classes=4\)"):
        s.select(x, labeled, np.full(24, 4), 3, **kw)
    with pytest.raises(InvalidLabelsError, match=r"\[0, n_classes=4\)"):
        s.select(x, labeled, np.full(24, -1), 3, **kw)
    with pytest.raises(InvalidLabelsError, match="23 labels for 24 labeled"):
        s.select(x, labeled, y[labeled][:23], 3, **kw)
    with pytest.raises(DuplicateIndexError, match="labeled holds 1 duplicated"):
        s.select(x, np.r_[labeled, labeled[0]], np.r_[y[labeled], 0], 3, **kw)
    with pytest.raises(DuplicateIndexError, match="candidates"):
        s.select(x, labeled, y[labeled], 3, candidates=[1, 2, 2, 5], **kw)
    with pytest.raises(InvalidIndicesError, match=r"\[0, N=240\)"):
        s.select(x, [0, 240], [0, 1], 3, **kw)
    with pytest.raises(InvalidIndicesError, match="integer"):
        s.select(x, [0.5, 2.0], [0, 1], 3, **kw)
    with pytest.raises(InvalidParameterError, match="budget"):
        s.select(x, labeled, y[labeled], -1, **kw)
    with pytest.raises(InvalidParameterError, match="seed"):
        s.select(x, labeled, y[labeled], 1, n_classes=4, seed=-3, probe=probe)
    with pytest.raises(InvalidParameterError, match="probe has 4 classes"):
        s.select(x, labeled, y[labeled], 1, n_classes=5, seed=0, probe=probe)
    with pytest.raises(InvalidFeaturesError, match="2-D"):
        s.select(x[0], labeled, y[labeled], 1, **kw)
    assert len(s.select(x, labeled, y[labeled], 0, **kw)) == 0


def test_a_single_label_is_a_clear_error(pool):
    x, y, _, _ = pool
    with pytest.raises(ValueError, match="at least 2"):
        get_strategy("margin").select(x, [3], [y[3]], 2, n_classes=4, seed=0)


# ----------------------------------------------------------------------- random
def test_random_same_seed_same_bytes_other_seed_other_batch():
    x = np.random.default_rng(0).standard_normal((10_000, 4)).astype(np.float32)
    s = get_strategy("random")
    a = s.select(x, [], None, 100, n_classes=2, seed=1)
    b = s.select(x, [], None, 100, n_classes=2, seed=1)
    c = s.select(x, [], None, 100, n_classes=2, seed=2)
    assert a.indices.tobytes() == b.indices.tobytes()
    assert not np.array_equal(np.sort(a.indices), np.sort(c.indices))
    assert np.isnan(a.scores).all()
    big = s.select(x, [], None, 5000, n_classes=2, seed=3).indices
    assert 4500 < big.mean() < 5500  # uniform over the pool
    labeled = np.arange(0, 10_000, 2)
    q = s.select(x, labeled, labeled % 2, 100, n_classes=2, seed=1).indices
    assert (q % 2 == 1).all()


# --------------------------------------------------------------------- centroid
def test_centroid_returns_one_point_per_well_separated_blob():
    x, y = make_blobs(n_samples=300, n_features=8, centers=6, cluster_std=0.3, center_box=(-20, 20), random_state=3)
    x = x.astype(np.float32)
    res = get_strategy("centroid").select(x, [], None, 6, n_classes=6, seed=0)
    assert sorted(y[res.indices].tolist()) == list(range(6))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    for i, dist in zip(res.indices, res.scores):
        members = np.flatnonzero(y == y[i])
        centre = xn[members].mean(0)
        d = np.linalg.norm(xn[members] - centre, axis=1)
        assert i == members[np.argmin(d)]  # the member nearest its centroid
        assert dist == pytest.approx(d.min(), rel=1e-3, abs=1e-5)


# ---------------------------------------------------------------------- coreset
def _identity_probe(d, k, w=None, b=None):
    w = np.zeros((k, d), np.float32) if w is None else w
    b = np.zeros(k, np.float32) if b is None else b
    return Probe.from_arrays(w, b)


def test_coreset_takes_the_farthest_point_first():
    # labelled: the origin; greedy k-center order is P1 (10), P3 (6), P4 (5), P2 (1)
    x = np.array([[0, 0], [10, 0], [9, 0], [0, 6], [-5, 0]], np.float32)
    probe = _identity_probe(2, 2)  # embedding = input
    res = get_strategy("coreset").select(x, [0], [0], 4, n_classes=2, seed=0, probe=probe)
    assert res.indices.tolist() == [1, 3, 4, 2]
    assert np.allclose(res.scores, [10, 6, 5, 1], atol=1e-3)
    # a tie is broken by index
    xt = np.array([[0, 0], [3, 0], [-3, 0], [0, 1]], np.float32)
    tie = get_strategy("coreset").select(xt, [0], [0], 1, n_classes=2, seed=0, probe=probe)
    assert tie.indices.tolist() == [1]


def test_coreset_budget_is_checked_against_the_pool_not_the_dimension():
    # defect of a public implementation: budget compared with D instead of the pool size
    rng = np.random.default_rng(0)
    x2 = rng.standard_normal((30, 2)).astype(np.float32)  # D = 2, budget 10 is fine
    res = get_strategy("coreset").select(x2, [0, 1], [0, 1], 10, n_classes=2, seed=0, probe=_identity_probe(2, 2))
    assert len(res) == 10
    x64 = rng.standard_normal((7, 64)).astype(np.float32)  # D = 64 but only 5 unlabelled
    with pytest.raises(BudgetTooLargeError):
        get_strategy("coreset").select(x64, [0, 1], [0, 1], 6, n_classes=2, seed=0, probe=_identity_probe(64, 2))


# -------------------------------------------------------------------- typiclust
def _ring_cluster(direction, n_inner, n_outer, r_in=0.05, r_out=0.15):
    c = _unit(direction)
    helper = np.eye(3)[np.argmin(np.abs(c))]
    u = _unit(np.cross(c, helper))
    v = np.cross(c, u)
    pts = [c]
    for t in np.arange(n_inner) * 2 * np.pi / n_inner:
        pts.append(c + r_in * (np.cos(t) * u + np.sin(t) * v))
    for t in np.arange(n_outer) * 2 * np.pi / n_outer:
        pts.append(c + r_out * (np.cos(t) * u + np.sin(t) * v))
    return np.array(pts)


def _typiclust_geometry():
    a = _ring_cluster([1, 0, 0], 6, 6)  # 13 points, centre at index 0
    b = _ring_cluster([0, 1, 0], 6, 8)  # 15 points, centre at index 13
    c = _ring_cluster([0, 0, 1], 3, 0)  # 4 points: dropped (5 or fewer)
    return np.concatenate([a, b, c]).astype(np.float32)


def test_typiclust_picks_the_densest_point_of_each_cluster():
    x = _typiclust_geometry()
    res = get_strategy("typiclust").select(x, [], None, 3, n_classes=2, seed=0)
    # clusters visited by size (15 before 13); the 4-point cluster is dropped
    assert res.indices[:2].tolist() == [13, 0]
    assert 14 <= res.indices[2] <= 19  # round robin: back to the big cluster, its inner ring
    assert res.scores[0] > res.scores[2]  # typicality, decreasing within a cluster
    # with cluster B's centre labelled, the cluster without labels comes first
    lab = get_strategy("typiclust").select(x, [13], [0], 2, n_classes=2, seed=0)
    assert lab.indices[0] == 0 and 14 <= lab.indices[1] <= 19


def test_typicality_definition():
    pts = np.array([[0, 0], [1, 0], [0, 2], [5, 5], [6, 5]], np.float32)
    k = min(20, len(pts) // 2)  # 2
    d2 = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    expected = 1 / (np.sort(d2, 1)[:, :k].mean(1) + 1e-5)
    assert np.allclose(typicality(pts), expected, rtol=1e-5)


def test_typiclust_returns_exactly_b_when_clusters_run_out():
    x = _ring_cluster([1, 0, 0], 3, 0)  # every cluster has 4 points: all dropped
    x = np.concatenate([x, _ring_cluster([0, 1, 0], 3, 0), _ring_cluster([0, 0, 1], 3, 0)]).astype(np.float32)
    res = get_strategy("typiclust").select(x, [], None, 5, n_classes=3, seed=0)
    assert len(set(res.indices.tolist())) == 5 and np.isnan(res.scores).all()


# -------------------------------------------------------------------- probcover
def _probcover_geometry():
    # on the unit sphere, so L2 normalisation changes nothing
    hub_a = np.array([1.0, 0, 0])
    ring_a = [_unit(hub_a + 0.1 * np.array([0, np.cos(t), np.sin(t)])) for t in np.arange(5) * 2 * np.pi / 5]
    hub_b = np.array([0, 1.0, 0])
    ring_b = [_unit(hub_b + 0.1 * np.array([np.cos(t), 0, np.sin(t)])) for t in np.arange(3) * 2 * np.pi / 3]
    return np.array([hub_a, *ring_a, hub_b, *ring_b], np.float32)  # hub A = 0, ring A 1..5, hub B = 6


def test_probcover_covers_known_balls_with_a_known_radius():
    x = _probcover_geometry()
    s = get_strategy("probcover", delta=0.15)
    # hub A covers 6, hub B covers 4; then everything is covered: random fill (gain 0)
    res = s.select(x, [], None, 3, n_classes=2, seed=0)
    assert res.indices[:2].tolist() == [0, 6]
    assert res.scores.tolist() == [6.0, 4.0, 0.0]
    # a labelled ring point of A covers itself, hub A and its two neighbours:
    # hub B (4 new) comes first, then a tie at 2 between hub A and ring points 3, 4 -> index 0
    lab = s.select(x, [1], [0], 2, n_classes=2, seed=0)
    assert lab.indices.tolist() == [6, 0] and lab.scores.tolist() == [4.0, 2.0]


def test_probcover_never_reads_ground_truth_labels():
    x = _probcover_geometry()
    s = get_strategy("probcover")  # radius searched: k-means with k = n_classes
    a = s.select(x, [1, 7], [0, 0], 3, n_classes=2, seed=0)
    b = s.select(x, [1, 7], [1, 0], 3, n_classes=2, seed=0)
    c = s.select(x, [1, 7], [1, 1], 3, n_classes=2, seed=0)
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.indices, c.indices)


def test_probcover_radius_search_sequence():
    # purity >= 0.95 exactly while delta <= 0.3: 0.5 no, 0.25 yes, 0.375 no, 0.3125 no,
    # 0.28125 yes, 0.296875 yes -> the largest passing value
    r2 = np.full(100, 0.3**2 + 1e-9)
    delta, evaluated = search_delta(r2)
    assert [d for d, _ in evaluated] == [0.5, 0.25, 0.375, 0.3125, 0.28125, 0.296875]
    assert delta == 0.296875
    # nothing passes: the smallest evaluated value
    delta, evaluated = search_delta(np.zeros(10))
    assert delta == 0.015625 and len(evaluated) == 6
    # two antipodal tight blobs with K = 2: everything is pure, delta climbs to 0.984375
    rng = np.random.default_rng(0)
    noise = 0.01 * rng.standard_normal((40, 3))
    x = np.concatenate([[1, 0, 0] + noise[:20], [-1, 0, 0] + noise[20:]])
    xn = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    assert get_strategy("probcover").radius(xn, 2, 0) == 0.984375


def test_probcover_graph_and_radius_helpers_match_brute_force(monkeypatch):
    monkeypatch.setattr(pcg_mod, "PROBCOVER_TILE_ROWS", 4)  # 19 rows: partial tiles
    rng = np.random.default_rng(2)
    x = rng.standard_normal((19, 3)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    graph = radius_graph(x, 0.8)
    for i in range(19):
        assert sorted(graph.neighbours_of([i]).tolist()) == np.flatnonzero(d[i] < 0.8).tolist()
    assert graph.n_edges == int((d < 0.8).sum()) - 19
    assert np.array_equal(graph.degrees(), (d < 0.8).sum(1))
    # labels interleaved (the helper sorts by label) and in runs that straddle tiles
    for pseudo in (np.arange(19) % 3, np.repeat([2, 0, 1], [7, 5, 7])):
        r2 = nearest_other_label_sq_distances(x, pseudo)
        other = np.where(pseudo[:, None] != pseudo[None], d**2, np.inf).min(1)
        assert np.allclose(r2, other, atol=1e-5)
        rows = np.array([0, 5, 18])
        sampled = pcg_mod.sample_nearest_other_label_sq_distances(pcg_mod.Points(x), pseudo, rows)
        assert np.allclose(sampled, other[rows], atol=1e-5)
    # one label only: no other-label point anywhere
    assert np.isinf(nearest_other_label_sq_distances(x, np.zeros(19, np.int64))).all()


@pytest.mark.parametrize(
    "guess_r2, sure_se, passes",
    [
        (None, 5.0, 1),  # the real guess (from 100 of the 150 rows)
        (10.0, 5.0, 1),  # a guess too large, not sure: products kept, the graph cut from it
        (10.0, 0.0, 2),  # a guess too large but "sure": no products, a second pass
        (0.0, 5.0, 2),  # a guess too small: a second pass
    ],
)
def test_probcover_one_pass_search_equals_search_then_graph(monkeypatch, guess_r2, sure_se, passes):
    monkeypatch.setattr(pcg_mod, "PROBCOVER_TILE_ROWS", 16)  # 150 rows: partial tiles
    monkeypatch.setattr(pc_mod, "PURITY_GUESS_ROWS", 100)
    monkeypatch.setattr(pc_mod, "GUESS_SURE_SE", sure_se)
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((4, 6))
    pseudo_src = rng.integers(0, 4, 150)
    x = centres[pseudo_src] + 0.8 * rng.standard_normal((150, 6))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    pseudo = pc_mod.kmeans(x, 4, seed=0).labels
    order = np.argsort(pseudo, kind="stable")
    xs = x[order]
    delta_ref, _ = search_delta(nearest_other_label_sq_distances(xs, pseudo[order]))
    ref = radius_graph(xs, delta_ref)
    if guess_r2 is not None:
        real = pc_mod.sample_nearest_other_label_sq_distances
        monkeypatch.setattr(
            pc_mod,
            "sample_nearest_other_label_sq_distances",
            lambda p, lab, rows: np.full(rows.shape[0], guess_r2) + 0 * real(p, lab, rows),
        )
    graph, delta, _, info = pc_mod.graph_with_radius_search(xs, pseudo[order], 0, 0.95)
    assert delta == delta_ref
    assert info["passes"] == passes
    if guess_r2 == 10.0:
        assert info["delta_guess"] > delta
    assert np.array_equal(graph.up_ptr, ref.up_ptr) and np.array_equal(graph.up_idx, ref.up_idx)
    assert 0 < graph.n_edges < 150 * 149


def test_probcover_approximation_is_exact_when_its_samples_hold_every_row(monkeypatch):
    """With both samples as large as the data, the approximate mode must give the
    exact method's picks (same pseudo-labels, radius, graph and tie rule)."""
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((6, 8))
    x = (centres[rng.integers(0, 6, 300)] + 0.4 * rng.standard_normal((300, 8))).astype(np.float32)
    labeled = np.array([3, 50, 120])
    cand = np.arange(0, 300, 2)
    exact = get_strategy("probcover", approximate=False)
    approx = get_strategy("probcover", approximate=True, graph_sample_rows=300, purity_sample_rows=300)
    monkeypatch.setattr(pcg_mod, "PROBCOVER_TILE_ROWS", 64)
    for kwargs in ({}, {"candidates": cand}):
        a = exact.select(x, labeled, [0, 1, 2], 10, n_classes=6, seed=3, **kwargs)
        b = approx.select(x, labeled, [0, 1, 2], 10, n_classes=6, seed=3, **kwargs)
        assert approx.last_info_["approximate"] and not exact.last_info_["approximate"]
        assert exact.last_info_["delta"] == approx.last_info_["delta"]
        assert exact.last_info_["edges"] == approx.last_info_["edges"] > 0
        assert a == b
    # a smaller graph sample is a real approximation: a valid selection, sampled rows only
    c = approx.set_params(graph_sample_rows=100).select(x, labeled, [0, 1, 2], 10, n_classes=6, seed=3, candidates=cand)
    assert approx.last_info_["graph_rows"] == 100 and len(set(c.indices.tolist())) == 10
    assert set(c.indices.tolist()) <= set(cand.tolist()) - set(labeled.tolist())


def test_probcover_auto_switches_to_the_approximation_above_the_named_size():
    x = _probcover_geometry()
    s = get_strategy("probcover", delta=0.15)
    s.select(x, [], None, 2, n_classes=2, seed=0)
    assert s.last_info_["approximate"] is False
    res = s.set_params(exact_max_rows=5).select(x, [], None, 2, n_classes=2, seed=0)
    assert s.last_info_["approximate"] is True
    assert res.indices.tolist() == [0, 6]  # the sample holds all 10 rows: same answer
    with pytest.raises(InvalidParameterError):
        get_strategy("probcover", approximate="sometimes")


# -------------------------------------------------------------------- dropquery
def _dropquery_geometry(seed=0):
    """D = 64, probe logit difference = sum(x). Far points never flip under dropout;
    two groups of boundary points (sum = +2) flip often."""
    rng = np.random.default_rng(seed)
    d = 64
    far = np.concatenate([3 + 0.1 * rng.standard_normal((100, d)), -3 + 0.1 * rng.standard_normal((100, d))])
    groups = []
    for _ in range(2):
        pattern = np.array([1.0] * 33 + [-1.0] * 31)
        rng.shuffle(pattern)
        groups.append(pattern + 0.05 * rng.standard_normal((20, d)))
    x = np.concatenate([far, *groups]).astype(np.float32)
    w = np.stack([-0.5 * np.ones(d), 0.5 * np.ones(d)]).astype(np.float32)
    return x, Probe.from_arrays(w, np.zeros(2, np.float32))


def test_dropquery_candidates_are_near_the_boundary_then_one_per_cluster():
    x, probe = _dropquery_geometry()
    far_preds = probe.dropout_predict(x[:200], 3, seed=0)
    assert (far_preds == probe.predict(x[:200])[None]).all()  # far points never disagree
    labeled = np.array([0, 100])
    res = get_strategy("dropquery").select(x, labeled, [1, 0], 2, n_classes=2, seed=0, probe=probe)
    assert (res.indices >= 200).all()  # only boundary points
    assert sorted((res.indices - 200) // 20) == [0, 1]  # one per group (k-means cluster)
    assert (res.scores >= 1).all()


def test_dropquery_fixed_length_histogram_and_threshold():
    # defect of a public implementation: histogram indexed past its end when no point
    # reaches M disagreements
    hist = disagreement_histogram(np.array([0, 0, 1, 2, 1]), 3)
    assert hist.tolist() == [2, 2, 1, 0]
    assert disagreement_histogram(np.zeros(7, np.int64), 3).tolist() == [7, 0, 0, 0]
    assert candidate_threshold(np.array([100, 10, 60, 0]), 2, 25) == 1  # > 1: 2 of 3 disagree
    assert candidate_threshold(np.array([100, 10, 30, 0]), 2, 25) == 0  # too few: any disagreement
    assert candidate_threshold(np.array([100, 0, 0, 0]), 2, 25) == 0
    # the start is "more than 1 of 3": 90 points with 2 or 3 disagreements suffice
    assert candidate_threshold(np.array([100, 10, 30, 60]), 2, 25) == 1
    s = get_strategy("dropquery")
    assert s.n_passes == 3 and s.candidate_factor == 25  # not 5 passes / > 0.5


def test_dropquery_without_disagreement_fills_at_random():
    x, probe = _dropquery_geometry()
    far = x[:200]  # nobody disagrees: hist = [N, 0, 0, 0]
    res = get_strategy("dropquery").select(far, [0, 100], [1, 0], 3, n_classes=2, seed=0, probe=probe)
    assert len(set(res.indices.tolist())) == 3 and (res.scores == 0).all()


# -------------------------------------------------------- uncertainty: direction
def test_uncertainty_scores_rank_the_most_uncertain_first():
    # identity probe: logits = x (K = 3); row 2 is uniform (most uncertain for all three)
    x = np.array([[5, 0, 0], [2, 1.9, 0], [0, 0, 0], [3, 1, 0], [0, 4, 0], [9, 0, 0]], np.float32)
    probe = Probe.from_arrays(np.eye(3, dtype=np.float32), np.zeros(3, np.float32))
    kw = dict(n_classes=3, seed=0, probe=probe)
    lc = get_strategy("least_confidence").select(x, [5], [0], 5, **kw)
    mg = get_strategy("margin").select(x, [5], [0], 5, **kw)
    en = get_strategy("entropy").select(x, [5], [0], 5, **kw)
    assert lc.indices[0] == 2 and mg.indices[0] == 2 and en.indices[0] == 2
    assert lc.scores[0] == pytest.approx(1 / 3) and mg.scores[0] == pytest.approx(0.0, abs=1e-7)
    assert en.scores[0] == pytest.approx(np.log(3))
    assert mg.indices[1] == 1  # the small margin 2 vs 1.9 comes next
    assert (np.diff(lc.scores) >= 0).all() and (np.diff(mg.scores) >= 0).all() and (np.diff(en.scores) <= 0).all()


def test_bald_and_power_bald_rank_the_most_disagreeing_first():
    d = 64
    rng = np.random.default_rng(0)
    pattern = np.array([5.0] * 34 + [-5.0] * 30)
    rng.shuffle(pattern)
    x = np.stack([np.full(d, 3.0), np.zeros(d), pattern, np.full(d, -3.0), np.full(d, 2.0)]).astype(np.float32)
    w = np.stack([-np.ones(d), np.ones(d)]).astype(np.float32)
    probe = Probe.from_arrays(w, np.zeros(2, np.float32))
    bald = get_strategy("bald").select(x, [4], [1], 3, n_classes=2, seed=0, probe=probe)
    assert bald.indices[0] == 2 and bald.scores[0] > 0.3
    assert (np.diff(bald.scores) <= 0).all()
    pb = get_strategy("power_bald").select(x, [4], [1], 1, n_classes=2, seed=0, probe=probe)
    assert pb.indices[0] == 2
    other = get_strategy("power_bald").select(x, [4], [1], 3, n_classes=2, seed=1, probe=probe)
    assert other.indices[0] == 2


def test_power_bald_is_stochastic_but_seeded(pool):
    a = _select("power_bald", pool, budget=20, seed=1)
    b = _select("power_bald", pool, budget=20, seed=1)
    c = _select("power_bald", pool, budget=20, seed=2)
    assert np.array_equal(a.indices, b.indices) and not np.array_equal(a.indices, c.indices)


# ------------------------------------------------------------------------ badge
def test_badge_distance_identity_matches_explicit_outer_products():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((9, 4)).astype(np.float32)
    z = rng.standard_normal((9, 6)).astype(np.float32)
    g = np.stack([np.outer(a[i], z[i]).ravel() for i in range(9)])
    g_sq = (a.astype(np.float64) ** 2).sum(1) * (z.astype(np.float64) ** 2).sum(1)
    got = gradient_embedding_sq_distances(
        torch.from_numpy(a), torch.from_numpy(z), g_sq, 4, np.empty(9, np.float32), np.empty(9, np.float32)
    )
    assert np.allclose(got, ((g - g[4]) ** 2).sum(1), rtol=1e-4, atol=1e-4)


def test_badge_never_draws_a_point_of_zero_mass():
    # ten copies of A and one B: after any first pick the second must differ from it
    x = np.array([[1.0, 0.2]] * 10 + [[-0.3, 1.0]] + [[2.0, 2.0]], np.float32)
    probe = Probe.from_arrays(np.array([[1, 0], [0, 1]], np.float32), np.zeros(2, np.float32))
    for seed in range(6):
        res = get_strategy("badge").select(x, [11], [0], 2, n_classes=2, seed=seed, probe=probe)
        assert 10 in res.indices.tolist()
        assert np.isnan(res.scores[0]) and res.scores[1] > 0


# --------------------------------------------------------------------- alfa_mix
def test_alfa_mix_candidates_flip_towards_an_anchor():
    # logits difference 2 * x0; anchors: class 0 at (-1, 0), class 1 at (1, 0)
    w = np.array([[-1, 0], [1, 0]], np.float32)
    probe = Probe.from_arrays(w, np.zeros(2, np.float32))
    far = np.column_stack([np.full(20, 5.0), np.linspace(-1, 1, 20)])
    far[-1, 1] = 60.0  # its uncapped alpha would exceed 1 and flip it; capped at eps it must not
    boundary = np.array([[1e-4, 0.5], [1e-4, -0.5]])
    labelled = np.array([[-1, 0], [1, 0]])
    x = np.concatenate([labelled, far, boundary]).astype(np.float32)
    # K = 3 with class 2 never labelled: only two anchors
    res = get_strategy("alfa_mix").select(
        x,
        [0, 1],
        [0, 1],
        4,
        n_classes=3,
        seed=0,
        probe=Probe.from_arrays(np.vstack([w, [[0, 0]]]).astype(np.float32), np.array([0, 0, -50], np.float32)),
    )
    assert res.indices[:2].tolist() == [22, 23]  # the two flipping points, then random fill
    assert res.scores.tolist() == [1.0, 1.0, 0.0, 0.0]
    # enough candidates: one per k-means cluster of their normalised embeddings
    groups = np.concatenate([[[1e-4, 3.0]] * 3, [[1e-4, -3.0]] * 3]) + [[0, 0.01]] * 6 * np.arange(6)[:, None]
    x2 = np.concatenate([labelled, far, groups]).astype(np.float32)
    res2 = get_strategy("alfa_mix").select(x2, [0, 1], [0, 1], 2, n_classes=2, seed=0, probe=probe)
    assert sorted((res2.indices - 22) // 3) == [0, 1]


# ------------------------------------------------- K = 2, K = 1000, missing class
@pytest.mark.parametrize("name", ALL)
def test_k_2_and_k_1000(name):
    rng = np.random.default_rng(1)
    x2, y2 = make_blobs(n_samples=150, n_features=6, centers=2, random_state=1)
    x2 = x2.astype(np.float32)
    lab2 = rng.choice(150, 10, replace=False)
    r2 = get_strategy(name).select(x2, lab2, y2[lab2], 5, n_classes=2, seed=0)
    assert len(set(r2.indices.tolist())) == 5
    x = rng.standard_normal((1100, 6)).astype(np.float32)
    lab = rng.choice(1100, 40, replace=False)
    labels = rng.integers(0, 1000, size=40)
    r = get_strategy(name).select(x, lab, labels, 5, n_classes=1000, seed=0)
    assert len(set(r.indices.tolist())) == 5 and not np.isin(r.indices, lab).any()


@pytest.mark.parametrize("name", LABEL_STRATEGIES)
def test_a_class_with_no_label_yet(name, pool):
    x, y, labeled, _ = pool
    keep = labeled[y[labeled] != 3]  # class 3 has no label; K stays 4
    res = get_strategy(name).select(x, keep, y[keep], 6, n_classes=4, seed=0)
    assert len(set(res.indices.tolist())) == 6


# -------------------------------------------- block loops keep the last partial block
def test_nan_in_the_last_partial_block_is_found(monkeypatch):
    monkeypatch.setattr(val_mod, "FINITE_CHECK_ROWS", 7)
    x = np.ones((23, 3), np.float32)
    x[22, 1] = np.nan
    with pytest.raises(InvalidFeaturesError, match="row 22"):
        get_strategy("random").select(x, [], None, 2, n_classes=2, seed=0)


def test_finite_check_finds_every_kind_of_bad_row_and_no_false_one(monkeypatch):
    """The check sums rows with one product: NaN, +inf, -inf and +inf beside -inf in one row are
    found (their row named); huge finite rows, whose sum overflows, are not refused."""
    monkeypatch.setattr(val_mod, "FINITE_CHECK_ROWS", 5)
    base = np.ones((12, 4), np.float32)
    base[2] = [3e38, 3e38, -1.0, 2.0]  # finite, but its sum overflows float32
    val_mod.check_finite(base)
    for row, values in [
        (7, [np.nan, 0, 0, 0]),
        (11, [0, np.inf, 0, 0]),
        (4, [0, 0, -np.inf, 0]),
        (9, [np.inf, -np.inf, 1, 1]),
    ]:
        x = base.copy()
        x[row] = values
        with pytest.raises(InvalidFeaturesError, match=f"first at row {row}\\)"):
            val_mod.check_finite(x)
    with pytest.raises(InvalidFeaturesError, match="first at row 3"):
        val_mod.check_finite(np.where(np.arange(12)[:, None] == 3, np.nan, 1.0))  # float64 input too


@pytest.mark.parametrize(
    "name",
    ["least_confidence", "margin", "entropy", "coreset", "badge", "centroid", "typiclust", "probcover", "alfa_mix"],
)
def test_tiny_blocks_give_the_same_selection(monkeypatch, name, pool):
    x, y, labeled, probe = pool
    expected = _select(name, pool, budget=8, seed=2)
    for mod, attr, value in [
        (km, "BLOCK_ROWS", 7),
        (nb, "BLOCK_ROWS", 7),
        (nb, "TILE_ELEMENTS", 7 * 11),
        (probe_mod, "INFERENCE_BLOCK_ROWS", 7),
        (dropout_mod, "DROPOUT_BLOCK_ROWS", 5),
        (ctx_mod, "EMBED_BLOCK_ROWS", 7),
        (val_mod, "FINITE_CHECK_ROWS", 7),
        (unc_mod, "INFERENCE_BLOCK_ROWS", 7),
        (badge_mod, "INFERENCE_BLOCK_ROWS", 7),
        (badge_mod, "BLOCK_ROWS", 7),
        (coreset_mod, "BLOCK_ROWS", 7),
        (alfa_mod, "ALFA_BLOCK_ROWS", 3),
        (pcg_mod, "PROBCOVER_TILE_ROWS", 13),
    ]:
        monkeypatch.setattr(mod, attr, value)
    got = _select(name, pool, budget=8, seed=2)
    assert np.array_equal(got.indices, expected.indices)
    assert np.allclose(got.scores, expected.scores, rtol=1e-4, equal_nan=True)


@pytest.mark.parametrize("name", ["bald", "power_bald", "dropquery"])
def test_tiny_blocks_still_score_every_row(monkeypatch, name, pool):
    monkeypatch.setattr(dropout_mod, "DROPOUT_BLOCK_ROWS", 7)  # 240 = 34 x 7 + 2
    monkeypatch.setattr(probe_mod, "INFERENCE_BLOCK_ROWS", 7)
    x, y, labeled, probe = pool
    cand = np.setdiff1d(np.arange(236, 240), labeled)  # only rows of the last partial block
    res = _select(name, pool, budget=len(cand), seed=0, candidates=cand)
    assert sorted(res.indices.tolist()) == cand.tolist()
    assert np.isfinite(res.scores).all()


def test_names_table_matches_the_registry():
    from al_core.learn.strategies import list_strategies, seed_strategies
    from al_core.learn.strategy_names import seed_strategy_names, strategy_names

    assert list(strategy_names()) == list_strategies()
    assert list(seed_strategy_names()) == seed_strategies()
