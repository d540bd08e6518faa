"""The manager's numbers and plots as the metadata of ``eval_metrics`` (al_assets.loop), without Dagster.

:func:`value_metadata` returns ``name -> (kind, text)``, kind ``"md"`` or ``"text"``; the asset wraps them
in ``MetadataValue.md`` / ``MetadataValue.text``. Text entries are never plotted by the UI (only numbers
are), so the UI's plots of ``eval_metrics`` stay the metrics themselves. ``learning_curve`` is a small SVG
(al_core.reporting.value_plots.value_curve_svg) whose markdown stays under INLINE_MD_MAX_CHARS, so the UI
shows it in the metadata table without a click; ``learning_curve_detail`` is the report's PNG against
labels and cost (behind the UI's "[Show Markdown]" button).
"""

from __future__ import annotations

from al_core.reporting.plots import png_data_uri
from al_core.reporting.value_plots import svg_data_uri, value_curve_png, value_curve_svg
from al_core.reporting.value_text import lines

INLINE_MD_MAX_CHARS = 999  # Dagster's UI renders a markdown value inline below 1,000 characters (MetadataEntry.tsx)
SVG_POINTS_TRIED = (12, 8, 5)  # rounds drawn in the inline SVG, tried in order until it fits
DETAIL_SIZES = ((80, (7.2, 2.7)), (60, (6.0, 2.3)))  # (dpi, inches) tried in order for the detail PNG
DETAIL_MAX_BYTES = 200_000  # as al_core.reporting.report.METADATA_MAX_BYTES


def value_metadata(store, cfg) -> dict[str, tuple[str, str]]:
    """Entries for ``eval_metrics``: the learning curve (inline SVG and detailed PNG, when there is something
    to draw) and one text line per number of the manager's page (al_core.reporting.value_text.lines)."""
    from al_core.value.summary import curve_of, value_summary

    s = value_summary(store, cfg)
    fit = curve_of(s)
    out: dict[str, tuple[str, str]] = {}
    for max_points in SVG_POINTS_TRIED:
        svg = value_curve_svg(s, fit, max_points)
        md = None if svg is None else f"![learning curve]({svg_data_uri(svg)})"
        if md is not None and len(md) <= INLINE_MD_MAX_CHARS:
            out["learning_curve"] = ("md", md)
            break
    if s["rounds"]:
        for dpi, size in DETAIL_SIZES:
            png = value_curve_png(s, fit, figsize=size, dpi=dpi)
            md = f"![learning curve against labels and cost]({png_data_uri(png)})"
            if len(md) <= DETAIL_MAX_BYTES:
                out["learning_curve_detail"] = ("md", md)
                break
    out.update({k: ("text", v) for k, v in lines(s).items()})
    return out
