"""The report of a project: one offline HTML file, and small pictures for Dagster's metadata.

Everything here works without Dagster; matplotlib and Pillow are imported
only when a picture is drawn. The parts live beside this module:

- al_core.reporting.plots: :func:`learning_curve_png`, :func:`confusion_png` (PNG bytes);
- al_core.reporting.gallery: :func:`gallery_png` (thumbnails of the proposed images);
- al_core.reporting.data: :func:`loop_curves`, :func:`simulate_curves` (every
  ``al simulate`` run saved under ``<data_dir>/reports/simulate*.json``),
  :func:`latest_metrics`, :func:`latest_query_set`, read from the catalogue;
- al_core.reporting.page: the HTML text.

This module writes them: :func:`write_report` (one self-contained HTML file:
images as base64 data URIs, inline CSS, no script, no external resource,
written atomically through al_core.files.atomic) and :func:`metadata_images`
(markdown snippets with embedded PNGs for ``MetadataValue.md``).
"""

from __future__ import annotations

import os
from pathlib import Path

from al_core.files.atomic import atomic_write_text
from al_core.reporting.data import (
    all_curves,
    confusion_classes,
    last_confusion,
    latest_metrics,
    latest_query_set,
    loop_curves,
    simulate_curves,
)
from al_core.reporting.gallery import gallery_items, gallery_png
from al_core.reporting.page import build_report_html
from al_core.reporting.plots import clean_curve, confusion_png, learning_curve_png, png_data_uri

__all__ = [
    "learning_curve_png",
    "confusion_png",
    "gallery_png",
    "loop_curves",
    "simulate_curves",
    "all_curves",
    "latest_metrics",
    "latest_query_set",
    "build_report_html",
    "write_report",
    "metadata_images",
    "METADATA_IMAGES",
    "png_data_uri",
]

METADATA_MAX_BYTES = 200_000  # per markdown snippet (base64 included)
# (dpi, figure size in inches) of the confusion matrix, then (images, thumbnail px) of the gallery, tried in
# order until a snippet fits METADATA_MAX_BYTES
CONFUSION_SIZES = ((80, 7.0), (60, 5.0), (45, 4.0))
GALLERY_SIZES = ((100, 56), (50, 48), (30, 40), (20, 32))


def write_report(store, cfg, out_path: str | os.PathLike | None = None) -> Path:
    """Write the HTML report (default ``<data_dir>/reports/report.html``) atomically; return its path.

    One self-contained file: summary, learning curve (the loop's plus every
    saved ``al simulate`` run), per-round table, latest confusion matrix, a
    gallery of the latest proposed images, and label quality (a gallery of the
    suspected label errors, class balance, agreement, duplicates:
    al_core.reporting.quality), every picture a base64 data URI.
    """
    out = Path(out_path) if out_path is not None else cfg.reports_dir / "report.html"
    atomic_write_text(out, build_report_html(store, cfg))
    return out


def _md(png: bytes, alt: str) -> str:
    return f"![{alt}]({png_data_uri(png)})"


def _first_that_fits(snippets) -> str | None:
    return next((md for md in snippets if len(md) <= METADATA_MAX_BYTES), None)


METADATA_IMAGES = ("learning_curve", "confusion_matrix", "proposed_images")


def metadata_images(store, cfg, keys=METADATA_IMAGES) -> dict[str, str]:
    """Markdown snippets with embedded PNGs for ``MetadataValue.md``, each at most METADATA_MAX_BYTES.

    Keys (among ``keys``: only those pictures are drawn; present only when there is
    something to show that fits): ``learning_curve``, ``confusion_matrix``,
    ``proposed_images``. Opens the store read-only: call it when this process holds
    no writable connection to the database.
    """
    unknown = set(keys) - set(METADATA_IMAGES)
    if unknown:
        raise ValueError(f"unknown metadata images {sorted(unknown)}; known: {', '.join(METADATA_IMAGES)}")
    out: dict[str, str] = {}
    curves, _ = all_curves(store, cfg) if "learning_curve" in keys else ({}, None)
    if any(clean_curve(v) for v in curves.values()):
        md = _first_that_fits([_md(learning_curve_png(curves, figsize=(5.0, 3.2), dpi=80), "learning curve")])
        if md:
            out["learning_curve"] = md
    last = last_confusion(latest_metrics(store)) if "confusion_matrix" in keys else None
    if last is not None:
        classes = confusion_classes(last, cfg, store)
        title = f"Confusion, round {last['round']} (rows normalised; counts)"
        md = _first_that_fits(
            _md(confusion_png(last["confusion"], classes, dpi=dpi, max_size_in=size, title=title), "confusion matrix")
            for dpi, size in CONFUSION_SIZES
        )
        if md:
            out["confusion_matrix"] = md
    _, _, queries = latest_query_set(store) if "proposed_images" in keys else (None, None, None)
    if queries:
        md = _first_that_fits(
            _md(gallery_png(gallery_items(queries, n), cols=10, thumb=thumb), "proposed images")
            for n, thumb in GALLERY_SIZES
        )
        if md:
            out["proposed_images"] = md
    return out
