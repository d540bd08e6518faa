"""Proposing a batch: the adjudication queue first, then the round's strategy; record it, hand it to the annotators."""

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from al_core.catalogue import images, now
from al_core.catalogue import labels as labels_q
from al_core.catalogue import rounds as rounds_q
from al_core.config import ProjectConfig
from al_core.faults import fault_point  # named SIGKILL points (tests/test_reliability.py)
from al_core.loop import batch_rules, outbox
from al_core.loop.errors import LoopError
from al_core.loop.holdout import ensure_eval_set
from al_core.loop.pool import Pool, load_pool, load_project_pool

ADJUDICATION = rounds_q.ADJUDICATION


@dataclass
class Proposal:
    round: int
    kind: str  # 'seed' (batch 0) | 'query'
    strategy: str
    seed: int
    budget: int
    requested_budget: int
    image_ids: list[str]
    scores: list[float]
    select_seconds: float
    n_candidates: int
    note: str | None
    outbox_files: list[str]  # the batch CSV first
    config_id: str = ""
    probe_id: str | None = None  # the probe that scored the pool (None for the seed pool)
    n_labelled: int = 0  # training labels when the batch was selected
    eval_holdout: int | None = None  # the seed pool only: images held out for evaluation
    already_proposed: bool = False  # a retried run found this batch committed by an earlier run: nothing was done
    classes: tuple[str, ...] = ()  # the class list the pool (and the probe's outputs) were read with
    n_adjudication: int = 0  # images proposed again because their annotators disagreed (labels.policy: unanimous)
    warnings: list[str] = field(default_factory=list)  # what the annotators' files may lack (task image URLs)
    budget_left: int | None = None  # labels of selection.total_budget still to buy once this batch is answered
    batch_rules: dict | None = None  # relabelled rows, near-duplicates replaced (al_core.loop.batch_rules)

    def as_dict(self) -> dict:
        """Every field but the image ids and scores (the asset value; the ids are in ``queries``)."""
        d = asdict(self)
        d.pop("image_ids")
        d.pop("scores")
        return d


class BatchAlreadyProposed(LoopError):
    """Batch ``round`` is committed already (a run retried after the one that proposed it failed later)."""

    def __init__(self, round_: int):
        super().__init__(f"batch {round_} was already proposed")
        self.round = round_


def _budget(cfg: ProjectConfig, spent: int, n_candidates: int) -> tuple[int, int, str | None]:
    """(budget, requested budget, note): the configured batch size, clamped by the total budget and the pool.

    ``spent``: labels delivered (skips do not count) plus images still waiting in open batches
    (al_core.catalogue.rounds.budget_used).
    """
    requested = cfg.selection.budget_per_round
    left = cfg.selection.total_budget - spent
    budget = min(requested, left, n_candidates)
    note = None
    if 0 < budget < requested:
        note = (
            f"budget clamped from {requested} to {budget} "
            f"({'total budget' if left < requested else 'candidates'} ran out)"
        )
    return budget, requested, note


def _adjudication(store, pool: Pool, kind: str) -> list[int]:
    """Pool rows of the images queued for adjudication (``labels.policy: unanimous``, answers that disagree):
    proposed again first, before the strategy's picks."""
    if kind != "query":
        return []
    with store.connect(read_only=True, view=False) as con:
        queued = labels_q.adjudication_queue(con)
    return [pool.index[iid] for iid in queued if iid in pool.index]


def _prelabels(cfg: ProjectConfig, pool: Pool, probe, rows: list[int]) -> list[tuple[str | None, float | None]]:
    """(predicted class, its probability) of each row by the probe that scored the pool: the Label Studio
    pre-label (``label_studio.prelabels``); (None, None) without a probe or with pre-labels off."""
    if probe is None or not rows or not cfg.label_studio.prelabels:
        return [(None, None)] * len(rows)
    proba = probe.predict_proba(pool.features[np.asarray(rows, dtype=np.int64)])
    k = proba.argmax(axis=1)
    return [(pool.classes[int(c)], float(proba[i, c])) for i, c in enumerate(k)]


def _url_warnings(cfg: ProjectConfig, ids: list[str], paths: dict) -> list[str]:
    """A warning when images lie outside label_studio.document_root: their Label Studio task URLs are then
    relative to the filesystem root, which a Label Studio with another document root cannot serve (the batch and
    its CSV are not affected)."""
    from al_core.labels.label_studio import under_root

    root = cfg.document_root
    outside = sum(1 for iid in ids if not under_root(paths[iid], root))
    if not outside:
        return []
    return [
        f"{outside} image(s) outside label_studio.document_root {root}: their Label Studio task URLs are "
        "relative to / (set label_studio.document_root to a folder that holds every image)"
    ]


def propose(
    store,
    cfg: ProjectConfig,
    round_: int,
    pool: Pool,
    *,
    probe=None,
    probe_id: str | None = None,
    run_id: str | None = None,
) -> Proposal | None:
    """Select batch ``round_`` and write it to the database and the outbox. None when the budget is spent.

    A query batch starts with the images queued for adjudication (strategy ``adjudication``, no score); the
    strategy picks the rest. With a probe and ``label_studio.prelabels``, each image's predicted class and its
    probability are recorded (``queries.predicted``) and written as the Label Studio task's prediction.
    """
    from al_core.learn.strategies import get_strategy

    kind = "seed" if round_ == 0 else "query"
    name = cfg.selection.seed_strategy if kind == "seed" else cfg.selection.query_strategy
    with store.connect(read_only=True, view=False) as con:
        if rounds_q.round_exists(con, round_):
            raise BatchAlreadyProposed(round_)
        delivered, _skips, waiting = rounds_q.budget_used(con)
    spent = delivered + waiting
    adjudicate = _adjudication(store, pool, kind)
    budget, requested, note = _budget(cfg, spent, len(pool.candidates) + len(adjudicate))
    if budget <= 0:
        return None
    adjudicate = adjudicate[:budget]
    seed = cfg.selection.seed + round_
    t = time.perf_counter()
    rows, scores = list(adjudicate), [float("nan")] * len(adjudicate)
    strategies = [ADJUDICATION] * len(adjudicate)
    batch = None
    if budget > len(adjudicate):  # the rest: relabelling share, the strategy's picks, the near-duplicate rule
        batch = batch_rules.select_batch(
            store,
            cfg,
            pool,
            get_strategy(name, **batch_rules.strategy_params(cfg, kind)),
            name=name,
            kind=kind,
            budget=budget - len(adjudicate),
            seed=seed,
            probe=probe,
            probe_id=probe_id,
        )
        rows += [int(r) for r in batch.rows]
        scores += [float(s) for s in batch.scores]
        strategies += list(batch.strategies)
    select_s = time.perf_counter() - t
    ids = [str(pool.image_ids[i]) for i in rows]
    if len(ids) < budget:  # the near-duplicate rule ran out of candidates
        note = f"{note + '; ' if note else ''}{budget - len(ids)} fewer: no candidate left that is no near-duplicate"
        budget = len(ids)
    prelabels = _prelabels(cfg, pool, probe, rows)
    with store.connect(read_only=True, view=False) as con:
        paths = images.ok_path_of(con, ids)
    warnings = _url_warnings(cfg, ids, paths)
    with store.transaction() as con:
        rounds_q.insert_round(
            con,
            round_=round_,
            kind=kind,
            strategy=name,
            seed=seed,
            budget=budget,
            requested_budget=requested,
            config_id=pool.config_id,
            probe_id=probe_id,
            proposed_at=now(),
            select_seconds=select_s,
            run_id=run_id,
            note=note,
        )
        rounds_q.insert_queries(
            con,
            round_,
            name,
            [
                (iid, paths[iid], None if np.isnan(sc) else sc, st, *pre)
                for iid, sc, st, pre in zip(ids, scores, strategies, prelabels, strict=True)
            ],
        )
        if batch is not None:
            batch_rules.record(con, round_, batch, pool)
        fault_point("query_set.after_insert")
    files = outbox.write_outbox(
        cfg,
        round_,
        name,
        ids,
        scores,
        paths,
        cfg.class_names(store),  # today's classes
        strategies=strategies,
        predictions=dict(zip(ids, prelabels, strict=True)),
        model_version=probe_id,
    )
    return Proposal(
        round_,
        kind,
        name,
        seed,
        budget,
        requested,
        ids,
        scores,
        select_s,
        len(pool.candidates),
        note,
        files,
        config_id=pool.config_id,
        probe_id=probe_id,
        n_labelled=int(len(pool.labeled)),
        classes=tuple(pool.classes),
        n_adjudication=len(adjudicate),
        warnings=warnings,
        budget_left=max(0, cfg.selection.total_budget - spent - budget),
        batch_rules=batch.summary(pool) if batch is not None else None,
    )


def committed_proposal(store, cfg: ProjectConfig, round_: int) -> Proposal:
    """Batch ``round_`` as committed by an earlier run (``already_proposed``), its outbox files written when
    missing (``repair_outbox``): what a retried run reports instead of proposing the batch again."""
    with store.connect(read_only=True, view=False) as con:
        rec = rounds_q.round_record(con, round_)
        batch = rounds_q.batch_of_round(con, round_)
    if rec is None:
        raise LoopError(f"batch {round_} is not recorded")
    outbox.repair_outbox(store, cfg, cfg.class_names(store))
    files = [
        str(outbox.batch_csv(cfg.outbox, round_)),
        str(outbox.batch_tasks_json(cfg.outbox, round_)),
        str(cfg.outbox / outbox.LABEL_STUDIO_CONFIG),
    ]
    scores = [float("nan") if q[2] is None else float(q[2]) for q in batch]
    note = f"already proposed by run {rec['run_id'] or '?'}: nothing done again"
    from al_core.loop.train import probe_classes

    classes = probe_classes(store, cfg, rec["probe_id"]) if rec["probe_id"] else tuple(cfg.class_names(store))
    return Proposal(
        round_,
        rec["kind"],
        rec["strategy"],
        int(rec["seed"]),
        int(rec["budget"]),
        int(rec["requested_budget"]),
        [q[0] for q in batch],
        scores,
        float(rec["select_seconds"] or 0.0),
        0,
        note,
        files,
        config_id=rec["config_id"],
        probe_id=rec["probe_id"],
        already_proposed=True,
        classes=classes,
    )


def propose_seed(store, cfg: ProjectConfig, config_id: str, run_id: str | None = None) -> Proposal:
    """Round 0 (the ``seed_pool`` step): hold out the evaluation set, then propose batch 0 with the seed strategy.
    A batch 0 committed by an earlier run is reported (``committed_proposal``), not proposed again."""
    held = ensure_eval_set(store, cfg, cfg.class_names(store))
    try:
        prop = propose(store, cfg, 0, load_project_pool(store, cfg, config_id), run_id=run_id)
    except BatchAlreadyProposed:
        prop = committed_proposal(store, cfg, 0)
    if prop is None:
        raise LoopError("total budget is 0 or no image can be proposed")
    prop.eval_holdout = held["holdout"]
    return prop


def propose_round(
    store, cfg: ProjectConfig, round_: int, config_id: str, probe_id: str, run_id: str | None = None
) -> Proposal | None:
    """Round r >= 1 (the ``query_set`` step): propose batch r, scored by probe ``probe_id``. None when the budget
    is spent, no candidate is left, or (``selection.stop_when_stable``) the stop rule fired
    (al_core.loop.state.stop_reason says which). A batch r committed by an earlier run (this run is a retry of
    one that failed after the commit, e.g. writing the outbox) is reported (``committed_proposal``), not proposed
    again. The pool is read with the class list the probe was trained with (``train.probe_classes``)."""
    from al_core.loop.train import load_probe, probe_classes

    with store.connect(read_only=True, view=False) as con:
        if rounds_q.round_exists(con, round_):
            return committed_proposal(store, cfg, round_)
    pool = load_pool(store, cfg, config_id, probe_classes(store, cfg, probe_id))
    probe = load_probe(store, probe_id)
    if cfg.selection.stop_when_stable:
        from al_core.value.record import stable_stop

        if stable_stop(store, cfg, round_, pool, probe, probe_id).stop:
            return None
    try:
        return propose(store, cfg, round_, pool, probe=probe, probe_id=probe_id, run_id=run_id)
    except BatchAlreadyProposed:
        return committed_proposal(store, cfg, round_)
