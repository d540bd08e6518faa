"""A batch beyond the strategy's pick: the share to label again, and never two near-duplicates.

``select_batch`` (called by ``al_core.loop.proposal.propose``):

1. Relabelling (query batches, ``selection.relabel_fraction`` > 0): the first
   ``round(relabel_fraction x budget)`` rows go to training images to label again,
   in the order of the round's label-quality assessment (al_core.loop.label_quality:
   ActiveLab score with several annotators, else cleanlab's label quality, lowest
   first); an image is asked again at most ``RELABEL_MAX_PER_IMAGE`` times and not
   while an earlier request is unanswered. Their rows carry the strategy
   ``relabel`` (queries, outbox CSV, Label Studio task data) and a reason
   (``query_reasons``, shown by ``al lineage``).
2. The strategy picks the rest among the candidates.
3. Near-duplicates (``quality.near_duplicate_cosine``): the pairs of the embedding
   config are found once per part list and threshold (al_core.quality.duplicates,
   stored in ``near_duplicates``); walking the batch in order, a row that is a
   near-duplicate of an earlier row is replaced by re-selection with the same
   strategy among the candidates that are no twin of a kept row
   (``replace_near_duplicates``); each replacement goes to ``batch_replacements``
   and the proposal's metadata.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from al_core.catalogue import embeddings as embeddings_q
from al_core.catalogue import now
from al_core.catalogue import quality as quality_q
from al_core.config import ProjectConfig
from al_core.files.hashing import short
from al_core.loop.errors import LoopError
from al_core.loop.pool import Pool

RELABEL = quality_q.RELABEL
RELABEL_MAX_PER_IMAGE = 2  # times one image may be proposed to be labelled again


@dataclass
class Batch:
    """The rows of a batch in rank order, each with its score and strategy, and what the rules did."""

    rows: list[int]
    scores: list[float]
    strategies: list[str]
    reasons: dict[int, str] = field(default_factory=dict)  # row -> why it is in the batch (not the strategy's pick)
    replacements: list[dict] = field(default_factory=list)  # near-duplicate rule: dropped, twin, cosine, replacement
    near_duplicates: dict = field(default_factory=dict)  # the pass the rule used (pairs, method, seconds, computed)

    @property
    def n_relabel(self) -> int:
        return sum(s == RELABEL for s in self.strategies)

    def summary(self, pool: Pool) -> dict:
        iid = lambda r: None if r is None else str(pool.image_ids[r])
        return {
            "relabel": self.n_relabel,
            "near_duplicate_pairs": self.near_duplicates.get("n_pairs", 0),
            "near_duplicates_replaced": [
                {**r, "dropped": iid(r["dropped"]), "twin": iid(r["twin"]), "replacement": iid(r["replacement"])}
                for r in self.replacements
            ],
        }


def strategy_params(cfg: ProjectConfig, kind: str) -> dict:
    """The strategy's parameters from the project file: ``class_balance`` for a query batch when it is on."""
    return {"class_balance": True} if kind == "query" and cfg.selection.class_balance else {}


def n_relabel(cfg: ProjectConfig, budget: int) -> int:
    """Rows of a query batch of ``budget`` reserved for relabelling: relabel_fraction x budget, rounded half up."""
    return int(np.floor(cfg.selection.relabel_fraction * budget + 0.5))


def _relabel_reason(r: dict) -> str:
    why = (
        f"ActiveLab score {r['relabel_score']:.3f}"
        if r["relabel_score"] is not None
        else f"label quality {r['quality']:.3f}"
    )
    flag = "; cleanlab flags it" if r["is_issue"] else ""
    return f"label again: {why} (labelled {r['given']!r}, the out-of-fold probe suggests {r['suggested']!r}{flag})"


def relabel_rows(store, pool: Pool, probe_id: str | None, n: int) -> list[tuple[int, float, str]]:
    """(row, score, reason) of the ``n`` training images to label again (module docstring), best first."""
    if n <= 0 or probe_id is None:
        return []
    with store.connect(read_only=True, view=False) as con:
        ranking = quality_q.relabel_ranking(con, probe_id)
        asked = quality_q.relabel_counts(con)
        waiting = quality_q.awaiting_relabel_ids(con)
    training = set(pool.labeled.tolist())
    out = []
    for r in ranking:
        row = pool.index.get(r["image_id"])
        if (
            row is None
            or row not in training
            or asked.get(r["image_id"], 0) >= RELABEL_MAX_PER_IMAGE
            or r["image_id"] in waiting
        ):
            continue
        score = r["relabel_score"] if r["relabel_score"] is not None else r["quality"]
        out.append((row, float(score), _relabel_reason(r)))
        if len(out) == n:
            break
    return out


def _near_duplicates(store, cfg: ProjectConfig, config_id: str, image_ids, features, index: dict):
    """(pairs over the rows of ``features``, the pass's summary): the stored pairs of the config when they were
    found for its current part list and threshold, else a new pass (stored)."""
    from al_core.quality.duplicates import NearDuplicateOverflow, NearDuplicates, find_near_duplicates

    threshold = float(cfg.quality.near_duplicate_cosine)
    with store.connect(read_only=True, view=False) as con:
        sig = repr(tuple(embeddings_q.parts_signature(con, config_id)))
        run = quality_q.near_duplicate_run(con, config_id)
        fresh = run is not None and run["parts_signature"] == sig and run["threshold"] == threshold
        stored = quality_q.near_duplicate_pairs(con, config_id) if fresh else None
    if fresh:
        keep = [(index[a], index[b], c) for a, b, c in stored if a in index and b in index]
        i, j, c = (np.asarray(x) for x in zip(*keep, strict=True)) if keep else (np.empty(0, np.int64),) * 3
        pairs = NearDuplicates(
            i.astype(np.int64), j.astype(np.int64), c.astype(np.float32), len(image_ids), threshold, run["method"]
        )
        return pairs, {"n_pairs": len(pairs), "method": run["method"], "computed": False}
    t = time.perf_counter()
    try:
        pairs = find_near_duplicates(features, threshold, seed=cfg.selection.seed)
    except NearDuplicateOverflow as e:
        raise LoopError(str(e)) from None
    seconds = time.perf_counter() - t
    with store.transaction() as con:
        quality_q.put_near_duplicates(
            con,
            {
                "config_id": config_id,
                "parts_signature": sig,
                "threshold": threshold,
                "method": pairs.method,
                "n_images": pairs.n_rows,
                "n_pairs": len(pairs),
                "seconds": seconds,
                "computed_at": now(),
            },
            [str(image_ids[a]) for a in pairs.i],
            [str(image_ids[b]) for b in pairs.j],
            pairs.cosine,
        )
    return pairs, {"n_pairs": len(pairs), "method": pairs.method, "computed": True, "seconds": round(seconds, 3)}


def refresh_near_duplicates(store, cfg: ProjectConfig, config_id: str) -> dict:
    """The near-duplicate pass of ``config_id``'s vectors, when its part list or the threshold changed (the
    ``near_duplicates`` asset, after ``embeddings``); its summary (n_pairs, method, computed, seconds)."""
    emb = store.load_embeddings(config_id)
    index = {iid: i for i, iid in enumerate(emb.image_ids)}
    return _near_duplicates(store, cfg, config_id, emb.image_ids, emb.features, index)[1]


def near_duplicate_twins(store, cfg: ProjectConfig, pool: Pool):
    """(twin matrix over the pool's rows or None, the pass's summary); LoopError when the threshold pairs too
    many images (quality.near_duplicate_cosine too low)."""
    from al_core.quality.duplicates import twin_matrix

    pairs, summary = _near_duplicates(store, cfg, pool.config_id, pool.image_ids, pool.features, pool.index)
    return (twin_matrix(pairs) if len(pairs) else None), summary


def select_batch(
    store,
    cfg: ProjectConfig,
    pool: Pool,
    strategy,
    *,
    name: str,
    kind: str,
    budget: int,
    seed: int,
    probe=None,
    probe_id: str | None = None,
) -> Batch:
    """The batch of ``budget`` rows (fewer only when the candidates run out): relabelling share, the strategy's
    picks, the near-duplicate rule (module docstring)."""
    from al_core.quality.duplicates import replace_near_duplicates

    relabel = relabel_rows(store, pool, probe_id, n_relabel(cfg, budget)) if kind == "query" else []
    empty = np.empty(0, np.int64)
    labeled, labels = (pool.labeled, pool.labels) if kind == "query" else (empty, empty)

    def pick(candidates: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        res = strategy.select(
            pool.features,
            labeled,
            labels,
            count,
            n_classes=len(pool.classes),
            seed=seed,
            probe=probe,
            candidates=candidates,
        )
        return res.indices, res.scores

    n_new = budget - len(relabel)
    idx, sc = pick(pool.candidates, n_new) if n_new > 0 else (empty, np.empty(0))
    twins, nd = near_duplicate_twins(store, cfg, pool)
    rows = np.concatenate([np.asarray([r for r, _, _ in relabel], np.int64), np.asarray(idx, np.int64)])
    scores = np.concatenate([np.asarray([s for _, s, _ in relabel], np.float64), np.asarray(sc, np.float64)])
    picked = replace_near_duplicates(rows, scores, twins, pool.candidates, pick, seed=seed)
    again = {r: why for r, _, why in relabel}
    reasons = {r: again[r] for r in picked.indices.tolist() if r in again}
    for rep in picked.replacements:
        if rep["replacement"] is not None:
            reasons[rep["replacement"]] = (
                f"replaces {short(str(pool.image_ids[rep['dropped']]))}, a near-duplicate (cosine "
                f"{rep['cosine']:.4f}) of {short(str(pool.image_ids[rep['twin']]))} earlier in the batch"
            )
    return Batch(
        picked.indices.tolist(),
        picked.scores.tolist(),
        [RELABEL if r in again else name for r in picked.indices.tolist()],
        reasons,
        picked.replacements,
        nd,
    )


def record(con, round_: int, batch: Batch, pool: Pool) -> None:
    """Write what the rules did to batch ``round_`` (inside the proposal's transaction)."""
    iid = lambda r: None if r is None else str(pool.image_ids[r])
    quality_q.put_batch_rules(
        con,
        round_,
        [
            (iid(r["dropped"]), iid(r["twin"]), float(r["cosine"]), iid(r["replacement"]), r["how"])
            for r in batch.replacements
        ],
        [(iid(r), why) for r, why in batch.reasons.items()],
    )
