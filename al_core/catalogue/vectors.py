"""Where the vector part files live: a local folder or an fsspec URL.

``VectorsLocation(root)`` wraps the vectors folder of a store. ``root`` is a
local path (the default, ``data/vectors``) or a URL that fsspec understands:
``file:///abs/path``, ``memory://bucket/prefix`` (tests), ``s3://bucket/prefix``
or ``gs://...`` when s3fs / gcsfs is installed. Every byte goes through Python
(pyarrow + fsspec): DuckDB's own object-store extension (httpfs) is never used,
because DuckDB downloads it at run time and that fails on machines without
internet access (docs/scale-out.md). For SQL over remote parts, the store
registers the fsspec filesystem with each DuckDB connection
(``DuckDBPyConnection.register_filesystem``), which needs no extension.

Writes are all-or-nothing for a reader:

- local folders and ``file://``: ``al_core.files.atomic`` (a temporary file in
  the same folder, fsync, ``os.replace``);
- object stores: one PUT of the whole object (an object is visible complete or
  not at all), so the object is written under its final name.

This module never imports Dagster or DuckDB.
"""

import contextlib
import functools
import hashlib
import json
import os
from pathlib import Path

from al_core.files.atomic import atomic_write_bytes
from al_core.files.hashing import HASH_CHUNK, sha256_file


def is_url(root) -> bool:
    return isinstance(root, str) and "://" in root


class VectorsLocation:
    """A vectors folder, local or behind fsspec. ``rel`` paths use ``/``."""

    def __init__(self, root: str | os.PathLike):
        self.url = str(root) if is_url(root) else None
        if self.url:
            import fsspec

            self.fs, path = fsspec.core.url_to_fs(self.url)
            self.root = path.rstrip("/")
            self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        else:  # a local folder: fsspec is imported only when a file-system call needs it (self.fs)
            self.root = str(Path(root).absolute())
            self.protocol = "file"
        self.is_local = self.protocol in ("file", "local")

    @functools.cached_property
    def fs(self):
        """The fsspec file system (set by ``__init__`` for a URL; the local one, on first use, otherwise)."""
        import fsspec

        return fsspec.filesystem("file")

    def __repr__(self) -> str:
        return f"VectorsLocation({self.url or self.root!r})"

    def __str__(self) -> str:
        return self.url or self.root

    # ---------------------------------------------------------------- names
    def path(self, rel: str | os.PathLike) -> str:
        """The filesystem path of ``rel`` (no protocol): what ``self.fs`` takes."""
        return f"{self.root}/{str(rel).replace(os.sep, '/')}"

    def local_path(self, rel: str | os.PathLike = "") -> Path:
        if not self.is_local:
            raise ValueError(f"{self} is not on a local filesystem")
        return Path(self.path(rel)) if str(rel) else Path(self.root)

    def uri(self, rel: str | os.PathLike) -> str:
        """What a reader opens: the absolute local path, or the full URL (protocol://...)."""
        if self.is_local:
            return self.path(rel)
        return f"{self.protocol}://{self.path(rel)}"

    def rel(self, path: str) -> str:
        p = self.fs._strip_protocol(path) if not self.is_local else str(path)
        p = p.replace(os.sep, "/")
        root = self.root.replace(os.sep, "/")
        if not p.startswith(root + "/"):
            raise ValueError(f"{path} is not under {self}")
        return p[len(root) + 1 :]

    # ---------------------------------------------------------------- io
    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))

    def glob(self, pattern: str) -> list[str]:
        """Relative paths matching ``pattern`` (relative, fsspec glob syntax), sorted."""
        return sorted(self.rel(p) for p in self.fs.glob(self.path(pattern)))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def read_json(self, rel: str):
        return json.loads(self.read_bytes(rel))

    def remove(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(rel))

    def put_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` so that a reader sees all of it or nothing (see the module docstring)."""
        if self.is_local:
            atomic_write_bytes(self.local_path(rel), data)
            return
        final = self.path(rel)
        self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(final, data)

    def put_json(self, rel: str, obj) -> None:
        self.put_bytes(rel, json.dumps(obj, sort_keys=True, default=str).encode("utf-8"))

    # ---------------------------------------------------------------- parquet
    def arrow_source(self, rel: str):
        """(path, filesystem) for ``pyarrow.parquet``: a local path with pyarrow's own file system
        (None), or the fsspec path and file system (object storage)."""
        return (self.path(rel), None) if self.is_local else (self.path(rel), self.fs)

    def open_input(self, rel: str):
        """A file to read ``rel`` from: memory-mapped when local, an fsspec file otherwise."""
        if self.is_local:
            import pyarrow as pa

            return pa.memory_map(self.path(rel))
        return self.fs.open(self.path(rel), "rb")

    def register_duckdb(self, con) -> None:
        """Let a DuckDB connection read this location's URLs (no httpfs: fsspec through Python)."""
        if not self.is_local:
            con.register_filesystem(self.fs)


def sha256_of(loc: VectorsLocation, rel: str) -> str:
    """sha256 of the file ``rel``, streamed (al_core.files.hashing locally, fsspec otherwise)."""
    if loc.is_local:
        return sha256_file(loc.path(rel))
    h = hashlib.sha256()
    with loc.fs.open(loc.path(rel), "rb") as f:
        while b := f.read(HASH_CHUNK):
            h.update(b)
    return h.hexdigest()


__all__ = ["VectorsLocation", "is_url", "sha256_of"]
