"""Image preprocessing of the backbones that do not use their library's own transform.

:class:`ResizeCropNormalize` reproduces torchvision's ``Resize`` (shorter side, bicubic,
antialiased), ``CenterCrop``, ``ToTensor`` and ``Normalize`` with PIL and numpy (torchvision
is not imported), split so that the per-image part runs in the decoding workers and the
normalisation runs vectorised over a batch. :func:`preprocessing_config` is the record of
it that enters the embedding configuration (and so its config id).
"""

from __future__ import annotations

__all__ = ["ResizeCropNormalize", "preprocessing_config"]


def preprocessing_config(input_size: int, resize: int, mean, std) -> dict:
    """The preprocessing record of a :class:`ResizeCropNormalize` (resize the shorter side
    to ``resize``, centre crop ``input_size``) as it enters the embedding configuration."""
    return {
        "input_size": input_size,
        "resize_shorter_side": resize,
        "interpolation": "bicubic",
        "antialias": True,
        "center_crop": input_size,
        "mean": list(mean),
        "std": list(std),
        "color": "RGB",
        "exif_transpose": True,
    }


class ResizeCropNormalize:
    """PIL image -> normalised float tensor (C x H x W): resize the shorter side to
    ``resize`` (bicubic; PIL resampling, antialiased), centre crop ``crop``, scale
    to [0, 1], subtract ``mean``, divide by ``std`` (torchvision's Resize,
    CenterCrop, ToTensor, Normalize, with the same sizes and rounding).

    Split in two for batches: :meth:`to_array` (PIL -> H x W x 3 uint8, per image,
    the expensive part, in the decoding workers) and :meth:`normalize_batch`
    (N x H x W x 3 uint8 -> N x 3 x H x W float32 in channels-last memory layout,
    vectorised over the batch, on the model's device, just before the forward pass).
    ``transform(img)`` is ``normalize_batch(to_array(img)[None])[0]``: identical numbers.
    """

    def __init__(self, resize: int, crop: int, mean, std):
        import numpy as np

        self.resize, self.crop = int(resize), int(crop)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    def to_array(self, img):
        import numpy as np
        from PIL import Image

        if img.mode != "RGB":
            img = img.convert("RGB")
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        if short != self.resize:
            new_short, new_long = self.resize, int(self.resize * long / short)
            size = (new_short, new_long) if w <= h else (new_long, new_short)
            img = img.resize(size, Image.Resampling.BICUBIC)
            w, h = img.size
        c = self.crop
        if (w, h) != (c, c):
            if w < c or h < c:
                raise ValueError(f"image {w}x{h} smaller than the crop {c} after resizing")
            top, left = int(round((h - c) / 2.0)), int(round((w - c) / 2.0))
            img = img.crop((left, top, left + c, top + c))
        return np.asarray(img, dtype=np.uint8)

    def normalize_batch(self, arr, device=None):
        """N x H x W x 3 uint8 (array or tensor) -> N x 3 x H x W float32 (channels-last
        strides), on ``device`` when given (the uint8 batch is moved first: 4x less to copy)."""
        import torch

        x = torch.as_tensor(arr)
        if device is not None:
            x = x.to(device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).to(torch.float32)
        mean = torch.as_tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.as_tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return x.div_(255.0).sub_(mean).div_(std)

    def __call__(self, img):
        return self.normalize_batch(self.to_array(img)[None].copy())[0]

    def __repr__(self) -> str:
        return (
            f"ResizeCropNormalize(resize={self.resize}, interpolation=bicubic, crop={self.crop}, "
            f"mean={self.mean.tolist()}, std={self.std.tolist()})"
        )
