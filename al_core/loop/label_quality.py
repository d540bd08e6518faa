"""The label-quality step of a round: suspected label errors and class balance, after the round's probe.

``assess_round`` (the ``label_quality`` asset) assesses every training label of
the pool with out-of-fold probabilities of the probe (al_core.quality.suspects,
``CV_FOLDS`` folds seeded by ``selection.seed + round``), scored with cleanlab;
with several annotations of an image, cleanlab's CROWDLAB consensus and its
quality are recorded too, and cleanlab's ActiveLab score orders the images to
label again (al_core.quality.agreement). It also records the class
balance: training labels per class, the round's probe's predicted share of each
class on the candidates, and the warnings (``quality.class_floor``). Everything
is written in one transaction (al_core.catalogue.quality); the next batch's
relabelling share (al_core.loop.batch_rules) reads it.
"""

from __future__ import annotations

import json
import time

import numpy as np

from al_core.catalogue import now
from al_core.catalogue import quality as quality_q
from al_core.config import ProjectConfig
from al_core.loop.pool import Pool, load_project_pool

SUSPECTS_SHOWN = 20  # suspects in the step's summary (the asset's metadata); the catalogue keeps every label's row


def _votes(store, pool: Pool) -> np.ndarray:
    """N x M votes (class indices, NaN: none) of the pool's training images (rows in ``pool.labeled`` order), one
    column per annotator (the ``annotation_votes`` view); a training image without a vote gets its trained label in
    a column of its own."""
    from al_core.quality.agreement import vote_matrix

    with store.connect(read_only=True, view=False) as con:
        votes = quality_q.annotation_votes(con)
    cls_index = {c: k for k, c in enumerate(pool.classes)}
    ids = [str(pool.image_ids[r]) for r in pool.labeled]
    m, _ = vote_matrix([(iid, who, cls_index[lab]) for iid, who, lab in votes if lab in cls_index], ids)
    missing = np.isnan(m).all(axis=1) if m.shape[1] else np.ones(len(ids), bool)
    if missing.any():
        extra = np.full((len(ids), 1), np.nan)
        extra[missing, 0] = pool.labels[missing]
        m = np.hstack([m, extra])
    return m


PREDICT_BLOCK_ROWS = 65_536  # candidates gathered per block for the probe's predictions: 65,536 x 768 x 4 B = 192 MB


def _predict_candidates(probe, pool: Pool) -> np.ndarray:
    """The probe's class of every candidate, gathering their rows block by block (no N x D copy)."""
    cand = pool.candidates
    out = np.empty(len(cand), np.int64)
    for s in range(0, len(cand), PREDICT_BLOCK_ROWS):
        out[s : s + PREDICT_BLOCK_ROWS] = probe.predict(pool.features[cand[s : s + PREDICT_BLOCK_ROWS]])
    return out


def assess(store, cfg: ProjectConfig, round_: int, pool: Pool, probe, probe_id: str) -> dict:
    """Assess the pool's training labels and class balance for ``probe_id``; record and summarise them."""
    from al_core.quality.agreement import active_learning_scores, consensus
    from al_core.quality.balance import class_balance
    from al_core.quality.suspects import CV_FOLDS, MIN_LABELS, assess_labels

    t = time.perf_counter()
    classes = pool.classes
    seed = cfg.selection.seed + round_
    preds = _predict_candidates(probe, pool)
    balance = class_balance(classes, pool.labels, preds, cfg.quality.class_floor)
    rows, n_issues, n_folds, method = [], 0, 0, "self_confidence"
    if len(pool.labeled) >= MIN_LABELS:
        q = assess_labels(pool.features[pool.labeled], pool.labels, len(classes), n_folds=CV_FOLDS, seed=seed)
        n_folds, n_issues = q.n_folds, q.n_issues
        votes = _votes(store, pool)
        n_ann = (~np.isnan(votes)).sum(axis=1)
        relabel = cons = None
        if (n_ann >= 2).any():  # several annotators: CROWDLAB's consensus, ActiveLab's order to label again
            cons = consensus(votes, q.pred_probs)
            relabel = active_learning_scores(votes, q.pred_probs)[0]
            method = "self_confidence+crowdlab"
        rank = np.empty(len(q.quality), np.int64)
        rank[q.order] = np.arange(1, len(q.quality) + 1)
        ar = np.arange(len(q.labels))
        given_p, sugg_p = q.pred_probs[ar, q.labels], q.pred_probs[ar, q.suggested]
        for i, row in enumerate(pool.labeled):
            rows.append(
                (
                    probe_id,
                    round_,
                    str(pool.image_ids[row]),
                    int(pool.label_ids[i]),
                    classes[q.labels[i]],
                    classes[q.suggested[i]],
                    float(q.quality[i]),
                    float(given_p[i]),
                    float(sugg_p[i]),
                    bool(q.is_issue[i]),
                    int(rank[i]),
                    None if relabel is None else float(relabel[i]),
                    None if cons is None else classes[cons["consensus_label"][i]],
                    None if cons is None else float(cons["consensus_quality"][i]),
                    int(n_ann[i]),
                )
            )
    seconds = time.perf_counter() - t
    run = {
        "probe_id": probe_id,
        "round": round_,
        "n_labels": len(pool.labeled),
        "n_folds": n_folds,
        "seed": seed,
        "method": method,
        "n_issues": n_issues,
        "label_counts": json.dumps(balance.as_dict()["label_counts"]),
        "predicted_share": json.dumps(balance.as_dict()["predicted_share"]),
        "balance_warnings": json.dumps(list(balance.warnings)),
        "seconds": seconds,
        "computed_at": now(),
    }
    with store.transaction() as con:
        quality_q.put_label_quality(con, run, rows)
    by_rank = sorted((r for r in rows if r[9]), key=lambda r: r[10])[:SUSPECTS_SHOWN]
    return {
        "round": round_,
        "probe_id": probe_id,
        "n_labels": len(pool.labeled),
        "n_folds": n_folds,
        "method": method,
        "n_issues": n_issues,
        "seconds": round(seconds, 3),
        **balance.as_dict(),
        "suspects": [{"image_id": r[2], "given": r[4], "suggested": r[5], "quality": r[6]} for r in by_rank],
    }


def assess_round(store, cfg: ProjectConfig, round_: int, config_id: str, probe_id: str) -> dict:
    """The ``label_quality`` step: load the pool and probe ``probe_id`` (sha256 checked), then ``assess``."""
    from al_core.loop.train import load_probe

    return assess(store, cfg, round_, load_project_pool(store, cfg, config_id), load_probe(store, probe_id), probe_id)
