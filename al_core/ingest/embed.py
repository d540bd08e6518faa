"""Streaming embedding with bounded memory.

    stream = embed_images(paths, backbone, batch_size=64, progress=print)
    for keys, vectors in stream:        # vectors: float32 numpy array, len(keys) x D
        store(keys, vectors)
    stream.failures                      # [Failure(key, error), ...] images that did not decode
    stream.stats                         # EmbedStats(images, failures, seconds, images_per_s, ...)

Items are paths (the key is ``str(path)``) or ``(key, source)`` pairs where the
source is a path, the file's bytes, a PIL image or a ``ScannedFile`` (a file the
scan recorded: its bytes are read once, hashed and decoded from the same
buffer; bytes that no longer match the recorded sha256 make the image a failure
starting with ``CHANGED_SINCE_SCAN``, never a vector). Pixels become 8-bit RGB
through ``al_core.ingest.pixels.to_rgb8`` (16-bit and float images scaled,
transparency composited, other modes refused). Decoding and preprocessing
run ahead of the forward pass in worker threads (default) or worker processes
(``backend="processes"``, a torch DataLoader), at most ``prefetch`` batches
ahead, so memory stays bounded whatever the number of images. An image that
fails to decode goes to ``stream.failures`` (and ``on_failure``) and never stops
the stream. The device and dtype (CUDA autocast) are the backbone's.
"""

from __future__ import annotations

import functools
import io
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, NamedTuple

__all__ = [
    "EmbedBatch",
    "EmbedStats",
    "EmbedStream",
    "Failure",
    "Progress",
    "CHANGED_SINCE_SCAN",
    "ScannedFile",
    "decode_image",
    "embed_images",
    "format_duration",
]

CHANGED_SINCE_SCAN = "changed since the scan"  # the start of a failure whose bytes no longer match the image id


class EmbedBatch(NamedTuple):
    keys: list
    vectors: Any  # numpy float32 array, len(keys) x D


class Failure(NamedTuple):
    key: Any
    error: str


class ScannedFile(NamedTuple):
    """An image file as the scan recorded it: where it is (``root``: the image root it must stay inside, None for
    a manifest's file) and the sha256 its bytes had (its image id)."""

    path: str
    sha256: str
    root: str | None = None

    def read_verified(self) -> bytes:
        """The file's bytes, read once through ``al_core.ingest.image_files.read_image_bytes``; ValueError starting with
        CHANGED_SINCE_SCAN when they no longer hash to ``sha256``."""
        import hashlib

        from al_core.ingest.image_files import read_image_bytes

        data = read_image_bytes(self.path, self.root)
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256:
            raise ValueError(
                f"{CHANGED_SINCE_SCAN}: its bytes now have sha256 {digest[:16]}..., not its image id "
                f"{self.sha256[:16]}...; nothing embedded, the next scan records it again"
            )
        return data


@dataclass
class Progress:
    images: int  # embedded so far
    failures: int
    elapsed_s: float
    images_per_s: float
    done: bool = False
    total: int | None = None  # images to embed, when known: the line shows done/total and the time left

    @property
    def seconds_left(self) -> float | None:
        """The time left at the rate so far (None without a total or a rate)."""
        if self.total is None or self.images_per_s <= 0:
            return None
        return max(0, self.total - self.images - self.failures) / self.images_per_s

    def __str__(self) -> str:
        state = "done" if self.done else "embedding"
        count = f"{self.images}/{self.total} images" if self.total is not None else f"{self.images} images"
        if self.total:
            count += f" ({100 * (self.images + self.failures) / self.total:.0f} %)"
        left = self.seconds_left
        eta = f", about {format_duration(left)} left" if left is not None and not self.done else ""
        return (
            f"{state}: {count}, {self.failures} failures, {self.elapsed_s:.1f} s, {self.images_per_s:.1f} images/s{eta}"
        )


def format_duration(seconds: float) -> str:
    """'42 s', '3 min 5 s', '2 h 10 min'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


@dataclass
class EmbedStats:
    images: int = 0
    failures: int = 0
    batches: int = 0
    seconds: float = 0.0  # wall time of the whole stream (consumer time included)
    forward_s: float = 0.0  # time inside backbone.forward
    wait_s: float = 0.0  # time the forward loop waited for decoded batches
    backend: str = ""
    num_workers: int = 0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["images_per_s"] = self.images_per_s
        return d


_EXIF_ORIENTATION = 0x0112


def decode_image(source):
    """Open an image (path, bytes, PIL image or ScannedFile) as a loaded 8-bit RGB PIL image with its
    EXIF orientation applied. Raises whatever the decoder raises, ``UnsupportedImage`` for a mode without
    an 8-bit rendering, ValueError (CHANGED_SINCE_SCAN) for a scanned file whose bytes changed."""
    from PIL import Image

    from al_core.ingest.pixels import to_rgb8

    if isinstance(source, ScannedFile):
        source = source.read_verified()
    if isinstance(source, Image.Image):
        source.load()
        orientation = source.getexif().get(_EXIF_ORIENTATION, 1)
        img = to_rgb8(source)
    else:
        f = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
        with Image.open(f) as im:
            im.load()
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            img = to_rgb8(im)
            if img is im:
                img = im.copy()  # a new image that outlives the file
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        img = img.transpose(_transpose_table()[orientation])
    return img


@functools.cache
def _transpose_table() -> dict:
    from PIL import Image

    T = Image.Transpose
    return {
        2: T.FLIP_LEFT_RIGHT,
        3: T.ROTATE_180,
        4: T.FLIP_TOP_BOTTOM,
        5: T.TRANSPOSE,
        6: T.ROTATE_270,
        7: T.TRANSVERSE,
        8: T.ROTATE_90,
    }


def _split(item) -> tuple[Any, Any]:
    if isinstance(item, tuple) and len(item) == 2:
        return item
    if isinstance(item, (str, os.PathLike)):
        return str(item), item
    raise TypeError(f"embed_images: an item must be a path or a (key, source) pair, got {type(item).__name__}")


def _prepare(chunk: list, transform, pin: bool = False) -> tuple[list, Any, list[Failure]]:
    """Decode and preprocess one batch: (keys, stacked tensor or None, failures).

    With a transform that has ``to_array``/``normalize_batch`` (the registry's own),
    the batch stays uint8 (N x H x W x 3) here and is normalised just before the
    forward pass (vectorised, on the model's device)."""
    import numpy as np
    import torch

    to_array = getattr(transform, "to_array", None)
    keys, outs, failures = [], [], []
    for item in chunk:
        key, source = _split(item)
        try:
            img = decode_image(source)
            out = to_array(img) if to_array is not None else transform(img)
        except Exception as e:  # any decoder / transform error is the image's, not the stream's
            failures.append(Failure(key, f"{type(e).__name__}: {e}"))
            continue
        keys.append(key)
        outs.append(out)
    if not outs:
        return keys, None, failures
    x = torch.from_numpy(np.stack(outs)) if to_array is not None else torch.stack(outs)  # uint8 N x H x W x 3
    return keys, (x.pin_memory() if pin else x), failures


def _chunks(items: Iterable, n: int) -> Iterator[list]:
    it = iter(items)
    while True:
        chunk = list(islice(it, n))
        if not chunk:
            return
        yield chunk


def default_num_workers() -> int:
    # Decoding small images is a few per cent of a CPU forward pass: one decoding
    # thread keeps up, and more would take cores from the forward pass.
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def _make_dataset(items: list, batch_size: int, transform):
    import torch

    class BatchDataset(torch.utils.data.IterableDataset):
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            wid, nw = (info.id, info.num_workers) if info else (0, 1)
            for b, start in enumerate(range(0, len(items), batch_size)):
                if b % nw == wid:
                    yield _prepare(items[start : start + batch_size], transform)

    return BatchDataset()


def _worker_init(_):
    import torch

    torch.set_num_threads(1)


class EmbedStream:
    """Iterable of :class:`EmbedBatch`; see :func:`embed_images`. Single use."""

    def __init__(
        self,
        items: Iterable,
        backbone,
        *,
        batch_size: int,
        num_workers: int,
        backend: str,
        prefetch: int,
        progress: Callable[[Progress], Any] | None,
        progress_interval_s: float,
        on_failure: Callable[[Failure], Any] | None,
        total: int | None = None,
    ):
        if backend not in ("threads", "processes", "serial"):
            raise ValueError(f"backend must be threads, processes or serial, got {backend!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.items = items
        self.backbone = backbone
        self.batch_size = batch_size
        self.num_workers = max(0, int(num_workers))
        self.backend = backend if self.num_workers > 0 else "serial"
        self.prefetch = max(1, prefetch)
        self.progress = progress
        self.progress_interval_s = progress_interval_s
        self.total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)
        self.on_failure = on_failure
        self.failures: list[Failure] = []
        self.stats = EmbedStats(backend=self.backend, num_workers=self.num_workers)
        self._started = False

    @property
    def config(self) -> dict:
        return self.backbone.config

    @property
    def config_id(self) -> str:
        return self.backbone.config_id

    # -- prepared batches, in input order -------------------------------------
    def _prepared_serial(self) -> Iterator:
        for chunk in _chunks(self.items, self.batch_size):
            yield _prepare(chunk, self.backbone.transform)

    def _prepared_threads(self) -> Iterator:
        from concurrent.futures import ThreadPoolExecutor

        chunks = _chunks(self.items, self.batch_size)
        pin = str(self.backbone.device).startswith("cuda")
        pending: deque = deque()
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="al-embed-decode")
        try:

            def fill():
                while len(pending) < self.prefetch:
                    chunk = next(chunks, None)
                    if chunk is None:
                        return
                    pending.append(pool.submit(_prepare, chunk, self.backbone.transform, pin))

            fill()
            while pending:
                fut = pending.popleft()
                fill()  # keep the workers busy while this batch goes through the model
                yield fut.result()
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def _prepared_processes(self) -> Iterator:
        import torch

        items = self.items if isinstance(self.items, (list, tuple)) else list(self.items)
        loader = torch.utils.data.DataLoader(
            _make_dataset(items, self.batch_size, self.backbone.transform),
            batch_size=None,
            num_workers=self.num_workers,
            prefetch_factor=max(1, self.prefetch // self.num_workers),
            worker_init_fn=_worker_init,
            pin_memory=str(self.backbone.device).startswith("cuda"),
        )
        yield from loader

    # -- the stream -------------------------------------------------------------
    def __iter__(self) -> Iterator[EmbedBatch]:
        if self._started:
            raise RuntimeError("an EmbedStream can be iterated once")
        self._started = True
        prepared = {
            "serial": self._prepared_serial,
            "threads": self._prepared_threads,
            "processes": self._prepared_processes,
        }[self.backend]()
        import torch

        normalize = getattr(self.backbone.transform, "normalize_batch", None)
        st = self.stats
        t0 = time.perf_counter()
        last = t0
        try:
            while True:
                tw = time.perf_counter()
                nxt = next(prepared, None)
                st.wait_s += time.perf_counter() - tw
                if nxt is None:
                    break
                keys, x, failures = nxt
                for f in failures:
                    self.failures.append(f)
                    st.failures += 1
                    if self.on_failure is not None:
                        self.on_failure(f)
                if x is not None:
                    tf = time.perf_counter()
                    if x.dtype == torch.uint8 and normalize is not None:
                        x = normalize(x, device=self.backbone.device)
                    vectors = self.backbone.forward(x).numpy()
                    st.forward_s += time.perf_counter() - tf
                    st.images += len(keys)
                    st.batches += 1
                    st.seconds = time.perf_counter() - t0
                    yield EmbedBatch(keys, vectors)
                now = time.perf_counter()
                st.seconds = now - t0
                if self.progress is not None and now - last >= self.progress_interval_s:
                    last = now
                    self.progress(Progress(st.images, st.failures, st.seconds, st.images_per_s, total=self.total))
        finally:
            close = getattr(prepared, "close", None)
            if close is not None:
                close()
            st.seconds = time.perf_counter() - t0
        if self.progress is not None:
            self.progress(Progress(st.images, st.failures, st.seconds, st.images_per_s, done=True, total=self.total))


def embed_images(
    paths_or_items: Iterable,
    backbone,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    backend: str = "threads",
    prefetch: int | None = None,
    progress: Callable[[Progress], Any] | None = None,
    progress_interval_s: float = 5.0,
    on_failure: Callable[[Failure], Any] | None = None,
    total: int | None = None,
) -> EmbedStream:
    """Embed images in batches; iterate the result for ``(keys, vectors)`` batches.

    paths_or_items: paths, or ``(key, source)`` pairs (source: path, bytes or PIL image);
        consumed lazily (the ``processes`` backend needs a list).
    backbone: a :class:`al_core.models.backbones.LoadedBackbone` (or a name, loaded with defaults).
    num_workers: decoding threads/processes (default: half the cores, at least 1; 0 = no overlap).
    backend: "threads" (default, measured fastest here), "processes" (torch DataLoader) or "serial".
    prefetch: decoded batches kept ready ahead of the model (default 2 x num_workers, at least 2).
    progress: called every ``progress_interval_s`` seconds and once at the end with a :class:`Progress`.
    total: the number of items, for done/total and the time left in the progress lines (default: ``len`` of
        ``paths_or_items`` when it has one).
    on_failure: called with each :class:`Failure` (they are also collected in ``stream.failures``).
    """
    if isinstance(backbone, str):
        from al_core.models.backbones import load_backbone

        backbone = load_backbone(backbone)
    nw = default_num_workers() if num_workers is None else num_workers
    pf = prefetch if prefetch is not None else max(2, 2 * nw)
    return EmbedStream(
        paths_or_items,
        backbone,
        batch_size=batch_size,
        num_workers=nw,
        backend=backend,
        prefetch=pf,
        progress=progress,
        progress_interval_s=progress_interval_s,
        on_failure=on_failure,
        total=total,
    )
