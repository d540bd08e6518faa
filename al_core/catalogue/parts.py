"""The vector part format: the one writer (``write_part``) and the one reader (``read_part*``).

A part file holds vectors of one embedding config and one shard, at
``<config_id>/shard=<hh>/part-<part_id>.parquet`` under the vectors folder. A
shard is the first ``SHARD_HEX_DIGITS`` hex digits of the image id (its sha256),
so an image's shard never changes when images are added.

The layout is the measured one (docs/benchmarks.md, "Vector store"): two
columns, ``image_id`` (string) and ``vector`` (one FIXED_LEN_BYTE_ARRAY of D
little-endian float32 per row), uncompressed, no dictionary, no statistics,
rows sorted by image id. Parquet decodes the vector column as one contiguous
buffer (near ``np.load`` speed), where a ``FLOAT[D]`` list column costs 4-5 x
more to decode; DuckDB reads the column as a BLOB (the ``embeddings`` view;
``np.frombuffer(blob, '<f4')`` in Python).

A part is invisible until the catalogue records it (``embedding_parts``, by the
single DuckDB writer). A worker of the scale-out path (al_core.ingest.shards)
writes a manifest ``part-<part_id>.manifest.json`` beside its part: the part
waits for the writer's commit, and the garbage collector leaves it alone
(``pending_commit``).

Reading a part that is missing, truncated or damaged raises ``PartDamaged``
(one line naming the file and the repair command, ``al verify --repair``);
``check_part`` compares a part with its catalogue record (size, sha256, rows,
dimension). ``write_part`` refuses NaN and infinite vectors
(``NonFiniteVectors``, naming their images).

Files are reached through ``al_core.catalogue.vectors.VectorsLocation`` (a local
folder, or object storage through fsspec). Never imports Dagster or DuckDB.
"""

import contextlib
import hashlib
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from al_core.catalogue.errors import NonFiniteVectors, PartDamaged, StoreError
from al_core.catalogue.vectors import VectorsLocation
from al_core.files.atomic import atomic_path
from al_core.files.hashing import sha256_file

SHARD_HEX_DIGITS = 1  # 16 shards; 2 -> 256 shards (worth it above ~10 M images)
PART_ROW_GROUP = 65536  # rows per Parquet row group: 65536 x 1280 x 4 B = 335 MB at most per group read
DATA_PAGE_BYTES = 8 << 20  # Parquet data page: 8 MiB, so a row group decodes in few pages
VECTOR_DTYPE = "<f4"  # little-endian float32, D of them per row
MANIFEST_SUFFIX = ".manifest.json"  # part-<id>.manifest.json beside part-<id>.parquet: written, not yet committed
PART_SUFFIX = ".parquet"


# ---------------------------------------------------------------------------- names
def shard_of(image_id: str) -> str:
    """The shard of an image: the first SHARD_HEX_DIGITS hex digits of its id."""
    return image_id[:SHARD_HEX_DIGITS]


def all_shards(digits: int = SHARD_HEX_DIGITS) -> list[str]:
    """Every shard key: '0'..'f' for one hex digit, '00'..'ff' for two."""
    return [format(i, f"0{digits}x") for i in range(16**digits)]


def part_rel(config_id: str, shard: str, part_id: str) -> str:
    """A part's path relative to the vectors folder (``/``-separated)."""
    return f"{config_id}/shard={shard}/part-{part_id}{PART_SUFFIX}"


def part_id_of(rel: str) -> str:
    """The part id in a part's (or its manifest's) relative path."""
    return rel.rsplit("/", 1)[-1].split(".", 1)[0][len("part-") :]


def manifest_rel(rel: str) -> str:
    """The manifest beside a part."""
    return rel[: -len(PART_SUFFIX)] + MANIFEST_SUFFIX


def pending_commit(path: Path) -> bool:
    """True for a part file (or its manifest) that waits for the single writer's commit
    (al_core.ingest.shards.commit_pending): the garbage collector must leave it alone."""
    name = path.name
    if name.endswith(".tmp"):
        return False
    if name.endswith(MANIFEST_SUFFIX):
        return True
    return (path.parent / (name.split(".", 1)[0] + MANIFEST_SUFFIX)).exists()


# ---------------------------------------------------------------------------- write
def part_table(image_ids: Sequence[str], vectors: np.ndarray):
    """(sorted image ids, Arrow table) in the part layout; ``vectors`` is N x D."""
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    order = np.argsort(np.asarray(image_ids, dtype=object).astype(str), kind="stable")
    ids_sorted = [image_ids[i] for i in order]
    vectors = np.ascontiguousarray(vectors[order])
    vtype = pa.binary(d * 4)
    schema = pa.schema([pa.field("image_id", pa.string(), nullable=False), pa.field("vector", vtype, nullable=False)])
    data = pa.py_buffer(vectors.astype(VECTOR_DTYPE, copy=False).tobytes())
    vec = pa.FixedSizeBinaryArray.from_buffers(vtype, n, [None, data])
    return ids_sorted, pa.Table.from_arrays([pa.array(ids_sorted, pa.string()), vec], schema=schema)


def _write_parquet(table, where) -> None:
    import pyarrow.parquet as pq

    pq.write_table(
        table,
        where,
        compression="none",
        use_dictionary=False,
        write_statistics=False,
        row_group_size=PART_ROW_GROUP,
        data_page_version="2.0",
        data_page_size=DATA_PAGE_BYTES,
    )


def write_part(loc: VectorsLocation, config_id: str, shard: str, image_ids: Sequence[str], vectors: np.ndarray) -> dict:
    """Write one part file (any process may); returns its catalogue record.

    Local folders: pyarrow writes to a name from ``al_core.files.atomic.atomic_path``
    (fsync, then renamed into place). Object storage: the part is serialised in
    memory (a flush is at most FLUSH_ROWS vectors, ~42 MB at D = 1280) and written
    in one PUT. Either way the file is complete or absent, and invisible until
    the catalogue records it.
    """
    image_ids = list(image_ids)
    n, d = np.shape(vectors)
    if len(image_ids) != n:
        raise ValueError(f"{len(image_ids)} image ids for {n} vectors")
    bad = ~np.isfinite(np.asarray(vectors, dtype=np.float32)).all(axis=1)
    if bad.any():
        raise NonFiniteVectors([image_ids[i] for i in np.flatnonzero(bad)])
    ids_sorted, table = part_table(image_ids, vectors)
    part_id = uuid.uuid4().hex
    rel = part_rel(config_id, shard, part_id)
    if loc.is_local:
        with atomic_path(loc.local_path(rel)) as tmp:
            _write_parquet(table, str(tmp))
            digest, size = sha256_file(tmp), tmp.stat().st_size
    else:
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        _write_parquet(table, sink)
        data = sink.getvalue().to_pybytes()
        digest, size = hashlib.sha256(data).hexdigest(), len(data)
        loc.put_bytes(rel, data)
    return {
        "part_id": part_id,
        "config_id": config_id,
        "shard": shard,
        "rel_path": rel,
        "n_rows": int(n),
        "dim": int(d),
        "sha256": digest,
        "bytes": int(size),
        "image_ids": ids_sorted,
    }


# ---------------------------------------------------------------------------- read
@contextlib.contextmanager
def reading(loc: VectorsLocation, rel: str) -> Iterator[None]:
    """Turn what a reader meets in a missing or damaged part (no file, a cut footer, bad pages) into PartDamaged."""
    import pyarrow as pa

    try:
        yield
    except PartDamaged:
        raise
    except FileNotFoundError:
        raise PartDamaged(loc.uri(rel), "the file is missing", rel) from None
    except (pa.ArrowException, OSError, StoreError) as e:
        raise PartDamaged(
            loc.uri(rel), f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", rel
        ) from None


def read_part_ids(loc: VectorsLocation, rel: str) -> np.ndarray:
    """The image ids of a part, in file order (ascending), as an object array."""
    import pyarrow.parquet as pq

    path, fs = loc.arrow_source(rel)
    with reading(loc, rel):
        tbl = pq.read_table(path, filesystem=fs, columns=["image_id"], use_threads=False)
        return tbl.column("image_id").to_numpy(zero_copy_only=False)


def _copy_vectors(column, out: np.ndarray, rows, rel: str) -> int:
    """Copy a ``vector`` column into ``out``: to rows ``rows + k`` (an int) or ``rows[k]`` (an index array)."""
    d = out.shape[1]
    k = 0
    for chunk in column.chunks:
        m = len(chunk)
        if chunk.type.byte_width != d * 4:
            raise StoreError(f"part {rel} holds {chunk.type.byte_width // 4}-d vectors, the catalogue says {d}")
        block = np.frombuffer(chunk.buffers()[1], dtype=VECTOR_DTYPE, count=m * d, offset=chunk.offset * d * 4).reshape(
            m, d
        )
        if isinstance(rows, int | np.integer):
            out[rows + k : rows + k + m] = block
        else:
            out[rows[k : k + m]] = block
        k += m
    return k


def read_part_vectors_into(loc: VectorsLocation, rel: str, out: np.ndarray, rows) -> int:
    """Copy a part's vectors into ``out`` (float32, N x D) at ``rows`` (a first row, or one row per vector).

    Map, copy, unmap: the part's pages leave the resident set once copied, so a
    reader's peak memory is its output plus the parts it has open. Returns the
    number of vectors copied.
    """
    import pyarrow.parquet as pq

    with reading(loc, rel), loc.open_input(rel) as src:
        tbl = pq.read_table(src, columns=["vector"], use_threads=False)
        n = _copy_vectors(tbl.column("vector"), out, rows, rel)
        del tbl
    return n


def read_part(loc: VectorsLocation, rel: str) -> tuple[np.ndarray, np.ndarray]:
    """(image ids, float32 N x D vectors) of one part, in file order."""
    import pyarrow.parquet as pq

    with reading(loc, rel), loc.open_input(rel) as src:
        tbl = pq.read_table(src, use_threads=False)
        ids = tbl.column("image_id").to_numpy(zero_copy_only=False)
        vectors = np.empty((tbl.num_rows, tbl.schema.field("vector").type.byte_width // 4), np.float32)
        _copy_vectors(tbl.column("vector"), vectors, 0, rel)
        del tbl
    return ids, vectors


def footer_problem(loc: VectorsLocation, rel: str) -> str | None:
    """What stops a reader from opening a part (None: its Parquet footer reads): a missing file, a cut footer."""
    import pyarrow.parquet as pq

    path, fs = loc.arrow_source(rel)
    try:
        with reading(loc, rel):
            pq.read_metadata(path, filesystem=fs)
    except PartDamaged as e:
        return e.reason
    return None


def check_part(
    loc: VectorsLocation, rel: str, *, sha256: str, n_bytes: int, n_rows: int | None = None, dim: int | None = None
) -> str | None:
    """What is wrong with a part against its record (None: nothing): missing, another size, another sha256,
    or (when ``n_rows``/``dim`` are given) a file that does not read back as that many ``dim``-d vectors."""
    from al_core.catalogue.vectors import sha256_of

    try:
        if not loc.exists(rel):
            return "the file is missing"
        size = loc.size(rel)
        if size != n_bytes:
            return f"{size} bytes, the catalogue recorded {n_bytes}"
        digest = sha256_of(loc, rel)
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    if digest != sha256:
        return f"sha256 {digest[:12]}..., the catalogue recorded {sha256[:12]}..."
    if n_rows is not None and dim is not None:
        try:
            ids, vectors = read_part(loc, rel)
        except PartDamaged as e:
            return e.reason
        if len(ids) != n_rows or vectors.shape[1] != dim:
            return f"{len(ids)} x {vectors.shape[1]} vectors, the catalogue recorded {n_rows} x {dim}"
    return None
