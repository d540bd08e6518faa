"""Embedding every ok image that has no vector yet for the current embedding config.

Streaming with bounded memory: decoded batches flow through the backbone
(``al_core.ingest.embed``) and vectors are buffered only up to ``FLUSH_ROWS`` before a
part file per shard is written and committed in one transaction. A killed run
therefore keeps every committed flush, and the next run embeds only the rest.
"""

import json
import time
import uuid
from collections.abc import Callable

import numpy as np

from al_core.ingest.scan import ok_images
from al_core.catalogue.store import Store, now

FLUSH_ROWS = 8192  # vectors buffered before a commit: 8192 x 1280 x 4 B = 42 MB (efficientnet_lite0)


def embed_missing(
    store: Store,
    backbone,
    *,
    source: str | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Embed the ok images (of ``source``, or all) that lack a vector for ``backbone.config_id``."""
    from al_core.ingest.embed import embed_images

    t0 = time.perf_counter()
    config_id = backbone.config_id
    config = dict(backbone.config)
    config["dim"] = int(backbone.feature_dim)
    store.register_embedding_config(config_id, config)
    items = ok_images(store, source)
    done = store.embedded_ids(config_id)
    todo = [(iid, path) for iid, path in items if iid not in done]
    if limit is not None:
        todo = todo[:limit]
    run_id = uuid.uuid4().hex
    started = now()
    if progress:
        progress(f"embedding {len(todo)} images with {backbone.name} [{config_id}] "
                 f"({len(items) - len(todo)} already embedded)")

    stream = embed_images(
        todo, backbone, batch_size=batch_size, num_workers=num_workers,
        progress=(lambda p: progress(str(p))) if progress else None,
    )
    buf_ids: list[str] = []
    buf_vecs: list[np.ndarray] = []
    n_buf = 0

    def flush():
        nonlocal buf_ids, buf_vecs, n_buf
        if n_buf:
            store.write_embeddings(config_id, buf_ids, np.concatenate(buf_vecs), run_id=run_id)
        buf_ids, buf_vecs, n_buf = [], [], 0

    for keys, vectors in stream:
        buf_ids.extend(keys)
        buf_vecs.append(vectors)
        n_buf += len(keys)
        if n_buf >= FLUSH_ROWS:
            flush()
    flush()

    path_of = dict(todo)
    seconds = time.perf_counter() - t0
    stats = stream.stats
    with store.transaction() as con:
        for f in stream.failures:
            con.execute("INSERT INTO embedding_failures VALUES (?, ?, ?, ?, ?)",
                        [config_id, f.key, path_of.get(f.key), f.error, now()])
        con.execute(
            "INSERT INTO embedding_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, config_id, started, now(), stats.images, stats.failures, stats.images_per_s,
             config.get("device"), json.dumps(config.get("library_versions", {}), sort_keys=True)])
        n_total = con.execute("SELECT count(*) FROM embedding_index WHERE config_id = ?", [config_id]).fetchone()[0]
    return {
        "config_id": config_id,
        "backbone": backbone.name,
        "dim": int(backbone.feature_dim),
        "dtype": backbone.dtype,
        "device": str(config.get("device")),
        "source": source,
        "n_embedded": int(stats.images),
        "n_skipped": len(items) - len(todo),
        "n_failed": int(stats.failures),
        "failures": [{"image_id": f.key, "error": f.error} for f in stream.failures[:20]],
        "n_total": int(n_total),
        "images_per_s": float(stats.images_per_s),
        "seconds": seconds,
        "run_id": run_id,
    }
