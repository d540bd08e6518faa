"""The review gallery of a batch: an offline, sortable HTML page beside its CSV (al_core.reporting.review_page)."""

import html
import re
import urllib.parse
from pathlib import Path

from PIL import Image

from al_core.reporting.review_page import THUMB_PX, ReviewItem, thumbnail_path, write_review_page
from tests.conftest import SAMPLE_ROOT


def test_page_has_thumbnails_that_open_the_full_image_and_escapes_text(tmp_path):
    images = tmp_path / "project" / "photos"
    images.mkdir(parents=True)
    outbox = tmp_path / "project" / "data" / "outbox"
    src = sorted((SAMPLE_ROOT / "cat").iterdir())[:2]
    names = ["IMG 0001 <b>&.jpg", "x#1+é.jpg"]
    for s, n in zip(src, names, strict=True):
        (images / n).write_bytes(s.read_bytes())
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    items = [
        ReviewItem(1, "a" * 64, str(images / names[0]), f"photos/{names[0]}", "cat", 0.91, 0.42, "flips 3/3"),
        ReviewItem(2, "b" * 64, str(images / names[1]), f"photos/{names[1]}", "dog", 0.55, float("nan"), ""),
        ReviewItem(3, "c" * 64, str(images / "broken.jpg"), "photos/broken.jpg", None, None, None, ""),
    ]
    page = write_review_page(outbox, "round-0001", "Batch 1 <dropquery>", "10 images to label", items)
    text = page.read_text()
    assert page == outbox / "round-0001.html"
    assert "<b>" not in text.replace("<body>", "") and html.escape(names[0]) in text  # escaped, shown
    assert "Batch 1 &lt;dropquery&gt;" in text
    # thumbnails: generated small (longer side THUMB_PX), JPEG, in the outbox; the originals are not copied
    for it in items[:2]:
        t = thumbnail_path(outbox, it.image_id)
        with Image.open(t) as im:
            assert im.format == "JPEG" and max(im.size) == THUMB_PX
    assert not thumbnail_path(outbox, "c" * 64).exists() and "cannot be shown" in text
    assert list(outbox.rglob("*.jpg")) and not any(p.name in names for p in outbox.rglob("*"))  # no copy
    # every link resolves from the outbox folder to the real file
    for href in re.findall(r'href="([^"]+)"', text):
        target = (outbox / urllib.parse.unquote(href)).resolve()
        assert target.exists(), href
    assert (outbox / urllib.parse.unquote(re.findall(r'<a href="([^"]+)"', text)[0])).resolve() == (
        images / names[0]
    ).resolve()
    # sortable columns, numbers with sort keys; a NaN score shows "-"
    assert text.count("<th>") == 8 and "addEventListener('click'" in text
    assert 'data-key="0.42"' in text and ">-</td>" in text


def test_thumbnails_are_made_once(tmp_path):
    src = sorted((SAMPLE_ROOT / "dog").iterdir())[0]
    item = ReviewItem(1, "d" * 64, str(src), src.name)
    write_review_page(tmp_path, "a", "t", "i", [item])
    t = thumbnail_path(tmp_path, item.image_id)
    first = t.stat().st_mtime_ns
    write_review_page(tmp_path, "b", "t", "i", [item])
    assert t.stat().st_mtime_ns == first
    assert Path(tmp_path / "b.html").exists()
