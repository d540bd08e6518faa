"""Every vector of a config as one contiguous float32 N x D matrix (``Store.load_embeddings``).

The committed part files are read directly with pyarrow (``al_core.catalogue.parts``;
DuckDB's reader is several times slower for this: docs/benchmarks.md), in four
named steps:

1. ``_read_ids``: each part's image ids (LOAD_THREADS parts at a time), checked
   against the row count the catalogue recorded;
2. ``_row_positions``: where each part's rows go so that the matrix is sorted
   by image id: shards are laid out in order and each part is sorted, so a
   shard with one part is a contiguous block; the rows of a shard with several
   parts are scattered to their merged positions while they are copied (no
   second pass over the vectors);
3. ``_copy_vectors``: each part's vectors into the matrix (map, copy, unmap:
   peak memory is the matrix plus LOAD_THREADS parts);
4. ``Embeddings.take``: the rows of some image ids, in the order given.
"""

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from al_core.catalogue import embeddings as E
from al_core.catalogue.errors import PartDamaged, StoreError
from al_core.catalogue.parts import read_part_ids, read_part_vectors_into
from al_core.catalogue.vectors import VectorsLocation

LOAD_THREADS = 2  # parts read concurrently (pyarrow and numpy copies release the GIL); 2 parts mapped at once


@dataclass(frozen=True)
class Embeddings:
    """All vectors of one embedding config, rows in ascending image_id order."""

    config_id: str
    image_ids: np.ndarray  # (N,) str (object)
    features: np.ndarray  # (N, D) float32, C-contiguous

    def __len__(self) -> int:
        return len(self.image_ids)

    def take(self, image_ids: Sequence[str]) -> "Embeddings":
        """The rows of ``image_ids``, in that order (KeyError naming the first id without a vector)."""
        pos = {iid: i for i, iid in enumerate(self.image_ids)}
        try:
            sel = np.fromiter((pos[i] for i in image_ids), dtype=np.int64, count=len(image_ids))
        except KeyError as e:
            raise KeyError(f"image {e.args[0]} has no vector for config {self.config_id}") from None
        return Embeddings(self.config_id, self.image_ids[sel], np.ascontiguousarray(self.features[sel]))


def load_embeddings(store, config_id: str, image_ids: Sequence[str] | None = None) -> Embeddings:
    """Every committed vector of ``config_id``, rows by ascending image id; with ``image_ids``, those rows
    in the given order. KeyError for an unknown config or an image without a vector."""
    with store.connect(read_only=True, view=False) as con:
        parts = E.committed_parts(con, config_id)
        known = E.config_exists(con, config_id)
    if not known:
        raise KeyError(f"unknown embedding config {config_id!r}")
    ids, features = read_parts(store.vectors_loc, parts)
    emb = Embeddings(config_id, ids, features)
    return emb if image_ids is None else emb.take(image_ids)


def read_parts(loc: VectorsLocation, parts: Sequence[E.PartRow]) -> tuple[np.ndarray, np.ndarray]:
    """(image ids, float32 N x D) of some committed parts, listed by shard, rows sorted by image id."""
    if not parts:
        return np.empty(0, dtype=object), np.empty((0, 0), np.float32)
    dims = {p.dim for p in parts}
    if len(dims) != 1:
        raise StoreError(f"config {parts[0].config_id} has parts of several dimensions {sorted(dims)}")
    offsets = np.cumsum([0] + [p.n_rows for p in parts])
    ids, rows = _row_positions(parts, offsets, _read_ids(loc, parts))
    features = np.empty((int(offsets[-1]), dims.pop()), dtype=np.float32)
    _copy_vectors(loc, parts, rows, features)
    return ids, features


def _read_ids(loc: VectorsLocation, parts: Sequence[E.PartRow]) -> list[np.ndarray]:
    def read(p: E.PartRow) -> np.ndarray:
        if p.n_bytes >= 0 and loc.is_local:  # a stat: catches a part cut short or grown since its commit
            try:
                size = loc.size(p.rel_path)
            except FileNotFoundError:
                raise PartDamaged(loc.uri(p.rel_path), "the file is missing", p.rel_path) from None
            if size != p.n_bytes:
                raise PartDamaged(loc.uri(p.rel_path), f"{size} bytes, the catalogue recorded {p.n_bytes}", p.rel_path)
        ids = read_part_ids(loc, p.rel_path)
        if len(ids) != p.n_rows:
            raise PartDamaged(loc.uri(p.rel_path), f"{len(ids)} rows, the catalogue recorded {p.n_rows}", p.rel_path)
        return ids

    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        return list(pool.map(read, parts))


def _row_positions(
    parts: Sequence[E.PartRow], offsets: np.ndarray, part_ids: list[np.ndarray]
) -> tuple[np.ndarray, list]:
    """(sorted ids of all rows, per part: its first row (int) or one row per vector (index array))."""
    ids = np.empty(int(offsets[-1]), dtype=object)
    rows: list = [int(offsets[i]) for i in range(len(parts))]
    by_shard: dict[str, list[int]] = {}
    for i, p in enumerate(parts):
        by_shard.setdefault(p.shard, []).append(i)
    for members in by_shard.values():
        start = int(offsets[members[0]])
        if len(members) == 1:
            ids[start : start + parts[members[0]].n_rows] = part_ids[members[0]]
            continue
        merged = np.concatenate([part_ids[i] for i in members])
        order = np.argsort(merged.astype(str), kind="stable")
        ids[start : start + len(merged)] = merged[order]
        position = np.empty(len(merged), dtype=np.int64)
        position[order] = np.arange(start, start + len(merged))
        k = 0
        for i in members:
            rows[i] = position[k : k + parts[i].n_rows]
            k += parts[i].n_rows
    return ids, rows


def _copy_vectors(loc: VectorsLocation, parts: Sequence[E.PartRow], rows: list, features: np.ndarray) -> None:
    def copy(i: int) -> None:
        read_part_vectors_into(loc, parts[i].rel_path, features, rows[i])

    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        list(pool.map(copy, range(len(parts))))
