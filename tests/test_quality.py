"""Label quality on arrays (al_core.quality): suspects, near-duplicates, class balance, agreement; and the SQL views."""

import numpy as np
import pytest

from al_core.catalogue.store import Store, now


# ----------------------------------------------------------------------------- suspects
def _blobs(n_per_class=12, k=4, d=16, seed=0, spread=0.4):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 4
    y = np.repeat(np.arange(k), n_per_class)
    x = (centres[y] + spread * rng.standard_normal((len(y), d))).astype(np.float32)
    return x, y


def test_fold_splits_cover_every_label_once_stratified_or_not():
    from al_core.quality.suspects import fold_splits

    y = np.array([0] * 10 + [1] * 10 + [2] * 5)
    splits = fold_splits(y, 5, seed=3)
    test = np.concatenate([te for _, te in splits])
    assert len(splits) == 5 and sorted(test.tolist()) == list(range(len(y)))
    assert all(np.bincount(y[te], minlength=3).tolist() == [2, 2, 1] for _, te in splits)  # stratified
    assert all(set(tr) | set(te) == set(range(len(y))) and not set(tr) & set(te) for tr, te in splits)
    few = np.array([0, 1, 2, 3, 0, 1])  # no class has 3 labels: plain k-fold, k = len // 2
    assert len(fold_splits(few, 5, seed=0)) == 3
    with pytest.raises(ValueError, match="at least 4 labels"):
        fold_splits(np.array([0, 1, 0]), 5, seed=0)


def test_suspects_are_the_flipped_labels_of_a_hand_built_set():
    from al_core.quality.suspects import assess_labels

    x, y = _blobs()
    given = y.copy()
    flipped = np.array([3, 17, 26, 40])  # one per class, each moved to the next class
    given[flipped] = (y[flipped] + 1) % 4
    q = assess_labels(x, given, 4, n_folds=4, seed=0)
    assert q.pred_probs.shape == (48, 4) and np.allclose(q.pred_probs.sum(axis=1), 1.0)
    assert sorted(q.order[:4].tolist()) == flipped.tolist()  # the four lowest label-quality scores
    assert set(q.suspects().tolist()) >= set(flipped.tolist())  # cleanlab flags each of them
    assert (q.suggested[flipped] == y[flipped]).all()  # and suggests the true class
    assert q.quality[flipped].max() < np.delete(q.quality, flipped).min()
    again = assess_labels(x, given, 4, n_folds=4, seed=0)
    assert np.array_equal(again.quality, q.quality)  # seeded


# ----------------------------------------------------------------------------- near-duplicates
def _with_twins(n=600, d=24, n_twins=15, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    src = rng.choice(n // 2, n_twins, replace=False)
    dst = n // 2 + rng.choice(n // 2, n_twins, replace=False)
    x[dst] = x[src] * 3.0 + 0.01 * rng.standard_normal((n_twins, d)).astype(np.float32)  # scale: cosine ignores it
    return x, {(int(min(a, b)), int(max(a, b))) for a, b in zip(src, dst, strict=True)}


def test_near_duplicates_exact_matches_brute_force_and_partitioned_finds_the_twins(monkeypatch):
    import al_core.quality.duplicates as D

    x, twins = _with_twins()
    monkeypatch.setattr(D, "QUERY_BLOCK_ROWS", 128)  # several tiles, a partial last one
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = u @ u.T
    for t in (0.999, 0.6):
        want = {(i, j) for i, j in zip(*np.nonzero(np.triu(sims >= t, k=1)), strict=True)}
        got = D.find_near_duplicates(x, t, method="exact")
        assert set(zip(got.i.tolist(), got.j.tolist(), strict=True)) == want and got.method == "exact"
        assert np.allclose(got.cosine, sims[got.i, got.j], atol=1e-5)
    monkeypatch.setattr(D, "CELL_ROWS", 64)
    part = D.find_near_duplicates(x, 0.999, method="partitioned", seed=1)
    assert part.method == "partitioned" and part.n_cells == 10
    assert set(zip(part.i.tolist(), part.j.tolist(), strict=True)) == twins
    groups = part.groups()
    assert all(groups[a] == groups[b] for a, b in twins) and len(set(groups.tolist())) == len(x) - len(twins)


def test_a_threshold_that_pairs_everything_is_a_clear_error():
    from al_core.quality.duplicates import NearDuplicateOverflow, find_near_duplicates

    x = np.ones((60, 4), np.float32) + 0.01 * np.random.default_rng(0).standard_normal((60, 4)).astype(np.float32)
    with pytest.raises(NearDuplicateOverflow, match="raise quality.near_duplicate_cosine"):
        find_near_duplicates(x, 0.5)


def test_a_batch_that_would_hold_two_near_duplicates_holds_one():
    from al_core.quality.duplicates import find_near_duplicates, replace_near_duplicates, twin_matrix

    x, twins = _with_twins()
    a, b = sorted(twins)[0]
    c, d = sorted(twins)[1]
    tw = twin_matrix(find_near_duplicates(x, 0.999))
    calls = []

    def reselect(allowed, k):
        calls.append((allowed.copy(), k))
        return np.array([b, 7][:k]), np.full(k, 0.5)  # b (a twin of a kept pick) cannot be allowed

    picks = replace_near_duplicates(np.array([a, 5, b, c, d]), np.arange(5.0), tw, np.arange(len(x)), reselect)
    assert picks.indices.tolist()[:3] == [a, 5, c] and len(picks.indices) == 5
    assert {(r["dropped"], r["twin"]) for r in picks.replacements} == {(b, a), (d, c)}
    allowed = calls[0][0]
    assert b not in allowed and d not in allowed and a not in allowed and 5 not in allowed
    # the replacement b was itself a twin (of a): dropped again and replaced by a uniform draw at last
    kept = picks.indices.tolist()
    assert not any((min(i, j), max(i, j)) in twins for i in kept for j in kept if i != j)
    assert len(set(kept)) == 5


# ----------------------------------------------------------------------------- class balance
def test_class_quotas_fill_the_fewest_labelled_classes_first():
    from al_core.learn.strategies._balance import class_quotas

    assert class_quotas(np.array([5, 0, 1, 5]), np.array([9, 9, 9, 9]), 4).tolist() == [0, 3, 1, 0]
    assert class_quotas(np.array([5, 0, 1, 5]), np.array([9, 1, 9, 0]), 4).tolist() == [0, 1, 3, 0]
    assert class_quotas(np.array([0, 0]), np.array([1, 0]), 3).tolist() == [1, 0]  # fewer candidates than slots


def test_balanced_representatives_take_the_nearest_member_within_the_quotas():
    from al_core.learn.points import Points
    from al_core.learn.strategies._balance import balanced_representatives
    from al_core.learn.strategies._cluster import cluster_representatives

    # three tight clusters of 4 points on a line; members' distance to their centre grows with their position
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    offsets = np.array([[0.0, 0.0], [0.1, 0.0], [-0.2, 0.0], [0.0, 0.3]])
    x = (centres[:, None, :] + offsets[None, :, :]).reshape(12, 2).astype(np.float32)
    pred = np.array([0, 0, 1, 2, 0, 0, 0, 0, 2, 0, 1, 1])
    plain, _ = cluster_representatives(Points(x), 3, seed=0)
    # labelled: class 0 has plenty; 1 and 2 one slot each by water-filling, 0 none while 1 and 2 have candidates
    pos = balanced_representatives(Points(x), 3, seed=0, predicted=pred, labelled_counts=np.array([9, 1, 1]))
    assert sorted(plain.tolist()) == [0, 4, 8]  # the members nearest each centre
    by_cluster = {int(p) // 4: int(p) for p in pos}
    assert by_cluster[1] == 4  # only class 0 there: its nearest member, once the quotas are spent elsewhere
    assert {by_cluster[0], by_cluster[2]} in ({2, 8}, {3, 10})  # one of class 1 and one of class 2, nearest first
    assert pred[by_cluster[0]] != pred[by_cluster[2]] and 0 not in {pred[by_cluster[0]], pred[by_cluster[2]]}


def test_dropquery_class_balance_is_off_by_default_and_favours_the_thin_classes():
    from al_core.learn.probe import Probe
    from al_core.learn.strategies import get_strategy

    x, y = _blobs(n_per_class=60, k=4, d=16, seed=2, spread=2.5)
    labeled = np.concatenate([np.flatnonzero(y == 0)[:20]] + [np.flatnonzero(y == c)[:2] for c in (1, 2, 3)])
    probe = Probe(4, seed=0).fit(x[labeled], y[labeled])
    kw = dict(n_classes=4, seed=5, probe=probe)
    plain = get_strategy("dropquery").select(x, labeled, y[labeled], 8, **kw)
    assert plain == get_strategy("dropquery", class_balance=False).select(x, labeled, y[labeled], 8, **kw)
    bal = get_strategy("dropquery", class_balance=True).select(x, labeled, y[labeled], 8, **kw)
    assert len(set(bal.indices.tolist())) == 8 and not set(bal.indices.tolist()) & set(labeled.tolist())
    n0 = lambda r: int((probe.predict(x[r.indices]) == 0).sum())
    assert n0(bal) <= n0(plain) and bal != plain
    with pytest.raises(Exception, match="class_balance"):
        get_strategy("dropquery", class_balance="yes")


def test_class_balance_names_empty_and_thin_classes():
    from al_core.quality.balance import class_balance

    b = class_balance(("cat", "dog", "frog"), np.array([0] * 9 + [1]), np.array([0, 1, 2, 2]), floor=0.5)
    assert b.label_counts == (9, 1, 0) and b.predicted_share == (0.25, 0.25, 0.5)
    assert len(b.warnings) == 2 and "'dog' has 1 of 10" in b.warnings[0] and "'frog' has no" in b.warnings[1]
    assert class_balance(("a", "b"), np.array([0, 1, 1]), np.array([], np.int64), 0.25).warnings == ()


def test_the_class_balance_table_of_strategies_matches_the_registry():
    from al_core.learn.strategies import get_strategy, list_strategies
    from al_core.learn.strategy_names import CLASS_BALANCE_STRATEGIES

    have = tuple(n for n in list_strategies() if "class_balance" in get_strategy(n).get_params())
    assert have == CLASS_BALANCE_STRATEGIES


def test_class_balance_with_a_strategy_without_a_diverse_pick_is_refused():
    from al_core.config import ConfigError, from_dict

    assert from_dict({"selection": {"class_balance": True}}).selection.class_balance is True
    with pytest.raises(ConfigError, match="class_balance applies to the diverse pick of dropquery"):
        from_dict({"selection": {"class_balance": True, "query_strategy": "margin"}})


# ----------------------------------------------------------------------------- agreement
WIKIPEDIA_FLEISS = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def _votes_of_table(table, classes):
    votes = []
    for i, row in enumerate(table):
        labels = [classes[c] for c, n in enumerate(row) for _ in range(n)]
        votes += [(f"img{i}", f"rater{j:02d}", lab) for j, lab in enumerate(labels)]
    return votes


def test_fleiss_kappa_of_a_hand_computed_case():
    from al_core.quality.agreement import agreement

    classes = list("abcde")
    a = agreement(_votes_of_table(WIKIPEDIA_FLEISS, classes), {}, classes)
    # by hand: p_j = (20, 28, 39, 21, 32) / 140, P_e = sum p_j^2 = 0.212755; P_i = (sum n_ij^2 - 14) / 182,
    # mean P_i = 3.780220 / 10 = 0.378022; kappa = (0.378022 - 0.212755) / (1 - 0.212755) = 0.209930
    assert a["fleiss_kappa"] == pytest.approx(0.209930, abs=1e-5)
    assert a["fleiss_m"] == 14 and a["fleiss_images"] == 10 and a["n_images_multi"] == 10
    assert a["images"][0]["agreement"] == pytest.approx(46 / 182) or a["images"][0]["image_id"] == "img0"
    by_id = {im["image_id"]: im for im in a["images"]}
    assert by_id["img0"]["agreement"] == 1.0 and by_id["img1"]["agreement"] == pytest.approx(46 / 182)
    assert by_id["img5"]["votes"] == {"a": 7, "b": 7}


def _two_annotators(n=40, seed=0):
    rng = np.random.default_rng(seed)
    classes = ["cat", "dog", "frog"]
    truth = rng.integers(0, 3, n)
    a = np.where(rng.random(n) < 0.8, truth, (truth + 1) % 3)
    b = np.where(rng.random(n) < 0.7, truth, (truth + 2) % 3)
    votes = [(f"i{k:02d}", "ann", classes[a[k]]) for k in range(n)]
    votes += [(f"i{k:02d}", "bob", classes[b[k]]) for k in range(0, n, 2)]  # bob on every other image
    votes += [(f"i{k:02d}", "cy", classes[truth[k]]) for k in range(0, 10)]
    final = {f"i{k:02d}": classes[a[k]] for k in range(n)}
    return classes, votes, final, a, b, truth


def test_cohen_kappa_per_pair_and_per_class_equal_scikit_learn():
    from sklearn.metrics import cohen_kappa_score

    from al_core.quality.agreement import agreement

    classes, votes, final, a, b, truth = _two_annotators()
    r = agreement(votes, final, classes)
    pair = next(p for p in r["pairs"] if (p["a"], p["b"]) == ("ann", "bob"))
    common = list(range(0, 40, 2))
    la, lb = [classes[a[k]] for k in common], [classes[b[k]] for k in common]
    assert pair["n_common"] == 20 and pair["kappa"] == pytest.approx(cohen_kappa_score(la, lb, labels=classes))
    for c in classes:
        want = cohen_kappa_score([x == c for x in la], [y == c for y in lb])
        assert pair["per_class"][c] == pytest.approx(want)
    assert r["annotator_agreement"]["ann"] == {"n": 40, "agreement_with_final": 1.0}  # ann's votes are final here
    bob = r["annotator_agreement"]["bob"]
    assert bob["n"] == 20 and bob["agreement_with_final"] == pytest.approx(np.mean(a[common] == b[common]))
    assert r["fleiss_m"] == 2  # 20 images have two votes (ann and bob, or ann and cy), 5 have three
    assert r["fleiss_images"] == 20


def _store_with_votes(tmp_path, votes):
    """A store whose labels table holds the votes (one file), the last vote of each image current."""
    store = Store(tmp_path / "w.duckdb", lock_timeout_s=2)
    ts = now()
    with store.transaction() as con:
        con.executemany(
            "INSERT INTO labels (label_id, image_id, label, is_skip, proposed, file_sha256, file_id, annotator, "
            "received_at, round) VALUES (?, ?, ?, false, true, 'f', 'f', ?, ?, 1)",
            [[k + 1, iid, lab, who, ts] for k, (iid, who, lab) in enumerate(votes)],
        )
    return store


def test_the_agreement_views_agree_with_the_python_figures(tmp_path):
    from al_core.catalogue import quality as quality_q
    from al_core.quality.agreement import agreement

    classes, votes, _, _, _, _ = _two_annotators(seed=4)
    store = _store_with_votes(tmp_path, votes)
    with store.connect(read_only=True) as con:
        views = quality_q.agreement_views(con)
        final = quality_q.final_labels(con)
        assert sorted(quality_q.annotation_votes(con)) == sorted(votes)
    r = agreement(votes, final, classes)
    assert {(p["a"], p["b"]): p["kappa"] for p in views["pairs"]} == pytest.approx(
        {(p["a"], p["b"]): p["kappa"] for p in r["pairs"]}
    )
    assert {v["annotator"]: float(v["agreement_with_final"]) for v in views["annotators"]} == pytest.approx(
        {k: v["agreement_with_final"] for k, v in r["annotator_agreement"].items()}
    )
    assert {v["image_id"]: v["agreement"] for v in views["images"]} == pytest.approx(
        {im["image_id"]: im["agreement"] for im in r["images"]}
    )


def test_multiannotator_scores_rank_the_disputed_images_low():
    from al_core.quality.agreement import active_learning_scores, consensus, vote_matrix

    classes, votes, _, a, b, truth = _two_annotators(seed=1)
    ids = sorted({v[0] for v in votes})
    m, anns = vote_matrix([(i, w, classes.index(lab)) for i, w, lab in votes], ids)
    assert anns == ["ann", "bob", "cy"] and m.shape == (40, 3) and np.isnan(m[1, 1]) and m[0, 2] == truth[0]
    pred = np.full((40, 3), 0.1)
    pred[np.arange(40), truth] = 0.8
    cons = consensus(m, pred)
    assert (cons["consensus_label"] == truth).mean() > 0.9
    scores, unl = active_learning_scores(m, pred, pred[:3])
    disputed = [k for k in range(0, 40, 2) if a[k] != b[k]]
    agreed = [k for k in range(0, 40, 2) if a[k] == b[k] == truth[k]]
    assert scores[disputed].mean() < scores[agreed].mean() and unl.shape == (3,)


def test_relabel_rows_follow_the_assessment_skip_the_asked_and_the_waiting(tmp_path):
    from al_core.catalogue import quality as quality_q
    from al_core.config import from_dict
    from al_core.loop.batch_rules import RELABEL_MAX_PER_IMAGE, n_relabel, relabel_rows
    from al_core.loop.pool import Pool

    store = Store(tmp_path / "w.duckdb", lock_timeout_s=2)
    ids = ["a", "b", "c", "d"]
    ts = now()
    with store.transaction() as con:
        for r in range(4):
            con.execute(
                "INSERT INTO rounds (round, kind, strategy, seed, budget, requested_budget, config_id, "
                "status, proposed_at) VALUES (?, 'query', 'dropquery', 0, 1, 1, 'c', ?, ?)",
                [r, "open" if r == 3 else "closed", ts],
            )
        asked = [(1, "a"), (2, "a"), (3, "b")]  # a: asked the maximum number of times; b: waiting for its answer
        assert len([x for x in asked if x[1] == "a"]) == RELABEL_MAX_PER_IMAGE
        con.executemany(
            "INSERT INTO queries (round, rank, image_id, path, score, strategy) VALUES (?, 1, ?, 'p', 0.1, 'relabel')",
            [list(x) for x in asked],
        )
        quality_q.put_label_quality(
            con,
            {
                "probe_id": "p1",
                "round": 3,
                "n_labels": 4,
                "n_folds": 2,
                "seed": 0,
                "method": "self_confidence",
                "n_issues": 2,
                "label_counts": "{}",
                "predicted_share": "{}",
                "balance_warnings": "[]",
                "seconds": 0.1,
                "computed_at": ts,
            },
            [
                ("p1", 3, iid, k, "cat", "dog", q, q, 1 - q, q < 0.3, k + 1, None, None, None, 1)
                for k, (iid, q) in enumerate(zip(ids, [0.05, 0.1, 0.2, 0.9], strict=True))
            ],
        )
    pool = Pool(
        "c",
        np.array(ids + ["e"]),
        np.zeros((5, 2), np.float32),
        {i: k for k, i in enumerate(ids + ["e"])},
        ("cat", "dog"),
        np.arange(4),
        np.zeros(4, np.int64),
        [0, 1, 2, 3],
        np.array([4]),
    )
    rows = relabel_rows(store, pool, "p1", 2)
    assert [r[0] for r in rows] == [2, 3]  # c, then d: a was asked twice, b waits for its answer
    assert rows[0][2].startswith(
        "label again: label quality 0.200 (labelled 'cat', the out-of-fold probe suggests 'dog'; cleanlab flags it)"
    )
    assert relabel_rows(store, pool, "p1", 0) == [] and relabel_rows(store, pool, None, 2) == []
    cfg = from_dict({"selection": {"relabel_fraction": 0.1}})
    assert [n_relabel(cfg, b) for b in (4, 5, 10, 25)] == [0, 1, 1, 3]  # half up
