"""k-means (reference semantics) and the blocked distance helpers."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

import al_core.learn.kmeans as km
import al_core.learn.neighbours as nb
from al_core.learn.kmeans import KMeansResult, kmeans, nearest_to_centroids
from al_core.learn.neighbours import mean_knn_sq_distances, min_sq_distances, sq_distances_to
from al_core.learn.points import Points, l2_normalize


def _datasets():
    rng = np.random.default_rng(0)
    blobs, _ = make_blobs(n_samples=3000, n_features=24, centers=12, cluster_std=4.0, random_state=1)
    aniso = rng.standard_normal((2000, 16)) @ rng.standard_normal((16, 16))
    gauss = rng.standard_normal((2500, 32))
    embed_like = l2_normalize(make_blobs(n_samples=3000, n_features=48, centers=30, cluster_std=6.0, random_state=2)[0])
    return {
        "blobs": (blobs.astype(np.float32), 12),
        "aniso": (aniso.astype(np.float32), 20),
        "gauss": (gauss.astype(np.float32), 50),
        "normalised": (embed_like.astype(np.float32), 25),
    }


DATA = _datasets()


@pytest.mark.parametrize("name", sorted(DATA))
@pytest.mark.parametrize("seed", [0, 7])
def test_inertia_within_one_percent_of_sklearn(name, seed):
    x, k = DATA[name]
    ours = kmeans(x, k, seed=seed)
    ref = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=100, tol=1e-4, random_state=seed).fit(x)
    assert ours.inertia <= 1.01 * ref.inertia_, (ours.inertia, ref.inertia_)
    # the inertia reported is the real one of the labels and centroids returned
    direct = ((x - ours.centroids[ours.labels]) ** 2).sum(dtype=np.float64)
    assert ours.inertia == pytest.approx(direct, rel=1e-4)


def test_labels_are_nearest_centroids_and_deterministic():
    x, k = DATA["blobs"]
    a = kmeans(x, k, seed=3)
    b = kmeans(x, k, seed=3)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.centroids, b.centroids)
    d2 = ((x[:, None, :] - a.centroids[None, :, :]) ** 2).sum(-1)
    best = d2.min(axis=1)
    assert np.allclose(d2[np.arange(len(x)), a.labels], best, rtol=1e-4, atol=1e-3)
    c = kmeans(x, k, seed=4)
    assert not np.array_equal(a.centroids, c.centroids)


def test_nearest_to_centroids_is_nearest_member():
    x, k = DATA["gauss"]
    res = kmeans(x, k, seed=1)
    pos, d2 = nearest_to_centroids(res)
    assert len(set(pos.tolist())) == k
    for c in range(k):
        members = np.flatnonzero(res.labels == c)
        dist = ((x[members] - res.centroids[c]) ** 2).sum(1)
        assert res.labels[pos[c]] == c
        assert dist.min() == pytest.approx(((x[pos[c]] - res.centroids[c]) ** 2).sum(), rel=1e-4, abs=1e-5)
        assert d2[c] == pytest.approx(dist.min(), rel=1e-4, abs=1e-5)


def test_final_distances_within_their_bound_and_exact_where_they_decide(monkeypatch):
    # points far from the origin (a large common offset): the expanded form loses digits there
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3000, 40)) + 30.0).astype(np.float32)
    monkeypatch.setattr(km, "ASSIGN_ROWS", 256)  # several blocks
    res = kmeans(x, 8, seed=2)
    exact = ((x.astype(np.float64) - res.centroids[res.labels].astype(np.float64)) ** 2).sum(1)
    x_sq = (x.astype(np.float64) ** 2).sum(1)
    c_sq = (res.centroids.astype(np.float64) ** 2).sum(1)[res.labels]
    bound = km._expanded_error_bound(x.shape[1]) * (x_sq + c_sq)
    assert np.all(np.abs(res.sq_distances - exact) <= bound + 1e-3 * exact)
    pos, d2 = nearest_to_centroids(res)
    for c in range(8):
        members = np.flatnonzero(res.labels == c)
        assert pos[c] == members[np.argmin(exact[members])]  # decided on exact distances
        assert d2[c] == pytest.approx(exact[pos[c]], rel=1e-5)


def test_nearest_to_centroids_ties_and_empty_cluster():
    # cluster 0: positions 0,1 (equal distance: the smaller wins); cluster 1: position 2;
    # cluster 2 empty: takes the unchosen point farthest from its own centroid (position 3,
    # ties with 4 broken by index).
    res = KMeansResult(
        centroids=np.zeros((3, 2), np.float32),
        labels=np.array([0, 0, 1, 1, 1]),
        sq_distances=np.array([1.0, 1.0, 0.5, 9.0, 9.0], np.float32),
        inertia=20.5,
        n_iter=1,
        n_train=5,
    )
    pos, d2 = nearest_to_centroids(res)
    assert pos.tolist() == [0, 2, 3]
    assert d2.tolist() == [1.0, 0.5, 9.0]


def test_duplicate_points_fewer_distinct_than_k():
    x = np.repeat(np.eye(3, dtype=np.float32), 10, axis=0)  # 3 distinct points, 30 rows
    res = kmeans(x, 5, seed=0)
    pos, _ = nearest_to_centroids(res)
    assert len(set(pos.tolist())) == 5
    assert res.inertia == pytest.approx(0.0, abs=1e-6)


def test_k_equals_n_and_invalid_k():
    x = np.random.default_rng(0).standard_normal((12, 4)).astype(np.float32)
    res = kmeans(x, 12, seed=0)
    assert sorted(nearest_to_centroids(res)[0].tolist()) == list(range(12))
    with pytest.raises(ValueError, match="k-means needs"):
        kmeans(x, 13, seed=0)
    with pytest.raises(ValueError, match="k-means needs"):
        kmeans(x, 0, seed=0)


def test_subsampling_only_above_the_constant():
    assert km.train_size(km.SUBSAMPLE_ABOVE, 500) == km.SUBSAMPLE_ABOVE  # at the constant: every point
    assert km.train_size(10**6, 100) == max(km.SUBSAMPLE_ABOVE, km.TRAIN_POINTS_PER_CLUSTER * 100)
    assert km.train_size(10**6, 500) == km.TRAIN_POINTS_PER_CLUSTER * 500
    x, _ = DATA["normalised"]
    k = 4
    full = kmeans(x, k, seed=0)
    assert full.n_train == len(x) and len(x) <= km.SUBSAMPLE_ABOVE
    sub = kmeans(x, k, seed=0, subsample_above=1000)
    assert sub.n_train == max(1000, km.TRAIN_POINTS_PER_CLUSTER * k) == 1024
    assert sub.labels.shape == (len(x),)  # every point still assigned
    assert sub.inertia <= 1.05 * full.inertia
    assert np.array_equal(sub.labels, kmeans(x, k, seed=0, subsample_above=1000).labels)


def test_points_view_rows_normalised_and_partial_blocks():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((50, 5)).astype(np.float32)
    rows = np.array([3, 49, 0, 17, 22, 8, 9])
    p = Points(f, rows=rows, normalize=True)
    expected = f[rows] / np.linalg.norm(f[rows], axis=1, keepdims=True)
    assert np.allclose(p.materialize(), expected, atol=1e-6)
    got = np.concatenate([b for _, b in p.blocks(3)])  # 3 + 3 + 1: the last partial block kept
    assert np.allclose(got, expected, atol=1e-6)
    assert np.allclose(p.take(np.array([6, 0])), expected[[6, 0]], atol=1e-6)
    # zero vector stays zero
    assert np.array_equal(l2_normalize(np.zeros((1, 3), np.float32)), np.zeros((1, 3), np.float32))


def test_blocked_helpers_match_brute_force_with_tiny_blocks(monkeypatch):
    monkeypatch.setattr(km, "BLOCK_ROWS", 7)
    monkeypatch.setattr(nb, "BLOCK_ROWS", 7)
    monkeypatch.setattr(nb, "TILE_ELEMENTS", 7 * 5)  # forces several reference blocks too
    rng = np.random.default_rng(1)
    q = rng.standard_normal((23, 6)).astype(np.float32)
    r = rng.standard_normal((12, 6)).astype(np.float32)
    r[5] = r[3]  # a tie: the smaller reference index wins
    d2 = ((q[:, None] - r[None]) ** 2).sum(-1)
    best, arg = min_sq_distances(q, r)
    assert np.allclose(best, d2.min(1), rtol=1e-4, atol=1e-4)
    assert np.array_equal(arg, d2.argmin(1))
    assert not np.any(arg == 5)
    # the last partial block of queries is computed (23 = 3 x 7 + 2)
    assert np.isfinite(best[-2:]).all()
    exact = sq_distances_to(q, r[0])
    assert np.allclose(exact, ((q - r[0]) ** 2).sum(1), rtol=1e-5, atol=1e-5)
    knn = mean_knn_sq_distances(q, 4)
    full = ((q[:, None] - q[None]) ** 2).sum(-1)
    np.fill_diagonal(full, np.inf)
    assert np.allclose(knn, np.sort(full, 1)[:, :4].mean(1), rtol=1e-4, atol=1e-4)
    res = kmeans(q, 4, seed=0)
    ref = KMeans(n_clusters=4, n_init=1, max_iter=100, tol=1e-4, random_state=0).fit(q)
    assert res.inertia <= 1.01 * ref.inertia_


def test_points_of_strided_or_float64_features_match_the_plain_formula():
    """Rows are gathered by torch only from C-ordered float32 features; other layouts give the same points."""
    rng = np.random.default_rng(4)
    base = rng.standard_normal((40, 6)).astype(np.float32)
    rows = np.array([5, 0, 39, 12])
    shift, scale = rng.standard_normal(6).astype(np.float32), rng.uniform(0.5, 2, 6).astype(np.float32)
    expected = l2_normalize((base[rows] - shift) * scale)
    for feats in (base, base[::-1][::-1], np.asfortranarray(base), base.astype(np.float64), base[:, ::-1][:, ::-1]):
        p = Points(feats, rows=rows, normalize=True, shift=shift, scale=scale)
        assert np.allclose(p.materialize(), expected, atol=1e-6)
        assert np.allclose(p.take(np.array([3, 1])), expected[[3, 1]], atol=1e-6)
        assert np.allclose(np.concatenate([b for _, b in p.blocks(3, reuse=False)]), expected, atol=1e-6)
    flipped = Points(base[::-1], rows=rows)
    assert np.array_equal(flipped.materialize(), base[::-1][rows])
