"""Embedding every ok image that has no vector yet for the current embedding config.

Streaming with bounded memory: decoded batches flow through the backbone
(``al_core.ingest.embed``) and vectors are buffered only up to ``FLUSH_ROWS`` before a
part file per shard is written and committed in one transaction. A killed run
therefore keeps every committed flush, and the next run embeds only the rest.

What is embedded is what was hashed: each image's bytes are read once, hashed
and decoded from the same buffer (``al_core.ingest.embed.ScannedFile``); an
image whose bytes no longer match its id gets no vector, its path is recorded
``corrupt`` ("changed since the scan", retried by the next scan) and the run
lists it as a failure. A vector with NaN or inf is never written: the image is a
failure naming its path. After the run, orphan part files are collected
(``Store.gc_orphan_parts``: older than ``ORPHAN_MIN_AGE_S`` and not waiting
for a commit).

``EmbeddingsSummary`` is what a run did: the value of the ``embeddings`` asset
(stored as ``as_dict()``), whether the vectors were embedded in this process
(``embed_missing``, ``al_core.ingest.commit.embed_into_catalogue``) or by shard workers
(``al_core.ingest.commit.commit_planned_run``).
"""

import dataclasses
import datetime as _dt
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from al_core.catalogue import embeddings as E
from al_core.catalogue import images as images_q
from al_core.catalogue.store import Store, now

if TYPE_CHECKING:
    from al_core.ingest.embed import Progress

FLUSH_ROWS = 8192  # vectors buffered before a commit: 8192 x 1280 x 4 B = 42 MB (efficientnet_lite0)
FAILURES_KEPT = 20  # failures listed in a summary (every one is in embedding_failures)
ORPHAN_MIN_AGE_S = 3600.0  # an uncommitted part younger than this may still be committed by its writer: kept
PROGRESS_EVERY_S = 5.0  # an embedding progress line at most this often (a Dagster run's log, a pipe)
NON_FINITE = "non-finite vector (NaN or inf) from the backbone: not stored"


@dataclass(frozen=True)
class EmbeddingRun:
    """Which run writes which vectors: the run's id, the embedding config it embeds (``backbone_config``,
    ``dim`` included) and when it started. Recorded in embedding_runs and in the run's summary."""

    run_id: str
    config_id: str
    config: Mapping
    started_at: _dt.datetime


@dataclass(frozen=True)
class EmbeddingsSummary:
    """What one embedding run did, and which embedding config the labelling loop reads next."""

    config_id: str
    backbone: str  # the backbone's registry name
    dim: int
    dtype: str
    device: str
    source: str | None  # the scanned root / manifest embedded (None: every ok image)
    n_embedded: int  # vectors written by this run
    n_skipped: int  # images that already had a vector
    n_failed: int
    failures: tuple[dict, ...]  # the first FAILURES_KEPT {"image_id", "error"}
    n_total: int  # vectors of the config in the catalogue after the run
    images_per_s: float
    seconds: float
    run_id: str
    committed_from_shards: int = 0  # vectors of shard workers' parts committed first (in-process run)
    sharded: Mapping | None = None  # a sharded run: plan, workers, commit counts per shard

    @classmethod
    def of_run(
        cls,
        run: EmbeddingRun,
        *,
        source: str | None,
        n_embedded: int,
        n_skipped: int,
        n_failed: int,
        failures: Iterable[dict],
        n_total: int,
        images_per_s: float,
        seconds: float,
        sharded: Mapping | None = None,
    ) -> "EmbeddingsSummary":
        """The one way a run's summary is built."""
        config = run.config
        return cls(
            config_id=run.config_id,
            backbone=config["backbone"],
            dim=int(config["dim"]),
            dtype=config["dtype"],
            device=str(config.get("device")),
            source=source,
            n_embedded=int(n_embedded),
            n_skipped=int(n_skipped),
            n_failed=int(n_failed),
            failures=tuple(list(failures)[:FAILURES_KEPT]),
            n_total=int(n_total),
            images_per_s=float(images_per_s),
            seconds=float(seconds),
            run_id=run.run_id,
            sharded=sharded,
        )

    def as_dict(self) -> dict:
        """JSON-able: the value the IO manager stores."""
        d = dataclasses.asdict(self)
        d["failures"] = [dict(f) for f in self.failures]
        d["sharded"] = dict(self.sharded) if self.sharded is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "EmbeddingsSummary":
        """The record of a stored value (keys added since a value was stored take their defaults)."""
        fields = dataclasses.fields(cls)
        unknown = sorted(set(d) - {f.name for f in fields})
        missing = [f.name for f in fields if f.name not in d and f.default is dataclasses.MISSING]
        if unknown or missing:
            raise ValueError(f"not an embeddings summary: unknown keys {unknown}, missing keys {missing}")
        return cls(**{**d, "failures": tuple(d.get("failures", ()))})


def backbone_config(backbone) -> dict:
    """The backbone's config as recorded in embedding_configs and in manifests: ``dim`` included."""
    config = dict(backbone.config)
    config["dim"] = int(backbone.feature_dim)
    return config


def flushes(stream: Iterable[tuple[list, np.ndarray]], rows: int) -> Iterator[tuple[list, np.ndarray]]:
    """Regroup an embedding stream's batches into (ids, vectors) of at least ``rows`` (the last: the rest)."""
    ids: list = []
    vecs: list[np.ndarray] = []
    for keys, vectors in stream:
        ids.extend(keys)
        vecs.append(vectors)
        if len(ids) >= rows:
            yield ids, np.concatenate(vecs)
            ids, vecs = [], []
    if ids:
        yield ids, np.concatenate(vecs)


def finite_rows(ids: list, vectors: np.ndarray) -> tuple[list, np.ndarray, list]:
    """(ids, vectors) without the rows that hold NaN or inf, and the ids of those rows."""
    ok = np.isfinite(vectors).all(axis=1)
    if ok.all():
        return ids, vectors, []
    return (
        [i for i, k in zip(ids, ok, strict=True) if k],
        vectors[ok],
        [i for i, k in zip(ids, ok, strict=True) if not k],
    )


def scanned_items(todo: Iterable[tuple[str, str, str, str]]) -> list[tuple[str, "object"]]:
    """Embedding items for ``images.ok_image_files`` rows: (image_id, ScannedFile) read inside the image root
    (a root source) and checked against the image id."""
    import os

    from al_core.ingest.embed import ScannedFile

    return [(iid, ScannedFile(opener, iid, src if os.path.isdir(src) else None)) for iid, _, opener, src in todo]


def embed_missing(
    store: Store,
    backbone,
    *,
    source: str | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
    on_progress: "Callable[[Progress], Any] | None" = None,
    progress_interval_s: float = PROGRESS_EVERY_S,
) -> EmbeddingsSummary:
    """Embed the ok images (of ``source``, or all) that lack a vector for ``backbone.config_id``.

    ``progress`` gets the run's lines; the embedding's own reports (``al_core.ingest.embed.Progress``: done/total,
    rate, time left, every ``progress_interval_s``) go to ``on_progress`` when given (a terminal's progress bar),
    else to ``progress`` as lines."""
    from al_core.ingest.embed import embed_images

    if on_progress is None and progress is not None:
        on_progress = lambda p: progress(str(p))

    t0 = time.perf_counter()
    config_id, config = backbone.config_id, backbone_config(backbone)
    store.register_embedding_config(config_id, config)
    items, todo = _todo(store, config_id, source, limit)
    run = EmbeddingRun(uuid.uuid4().hex, config_id, config, now())
    if progress:
        progress(
            f"embedding {len(todo)} images with {backbone.name} [{config_id}] "
            f"({len(items) - len(todo)} already embedded)"
        )
    stream = embed_images(
        scanned_items(todo),
        backbone,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=on_progress,
        progress_interval_s=progress_interval_s,
        total=len(todo),
    )
    path_of = {iid: path for iid, path, _, _ in todo}
    non_finite: list[str] = []
    n_embedded = 0
    for ids, vectors in flushes(stream, FLUSH_ROWS):
        ids, vectors, bad = finite_rows(ids, vectors)
        for iid in bad:
            non_finite.append(iid)
            if progress:
                progress(f"{path_of.get(iid)}: {NON_FINITE}")
        if ids:
            store.write_embeddings(config_id, ids, vectors, run_id=run.run_id)
            n_embedded += len(ids)
    failures = [(f.key, path_of.get(f.key), f.error) for f in stream.failures]
    failures += [(iid, path_of.get(iid), NON_FINITE) for iid in non_finite]
    _record_changed(store, failures)
    stats = stream.stats
    n_total = record_run(
        store, run, n_images=n_embedded, images_per_s=stats.images_per_s, failures=failures, device=config.get("device")
    )
    collected = store.gc_orphan_parts(ORPHAN_MIN_AGE_S)
    if collected and progress:
        progress(f"collected {len(collected)} orphan part file(s) older than {ORPHAN_MIN_AGE_S:.0f} s")
    return EmbeddingsSummary.of_run(
        run,
        source=source,
        n_embedded=n_embedded,
        n_skipped=len(items) - len(todo),
        n_failed=len(failures),
        failures=[{"image_id": k, "error": e} for k, _, e in failures],
        n_total=n_total,
        images_per_s=stats.images_per_s,
        seconds=time.perf_counter() - t0,
    )


def _record_changed(store: Store, failures: list[tuple[str, str | None, str]]) -> None:
    """Paths whose bytes changed since the scan: recorded corrupt with the failure (the next scan hashes them)."""
    from al_core.ingest.embed import CHANGED_SINCE_SCAN

    changed = [
        (path, error[error.index(CHANGED_SINCE_SCAN) :])
        for _, path, error in failures
        if path and CHANGED_SINCE_SCAN in error
    ]
    if changed:
        with store.transaction() as con:
            for path, error in changed:
                images_q.mark_changed(con, [path], error)


def _todo(store: Store, config_id: str, source: str | None, limit: int | None):
    """(every ok image file of the source, those without a vector: the first ``limit`` of them), as
    ``images.ok_image_files`` rows."""
    with store.connect(read_only=True, view=False) as con:
        items = images_q.ok_image_files(con, source)
    done = store.embedded_ids(config_id)
    todo = [row for row in items if row[0] not in done]
    return items, todo if limit is None else todo[:limit]


def record_run(
    store: Store,
    run: EmbeddingRun,
    *,
    n_images: int,
    images_per_s: float,
    failures: Iterable[tuple[str, str | None, str]],
    device: str | None,
) -> int:
    """The embedding_runs row and the embedding_failures of a run, in one transaction; returns the
    config's vectors in the catalogue."""
    failures = list(failures)
    with store.transaction() as con:
        ts = now()
        E.insert_failures(con, run.config_id, failures, ts)
        E.insert_run(
            con,
            run_id=run.run_id,
            config_id=run.config_id,
            started_at=run.started_at,
            finished_at=ts,
            n_images=int(n_images),
            n_failed=len(failures),
            images_per_s=float(images_per_s),
            device=device,
            library_versions=run.config.get("library_versions", {}),
        )
        return E.count_vectors(con, run.config_id)
