"""The learning curve ``a - b * n**-c`` (an inverse power law) and the labels it needs to reach a target.

:func:`fit_curve` fits it with scipy's ``curve_fit``, each point weighted by its interval (sigma = the
interval's half-width / 1.96), ``a`` (the asymptote) bounded to [0, 1], ``b`` >= 0 and ``c`` in
[C_MIN, C_MAX]. Its uncertainty is a seeded parametric bootstrap over the rounds: FIT_RESAMPLES
refits of the fitted values plus normal noise of each point's sigma (scaled up by the fit's reduced
chi-square when the points scatter more than their intervals say). The fit's covariance matrix is
kept too, but it is not used for intervals: with the asymptote at its bound or few points it is
degenerate, where the refits stay meaningful.

:func:`project` solves ``a - b * n**-c = target`` for n, its interval the quantiles over the refits.
Below MIN_CURVE_POINTS points there is no fit ("not enough rounds yet"); when the fitted asymptote is at
or under the target the target is "not reachable on this curve".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_CURVE_POINTS = 4  # rounds with a metric before a curve is fitted (3 parameters need one point more)
FIT_RESAMPLES = 200  # refits of the parametric bootstrap: ~2.5 ms each, ~0.5 s per curve
Z95 = 1.959963984540054  # standard normal quantile of a 95 % two-sided interval
SIGMA_FLOOR = 1e-3  # the smallest sigma a point gets (an interval of zero width would pin the curve)
C_MIN, C_MAX = 0.05, 2.0  # bounds of the exponent: flatter than n**-0.05 or steeper than n**-2 is no curve
MAX_PROJECTED_LABELS = 1e9  # beyond this a projection is reported as unbounded

NOT_ENOUGH = "not enough rounds yet"
UNREACHABLE = "not reachable on this curve"
REACHED = "reached"
PROJECTED = "projected"
NO_FIT = "the curve could not be fitted"


def curve(n, a: float, b: float, c: float):
    """``a - b * n**-c``."""
    return a - b * np.power(np.asarray(n, dtype=np.float64), -c)


@dataclass(frozen=True)
class CurveFit:
    """A fitted curve: parameters, their covariance and the points it was fitted on."""

    a: float
    b: float
    c: float
    cov: np.ndarray  # 3 x 3, from curve_fit (not used for intervals: see the module docstring)
    n: np.ndarray
    y: np.ndarray
    sigma: np.ndarray
    refits: np.ndarray  # R x 3 parameters (a, b, c) of the parametric bootstrap

    def predict(self, n):
        return curve(n, self.a, self.b, self.c)

    def band(self, n, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """The curve's pointwise interval at ``n`` over the refits."""
        p = self.refits
        ys = p[:, :1] - p[:, 1:2] * np.power(np.atleast_1d(np.asarray(n, dtype=np.float64))[None, :], -p[:, 2:3])
        lo, hi = np.quantile(ys, [(1 - confidence) / 2, (1 + confidence) / 2], axis=0)
        return lo, hi


def sigma_of(low: Sequence[float], high: Sequence[float]) -> np.ndarray:
    """sigma per point from its 95 % interval: the half-width / 1.96, at least SIGMA_FLOOR."""
    w = (np.asarray(high, dtype=np.float64) - np.asarray(low, dtype=np.float64)) / (2 * Z95)
    return np.maximum(np.nan_to_num(w, nan=SIGMA_FLOOR), SIGMA_FLOOR)


def _jacobian(n, a, b, c):
    p = np.power(n, -c)
    return np.stack([np.ones_like(n), -p, b * p * np.log(n)], axis=1)


def _least_squares(n, y, s, p0):
    """(params, covariance) of the weighted fit, or None when curve_fit fails."""
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, pcov = curve_fit(
                curve,
                n,
                y,
                p0=p0,
                sigma=s,
                absolute_sigma=True,
                jac=_jacobian,
                bounds=([0.0, 0.0, C_MIN], [1.0, np.inf, C_MAX]),
                maxfev=20000,
            )
    except (RuntimeError, ValueError):
        return None
    return (popt, pcov) if np.all(np.isfinite(popt)) else None


def fit_curve(
    n: Sequence[float],
    y: Sequence[float],
    sigma: Sequence[float] | None = None,
    *,
    resamples: int = FIT_RESAMPLES,
    seed: int = 0,
) -> CurveFit | str:
    """The curve fitted to the points (labels ``n`` > 0, metric ``y``, its sigma), with its refits; or why
    not (NOT_ENOUGH, NO_FIT). Points with a missing value are left out; without ``sigma`` every point
    weighs the same (sigma 0.01)."""
    n = np.asarray(n, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    s = np.full(n.shape, 0.01) if sigma is None else np.maximum(np.asarray(sigma, np.float64), SIGMA_FLOOR)
    keep = np.isfinite(n) & np.isfinite(y) & np.isfinite(s) & (n > 0)
    n, y, s = n[keep], y[keep], s[keep]
    if len(np.unique(n)) < MIN_CURVE_POINTS:
        return NOT_ENOUGH
    a0 = float(min(1.0, y.max() + 0.05))
    c0 = 0.5
    b0 = float(max((a0 - y[np.argmin(n)]) * n.min() ** c0, 1e-3))
    best = _least_squares(n, y, s, [a0, b0, c0])
    if best is None:
        return NO_FIT
    popt, pcov = best
    fitted = curve(n, *popt)
    dof = len(n) - 3
    scale = max(1.0, float(np.sqrt(np.sum(((y - fitted) / s) ** 2) / dof))) if dof > 0 else 1.0
    rng = np.random.default_rng(seed)
    refits = [
        r[0]
        for r in (_least_squares(n, fitted + rng.normal(0.0, scale * s), s, popt) for _ in range(resamples))
        if r is not None
    ]
    params = np.asarray(refits, dtype=np.float64).reshape(-1, 3) if refits else np.asarray([popt], np.float64)
    return CurveFit(float(popt[0]), float(popt[1]), float(popt[2]), np.asarray(pcov, dtype=np.float64), n, y, s, params)


def labels_for(target: float, a, b, c):
    """n with ``a - b * n**-c == target`` (inf where ``a <= target``; 0 where b is 0 and a > target)."""
    a, b, c = (np.asarray(v, dtype=np.float64) for v in (a, b, c))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        n = np.where(a > target, np.power(np.divide(b, a - target), 1.0 / c), np.inf)
    return np.where(np.isfinite(n) & (n <= MAX_PROJECTED_LABELS), n, np.inf)


@dataclass(frozen=True)
class Projection:
    """How many labels the curve needs to reach ``target``: ``status`` is one of PROJECTED, REACHED,
    UNREACHABLE, NOT_ENOUGH, NO_FIT; ``labels`` (total training labels at the target) with its interval
    ``labels_low``-``labels_high`` (None: unbounded), and ``more`` = labels - the current count."""

    status: str
    target: float
    n_now: float
    labels: float | None = None
    labels_low: float | None = None
    labels_high: float | None = None
    asymptote: float | None = None

    @property
    def more(self) -> float | None:
        return None if self.labels is None else max(0.0, self.labels - self.n_now)

    @property
    def more_low(self) -> float | None:
        return None if self.labels_low is None else max(0.0, self.labels_low - self.n_now)

    @property
    def more_high(self) -> float | None:
        return None if self.labels_high is None else max(0.0, self.labels_high - self.n_now)


def project(
    fit: CurveFit | str, target: float, n_now: float, y_now: float | None = None, *, confidence: float = 0.95
) -> Projection:
    """The labels needed to reach ``target`` on the fitted curve (see :class:`Projection`).

    REACHED when the metric now (``y_now``) is already at or above the target. The interval is the
    ``confidence`` quantile range of the labels needed over the refits, at least ``n_now``; its upper
    end is None (unbounded) when more than the upper tail of the refits never reach the target.
    """
    if isinstance(fit, str):
        return Projection(fit, target, n_now)
    if y_now is not None and y_now >= target:
        return Projection(REACHED, target, n_now, labels=n_now, labels_low=n_now, labels_high=n_now, asymptote=fit.a)
    if fit.a <= target:
        return Projection(UNREACHABLE, target, n_now, asymptote=fit.a)
    n_star = float(labels_for(target, fit.a, fit.b, fit.c))
    if not np.isfinite(n_star):
        return Projection(UNREACHABLE, target, n_now, asymptote=fit.a)
    p = fit.refits
    ns = np.sort(labels_for(target, p[:, 0], p[:, 1], p[:, 2]))
    q_lo, q_hi = (1 - confidence) / 2, (1 + confidence) / 2
    lo = float(ns[int(np.floor(q_lo * (len(ns) - 1)))])
    hi_v = ns[int(np.ceil(q_hi * (len(ns) - 1)))]
    hi = float(hi_v) if np.isfinite(hi_v) else None
    return Projection(
        PROJECTED,
        target,
        n_now,
        labels=max(n_star, n_now),
        labels_low=max(lo, n_now),
        labels_high=None if hi is None else max(hi, n_now),
        asymptote=fit.a,
    )


def next_batch_gain(
    fit: CurveFit | str, n_now: float, batch: int, *, confidence: float = 0.95
) -> tuple[float, float, float] | None:
    """The curve's gain from ``n_now`` to ``n_now + batch`` labels with its interval over the refits, or
    None without a fit."""
    if isinstance(fit, str) or batch <= 0:
        return None
    x = np.array([n_now, n_now + batch], dtype=np.float64)
    g = float(np.diff(fit.predict(x))[0])
    p = fit.refits
    ys = p[:, :1] - p[:, 1:2] * np.power(x[None, :], -p[:, 2:3])
    lo, hi = np.quantile(ys[:, 1] - ys[:, 0], [(1 - confidence) / 2, (1 + confidence) / 2])
    return g, float(lo), float(hi)
