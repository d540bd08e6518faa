"""What the labels bought, the statistics (al_core.value): intervals against reference computations, the
learning-curve fit and projection, the stop rule, the stop set, the cost rates, and the simulation's hook."""

import math

import numpy as np
import pytest

from al_core.value import curve as C
from al_core.value.intervals import (
    bootstrap_metrics,
    confusions,
    gain_intervals,
    metric_intervals,
    metrics_of,
    wilson_interval,
)
from al_core.value.stopping import decide, draw_stop_set, first_firing, kappa, paired_kappa

Z = 1.959963984540054


def _wilson_by_hand(k, n):
    """The Wilson score interval written out (Wilson 1927; Newcombe 1998, method 3)."""
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize(
    "k, n, published",
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3 (Wilson)
        (81, 263, (0.2553, 0.3662)),
        (15, 148, (0.0624, 0.1605)),
        (0, 20, (0.0, 0.1611)),
        (1, 29, (0.0061, 0.1718)),
        # by hand: 0/10 -> upper z^2 / (n + z^2) = 3.8415 / 13.8415; 10/10 -> lower 10 / 13.8415
        (0, 10, (0.0, 0.2775)),
        (10, 10, (0.7225, 1.0)),
        (412, 500, None),
    ],
)
def test_wilson_interval_equals_the_formula_and_published_values(k, n, published):
    lo, hi = wilson_interval(k, n)
    blo, bhi = _wilson_by_hand(k, n)
    assert lo == pytest.approx(blo, abs=1e-12) and hi == pytest.approx(bhi, abs=1e-12)
    if published:
        assert (round(lo, 4), round(hi, 4)) == published
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_metrics_of_confusion_matrices_equal_scikit_learn():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    from al_core.learn.metrics import classification_metrics

    rng = np.random.default_rng(3)
    for trial in range(20):
        k = int(rng.integers(2, 8))
        n = int(rng.integers(5, 80))
        y = rng.integers(0, k - (trial % 2), n)  # odd trials: the last class never true
        # every fourth trial: the last class never predicted either (a class just added: no F1 at all)
        pred = np.where(rng.random(n) < 0.5, y, rng.integers(0, k - (trial % 4 == 1), n))
        m = metrics_of(confusions(y, pred, k))
        assert m["accuracy"][0] == pytest.approx(accuracy_score(y, pred))
        assert m["balanced_accuracy"][0] == pytest.approx(balanced_accuracy_score(y, pred))
        assert m["macro_f1"][0] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
        assert m["macro_f1"][0] == pytest.approx(classification_metrics(y, pred, k).macro_f1)  # one definition


def test_bootstrap_intervals_equal_scipy_bootstrap_on_the_same_draws():
    """scipy.stats.bootstrap (paired, percentile) draws its resamples as rng.integers(0, n, (B, n)), as we do:
    with the same seed the two intervals are the same numbers."""
    from scipy.stats import bootstrap
    from sklearn.metrics import balanced_accuracy_score, f1_score

    rng = np.random.default_rng(7)
    k, n = 5, 120
    y = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
    ours = metric_intervals(y, pred, k, resamples=400, seed=11)
    for name, fn in (
        ("balanced_accuracy", balanced_accuracy_score),
        ("macro_f1", lambda a, b: f1_score(a, b, labels=list(range(k)), average="macro", zero_division=0)),
    ):
        ref = bootstrap(
            (y, pred),
            fn,
            paired=True,
            vectorized=False,
            n_resamples=400,
            method="percentile",
            rng=np.random.default_rng(11),
        ).confidence_interval
        assert (ours[name].low, ours[name].high) == pytest.approx((ref.low, ref.high), abs=1e-12), name
        assert ours[name].low < ours[name].value < ours[name].high
    assert ours["accuracy"].method == "wilson"
    assert (ours["accuracy"].low, ours["accuracy"].high) == pytest.approx(_wilson_by_hand(int((y == pred).sum()), n))


def test_gain_interval_is_a_paired_bootstrap_of_the_difference():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(5)
    k, n = 4, 150
    y = rng.integers(0, k, n)
    before = np.where(rng.random(n) < 0.5, y, rng.integers(0, k, n))
    after = np.where(rng.random(n) < 0.5, y, before)  # fixes about half of the mistakes
    g = gain_intervals(y, before, after, k, resamples=300, seed=2)
    ref = bootstrap(
        (y, before, after),
        lambda a, b, c: np.mean(c == a) - np.mean(b == a),
        paired=True,
        vectorized=False,
        n_resamples=300,
        method="percentile",
        rng=np.random.default_rng(2),
    ).confidence_interval
    assert (g["accuracy"].low, g["accuracy"].high) == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert g["accuracy"].value == pytest.approx(np.mean(after == y) - np.mean(before == y))
    assert g["accuracy"].low > 0  # a clear improvement is more than noise
    same = gain_intervals(y, before, before, k, resamples=100, seed=2)
    assert all((v.value, v.low, v.high) == (0.0, 0.0, 0.0) for v in same.values())


def test_bootstrap_blocks_give_the_resamples_asked_for(monkeypatch):
    import al_core.value.intervals as I

    monkeypatch.setattr(I, "BOOTSTRAP_BLOCK_CELLS", 1000)  # 1000 // 120 = 8 resamples per block
    y = np.arange(120) % 3
    out = bootstrap_metrics(y, [y], 3, resamples=50, seed=0)[0]
    assert all(v.shape == (50,) for v in out.values())
    assert np.all(out["accuracy"] == 1.0)


# ----------------------------------------------------------------------------- the learning curve
N20 = np.arange(10, 201, 10, dtype=float)


def test_curve_fit_recovers_a_noisy_synthetic_curve():
    a, b, c = 0.82, 1.1, 0.45
    rng = np.random.default_rng(0)
    sigma = np.full(N20.shape, 0.004)
    y = C.curve(N20, a, b, c) + rng.normal(0, sigma)
    fit = C.fit_curve(N20, y, sigma, seed=1)
    assert isinstance(fit, C.CurveFit)
    assert fit.a == pytest.approx(a, abs=0.02) and fit.b == pytest.approx(b, rel=0.25)
    assert fit.c == pytest.approx(c, abs=0.08)
    assert len(fit.refits) == C.FIT_RESAMPLES
    truth = float(C.labels_for(0.75, a, b, c))
    p = C.project(fit, 0.75, N20[-1], y[-1])
    assert p.status == C.PROJECTED and p.labels == pytest.approx(truth, rel=0.2)
    assert p.labels_low <= truth <= (p.labels_high or math.inf)
    assert p.more == pytest.approx(p.labels - 200)
    lo, hi = fit.band(np.array([300.0]))
    assert lo[0] <= C.curve(300.0, a, b, c) <= hi[0]
    gain = C.next_batch_gain(fit, 200, 10)
    true_gain = C.curve(210.0, a, b, c) - C.curve(200.0, a, b, c)
    assert gain[1] <= gain[0] <= gain[2] and gain[0] == pytest.approx(true_gain, rel=0.5)


def test_curve_fit_refuses_too_few_points_and_says_so():
    assert C.MIN_CURVE_POINTS == 4
    three = C.fit_curve([10, 20, 30], [0.3, 0.4, 0.45])
    assert three == C.NOT_ENOUGH == "not enough rounds yet"
    assert C.fit_curve([10, 10, 20, 30], [0.3, 0.31, 0.4, 0.45]) == C.NOT_ENOUGH  # 3 distinct sizes
    assert C.fit_curve([10, 20, 30, 40, np.nan], [0.3, 0.4, np.nan, 0.5, 0.6]) == C.NOT_ENOUGH
    p = C.project(three, 0.9, 30, 0.45)
    assert p.status == C.NOT_ENOUGH and p.labels is None and p.more is None
    assert C.next_batch_gain(three, 30, 10) is None
    assert isinstance(C.fit_curve([10, 20, 30, 40], [0.3, 0.4, 0.45, 0.48]), C.CurveFit)


def test_projection_not_reachable_when_the_curve_levels_off_under_the_target():
    y = C.curve(N20, 0.62, 1.0, 0.6)
    fit = C.fit_curve(N20, y, np.full(N20.shape, 0.003))
    assert fit.a == pytest.approx(0.62, abs=0.01)
    p = C.project(fit, 0.7, 200, y[-1])
    assert p.status == C.UNREACHABLE == "not reachable on this curve"
    assert p.asymptote == pytest.approx(fit.a) and p.labels is None
    assert C.project(fit, 0.5, 200, y[-1]).status == C.REACHED


def test_labels_for_inverts_the_curve():
    n = C.labels_for(0.7, 0.9, 1.2, 0.5)
    assert C.curve(n, 0.9, 1.2, 0.5) == pytest.approx(0.7)
    assert np.isinf(C.labels_for(0.95, 0.9, 1.2, 0.5))


# ----------------------------------------------------------------------------- the stop rule
def test_stop_rule_fires_at_the_round_predictions_stop_changing_plus_the_window():
    """Predictions change every round up to round s, then stay as they are: kappa is 1 from round s + 1 on,
    and the rule (window w) fires at round s + w, not before."""
    rng = np.random.default_rng(0)
    s, rounds, w = 6, 14, 3
    preds = [rng.integers(0, 5, 500)]
    for r in range(1, rounds + 1):
        p = preds[-1].copy()
        if r <= s:  # a tenth of the stop set changes class
            idx = rng.choice(500, 50, replace=False)
            p[idx] = (p[idx] + 1 + rng.integers(0, 4, 50)) % 5
        preds.append(p)
    kappas = {r: kappa(preds[r - 1], preds[r]) for r in range(1, rounds + 1)}
    assert all(kappas[r] < 0.99 for r in range(1, s + 1)) and all(kappas[r] == 1.0 for r in range(s + 1, rounds + 1))
    for last in range(1, rounds + 1):
        d = decide({r: k for r, k in kappas.items() if r <= last}, 0.99, w)
        assert d.stop == (last >= s + w), last
        if d.stop:
            assert d.fired_round == s + w
    assert decide(kappas, 0.99, 1).fired_round == s + 1
    assert first_firing([None, 1.0, 1.0, None, 1.0, 1.0, 1.0], 0.99, 3) == 6  # a gap breaks the run


def test_kappa_is_cohens_and_one_for_identical_predictions():
    from sklearn.metrics import cohen_kappa_score

    a = np.array([0, 1, 1, 2, 2, 2, 0, 1])
    b = np.array([0, 1, 2, 2, 2, 1, 0, 1])
    assert kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert kappa([3, 3, 3], [3, 3, 3]) == 1.0  # scikit-learn: 0/0
    assert paired_kappa({"x": "cat", "y": "dog"}, {"y": "dog", "z": "cat"}) == (1.0, 1)
    assert paired_kappa({"x": "cat"}, {"z": "cat"}) == (None, 0)
    d = decide({}, 0.99, 3)
    assert not d.stop and "no two successive rounds" in d.reason


def test_stop_set_is_a_seeded_sample_of_fixed_size():
    ids = [f"{i:04d}" for i in range(5000)]
    a = draw_stop_set(ids, seed=3, size=100)
    assert len(a) == 100 == len(set(a)) and a == sorted(a) and set(a) <= set(ids)
    assert a == draw_stop_set(list(reversed(ids)), seed=3, size=100)  # depends on the set, not its order
    assert a != draw_stop_set(ids, seed=4, size=100)
    assert draw_stop_set(ids[:50], seed=3, size=100) == ids[:50]


# ----------------------------------------------------------------------------- cost rates and config
def test_cost_rate_rows_take_the_role_prices():
    from al_core.config import from_dict
    from al_core.value.cost import cost_rate_rows, has_prices

    cfg = from_dict(
        {
            "cost": {
                "currency": "USD",
                "per_label": 0.5,
                "per_hour": 36,
                "overhead": 1.25,
                "role_per_hour": {"expert": 72},
                "role_per_label": {"crowd": 0.1},
                "annotator_roles": {"alice": "expert", "7": "crowd"},
            }
        }
    )
    assert cost_rate_rows(cfg.cost) == [
        (None, None, "USD", 0.5, 36.0, 1.25),
        ("7", "crowd", "USD", 0.1, 36.0, 1.25),
        ("alice", "expert", "USD", 0.5, 72.0, 1.25),
    ]
    assert has_prices(cfg.cost) and not has_prices(from_dict({}).cost)


def test_target_metrics_are_the_evaluation_metrics():
    from al_core.config.schema import TARGET_METRICS
    from al_core.loop.evaluation import METRIC_NAMES
    from al_core.value.intervals import METRICS

    assert TARGET_METRICS == METRIC_NAMES == METRICS


# ----------------------------------------------------------------------------- the simulation's hook
def test_simulation_hook_sees_each_probe_and_changes_nothing():
    from al_core.learn.simulate import run_simulation

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 2, (4, 12))
    y = rng.integers(0, 4, 400)
    x = (centres[y] + rng.normal(0, 1, (400, 12))).astype(np.float32)
    yt = rng.integers(0, 4, 200)
    xt = (centres[yt] + rng.normal(0, 1, (200, 12))).astype(np.float32)
    kw = dict(n_classes=4, seed_strategy="random", query_strategy="dropquery", budget_per_round=4, rounds=3, seed=1)
    plain = run_simulation(x, y, xt, yt, **kw)
    seen = []
    hooked = run_simulation(
        x, y, xt, yt, **kw, on_probe=lambda r, probe, lab: seen.append((r, len(lab), probe.predict(x[:50])))
    )
    assert [(r, n) for r, n, _ in seen] == [(0, 4), (1, 8), (2, 12), (3, 16)]
    np.testing.assert_array_equal(plain.accuracy, hooked.accuracy)
    for a, b in zip(plain.selected, hooked.selected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_inline_learning_curve_stays_under_the_uis_inline_limit():
    from al_core.reporting.value_metadata import INLINE_MD_MAX_CHARS
    from al_core.reporting.value_plots import svg_data_uri, value_curve_svg

    for rounds in (1, 2, 7, 12, 40, 300):
        n = np.arange(1, rounds + 1) * 10.0
        y = C.curve(n, 0.91, 0.83, 0.37)
        rows = [
            {"round": i, "n": a, "value": b, "low": b - 0.0333, "high": b + 0.0311}
            for i, (a, b) in enumerate(zip(n, y, strict=True), 1)
        ]
        fit = C.fit_curve(n, y, np.full(rounds, 0.01), resamples=5)
        s = {"rounds": rows, "projection": {"status": "projected", "labels": 3 * n[-1]}, "target": 0.777}
        md = f"![learning curve]({svg_data_uri(value_curve_svg(s, fit))})"
        assert len(md) <= INLINE_MD_MAX_CHARS, (rounds, len(md))
    assert value_curve_svg({"rounds": [], "projection": {}, "target": None}, C.NOT_ENOUGH) is None


def test_study_comparison_counts_labels_to_reach_the_target_per_seed(tmp_path):
    import json

    from al_core.reporting.study import labels_to_reach, study_comparison
    from al_core.reporting.value_page import study_section

    assert labels_to_reach([10, 20, 30], [0.5, 0.71, 0.7], 0.7) == 20
    assert labels_to_reach([10, 20, 30], [0.5, 0.6, 0.69], 0.7) is None
    assert study_comparison(tmp_path, 0.7) is None  # no simulation saved
    labels = [10, 20, 30, 40]
    (tmp_path / "simulate-20260101T000000Z.json").write_text(
        json.dumps(
            {
                "seed_strategy": "centroid",
                "strategies": {
                    "dropquery": {
                        "labels_per_round": labels,
                        "seeds": [1, 10, 100],
                        "accuracy_per_seed": [[0.5, 0.72, 0.8, 0.8], [0.5, 0.6, 0.71, 0.8], [0.6, 0.7, 0.8, 0.9]],
                    },
                    "random": {
                        "labels_per_round": labels,
                        "seeds": [1, 10, 100],
                        "accuracy_per_seed": [[0.5, 0.6, 0.65, 0.71], [0.5, 0.6, 0.7, 0.8], [0.4, 0.5, 0.6, 0.69]],
                    },
                },
            }
        )
    )
    (tmp_path / "simulate-broken.json").write_text("{")
    c = study_comparison(tmp_path, 0.7)
    dq, rnd = c["strategies"]["dropquery"], c["strategies"]["random"]
    assert dq["per_seed"] == [20, 30, 20] and (dq["median"], dq["low"], dq["high"], dq["reached"]) == (20, 20, 30, 3)
    assert rnd["per_seed"] == [40, 30, None] and (rnd["median"], rnd["low"], rnd["high"]) == (40, 30, None)
    html = "".join(study_section(c, "accuracy"))
    assert "30 – more than 40" in html and "2 of 3" in html and "+20 labels" in html  # saved against random
    (tmp_path / "simulate-20260102T000000Z.json").write_text(
        json.dumps(
            {
                "seed_strategy": "random",
                "strategies": {
                    "random": {
                        "labels_per_round": labels,
                        "seeds": [1, 10],
                        "accuracy_per_seed": [[0.5, 0.6, 0.65, 0.75], [0.5, 0.6, 0.65, 0.69]],
                    }
                },
            }
        )
    )
    assert study_comparison(tmp_path, 0.7)["strategies"]["random"]["median"] is None  # the newest file, 1 of 2
    assert "Optimistic, said plainly" in html
    assert study_comparison(tmp_path, None) is None


def test_bench_value_reads_the_cifar10_table_and_backtests_a_curve():
    from al_core.bench.value import backtest_curve, read_doc_table
    from tests.conftest import ROOT

    table = read_doc_table(str(ROOT / "docs" / "benchmarks.md"))
    typ = table["typiclust@centroid"]
    assert typ["seeds"] == [1, 10, 100, 1000, 10000] and typ["n"] == list(range(10, 201, 10))
    assert (typ["mean"][0], typ["mean"][-1], typ["std"][-1]) == pytest.approx((0.31, 0.638, 0.009))
    assert {"random@centroid", "dropquery@centroid", "margin@centroid"} <= set(table)
    n = np.arange(10, 201, 10)
    rows = backtest_curve(n, C.curve(n, 0.7, 1.5, 0.6), np.full(20, 0.003), [3, 8], 20)
    assert rows[0] == {"fitted_rounds": 3, "status": C.NOT_ENOUGH}
    assert rows[1]["status"] == "fitted" and abs(rows[1]["error"]) < 0.01 and rows[1]["covered"]
