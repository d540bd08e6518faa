"""Any decoded image as 8-bit RGB, scaled correctly, or refused as unsupported (never a white picture).

``to_rgb8(im)`` is what the scan checks each image with and what embedding feeds
the backbone (``al_core.ingest.embed.decode_image``). Pillow's own
``convert("RGB")`` clips samples above 255, so a 16-bit PNG (mode ``I;16``)
would become a white picture; here:

- ``I;16``, ``I;16L``, ``I;16B``, ``I;16N`` (16-bit grey): divided by 257
  (65535 -> 255), rounded;
- ``I`` (32-bit integer grey): samples within 0..65535 are 16-bit samples
  (scaled as above); anything else is refused (no defined 8-bit scale);
- ``F`` (32-bit float grey): samples within 0..1 are multiplied by 255; anything
  else (NaN, negative, above 1) is refused;
- transparency (``RGBA``, ``LA``, ``PA``, ``La``, ``RGBa``, and ``P``/``L``/``RGB``
  with a transparency entry): composited over ``ALPHA_BACKGROUND``, so what is
  hidden under a transparent pixel is never embedded;
- ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``: Pillow's conversion (8-bit already);
- any other mode (``LAB``, ``HSV``, multi-band 16-bit, ...): ``UnsupportedImage``.

Never imports Dagster, DuckDB or torch.
"""

from __future__ import annotations

ALPHA_BACKGROUND = (0, 0, 0)  # what a transparent pixel shows: black (a fixed colour, so vectors are reproducible)
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
EIGHT_BIT_MODES = frozenset({"1", "L", "P", "RGB", "CMYK", "YCbCr"})
UINT16_MAX = 65535


class UnsupportedImage(ValueError):
    """An image whose pixels have no defined 8-bit RGB rendering here (the message says why)."""


def _grey16(a):
    """uint8 grey from samples known to lie in 0..65535."""
    import numpy as np

    return ((a.astype(np.uint32) * 255 + UINT16_MAX // 2) // UINT16_MAX).astype(np.uint8)


def _from_grey(a):
    from PIL import Image

    return Image.fromarray(a).convert("RGB")  # 2-d uint8: mode L


def to_rgb8(im):
    """``im`` (a loaded PIL image) as an 8-bit RGB image (module docstring); ``UnsupportedImage`` otherwise."""
    import numpy as np
    from PIL import Image

    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in SIXTEEN_BIT_MODES:
        return _from_grey(_grey16(np.asarray(im)))
    if mode == "I":
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > UINT16_MAX):
            raise UnsupportedImage(
                f"image mode I with samples {a.min()}..{a.max()}: only 0..65535 (16-bit) has a defined 8-bit scale"
            )
        return _from_grey(_grey16(a))
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if a.size and not (np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0):
            raise UnsupportedImage("image mode F (floating point) with samples outside 0..1: no defined 8-bit scale")
        return _from_grey(np.rint(a * 255).astype(np.uint8))
    if mode in ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in EIGHT_BIT_MODES:
        return im.convert("RGB")
    raise UnsupportedImage(f"image mode {mode} is not supported (supported: 8-bit, 16-bit grey, alpha, CMYK)")
