"""The gallery of proposed images as one PNG: thumbnails in a grid with their captions (Pillow).

Pillow is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import io

GREY = (128, 128, 128)  # the tile of an image that cannot be read


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType support
        return ImageFont.load_default()


def _fit_text(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _thumbnail(path: str, thumb: int):
    """The image scaled to fit thumb x thumb (RGB), or None when it cannot be read."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.draft("RGB", (thumb, thumb))  # JPEG: decode at reduced size (cheap)
            im = im.convert("RGB")
            # scale to fit the tile, up as well as down (CIFAR-sized images are 32 px)
            return ImageOps.contain(im, (thumb, thumb), Image.Resampling.LANCZOS)
    except Exception:  # missing, unreadable, corrupt, decompression bomb: a grey tile instead
        return None


def gallery_png(items: list[tuple[str, str]], *, cols: int = 10, thumb: int = 64) -> bytes:
    """Thumbnails in a grid, each with its caption (one or more lines, e.g. rank and score).

    A missing or unreadable image becomes a grey tile marked "unreadable";
    this never raises for a bad image. An empty list gives a small tile that
    says so.
    """
    from PIL import Image, ImageDraw

    thumb = max(16, int(thumb))
    cols = max(1, int(cols))
    font_size = max(8, min(12, thumb // 6))
    font = _font(font_size)
    pad = 4
    n_lines = max([len(str(c).split("\n")) for _, c in items] or [1])
    line_h = font_size + 3
    tile_w = max(thumb, 64)
    tile_h = thumb + n_lines * line_h + 2
    if not items:
        img = Image.new("RGB", (240, 40), "white")
        ImageDraw.Draw(img).text((8, 12), "no images proposed yet", fill=(90, 90, 90), font=font)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        return buf.getvalue()
    ncols = min(cols, len(items))
    nrows = -(-len(items) // ncols)
    img = Image.new("RGB", (pad + ncols * (tile_w + pad), pad + nrows * (tile_h + pad)), "white")
    draw = ImageDraw.Draw(img)
    for i, (path, caption) in enumerate(items):
        r, c = divmod(i, ncols)
        x0, y0 = pad + c * (tile_w + pad), pad + r * (tile_h + pad)
        t = _thumbnail(str(path), thumb)
        if t is None:
            tx = x0 + (tile_w - thumb) // 2
            draw.rectangle([tx, y0, tx + thumb - 1, y0 + thumb - 1], fill=GREY)
            label = _fit_text(draw, "unreadable", font, thumb - 4)
            draw.text((tx + 2, y0 + thumb // 2 - font_size // 2), label, fill=(235, 235, 235), font=font)
        else:
            img.paste(t, (x0 + (tile_w - t.width) // 2, y0 + (thumb - t.height) // 2))
        for j, line in enumerate(str(caption).split("\n")):
            draw.text(
                (x0, y0 + thumb + 2 + j * line_h), _fit_text(draw, line, font, tile_w), fill=(20, 20, 20), font=font
            )
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def gallery_items(queries: list[dict], limit: int) -> list[tuple[str, str]]:
    """(path, caption) of the first ``limit`` proposed images: "#rank  score" (3 decimals, or scientific)."""
    items = []
    for q in queries[:limit]:
        score = q["score"]
        if score is None:
            cap = f"#{q['rank']}"
        else:
            cap = f"#{q['rank']}  " + (f"{score:.3f}" if 1e-3 <= abs(score) < 1e3 or score == 0 else f"{score:.2e}")
        items.append((q["path"], cap))
    return items
