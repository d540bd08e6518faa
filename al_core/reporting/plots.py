"""Matplotlib figures of the report as PNG bytes: the learning curve and the confusion matrix.

Matplotlib is imported inside the functions (its object API with the Agg
canvas: no pyplot, no global backend switch), so importing this module stays
cheap.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

CONFUSION_MAX_COUNTED_CLASSES = 30  # counts are written in the cells up to this many classes (beyond: unreadable)


def _figure(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _png(fig, dpi: float) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:`` URI (base64), for an ``<img src>`` or a markdown image."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def clean_curve(points) -> list[tuple[float, float, float | None]]:
    """(n, accuracy, std or None) points sorted by n; points without a number (None, NaN, text) are left out."""
    out = []
    for p in points or []:
        if p is None or len(p) < 2 or p[1] is None:
            continue
        std = p[2] if len(p) > 2 else None
        try:
            n, acc = float(p[0]), float(p[1])
        except (TypeError, ValueError):
            continue
        if n != n or acc != acc:  # NaN
            continue
        out.append((n, acc, None if std is None or std != std else float(std)))
    return sorted(out, key=lambda t: t[0])


def learning_curve_png(
    curves: dict[str, list[tuple]],
    *,
    title: str = "Accuracy against number of labels",
    figsize: tuple[float, float] = (6.4, 4.0),
    dpi: float = 100,
) -> bytes:
    """Accuracy against labels, one line per strategy; a shaded band where points are (n, mean, std).

    Curves whose name starts with "simulated" are dashed (al_core.reporting.data.simulate_curves).

    Points with a missing (None/NaN) accuracy are left out. An empty ``curves``
    gives a figure that says so (never an exception).
    """
    fig = _figure(figsize)
    ax = fig.add_subplot(1, 1, 1)
    drawn = 0
    for i, (name, points) in enumerate(curves.items()):
        pts = clean_curve(points)
        if not pts:
            continue
        color = f"C{i % 10}"
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        simulated = str(name).startswith("simulated")
        ax.plot(
            xs,
            ys,
            marker="o",
            markersize=3,
            linewidth=1.3 if simulated else 2.2,
            color=color,
            linestyle="--" if simulated else "-",
            label=str(name),
        )
        if any(p[2] is not None for p in pts):
            sd = [p[2] or 0.0 for p in pts]
            ax.fill_between(
                xs,
                [y - s for y, s in zip(ys, sd)],
                [y + s for y, s in zip(ys, sd)],
                color=color,
                alpha=0.15,
                linewidth=0,
            )
        drawn += 1
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("labelled images")
    ax.set_ylabel("accuracy (hold-out)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no evaluated round yet", ha="center", va="center", transform=ax.transAxes, color="0.4")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    return _png(fig, dpi)


def confusion_png(
    confusion: list[list[int]],
    classes: Sequence[str],
    *,
    title: str = "Confusion matrix (rows: true class, normalised; numbers: counts)",
    dpi: float = 100,
    max_size_in: float = 12.0,
) -> bytes:
    """Row-normalised confusion matrix (colour: share of the true class), counts written in the cells.

    Counts are written while there are at most CONFUSION_MAX_COUNTED_CLASSES classes. An empty matrix
    gives a figure that says so.
    """
    import numpy as np

    m = np.asarray(confusion if confusion else [], dtype=np.float64)
    if m.ndim != 2 or m.size == 0 or m.shape[0] != m.shape[1]:
        fig = _figure((4.0, 3.0))
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, "no confusion matrix yet", ha="center", va="center", transform=ax.transAxes, color="0.4")
        return _png(fig, dpi)
    k = m.shape[0]
    names = [str(c) for c in classes][:k] + [f"class {i}" for i in range(len(classes), k)]
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    side = min(max_size_in, max(3.5, 1.2 + 0.45 * k))
    fig = _figure((side + 1.0, side))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    fs = 8 if k <= 12 else 6
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=fs)
    ax.set_yticklabels(names, fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    if k <= CONFUSION_MAX_COUNTED_CLASSES:
        for i in range(k):
            for j in range(k):
                c = int(m[i, j])
                if c or i == j:
                    ax.text(
                        j,
                        i,
                        str(c),
                        ha="center",
                        va="center",
                        fontsize=fs,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    return _png(fig, dpi)
