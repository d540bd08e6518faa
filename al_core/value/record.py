"""What the round's evaluation step stores per probe for the manager's page (al_core.loop.evaluation calls it).

:func:`prepare` reads what it needs (the stop set, the previous round's probe and its predictions),
computes, and returns a :class:`ValueRecord` whose ``write(con)`` stores, inside the caller's
transaction:

- the stop set, drawn once from the pool's candidates (al_core.value.stopping.draw_stop_set) the first
  time a probe is evaluated;
- the probe's predictions on the stop set and on the evaluation set (``probe_predictions``);
- the three metrics with their intervals and the gain over the previous round's latest probe, paired
  over the evaluation images both were scored on (``probe_intervals``; al_core.value.intervals);
- Cohen's kappa with the previous round's latest probe on the stop set (``probe_stability``);
- the project file's cost rates (``cost_rates``; al_core.value.cost).

:func:`stable_stop` is the stop rule for ``selection.stop_when_stable``: it records the probe's stop-set
kappa when the evaluation step has not yet, then applies the rule to every round's kappa.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from al_core.catalogue import now
from al_core.catalogue import value as value_q
from al_core.value.cost import cost_rate_rows
from al_core.value.intervals import BOOTSTRAP_RESAMPLES, METRICS, gain_intervals, metric_intervals
from al_core.value.stopping import StopDecision, decide, draw_stop_set, paired_kappa


def bootstrap_seed(base_seed: int, round_: int) -> int:
    """The seed of a round's bootstrap, derived from ``selection.seed`` and the round."""
    return int(np.random.SeedSequence([int(base_seed), int(round_)]).generate_state(1, np.uint32)[0])


@dataclass
class ValueRecord:
    probe_id: str
    round: int
    new_stop_set: list[str] | None  # drawn by this evaluation (None: the stop set existed)
    stop_rows: list[tuple[str, None, str]]
    prev_probe_id: str | None
    kappa: float | None
    n_stop: int
    seed: int
    eval_rows: list[tuple[str, str, str]] | None = None  # None: intervals not computed (stable_stop)
    intervals: list[dict] = field(default_factory=list)
    cost_rates: list[tuple] = field(default_factory=list)

    def write(self, con) -> None:
        ts = now()
        if self.new_stop_set:
            value_q.put_stop_set(con, self.new_stop_set, self.seed, ts)
        value_q.put_predictions(con, self.probe_id, "stop", self.stop_rows)
        value_q.put_stability(
            con,
            probe_id=self.probe_id,
            round_=self.round,
            prev_probe_id=self.prev_probe_id,
            kappa=self.kappa,
            n_stop=self.n_stop,
            computed_at=ts,
        )
        if self.eval_rows is not None:
            value_q.put_predictions(con, self.probe_id, "eval", self.eval_rows)
            value_q.put_intervals(con, self.probe_id, [{**r, "computed_at": ts} for r in self.intervals])
            value_q.put_cost_rates(con, self.cost_rates, ts)


def _predict_names(pool, probe, image_ids: Sequence[str]) -> dict[str, str]:
    rows = [(iid, pool.index[iid]) for iid in image_ids if iid in pool.index]
    if not rows:
        return {}
    pred = probe.predict(pool.features[[r for _, r in rows]])
    return {iid: pool.classes[int(k)] for (iid, _), k in zip(rows, pred, strict=True)}


def prepare(
    store,
    cfg,
    round_: int,
    pool,
    probe,
    probe_id: str,
    eval_rows: Sequence[tuple[str, str]] | None = None,
    pred: Sequence[int] | None = None,
) -> ValueRecord:
    """The value record of probe ``probe_id`` (see the module docstring). ``eval_rows``: the (image_id, label)
    it was scored on and ``pred`` its class indices for them (None: stop set and kappa only)."""
    with store.connect(read_only=True, view=False) as con:
        stop_ids = value_q.stop_set_ids(con)
        prev = value_q.previous_round_probe(con, round_)
        prev_stop = value_q.predictions(con, prev, "stop") if prev else {}
        prev_eval = value_q.predictions(con, prev, "eval") if prev and eval_rows is not None else {}
    seed = bootstrap_seed(cfg.selection.seed, round_)
    new_stop = None
    if not stop_ids:
        new_stop = stop_ids = draw_stop_set([str(pool.image_ids[i]) for i in pool.candidates], cfg.selection.seed)
    stop_pred = _predict_names(pool, probe, stop_ids)
    k, n_stop = paired_kappa({iid: p for iid, (_, p) in prev_stop.items()}, stop_pred)
    rec = ValueRecord(
        probe_id, round_, new_stop, [(iid, None, p) for iid, p in sorted(stop_pred.items())], prev, k, n_stop, seed
    )
    if eval_rows is None:
        return rec
    rec.cost_rates = cost_rate_rows(cfg.cost)
    rec.eval_rows = [(iid, lab, pool.classes[int(p)]) for (iid, lab), p in zip(eval_rows, pred, strict=True)]
    if not rec.eval_rows:
        return rec
    cls = {c: i for i, c in enumerate(pool.classes)}
    y = np.array([cls[lab] for _, lab in eval_rows], dtype=np.int64)
    p_now = np.asarray(pred, dtype=np.int64)
    iv = metric_intervals(y, p_now, len(pool.classes), seed=seed)
    paired = [i for i, (iid, _) in enumerate(eval_rows) if prev_eval.get(iid, (None, None))[1] in cls]
    gains = None
    if paired:
        p_before = np.array([cls[prev_eval[eval_rows[i][0]][1]] for i in paired], dtype=np.int64)
        gains = gain_intervals(y[paired], p_before, p_now[paired], len(pool.classes), seed=seed)
    for m in METRICS:
        g = gains[m] if gains else None
        rec.intervals.append(
            {
                "probe_id": probe_id,
                "round": round_,
                "metric": m,
                "value": iv[m].value,
                "low": iv[m].low,
                "high": iv[m].high,
                "method": iv[m].method,
                "n_eval": len(eval_rows),
                "resamples": None if iv[m].method == "wilson" else BOOTSTRAP_RESAMPLES,
                "seed": seed,
                "prev_probe_id": prev,
                "gain": g.value if g else None,
                "gain_low": g.low if g else None,
                "gain_high": g.high if g else None,
                "n_paired": len(paired) if gains else 0,
            }
        )
    return rec


def stop_decision(con, cfg) -> StopDecision:
    """The stop rule (``selection.stop_kappa``, ``selection.stop_window``) on every round's recorded kappa."""
    return decide(value_q.kappa_by_round(con), cfg.selection.stop_kappa, cfg.selection.stop_window)


def stable_stop(store, cfg, round_: int, pool, probe, probe_id: str) -> StopDecision:
    """The stop rule after probe ``probe_id``: its stop-set kappa recorded first when missing (the proposal
    may run before the evaluation step of the same round)."""
    with store.connect(read_only=True, view=False) as con:
        known = value_q.has_stability(con, probe_id)
    if not known:
        rec = prepare(store, cfg, round_, pool, probe, probe_id)
        with store.transaction() as con:
            rec.write(con)
    with store.connect(read_only=True, view=False) as con:
        return stop_decision(con, cfg)
