"""Images named as people name them: by sha256 id, by path relative to the image root, or by a unique file name.

``ImageNames`` is what a label file's image column is checked against (``known_image_ids`` of
``parse_label_file``, built by ``al_core.loop.inbox.validation_inputs``): ``name in names`` is true for a known
sha256 id (the readers' fast path), and ``resolve(value)`` turns any of the three forms into the image's id or
says why it cannot (unknown, or a file name several different images share: the error lists them). Exact
duplicates (one image at several paths) are one image: their shared file name is not ambiguous.

A path is matched as written after turning ``\\`` into ``/`` and dropping a leading ``./``: relative to the
image root, or absolute as the catalogue lists it. Nothing is resolved on the filesystem (``..`` never matches),
so a name can only reach an image the catalogue already lists.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

AMBIGUOUS_SHOWN = 5  # candidates listed in the one-line error of an ambiguous file name


def _norm(value: str) -> str:
    v = value.strip().replace("\\", "/")
    while v.startswith("./"):
        v = v[2:]
    return v


class ImageNames:
    """The known images and their names. ``pairs``: (image_id, absolute path) of every readable path;
    ``root``: the folder relative paths start from (the image root), or None."""

    def __init__(self, pairs: Iterable[tuple[str, str]], root: str | os.PathLike | None = None):
        self.pairs = [(str(i), str(p)) for i, p in pairs]
        self.ids = frozenset(i for i, _ in self.pairs)
        self.root = os.path.abspath(root) if root is not None else None
        self._by_path: dict[str, str] | None = None
        self._by_name: dict[str, dict[str, str]] | None = None

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def relative(self, path: str) -> str:
        """``path`` relative to the root (with ``/``), or as it is when outside it (or without a root)."""
        if self.root is not None:
            rel = os.path.relpath(path, self.root)
            if not rel.startswith(".."):
                return rel.replace(os.sep, "/")
        return path

    def _build(self) -> None:  # on the first lookup by name: a file naming images by sha256 never pays for it
        by_path: dict[str, str] = {}
        by_name: dict[str, dict[str, str]] = {}
        for iid, path in self.pairs:
            by_path[_norm(path)] = iid
            rel = self.relative(path)
            by_path.setdefault(_norm(rel), iid)
            by_name.setdefault(os.path.basename(path), {}).setdefault(iid, rel)
        self._by_path, self._by_name = by_path, by_name

    def resolve(self, value: str) -> tuple[str | None, str | None]:
        """(image id, None), or (None, why not): ``value`` is a known id, a path or a file name naming one image."""
        v = value.strip()
        if v in self.ids:
            return v, None
        if self._by_path is None:
            self._build()
        n = _norm(v)
        iid = self._by_path.get(n)
        if iid is not None:
            return iid, None
        found = self._by_name.get(n) if "/" not in n else None
        if found and len(found) == 1:
            return next(iter(found)), None
        if found:
            paths = sorted(found.values())
            shown = ", ".join(paths[:AMBIGUOUS_SHOWN]) + (
                f" and {len(paths) - AMBIGUOUS_SHOWN} more" if len(paths) > AMBIGUOUS_SHOWN else ""
            )
            return None, (
                f"file name {v!r} names {len(paths)} different images ({shown}): "
                "give the path relative to the image root or the image_id instead"
            )
        return None, None
