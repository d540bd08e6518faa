"""The numbers of the manager's page, `al status`, the Dagster metadata of ``eval_metrics`` and its stop check.

:func:`value_summary` reads the catalogue's views (al_core.catalogue.value) in one short read-only
connection and returns plain data (JSON-ready): the target metric now with its interval, labels, skips,
hours and cost so far, the cost per point over the last COST_PER_POINT_ROUNDS rounds, the learning curve
and the projection to ``target.value`` (al_core.value.curve), the projected gain and cost of the next
batch, the stop rule (al_core.value.stopping), the budget, one row per evaluated round and one per
annotator.

Hours and cost of the projection are the extra labels times this project's hours and cost per delivered
label so far (the time and cost of skips included).
"""

from __future__ import annotations

import math

import polars as pl

from al_core.catalogue import value as value_q
from al_core.value.curve import CurveFit, fit_curve, next_batch_gain, project, sigma_of

COST_PER_POINT_ROUNDS = 3  # the page's "cost per point over the last rounds": this many rounds


def _f(v):
    """A float, or None for a missing or non-finite value."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _per(total, count):
    return None if total is None or not count else float(total) / count


def _cost_per_point(rows: list[dict]) -> dict | None:
    if len(rows) < 2:
        return None
    w = min(COST_PER_POINT_ROUNDS, len(rows) - 1)
    first, last = rows[-1 - w], rows[-1]
    gain = last["value"] - first["value"]
    costs = [r["cost"] for r in rows[-w:]]
    cost = None if any(c is None for c in costs) else float(sum(costs))
    value = cost / (100 * gain) if cost is not None and gain > 0 else None
    return {
        "rounds": w,
        "from_round": first["round"],
        "to_round": last["round"],
        "gain": gain,
        "cost": cost,
        "value": value,
    }


def _projection(cfg, fit, rows: list[dict], per_label_hours, per_label_cost) -> dict:
    target = cfg.target.value
    if target is None:
        return {"status": "no target set", "target": None}
    last = rows[-1] if rows else None
    p = project(fit, target, last["n"] if last else 0.0, last["value"] if last else None)
    out = {
        "status": p.status,
        "target": target,
        "asymptote": _f(p.asymptote),
        "labels": _f(p.labels),
        "labels_low": _f(p.labels_low),
        "labels_high": _f(p.labels_high),
        "more": _f(p.more),
        "more_low": _f(p.more_low),
        "more_high": _f(p.more_high),
    }
    for key, per in (("hours", per_label_hours), ("cost", per_label_cost)):
        for end in ("", "_low", "_high"):
            more = out["more" + end]
            out[key + end] = None if more is None or per is None else more * per
    return out


def value_summary(store, cfg) -> dict:
    """The manager's numbers (module docstring); every value None where the catalogue has nothing yet."""
    from al_core.catalogue import rounds as rounds_q
    from al_core.value.cost import has_prices
    from al_core.value.record import stop_decision

    metric = cfg.target.metric
    with store.connect(read_only=True, view=False) as con:
        table = value_q.round_value(con, metric)
        totals = value_q.cost_totals(con)
        decision = stop_decision(con, cfg)
        delivered, skips, waiting = rounds_q.budget_used(con)
        annotators = [
            {k: (_f(v) if isinstance(v, float) else v) for k, v in a.items()}
            for a in value_q.annotator_value(con).to_dicts()
        ]
    rows = [
        {
            "round": int(r["round"]),
            "n": float(r["probe_n_labels"]),
            "value": _f(r["value"]),
            "low": _f(r["low"]),
            "high": _f(r["high"]),
            "gain": _f(r["gain"]),
            "gain_low": _f(r["gain_low"]),
            "gain_high": _f(r["gain_high"]),
            "kappa": _f(r["kappa"]),
            "labels": int(r["labels"]),
            "skips": int(r["skips"]),
            "hours": _f(r["hours"]),
            "cost": _f(r["cost"]),
            "cost_per_point": _f(r["cost_per_point"]),
            "labels_total": int(r["labels_total"]),
            "hours_total": _f(r["hours_total"]),
            "cost_total": _f(r["cost_total"]),
            "n_eval": int(r["n_eval"]),
        }
        for r in table.filter(pl.col("value").is_not_null()).to_dicts()
    ]
    fit = fit_curve(
        [r["n"] for r in rows],
        [r["value"] for r in rows],
        sigma_of([r["low"] for r in rows], [r["high"] for r in rows]),
        seed=cfg.selection.seed,
    )
    answered = totals["labels"] + totals["skips"]
    per_label_hours = _per(totals["hours"], totals["labels"]) if totals["labels_untimed"] < answered else None
    per_label_cost = _per(totals["cost"], totals["labels"])
    batch = cfg.selection.budget_per_round
    gain = next_batch_gain(fit, rows[-1]["n"], batch) if rows else None
    last = rows[-1] if rows else None
    return {
        "metric": metric,
        "target": cfg.target.value,
        "now": None if last is None else {k: last[k] for k in ("round", "value", "low", "high", "n", "n_eval")},
        "labels": int(totals["labels"]),
        "skips": int(totals["skips"]),
        "hours": _f(totals["hours"]),
        "labels_untimed": int(totals["labels_untimed"]),
        "labels_upper_bound": int(totals["labels_upper_bound"]),
        "cost": _f(totals["cost"]),
        "currency": totals["currency"] or cfg.cost.currency,
        "priced": has_prices(cfg.cost),
        "cost_per_point": _cost_per_point(rows),
        "curve": (
            {"status": fit}
            if isinstance(fit, str)
            else {"status": "fitted", "a": fit.a, "b": fit.b, "c": fit.c, "points": len(fit.n)}
        ),
        "projection": _projection(cfg, fit, rows, per_label_hours, per_label_cost),
        "next_batch": {
            "labels": batch,
            "gain": None if gain is None else gain[0],
            "gain_low": None if gain is None else gain[1],
            "gain_high": None if gain is None else gain[2],
            "cost": None if per_label_cost is None else batch * per_label_cost,
        },
        "stop": {
            "stop": decision.stop,
            "fired_round": decision.fired_round,
            "reason": decision.reason,
            "last_kappa": _f(decision.last_kappa),
            "threshold": decision.threshold,
            "window": decision.window,
            "stable_rounds": decision.stable_rounds,
            "obeyed": cfg.selection.stop_when_stable,
        },
        "budget": {
            "total": cfg.selection.total_budget,
            "delivered": delivered,
            "skips": skips,
            "waiting": waiting,
            "left": max(0, cfg.selection.total_budget - delivered - waiting),
        },
        "rounds": rows,
        "annotators": annotators,
        "_fit": fit,  # the CurveFit (or why none) for the plots; not JSON: dropped by :func:`public`
    }


def public(summary: dict) -> dict:
    """The summary without its private entries (the CurveFit), for JSON."""
    return {k: v for k, v in summary.items() if not k.startswith("_")}


def curve_of(summary: dict) -> CurveFit | str:
    return summary["_fit"]
