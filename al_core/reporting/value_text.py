"""The manager's numbers (al_core.value.summary) as short plain-text lines: for `al status` and for the
metadata of ``eval_metrics`` in the Dagster UI, where text entries are shown as they are and never plotted.

The formatting helpers are shared with the HTML page (al_core.reporting.value_page).
"""

from __future__ import annotations

METRIC_WORDS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "macro_f1": "Macro F1"}


def pct(v, digits: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f} %"


def pts(v) -> str:
    return "–" if v is None else f"{100 * v:+.1f} points"


def money(v, currency: str) -> str:
    return "–" if v is None else f"{v:,.2f} {currency}"


def count(v) -> str:
    return "–" if v is None else f"{v:,.0f}"


def duration(hours) -> str:
    """Annotator time in the unit that reads best: seconds, minutes or hours."""
    if hours is None:
        return "–"
    if hours < 1 / 60:
        return f"{hours * 3600:.0f} seconds"
    if hours < 1:
        return f"{hours * 60:.1f} minutes"
    return f"{hours:,.1f} hours"


def upper(v) -> str:
    return "no upper bound" if v is None else count(v)


def metric_word(s: dict) -> str:
    return METRIC_WORDS.get(s["metric"], s["metric"])


def lines(s: dict) -> dict[str, str]:
    """name -> one line: metric_now, labels_so_far, annotator_time, cost_so_far, cost_per_point, projection,
    stop_suggestion, next_batch, budget."""
    word, cur = metric_word(s), s["currency"]
    now = s["now"]
    out = {
        "metric_now": "not measured yet"
        if now is None
        else f"{word} {pct(now['value'])} (95 % interval {pct(now['low'])} to {pct(now['high'])}) on "
        f"{now['n_eval']} evaluation images, round {now['round']}, {count(now['n'])} training labels"
    }
    out["labels_so_far"] = f"{count(s['labels'])} delivered, {count(s['skips'])} skipped"
    time_note = " (partly an upper bound)" if s["labels_upper_bound"] else ""
    out["annotator_time"] = duration(s["hours"]) + time_note
    out["cost_so_far"] = money(s["cost"], cur) if s["priced"] else "no prices set (cost: in the project file)"
    c = s["cost_per_point"]
    out["cost_per_point"] = (
        "not yet"
        if c is None
        else "no prices set"
        if not s["priced"]
        else f"no gain over the last {c['rounds']} rounds ({pts(c['gain'])})"
        if c["value"] is None
        else f"{money(c['value'], cur)} per point over the last {c['rounds']} rounds"
    )
    out["projection"] = projection_line(s)
    st = s["stop"]
    out["stop_suggestion"] = (
        f"consider stopping (rule fired at round {st['fired_round']}): {st['reason']}"
        if st["stop"]
        else f"not yet: {st['reason']}"
    )
    b = s["next_batch"]
    out["next_batch"] = (
        f"{b['labels']} labels"
        if b["gain"] is None
        else f"{b['labels']} labels: {pts(b['gain'])} projected ({pts(b['gain_low'])} to "
        f"{pts(b['gain_high'])})" + ("" if b["cost"] is None or not s["priced"] else f", about {money(b['cost'], cur)}")
    )
    bud = s["budget"]
    out["budget"] = f"{count(bud['left'])} of {count(bud['total'])} labels left"
    return out


def projection_line(s: dict) -> str:
    p, cur = s["projection"], s["currency"]
    if p["status"] == "no target set":
        return "no target set (target: value: in the project file)"
    head = f"to reach {pct(p['target'])}"
    if p["status"] == "projected":
        extra = "" if p["hours"] is None else f", {duration(p['hours'])}"
        if p["cost"] is not None and s["priced"]:
            extra += f", {money(p['cost'], cur)}"
        return (
            f"{head}: about {count(p['more'])} more labels ({count(p['more_low'])} to {upper(p['more_high'])})" + extra
        )
    if p["status"] == "not reachable on this curve":
        return f"{head}: not reachable on this curve (it levels off at {pct(p['asymptote'])})"
    return f"{head}: {p['status']}"
