"""Proposing a batch: select it with the round's strategy, record it, and hand it to the annotators."""

import time
from dataclasses import asdict, dataclass

import numpy as np

from al_core.catalogue import images, now
from al_core.catalogue import rounds as rounds_q
from al_core.config import ProjectConfig
from al_core.faults import fault_point  # named SIGKILL points (tests/test_reliability.py)
from al_core.loop import batch_rules, outbox
from al_core.loop.errors import LoopError
from al_core.loop.holdout import ensure_eval_set
from al_core.loop.pool import Pool, load_project_pool


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
    batch_rules: dict | None = None  # relabelled rows, near-duplicates replaced (al_core.loop.batch_rules)

    def as_dict(self) -> dict:
        """Every field but the image ids and scores (the asset value; the ids are in ``queries``)."""
        d = asdict(self)
        d.pop("image_ids")
        d.pop("scores")
        return d


def _budget(cfg: ProjectConfig, spent: int, n_candidates: int) -> tuple[int, int, str | None]:
    """(budget, requested budget, note): the configured batch size, clamped by the total budget and the pool."""
    requested = cfg.selection.budget_per_round
    left = cfg.selection.total_budget - spent
    budget = min(requested, left, n_candidates)
    note = None
    if 0 < budget < requested:
        note = (f"budget clamped from {requested} to {budget} "
                f"({'total budget' if left < requested else 'candidates'} ran out)")
    return budget, requested, note


def propose(store, cfg: ProjectConfig, round_: int, pool: Pool, *, probe=None, probe_id: str | None = None,
            run_id: str | None = None) -> Proposal | None:
    """Select batch ``round_`` and write it to the database and the outbox. None when the budget is spent."""
    from al_core.learn.strategies import get_strategy

    kind = "seed" if round_ == 0 else "query"
    name = cfg.selection.seed_strategy if kind == "seed" else cfg.selection.query_strategy
    with store.connect(read_only=True, view=False) as con:
        if rounds_q.round_exists(con, round_):
            raise LoopError(f"batch {round_} was already proposed")
        _, spent = rounds_q.last_round_and_spent(con)
    budget, requested, note = _budget(cfg, spent, len(pool.candidates))
    if budget <= 0:
        return None
    seed = cfg.selection.seed + round_
    t = time.perf_counter()
    batch = batch_rules.select_batch(store, cfg, pool, get_strategy(name, **batch_rules.strategy_params(cfg, kind)),
                                     name=name, kind=kind, budget=budget, seed=seed, probe=probe, probe_id=probe_id)
    select_s = time.perf_counter() - t
    ids = [str(pool.image_ids[i]) for i in batch.rows]
    scores = [float(s) for s in batch.scores]
    if len(ids) < budget:  # the near-duplicate rule ran out of candidates
        note = f"{note + '; ' if note else ''}{budget - len(ids)} fewer: no candidate left that is no near-duplicate"
        budget = len(ids)
    with store.connect(read_only=True, view=False) as con:
        paths = images.ok_path_of(con, ids)
    with store.transaction() as con:
        rounds_q.insert_round(con, round_=round_, kind=kind, strategy=name, seed=seed, budget=budget,
                              requested_budget=requested, config_id=pool.config_id, probe_id=probe_id,
                              proposed_at=now(), select_seconds=select_s, run_id=run_id, note=note)
        rounds_q.insert_queries(con, round_, name, [(iid, paths[iid], None if np.isnan(sc) else sc, st)
                                                    for iid, sc, st in zip(ids, scores, batch.strategies, strict=True)])
        batch_rules.record(con, round_, batch, pool)
        fault_point("query_set.after_insert")
    files = outbox.write_outbox(cfg, round_, name, ids, scores, paths, pool.classes, strategies=batch.strategies)
    return Proposal(round_, kind, name, seed, budget, requested, ids, scores, select_s, len(pool.candidates), note,
                    files, config_id=pool.config_id, probe_id=probe_id, n_labelled=int(len(pool.labeled)),
                    batch_rules=batch.summary(pool))


def propose_seed(store, cfg: ProjectConfig, config_id: str, run_id: str | None = None) -> Proposal:
    """Round 0 (the ``seed_pool`` step): hold out the evaluation set, then propose batch 0 with the seed strategy."""
    held = ensure_eval_set(store, cfg, cfg.class_names(store))
    prop = propose(store, cfg, 0, load_project_pool(store, cfg, config_id), run_id=run_id)
    if prop is None:
        raise LoopError("total budget is 0 or no image can be proposed")
    prop.eval_holdout = held["holdout"]
    return prop


def propose_round(store, cfg: ProjectConfig, round_: int, config_id: str, probe_id: str,
                  run_id: str | None = None) -> Proposal | None:
    """Round r >= 1 (the ``query_set`` step): propose batch r, scored by probe ``probe_id``. None when the budget
    is spent or no candidate is left."""
    from al_core.loop.train import load_probe

    pool = load_project_pool(store, cfg, config_id)
    return propose(store, cfg, round_, pool, probe=load_probe(store, probe_id), probe_id=probe_id, run_id=run_id)
