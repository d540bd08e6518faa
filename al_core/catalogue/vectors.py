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

- local folders and ``file://``: write ``<name>.tmp``, fsync, ``os.replace``;
- object stores: one PUT of the whole object (an object is visible complete or
  not at all), so the object is written under its final name.

This module never imports Dagster or DuckDB.
"""

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PART_ROW_GROUP = 65536  # as al_core.catalogue.store.PART_ROW_GROUP


def is_url(root) -> bool:
    return isinstance(root, str) and "://" in root


class VectorsLocation:
    """A vectors folder, local or behind fsspec. ``rel`` paths use ``/``."""

    def __init__(self, root: str | os.PathLike):
        import fsspec

        self.url = str(root) if is_url(root) else None
        if self.url:
            self.fs, path = fsspec.core.url_to_fs(self.url)
            self.root = path.rstrip("/")
            self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        else:
            self.fs = fsspec.filesystem("file")
            self.root = str(Path(root).absolute())
            self.protocol = "file"
        self.is_local = self.protocol in ("file", "local")

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
        return p[len(root) + 1:]

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
        try:
            self.fs.rm_file(self.path(rel))
        except FileNotFoundError:
            pass

    def put_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` so that a reader sees all of it or nothing (see the module docstring)."""
        final = self.path(rel)
        parent = final.rsplit("/", 1)[0]
        if self.is_local:
            os.makedirs(parent, exist_ok=True)
            tmp = f"{final}.{uuid.uuid4().hex[:8]}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        else:
            self.fs.makedirs(parent, exist_ok=True)
            self.fs.pipe_file(final, data)

    def put_json(self, rel: str, obj) -> None:
        self.put_bytes(rel, json.dumps(obj, sort_keys=True, default=str).encode("utf-8"))

    # ---------------------------------------------------------------- parquet
    def read_table(self, rel: str):
        import pyarrow.parquet as pq

        if self.is_local:
            return pq.read_table(self.path(rel), memory_map=True)
        return pq.read_table(self.path(rel), filesystem=self.fs)

    def register_duckdb(self, con) -> None:
        """Let a DuckDB connection read this location's URLs (no httpfs: fsspec through Python)."""
        if not self.is_local:
            con.register_filesystem(self.fs)


def part_table(image_ids: Sequence[str], vectors: np.ndarray):
    """(sorted image ids, Arrow table) in the part-file layout of al_core.catalogue.store:
    ``image_id`` string, ``vector`` FIXED_LEN_BYTE_ARRAY of D little-endian float32."""
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    order = np.argsort(np.asarray(image_ids, dtype=object).astype(str), kind="stable")
    ids_sorted = [image_ids[i] for i in order]
    vectors = np.ascontiguousarray(vectors[order])
    vtype = pa.binary(d * 4)
    schema = pa.schema([pa.field("image_id", pa.string(), nullable=False), pa.field("vector", vtype, nullable=False)])
    vec = pa.FixedSizeBinaryArray.from_buffers(vtype, n, [None, pa.py_buffer(vectors.astype("<f4", copy=False).tobytes())])
    return ids_sorted, pa.Table.from_arrays([pa.array(ids_sorted, pa.string()), vec], schema=schema)


def write_part(loc: VectorsLocation, config_id: str, shard: str, image_ids: Sequence[str],
               vectors: np.ndarray) -> dict:
    """Write one part file through fsspec; returns its catalogue record (as Store.write_part_file).

    The part is serialised in memory (a flush is at most FLUSH_ROWS vectors,
    ~42 MB at D = 1280), hashed, then written in one piece (put_bytes).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    image_ids = list(image_ids)
    n, d = np.shape(vectors)
    ids_sorted, table = part_table(image_ids, vectors)
    sink = pa.BufferOutputStream()
    pq.write_table(
        table, sink, compression="none", use_dictionary=False, write_statistics=False,
        row_group_size=PART_ROW_GROUP, data_page_version="2.0", data_page_size=8 << 20,
    )
    data = sink.getvalue().to_pybytes()
    part_id = uuid.uuid4().hex
    rel = f"{config_id}/shard={shard}/part-{part_id}.parquet"
    loc.put_bytes(rel, data)
    return {
        "part_id": part_id, "config_id": config_id, "shard": shard, "rel_path": rel,
        "n_rows": int(n), "dim": int(d), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
        "image_ids": ids_sorted,
    }


def sha256_of(loc: VectorsLocation, rel: str) -> str:
    h = hashlib.sha256()
    with loc.fs.open(loc.path(rel), "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


__all__ = ["VectorsLocation", "is_url", "part_table", "write_part", "sha256_of", "pending_commit", "MANIFEST_SUFFIX"]


MANIFEST_SUFFIX = ".manifest.json"  # part-<id>.manifest.json beside part-<id>.parquet: written, not yet committed


def pending_commit(path: Path) -> bool:
    """True for a part file (or its manifest) that waits for the single writer's commit
    (al_core.ingest.shards.commit_pending): the garbage collector must leave it alone."""
    name = path.name
    if name.endswith(".tmp"):
        return False
    if name.endswith(MANIFEST_SUFFIX):
        return True
    return (path.parent / (name.split(".", 1)[0] + MANIFEST_SUFFIX)).exists()
