"""coreset and badge without an N x D embedding matrix: the blocked embeddings
(PoolEmbeddings) against Probe.embed, each strategy against a plain reference
written here (coreset: brute-force greedy k-center on full N x N distances;
badge: k-means++ seeding on the explicit gradient embeddings a (x) z, drawing
from the same derived random stream), for every kind of pool (all rows, a
subset above DENSE_POOL_FRACTION, one below it), and a memory check."""

import tracemalloc

import numpy as np
import pytest

import al_core.learn.strategies.context as ctx_mod
import al_core.learn.strategies.coreset as coreset_mod
from al_core.learn.probe import Probe
from al_core.learn.strategies import get_strategy
from al_core.learn.strategies.badge import _STREAM_SAMPLING
from al_core.learn.strategies.base import derived_rng
from al_core.learn.strategies.context import PoolEmbeddings
from al_core.learn.strategies.validation import validate

_BN_EPS = 1e-5


def _random_probe(d, k, rng, offset=4.0):
    """A probe with a non-trivial BatchNorm (mean and variance per dimension)."""
    w = rng.standard_normal((k, d)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    mean = (offset + rng.standard_normal(d)).astype(np.float32)
    var = rng.uniform(0.5, 2.0, d).astype(np.float32)
    return Probe.from_arrays(w, b, running_mean=mean, running_var=var)


def _embed64(probe, x):
    mean, inv_std = (t.numpy().astype(np.float64) for t in probe.embedding_normalization)
    return (x.astype(np.float64) - mean) * inv_std


def _data(n=150, d=10, k=3, seed=0, offset=4.0):
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.standard_normal((k, d))
    y = rng.integers(k, size=n)
    x = (centres[y] + rng.standard_normal((n, d)) + offset).astype(np.float32)
    return x, y, _random_probe(d, k, rng, offset)


def _pool(n, labeled, candidates):
    rows = np.arange(n) if candidates is None else np.sort(np.asarray(candidates))
    return rows[~np.isin(rows, labeled)]


# the three kinds of pool: every unlabelled row; a subset of more than
# DENSE_POOL_FRACTION of the rows (read densely); a smaller one (gathered)
POOLS = ["all", "dense_subset", "gathered"]


def _candidates(kind, n, seed=1):
    rng = np.random.default_rng(seed)
    if kind == "all":
        return None
    share = 0.8 if kind == "dense_subset" else 0.3
    return np.sort(rng.choice(n, int(share * n), replace=False))


# ------------------------------------------------------------- PoolEmbeddings
@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("kind", POOLS)
def test_pool_embeddings_match_probe_embed(monkeypatch, tmp_path, kind, mapped):
    monkeypatch.setattr(ctx_mod, "EMBED_BLOCK_ROWS", 7)
    monkeypatch.setattr(ctx_mod, "PRODUCT_BLOCK_ROWS", 5)
    x, y, probe = _data(n=101)
    if mapped:  # a read-only memory map, as the pipeline passes features
        np.save(tmp_path / "x.npy", x)
        x = np.load(tmp_path / "x.npy", mmap_mode="r")
    labeled = np.array([3, 50, 99])
    cand = _candidates(kind, 101)
    strat = get_strategy("coreset")
    ctx = validate(strat, x, labeled, y[labeled], 1, n_classes=3, seed=0, probe=probe, candidates=cand)
    emb = PoolEmbeddings(ctx, probe)
    pool = _pool(101, labeled, cand)
    assert np.array_equal(ctx.pool, pool) and emb.n == pool.shape[0]
    want = probe.embed(x[pool])
    got = np.full_like(want, np.nan)
    for start, zb in emb.blocks():
        got[start : start + zb.shape[0]] = zb.numpy()
    assert np.array_equal(got, want)  # the same operations as Probe.embed: bit for bit
    some = np.array([0, emb.n - 1, 5, 5, 2])
    assert np.array_equal(emb.rows(some), want[some])
    v = np.random.default_rng(2).standard_normal(x.shape[1]).astype(np.float32)
    out = np.empty(emb.n, np.float32)
    emb.dot(v, out)
    assert np.allclose(out, _embed64(probe, x[pool]) @ v, rtol=1e-5, atol=1e-4)
    # the features are never written (a read-only memory map must stay usable)
    assert np.array_equal(x, _data(n=101)[0])


def test_products_are_centred_first_no_cancellation():
    # a large common offset: x . (inv_std v) - mean . (inv_std v) would lose the
    # small differences between rows to cancellation in float32; centring first does not
    rng = np.random.default_rng(0)
    n, d = 64, 256
    mean = np.full(d, 1000.0, np.float32)
    x = (mean + rng.standard_normal((n, d)).astype(np.float32) * 0.01).astype(np.float32)
    probe = Probe.from_arrays(
        np.zeros((2, d), np.float32),
        np.zeros(2, np.float32),
        running_mean=mean,
        running_var=np.full(d, 1e-4, np.float32),
    )
    ctx = validate(get_strategy("coreset"), x, [0], [0], 1, n_classes=2, seed=0, probe=probe, candidates=None)
    emb = PoolEmbeddings(ctx, probe)
    z64 = _embed64(probe, x[ctx.pool])
    v = z64[0].astype(np.float32)
    out = np.empty(emb.n, np.float32)
    emb.dot(v, out)
    exact = z64 @ v.astype(np.float64)
    assert np.max(np.abs(out - exact)) <= 1e-4 * np.max(np.abs(exact))


# -------------------------------------------------------------------- coreset
def _coreset_reference(z, labeled, pool, budget):
    """Greedy k-center written plainly: full N x N squared distances (float64);
    the farthest pool row from every labelled or chosen row, ties: smallest index."""
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    dist = d2[:, labeled].min(axis=1)
    in_pool = np.zeros(z.shape[0], bool)
    in_pool[pool] = True
    chosen, scores = [], []
    for _ in range(budget):
        key = np.where(in_pool, dist, -np.inf)
        i = int(np.flatnonzero(key == key.max())[0])  # ties: the smallest index
        chosen.append(i)
        scores.append(np.sqrt(dist[i]))
        in_pool[i] = False
        dist = np.minimum(dist, d2[:, i])
    return np.array(chosen), np.array(scores)


@pytest.mark.parametrize("kind", POOLS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coreset_equals_brute_force_greedy_k_center(kind, seed):
    x, y, probe = _data(n=160, d=12, seed=seed)
    labeled = np.random.default_rng(seed).choice(160, 5, replace=False)
    cand = _candidates(kind, 160, seed)
    budget = 25
    res = get_strategy("coreset").select(
        x, labeled, y[labeled], budget, n_classes=3, seed=0, probe=probe, candidates=cand
    )
    want, want_scores = _coreset_reference(_embed64(probe, x), labeled, _pool(160, labeled, cand), budget)
    assert res.indices.tolist() == want.tolist()
    assert np.allclose(res.scores, want_scores, rtol=1e-4, atol=1e-3)


def test_coreset_ties_on_a_lattice_go_to_the_smallest_index(monkeypatch):
    # integer lattice points, identity embedding: every distance is exact and most
    # picks are ties; the rows are shuffled so that index order is not geometric order
    g = np.array([(i, j) for i in range(-4, 5) for j in range(-4, 5)], np.float32)
    g = g[np.random.default_rng(3).permutation(g.shape[0])]
    x = np.concatenate([np.zeros((1, 2), np.float32), g, g[:10]])  # row 0 the origin, plus duplicates
    probe = Probe.from_arrays(np.zeros((2, 2), np.float32), np.zeros(2, np.float32))  # z = x
    budget = 40
    want, want_scores = _coreset_reference(x.astype(np.float64), np.array([0]), np.arange(1, x.shape[0]), budget)
    assert len(set(np.round(want_scores**2).tolist())) < budget  # there are ties
    for first_rows in (coreset_mod.REFRESH_FIRST_ROWS, 1):
        monkeypatch.setattr(coreset_mod, "REFRESH_FIRST_ROWS", first_rows)
        res = get_strategy("coreset").select(x, [0], [0], budget, n_classes=2, seed=0, probe=probe)
        assert res.indices.tolist() == want.tolist()
        assert np.allclose(res.scores, want_scores, atol=1e-5)


def test_coreset_lazy_greedy_with_tiny_batches_and_tiles(monkeypatch):
    # many stale rows, refreshed a few at a time against centres in tiles of one or two
    x, y, probe = _data(n=200, d=3, seed=4)  # low dimension: each centre lowers many distances
    labeled = np.array([0, 1])
    want = get_strategy("coreset").select(x, labeled, y[labeled], 60, n_classes=3, seed=0, probe=probe)
    ref, ref_scores = _coreset_reference(_embed64(probe, x), labeled, np.arange(2, 200), 60)
    assert want.indices.tolist() == ref.tolist()
    monkeypatch.setattr(coreset_mod, "REFRESH_FIRST_ROWS", 1)
    monkeypatch.setattr(coreset_mod, "BLOCK_ROWS", 3)
    monkeypatch.setattr(coreset_mod, "REFRESH_TILE_ELEMENTS", 5)
    monkeypatch.setattr(ctx_mod, "EMBED_BLOCK_ROWS", 7)
    got = get_strategy("coreset").select(x, labeled, y[labeled], 60, n_classes=3, seed=0, probe=probe)
    assert got.indices.tolist() == ref.tolist()
    assert np.allclose(got.scores, ref_scores, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------- badge
def _badge_reference(probe, x, pool, budget, seed):
    """k-means++ seeding on explicit gradient embeddings g = a (x) z (float64),
    drawing as BadgeStrategy does from derived_rng(seed, _STREAM_SAMPLING)."""
    z = _embed64(probe, x[pool])
    logits = z @ probe.linear_weight.T.astype(np.float64) + probe.linear_bias
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    a = p.copy()
    a[np.arange(len(pool)), p.argmax(axis=1)] -= 1.0
    g = np.stack([np.outer(a[j], z[j]).ravel() for j in range(len(pool))])
    rng = derived_rng(seed, _STREAM_SAMPLING)
    n = len(pool)
    dist = np.full(n, np.inf)
    taken = np.zeros(n, bool)
    chosen, scores = [], []
    for b in range(budget):
        if b == 0:
            i = int(rng.integers(n))
            scores.append(np.nan)
        else:
            cum = np.cumsum(dist)
            assert cum[-1] > 0
            i = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
            scores.append(dist[i])
        chosen.append(i)
        taken[i] = True
        dist = np.minimum(dist, ((g - g[i]) ** 2).sum(axis=1))
        dist[taken] = 0.0
    return pool[np.array(chosen)], np.array(scores)


@pytest.mark.parametrize("kind", POOLS)
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_badge_equals_explicit_gradient_embedding_kmeanspp(kind, seed):
    x, y, probe = _data(n=150, d=8, k=3, seed=seed)
    labeled = np.random.default_rng(seed).choice(150, 6, replace=False)
    cand = _candidates(kind, 150, seed)
    budget = 20
    res = get_strategy("badge").select(
        x, labeled, y[labeled], budget, n_classes=3, seed=seed, probe=probe, candidates=cand
    )
    want, want_scores = _badge_reference(probe, x, _pool(150, labeled, cand), budget, seed)
    assert res.indices.tolist() == want.tolist()
    assert np.allclose(res.scores, want_scores, rtol=1e-3, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("name", ["coreset", "badge"])
@pytest.mark.parametrize("kind", POOLS)
def test_tiny_blocks_give_the_same_selection(monkeypatch, name, kind):
    x, y, probe = _data(n=120, d=6, seed=5)
    labeled = np.array([1, 7, 30, 90])
    cand = _candidates(kind, 120)

    def run():
        return get_strategy(name).select(x, labeled, y[labeled], 12, n_classes=3, seed=1, probe=probe, candidates=cand)

    expected = run()
    monkeypatch.setattr(ctx_mod, "EMBED_BLOCK_ROWS", 7)
    monkeypatch.setattr(ctx_mod, "PRODUCT_BLOCK_ROWS", 5)
    monkeypatch.setattr(coreset_mod, "BLOCK_ROWS", 2)
    monkeypatch.setattr(coreset_mod, "REFRESH_FIRST_ROWS", 1)
    got = run()
    assert np.array_equal(got.indices, expected.indices)
    assert np.allclose(got.scores, expected.scores, rtol=1e-4, equal_nan=True)


# --------------------------------------------------------------------- memory
@pytest.mark.parametrize("name", ["coreset", "badge"])
@pytest.mark.parametrize("kind", ["all", "dense_subset"])
def test_no_pool_embedding_matrix_is_built(monkeypatch, name, kind):
    # the pool's embeddings would be n x D float32; numpy allocations (traced by
    # tracemalloc) must stay far below that, and the materialising helper unused
    n, d = 20_000, 256
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    probe = _random_probe(d, 2, rng, offset=0.0)
    labeled = np.arange(0, n, 1000)
    y = np.zeros(labeled.shape[0], np.int64)

    def no_matrix(*a, **k):
        raise AssertionError("pool_embeddings builds the pool's n x D embedding matrix")

    monkeypatch.setattr(ctx_mod.SelectionContext, "pool_embeddings", no_matrix)
    strat = get_strategy(name)
    ctx = validate(strat, x, labeled, y, 20, n_classes=2, seed=0, probe=probe, candidates=_candidates(kind, n))
    matrix_bytes = ctx.pool.shape[0] * d * 4
    tracemalloc.start()
    try:
        indices, _ = strat._select(ctx)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(set(np.asarray(indices).tolist())) == 20
    assert peak < matrix_bytes / 3, f"peak {peak} B of numpy allocations against {matrix_bytes} B of embeddings"


# ------------------------------------------------------------------ alfa_mix
def _alfa_mix_flips_reference(probe, x, pool, labeled, labels, eps_scale=0.2):
    """The specification's candidate test written plainly on the explicit embeddings (float64)."""
    z = _embed64(probe, x[pool])
    z_lab = _embed64(probe, x[labeled])
    w = probe.linear_weight.astype(np.float64)
    b = probe.linear_bias.astype(np.float64)
    logits = z @ w.T + b
    y = logits.argmax(1)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    g = p @ w
    eps = eps_scale / np.sqrt(x.shape[1])
    flips = np.zeros(len(pool), dtype=np.int64)
    for k in np.unique(labels):
        anchor = z_lab[labels == k].mean(0)
        diff = anchor - z
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha = (
                eps
                * np.linalg.norm(diff, axis=1, keepdims=True)
                * g
                / (np.linalg.norm(g, axis=1, keepdims=True) * diff + 1e-8)
            )
        alpha = np.clip(np.nan_to_num(alpha, nan=1e-8), 1e-8, eps)
        mixed = alpha * anchor + (1 - alpha) * z
        flips += (mixed @ w.T + b).argmax(1) != y
    return flips


@pytest.mark.parametrize("kind", POOLS)
def test_alfa_mix_reads_blocks_of_embeddings_like_the_plain_formula(monkeypatch, kind):
    """alfa_mix computes its embeddings block by block (no n x D matrix): with
    tiny blocks, on every kind of pool, its candidates (rows with a flip) and
    their flip counts are the plain float64 formula's."""
    import al_core.learn.strategies.alfa_mix as alfa_mod

    monkeypatch.setattr(ctx_mod, "EMBED_BLOCK_ROWS", 7)
    monkeypatch.setattr(alfa_mod, "ALFA_BLOCK_ROWS", 3)
    x, y, probe = _data(n=160, d=10, k=3, offset=0.0)
    labeled = np.array([0, 1, 2, 3, 4, 5])
    cand = _candidates(kind, 160)
    pool = _pool(160, labeled, cand)
    # a wider mixing step (eps_scale 1) so that every kind of pool has some flips
    ref = _alfa_mix_flips_reference(probe, x, pool, labeled, y[labeled], eps_scale=1.0)
    n_cand = int((ref > 0).sum())
    assert 0 < n_cand < len(pool)  # the geometry gives some candidates, not every row
    budget = n_cand + 2  # fewer candidates than B: every candidate (most flips first), then random rows
    res = get_strategy("alfa_mix", eps_scale=1.0).select(
        x, labeled, y[labeled], budget, n_classes=3, seed=0, probe=probe, candidates=cand
    )
    flipped = pool[ref > 0]
    assert set(res.indices[:n_cand].tolist()) == set(flipped.tolist())
    assert res.scores[:n_cand].tolist() == sorted(ref[ref > 0].tolist(), reverse=True)
    assert (res.scores[n_cand:] == 0).all()


# ----------------------------------------------------- candidates' embeddings
@pytest.mark.parametrize("name", ["dropquery", "alfa_mix"])
def test_no_candidate_embedding_matrix_on_a_hard_pool(monkeypatch, name):
    """On a pool where most rows become candidates, the candidates' embeddings are computed
    where k-means reads them (a sample, then blocks): numpy allocations stay far below a
    candidates x D matrix, and the picks are those of k-means on the explicit embeddings."""
    import al_core.learn.kmeans as km
    import al_core.learn.probe_dropout as dropout_mod
    from al_core.learn.points import Points
    from al_core.learn.strategies._cluster import cluster_representatives

    n, d, k = (60_000, 128, 10) if name == "dropquery" else (20_000, 128, 4)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, d), dtype=np.float32)  # one blob: every row near a boundary
    probe = _random_probe(d, k, rng, offset=0.0)
    labeled = np.arange(0, n, 800)
    y = np.arange(labeled.shape[0]) % k
    monkeypatch.setattr(km, "SUBSAMPLE_ABOVE", 2_000)  # k-means trains on a sample, assigns every candidate
    monkeypatch.setattr(km, "TRAIN_POINTS_PER_CLUSTER", 64)
    monkeypatch.setattr(km, "ASSIGN_ROWS", 256)  # buffers small against the data
    monkeypatch.setattr(dropout_mod, "DROPOUT_BLOCK_ROWS", 256)
    monkeypatch.setattr(ctx_mod, "EMBED_BLOCK_ROWS", 256)
    monkeypatch.setattr(ctx_mod.SelectionContext, "pool_embeddings", lambda *a, **kw: pytest.fail("n x D matrix"))
    strat = get_strategy(name, eps_scale=50.0) if name == "alfa_mix" else get_strategy(name)
    ctx = validate(strat, x, labeled, y, 20, n_classes=k, seed=0, probe=probe, candidates=None)
    tracemalloc.start()
    try:
        indices, _ = strat._select(ctx)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if name == "dropquery":
        mismatch = strat.mismatch(ctx)
        cand = np.flatnonzero(mismatch > 1)
    else:
        emb = PoolEmbeddings(ctx, probe)
        cand = None
    assert cand is None or cand.shape[0] > 0.5 * n  # most rows are candidates
    matrix_bytes = (n if cand is None else cand.shape[0]) * d * 4
    assert peak < matrix_bytes / 3, f"peak {peak} B of numpy allocations against {matrix_bytes} B of embeddings"
    if cand is not None:  # the same picks as k-means on the explicit (materialised) embeddings
        z = probe.embed(x[ctx.pool[cand]])
        pos, _ = cluster_representatives(Points(z, normalize=True), 20, 0)
        assert np.array_equal(np.asarray(indices), ctx.pool[cand[pos]])
    else:
        assert emb.n == ctx.pool.shape[0] and len(set(np.asarray(indices).tolist())) == 20
