"""The manager's learning curve (al_core.value.summary): a PNG against labels and against cost, and a small SVG.

- :func:`value_curve_png`: two panels, the target metric against training labels and against the cost so
  far, each round's 95 % interval as a band, the fitted curve and its projection (dashed, with the band
  of its refits) up to the target or beyond, and the target as a line;
- :func:`value_curve_svg`: the same curve in a few hundred bytes (no axes text but the last value and the
  target), small enough for Dagster's UI to show it inline: the UI shows a markdown metadata value
  directly when it is under 1,000 characters, behind a "[Show Markdown]" button otherwise.
"""

from __future__ import annotations

import base64

import numpy as np

from al_core.reporting.plots import _figure, _png
from al_core.value.curve import CurveFit

SVG_MAX_POINTS = 12  # rounds drawn in the small SVG at most (evenly thinned beyond): ~700 bytes of SVG at most
PROJECTION_SPAN = 3.0  # the projected curve runs to the target, at most this many times the labels so far
SVG_VIEW = (99, 40)  # the small SVG's viewBox: whole-unit coordinates of two digits
SVG_W, SVG_H = 297, 120  # its size in px (3 px per unit)


def _projection_end(summary: dict) -> float | None:
    rows = summary["rounds"]
    if not rows:
        return None
    n_now = rows[-1]["n"]
    p = summary["projection"]
    end = p.get("labels") if p.get("status") == "projected" else None
    return float(min(max(end or 2 * n_now, n_now * 1.2), PROJECTION_SPAN * n_now))


def _cost_of_labels(summary: dict, n: np.ndarray) -> np.ndarray | None:
    """The cost at ``n`` training labels: the cost so far plus this project's cost per label beyond it."""
    rows = summary["rounds"]
    per = None if not summary["labels"] or summary["cost"] is None else summary["cost"] / summary["labels"]
    if per is None or not rows or rows[-1]["cost_total"] is None:
        return None
    return rows[-1]["cost_total"] + (n - rows[-1]["n"]) * per


def value_curve_png(summary: dict, fit: CurveFit | str, *, figsize=(9.6, 3.6), dpi: float = 100) -> bytes:
    """The target metric against labels and against cost (module docstring); a figure that says so when
    no round is evaluated yet."""
    rows = summary["rounds"]
    metric = summary["metric"].replace("_", " ")
    fig = _figure(figsize)
    axes = [fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)]
    if not rows:
        for ax in axes:
            ax.text(0.5, 0.5, "no evaluated round yet", ha="center", va="center", transform=ax.transAxes, color="0.4")
            ax.set_axis_off()
        return _png(fig, dpi)
    n = np.array([r["n"] for r in rows])
    y = np.array([r["value"] for r in rows])
    lo = np.array([r["low"] if r["low"] is not None else r["value"] for r in rows])
    hi = np.array([r["high"] if r["high"] is not None else r["value"] for r in rows])
    costs = [r["cost_total"] for r in rows]
    priced = summary["priced"] and all(c is not None for c in costs)
    grid = None
    if not isinstance(fit, str):
        end = _projection_end(summary)
        grid = np.linspace(n.min(), end, 60)
        g_lo, g_hi = fit.band(grid)
        g_y = fit.predict(grid)
    for ax, xs, label in (
        (axes[0], n, "training labels"),
        (axes[1], np.array(costs, dtype=float) if priced else None, f"cost ({summary['currency']})"),
    ):
        ax.set_ylabel(f"{metric} (evaluation set)")
        ax.set_xlabel(label)
        ax.grid(True, alpha=0.3)
        if xs is None:
            ax.text(
                0.5,
                0.5,
                "no prices set (cost: in the project file)",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="0.4",
            )
            continue
        ax.fill_between(xs, lo, hi, color="C0", alpha=0.18, linewidth=0, label="95 % interval")
        ax.plot(xs, y, marker="o", markersize=3, color="C0", linewidth=2, label="measured")
        if grid is not None:
            gx = grid if ax is axes[0] else _cost_of_labels(summary, grid)
            if gx is not None:
                ax.fill_between(gx, g_lo, g_hi, color="C1", alpha=0.12, linewidth=0)
                ax.plot(gx, g_y, linestyle="--", color="C1", linewidth=1.4, label="fitted and projected")
        if summary["target"] is not None:
            ax.axhline(
                summary["target"], color="C3", linestyle=":", linewidth=1.2, label=f"target {summary['target']:g}"
            )
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{metric.capitalize()} against labels and against cost", fontsize=10)
    return _png(fig, dpi)


def _thin(rows: list[dict], max_points: int) -> list[dict]:
    if len(rows) <= max_points:
        return rows
    keep = np.unique(np.linspace(0, len(rows) - 1, max_points).round().astype(int))
    return [rows[i] for i in keep]


def value_curve_svg(summary: dict, fit: CurveFit | str, max_points: int = SVG_MAX_POINTS) -> str | None:
    """The learning curve as a small SVG document (module docstring), or None before an evaluated round.

    Coordinates are whole units of a SVG_VIEW viewBox (two digits each) scaled to SVG_W x SVG_H px, which
    keeps the document near 600 bytes at SVG_MAX_POINTS rounds; beyond ``max_points`` rounds the curve is
    thinned evenly (first and last round kept).
    """
    rows = _thin(summary["rounds"], max_points)
    if not rows:
        return None
    n = np.array([r["n"] for r in rows])
    y = np.array([r["value"] for r in rows])
    lo = np.array([r["low"] if r["low"] is not None else r["value"] for r in rows])
    hi = np.array([r["high"] if r["high"] is not None else r["value"] for r in rows])
    x_end = n.max()
    gx = gy = None
    if not isinstance(fit, str):
        x_end = _projection_end(summary)
        gx = np.linspace(n.max(), x_end, 5)
        gy = fit.predict(gx)
    target = summary["target"]
    ys = [lo, hi] + ([gy] if gy is not None else []) + ([np.array([target])] if target else [])
    y_min, y_max = min(float(np.min(v)) for v in ys), max(float(np.max(v)) for v in ys)
    pad = max(0.01, (y_max - y_min) * 0.08)
    y_min, y_max = y_min - pad, y_max + pad
    vw, vh = SVG_VIEW
    x_min = float(n.min())
    sx = lambda v: 1 + (vw - 14) * (v - x_min) / max(x_end - x_min, 1e-9)
    sy = lambda v: 1 + (vh - 2) * (y_max - v) / (y_max - y_min)
    pts = lambda xs, vs: " ".join(f"{sx(a):.0f},{sy(b):.0f}" for a, b in zip(xs, vs))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {vw} {vh}" width="{SVG_W}" height="{SVG_H}" '
        'font-size="4">',
        f'<polygon points="{pts(n, hi)} {pts(n[::-1], lo[::-1])}" fill="#9cf"/>',
        f'<polyline points="{pts(n, y)}" fill="none" stroke="#17b" stroke-width=".8"/>',
    ]
    if len(rows) == 1:  # one round: its interval as a bar (the band needs two)
        parts.append(f'<path d="M{sx(n[0]):.0f} {sy(lo[0]):.0f}V{sy(hi[0]):.0f}" stroke="#9cf" stroke-width="2"/>')
    if gx is not None:
        parts.append(
            f'<polyline points="{pts(gx, gy)}" fill="none" stroke="#f80" stroke-width=".6" stroke-dasharray="2"/>'
        )
    if target:
        t = sy(target)
        parts.append(
            f'<path d="M0 {t:.0f}H{vw - 13}" stroke="#d22" stroke-width=".4" stroke-dasharray="1"/>'
            f'<text x="{vw - 12}" y="{t + 1.5:.0f}" fill="#d22">{target:g}</text>'
        )
    parts.append(
        f'<circle cx="{sx(n[-1]):.0f}" cy="{sy(y[-1]):.0f}" r="1.2" fill="#17b"/>'
        f'<text x="{min(sx(n[-1]) + 1, vw - 12):.0f}" y="{max(4, sy(y[-1]) - 1):.0f}">{y[-1]:.2f}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def svg_data_uri(svg: str) -> str:
    """An SVG document as a base64 ``data:`` URI."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")
