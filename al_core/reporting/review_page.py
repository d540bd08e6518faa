"""The review gallery of a batch: one offline HTML page beside the batch's CSV in the outbox.

``write_review_page(outbox, stem, title, items)`` writes ``<outbox>/<stem>.html``:
a table of thumbnails (at most THUMB_PX on their longer side, generated once
per image into ``<outbox>/thumbnails/``, never a copy of the image) that open
the full image, with the rank, the file name, the predicted class and its
probability, the strategy's score and what it means, and why the image was
picked. Every column sorts by a click (a few lines of inline JavaScript, no
network). Links to the images are relative to the outbox, so the page works
from the outbox folder wherever the project lives; every value is HTML-escaped.
"""

from __future__ import annotations

import html
import os
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from al_core.files.atomic import atomic_write_bytes, atomic_write_text
from al_core.files.hashing import short

THUMB_PX = 192  # longer side of a thumbnail (the issue asks at least 160); ~8-15 KB as JPEG
THUMB_QUALITY = 85  # JPEG quality of a thumbnail
THUMBNAILS_DIR = "thumbnails"
MAX_IMAGE_PIXELS = 89_478_485  # Pillow's decompression-bomb guard, as the scan


@dataclass(frozen=True)
class ReviewItem:
    """One image of a page."""

    rank: int
    image_id: str
    path: str  # absolute path of the image
    relative_path: str  # as the project shows it (relative to the image root)
    predicted: str | None = None
    probability: float | None = None
    score: float | None = None
    reason: str = ""


def thumbnail_path(outbox: Path, image_id: str) -> Path:
    return outbox / THUMBNAILS_DIR / f"{short(image_id)}.jpg"


def make_thumbnail(src: str, dest: Path) -> bool:
    """Write a JPEG thumbnail of ``src`` to ``dest`` once (True when it exists afterwards); never raises for a bad
    image (missing, corrupt, a decompression bomb): the page then says the image cannot be shown."""
    if dest.exists():
        return True
    from PIL import Image, ImageOps

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with Image.open(src) as im:
            im.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG: decode at a reduced size (cheap)
            im = ImageOps.exif_transpose(im).convert("RGB")
            im = ImageOps.contain(im, (THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS)  # up for tiny images too
            import io

            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=THUMB_QUALITY)
    except Exception:
        return False
    atomic_write_bytes(dest, buf.getvalue())
    return True


def _href(outbox: Path, target: str | Path) -> str:
    rel = os.path.relpath(Path(target).absolute(), outbox.absolute())
    return urllib.parse.quote(rel.replace(os.sep, "/"))


def _num(v: float | None, fmt: str) -> tuple[str, str]:
    """(shown text, sort key) of a number that may be missing."""
    if v is None or v != v:  # None or NaN
        return "-", ""
    return fmt.format(v), repr(float(v))


_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}th,td{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left;
vertical-align:middle}th{cursor:pointer;background:#f4f4f4;position:sticky;top:0}th:hover{background:#e8e8e8}
img{display:block;max-width:192px;max-height:192px;image-rendering:auto}.missing{color:#a00}
.num{text-align:right;font-variant-numeric:tabular-nums}.small{color:#666;font-size:90%}"""

_SORT_JS = """document.querySelectorAll('th').forEach((th, col) => th.addEventListener('click', () => {
 const body = th.closest('table').tBodies[0], rows = Array.from(body.rows);
 const up = th.dataset.dir !== 'up'; th.dataset.dir = up ? 'up' : 'down';
 const key = r => r.cells[col].dataset.key ?? r.cells[col].textContent;
 const num = rows.every(r => key(r) === '' || !isNaN(parseFloat(key(r))));
 rows.sort((a, b) => { const x = key(a), y = key(b);
  const c = num ? (parseFloat(x || 'NaN') || 0) - (parseFloat(y || 'NaN') || 0) : x.localeCompare(y);
  return up ? c : -c; });
 rows.forEach(r => body.appendChild(r)); }));"""


def render(outbox: Path, title: str, intro: str, items: Sequence[ReviewItem], score_meaning: str) -> str:
    """The page's HTML (thumbnails must exist already where they could be made)."""
    e = html.escape
    rows = []
    for it in items:
        thumb = thumbnail_path(outbox, it.image_id)
        full = _href(outbox, it.path)
        name = os.path.basename(it.path)
        if thumb.exists():
            cell = (
                f'<a href="{full}" target="_blank"><img src="{_href(outbox, thumb)}" alt="{e(name)}" '
                f'loading="lazy"></a>'
            )
        else:
            cell = f'<a href="{full}" class="missing">cannot be shown</a>'
        prob, prob_key = _num(it.probability, "{:.2f}")
        score, score_key = _num(it.score, "{:.4g}")
        rows.append(
            f'<tr><td class="num" data-key="{it.rank}">{it.rank}</td><td data-key="{e(name)}">{cell}</td>'
            f'<td>{e(name)}<div class="small">{e(it.relative_path)}</div></td>'
            f'<td>{e(it.predicted or "-")}</td><td class="num" data-key="{prob_key}">{prob}</td>'
            f'<td class="num" data-key="{score_key}">{score}</td><td>{e(it.reason)}</td>'
            f'<td class="small">{e(short(it.image_id))}</td></tr>'
        )
    head = (
        "<tr><th>rank</th><th>image</th><th>file</th><th>predicted</th><th>probability</th>"
        "<th>score</th><th>why picked</th><th>image id</th></tr>"
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{e(title)}</h1><p>{e(intro)}</p>"
        f'<p class="small">Score: {e(score_meaning)}. Click a column heading to sort; click a thumbnail '
        f"for the full image.</p><table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
        f"<script>{_SORT_JS}</script></body></html>\n"
    )


def write_review_page(
    outbox: Path,
    stem: str,
    title: str,
    intro: str,
    items: Sequence[ReviewItem],
    *,
    score_meaning: str = "the strategy's score (higher: picked first)",
) -> Path:
    """Thumbnails for ``items`` (once each) and ``<outbox>/<stem>.html``, written atomically; returns the page."""
    outbox = Path(outbox)
    for it in items:
        make_thumbnail(it.path, thumbnail_path(outbox, it.image_id))
    return atomic_write_text(outbox / f"{stem}.html", render(outbox, title, intro, items, score_meaning))
