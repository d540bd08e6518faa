"""Selection beyond one matrix: the shards streamed one at a time (docs/scale-out.md).

``Store.load_embeddings`` reads every shard into one contiguous N x D matrix,
which is what every strategy of ``al_core.learn.strategies`` takes; at N = 1,000,000,
D = 768 that is 3 GB and one machine does it (docs/benchmarks.md, Scale-out).
Beyond what one machine holds, two plans, both measured at N = 1,000,000:

1. Sub-sample the pool (as baal's ``max_sample`` and scikit-activeml's
   ``SubSamplingWrapper`` do): since a shard is a hash prefix of the image id
   (sha256 of the bytes), any set of shards is a uniform random sample of the
   pool, so ``load_shards(store, config_id, shards)`` reads a sub-pool without
   touching the rest.
2. Sharded candidate generation, then one global diversity step:
   ``sharded_margin`` (per-shard top B, merged: the same B rows as the full
   pool's top B) and ``sharded_dropquery`` (per shard: dropout disagreement;
   globally: the threshold from the merged histogram, then k-means on the
   candidates only, whose vectors are gathered in a second pass). Each shard's
   pass needs one shard in memory and could run as a Dask task per shard; only
   the candidates (~25 B rows) meet on one machine.

Dagster-free; reads part files with Store.load_embeddings's reader (al_core.catalogue.load.read_parts).
"""

import numpy as np

from al_core.catalogue import embeddings as E
from al_core.catalogue.load import read_parts
from al_core.catalogue.store import Store


def shard_parts(store: Store, config_id: str) -> dict[str, list[E.PartRow]]:
    """{shard: [committed part, ...]} of a config."""
    with store.connect(read_only=True, view=False) as con:
        parts = E.committed_parts(con, config_id)
    out: dict[str, list[E.PartRow]] = {}
    for p in parts:
        out.setdefault(p.shard, []).append(p)
    return out


def iter_shards(store: Store, config_id: str, shards=None):
    """(shard, ids, features) one shard at a time: memory is one shard's vectors."""
    parts = shard_parts(store, config_id)
    for h in sorted(parts) if shards is None else list(shards):
        if h in parts:
            ids, x = read_parts(store.vectors_loc, parts[h])
            yield h, ids, x


def load_shards(store: Store, config_id: str, shards) -> tuple[np.ndarray, np.ndarray]:
    """(ids, features) of some shards only: a uniform random sub-pool (ids are sha256)."""
    parts = shard_parts(store, config_id)
    chosen = [p for h in sorted(shards) for p in parts.get(h, [])]
    if not chosen:
        raise KeyError(f"config {config_id}: no committed part in shards {sorted(shards)}")
    return read_parts(store.vectors_loc, chosen)


def sharded_margin(store: Store, config_id: str, probe, budget: int, *, exclude=()) -> tuple[np.ndarray, np.ndarray]:
    """The ``budget`` ids of smallest margin, one shard in memory at a time: (ids, margins).

    Per shard its top ``budget``, then the top ``budget`` of their union: the same rows as
    the margin strategy on the whole pool (ties broken by image id instead of row index).
    """
    from al_core.learn.strategies.base import top_b
    from al_core.learn.strategies.uncertainty import _blockwise_scores, _margin

    skip = set(exclude)
    best_ids, best_scores = [], []
    for _h, ids, x in iter_shards(store, config_id):
        s = _blockwise_scores(probe, x, _margin)
        keep = np.fromiter((i not in skip for i in ids), bool, count=len(ids)) if skip else slice(None)
        ids, s = ids[keep], s[keep]
        pos = top_b(s, budget, largest=False)
        best_ids.append(ids[pos])
        best_scores.append(s[pos])
    ids = np.concatenate(best_ids)
    s = np.concatenate(best_scores)
    order = np.lexsort((ids.astype(str), s))[:budget]
    return ids[order], s[order]


def sharded_dropquery(
    store: Store,
    config_id: str,
    probe,
    budget: int,
    *,
    seed: int,
    exclude=(),
    n_passes: int = 3,
    candidate_factor: int = 25,
) -> dict:
    """DropQuery with candidates generated shard by shard and one global diversity step.

    Pass 1 (per shard, parallelisable): disagreement counts under ``n_passes``
    dropout masks (each shard its own seeded masks). Globally: the threshold of
    ``al_core.learn.strategies.dropquery.candidate_threshold`` on the merged histogram.
    Pass 2: the candidates' vectors (only those rows) -> probe embeddings ->
    k-means (k = budget) -> the candidate nearest each centroid. Returns
    {"ids", "candidate_ids", "threshold", "mismatch_histogram"}.
    """
    from al_core.learn.points import Points
    from al_core.learn.strategies._cluster import cluster_representatives
    from al_core.learn.strategies.base import derived_seed
    from al_core.learn.strategies.dropquery import candidate_threshold, disagreement_histogram

    skip = set(exclude)
    per_shard: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    hist = np.zeros(n_passes + 1, dtype=np.int64)
    for h, ids, x in iter_shards(store, config_id):
        keep = np.fromiter((i not in skip for i in ids), bool, count=len(ids))
        x = x[keep] if not keep.all() else x
        ids = ids[keep]
        clean = probe.predict(x)
        passes = probe.dropout_predict(x, n_passes, derived_seed(seed, 1000 + int(h, 16)))
        mismatch = (passes != clean[None, :]).sum(axis=0).astype(np.int8)
        hist += disagreement_histogram(mismatch.astype(np.int64), n_passes)
        per_shard[h] = (ids, mismatch)
        del x, passes
    t = candidate_threshold(hist, budget, candidate_factor)
    cand = {h: ids[m > t] for h, (ids, m) in per_shard.items()}
    cand_ids = np.concatenate([cand[h] for h in sorted(cand)]) if cand else np.empty(0, object)
    if cand_ids.shape[0] < budget:
        raise RuntimeError(
            f"only {cand_ids.shape[0]} candidates for a budget of {budget} (the library fills "
            f"with random rows; not needed for this measurement)"
        )
    feats = []
    for h, ids, x in iter_shards(store, config_id, shards=sorted(h for h in cand if len(cand[h]))):
        pos = np.searchsorted(ids, cand[h])
        feats.append(x[pos])
        del x
    z = probe.embed(np.concatenate(feats))
    pos, _ = cluster_representatives(Points(z, normalize=True), budget, seed)
    return {"ids": cand_ids[pos], "candidate_ids": cand_ids, "threshold": int(t), "mismatch_histogram": hist.tolist()}
