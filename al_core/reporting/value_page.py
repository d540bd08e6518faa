"""The manager's page: the report's first screen (what the labels bought, in plain words) and its details
further down (per round, per annotator, the study's comparison), from al_core.value.summary.

Every number of the first screen sits in an element with ``data-key`` (its name) and ``data-value`` (the
unrounded number, empty when there is none), so a script (and tests/test_value_report.py) reads the page
without parsing prose.
"""

from __future__ import annotations

from al_core.reporting.plots import png_data_uri
from al_core.reporting.sections import escaped as _e
from al_core.reporting.sections import note, section
from al_core.reporting.value_plots import value_curve_png
from al_core.reporting.value_text import count as _count
from al_core.reporting.value_text import duration as _duration
from al_core.reporting.value_text import metric_word
from al_core.reporting.value_text import money as _money
from al_core.reporting.value_text import pct as _pct
from al_core.reporting.value_text import pts as _pts
from al_core.value.curve import MIN_CURVE_POINTS

CSS = """
.manager{background:#f7f9fc;border:1px solid #dde4ee;border-radius:6px;padding:.6em 1.2em;margin:1em 0}
.manager .now{font-size:1.35em;margin:.3em 0 .6em}.manager dl{gap:.35em 1.4em}.manager dt{font-weight:600;color:#333}
.stop{color:#a15c00;font-weight:600}.go{color:#2a6a2a;font-weight:600}
"""


def _num(key: str, value, text: str) -> str:
    """``text`` in a span carrying ``data-key`` and the unrounded ``data-value``."""
    raw = "" if value is None else repr(float(value)) if isinstance(value, float) else str(value)
    return f'<span data-key="{_e(key)}" data-value="{_e(raw)}">{_e(text)}</span>'


def _now_line(s: dict, word: str) -> str:
    now = s["now"]
    if now is None:
        return (
            f'<p class="now">{word} now: {_num("metric_now", None, "not measured yet")} (no round has been '
            "evaluated on labelled evaluation images yet).</p>"
        )
    return (
        f'<p class="now">{word} now: <b>{_num("metric_now", now["value"], _pct(now["value"]))}</b> '
        f"(95 % interval {_num('metric_low', now['low'], _pct(now['low']))} to "
        f"{_num('metric_high', now['high'], _pct(now['high']))}), measured on {_e(now['n_eval'])} held-out "
        f"images after round {_num('round_now', now['round'], str(now['round']))}, with "
        f"{_num('training_labels', int(now['n']), _count(now['n']))} labels to learn from.</p>"
    )


def _last_change(s: dict, word: str) -> str:
    rows = s["rounds"]
    if len(rows) < 2 or rows[-1]["gain"] is None:
        return "–"
    r = rows[-1]
    noise = r["gain_low"] is not None and r["gain_high"] is not None and r["gain_low"] <= 0 <= r["gain_high"]
    verdict = (
        "within the noise of the evaluation set (the interval holds zero)"
        if noise
        else "more than the evaluation set's noise"
    )
    return (
        f"{_num('last_gain', r['gain'], _pts(r['gain']))} in round {r['round']} "
        f"(95 % interval {_pts(r['gain_low'])} to {_pts(r['gain_high'])}): {verdict}"
    )


def _cost_per_point(s: dict, word: str) -> str:
    c, cur = s["cost_per_point"], s["currency"]
    if c is None:
        return _num("cost_per_point", None, "not yet (two evaluated rounds needed)")
    if not s["priced"]:
        return _num("cost_per_point", None, "no prices set (cost: in the project file)")
    if c["value"] is None:
        return (
            _num("cost_per_point", None, "no gain") + f" over the last {c['rounds']} rounds "
            f"({word.lower()} changed by {_pts(c['gain'])}, for {_money(c['cost'], cur)})"
        )
    return (
        _num("cost_per_point", c["value"], _money(c["value"], cur)) + f" per percentage point of "
        f"{word.lower()} over the last {c['rounds']} rounds ({_pts(c['gain'])} for {_money(c['cost'], cur)})"
    )


def _projection(s: dict, word: str) -> str:
    p, cur = s["projection"], s["currency"]
    status = p["status"]
    if status == "no target set":
        return _num("more_labels", None, "no target set") + " (target: value: in the project file)"
    head = f"To reach {_pct(p['target'])} {word.lower()}"
    if status == "projected":
        hi = "no upper bound" if p["more_high"] is None else _count(p["more_high"])
        hours = (
            ""
            if p["hours"] is None
            else (f", about {_num('more_hours', p['hours'], _duration(p['hours']))} of annotator time")
        )
        cost_hi = "no upper bound" if p["cost_high"] is None else _money(p["cost_high"], cur)
        cost = (
            ""
            if p["cost"] is None or not s["priced"]
            else (
                f", about {_num('more_cost', p['cost'], _money(p['cost'], cur))} (interval "
                f"{_money(p['cost_low'], cur)} to {cost_hi})"
            )
        )
        return (
            f"{head}: about {_num('more_labels', p['more'], _count(p['more']))} more labels (95 % interval "
            f"{_count(p['more_low'])} to {hi}){hours}{cost}, on the learning curve fitted to the rounds so far."
        )
    if status == "reached":
        return f"{head}: {_num('more_labels', 0, 'reached already')}."
    if status == "not reachable on this curve":
        return (
            f"{head}: {_num('more_labels', None, 'not reachable on this curve')}: the curve fitted to the rounds "
            f"so far levels off at {_pct(p['asymptote'])}. More labels of the same kind are unlikely to get "
            "there; better features, cleaner labels or another model might."
        )
    if status == "not enough rounds yet":
        return (
            f"{head}: {_num('more_labels', None, 'not enough rounds yet')} (the projection needs "
            f"{MIN_CURVE_POINTS} evaluated rounds, there are {len(s['rounds'])})."
        )
    return f"{head}: {_num('more_labels', None, status)}."


def _stop(s: dict) -> str:
    st = s["stop"]
    if st["stop"]:
        what = (
            "the loop has stopped proposing (selection.stop_when_stable)"
            if st["obeyed"]
            else "set selection.stop_when_stable: true to let the loop stop by itself"
        )
        return (
            f'<span class="stop">{_num("stop", 1, "Consider stopping")}</span>: {_e(st["reason"])}; the rule '
            f"fired at round {_e(st['fired_round'])} ({_e(what)})."
        )
    return f'<span class="go">{_num("stop", 0, "Not yet")}</span>: {_e(st["reason"])}.'


def _next_batch(s: dict) -> str:
    b, cur = s["next_batch"], s["currency"]
    if b["gain"] is None:
        return f"{b['labels']} labels; no projection of their gain before the curve can be fitted"
    cost = "" if b["cost"] is None or not s["priced"] else f", costing about {_money(b['cost'], cur)}"
    return (
        f"{b['labels']} labels, projected to add {_num('next_gain', b['gain'], _pts(b['gain']))} "
        f"(95 % interval {_pts(b['gain_low'])} to {_pts(b['gain_high'])}){cost}"
    )


def _spent(s: dict) -> str:
    hours = _num("hours", s["hours"], _duration(s["hours"])) + " of annotator time"
    notes = []
    if s["labels_upper_bound"]:
        notes.append(
            f"{s['labels_upper_bound']} of the answers timed only from the batch's proposal to the "
            "delivery: an upper bound"
        )
    if s["labels_untimed"]:
        notes.append(f"{s['labels_untimed']} answers without any time")
    return (
        f"{_num('labels', s['labels'], _count(s['labels']))} labels delivered and "
        f'{_num("skips", s["skips"], _count(s["skips"]))} images skipped as "cannot tell", {hours}'
        + (f" ({'; '.join(notes)})" if notes else "")
    )


def first_screen(s: dict, fit) -> list[str]:
    """The manager's page: the metric now, spending, cost per point, projection, stop suggestion, next batch,
    budget, and the learning curve against labels and cost."""
    word = metric_word(s)
    cur = s["currency"]
    cost = (
        _num("cost", s["cost"], _money(s["cost"], cur))
        if s["priced"]
        else _num("cost", s["cost"], "no prices set") + " (cost: in the project file)"
    )
    b = s["budget"]
    rows = [
        ("Labels so far", _spent(s)),
        ("Cost so far", cost),
        ("Last round's change", _last_change(s, word)),
        ("Cost per point", _cost_per_point(s, word)),
        ("Projection", _projection(s, word)),
        ("Stop?", _stop(s)),
        ("The next batch", _next_batch(s)),
        (
            "Budget",
            f"{_num('budget_left', b['left'], _count(b['left']))} of {_count(b['total'])} labels left "
            f"({_count(b['delivered'])} delivered, {_count(b['waiting'])} waiting in the open batch; skips "
            "do not count)",
        ),
    ]
    png = value_curve_png(s, fit)
    how = note(
        "The model is retrained after every round of labels and scored on images kept aside "
        "for evaluation; the shaded band is the 95 % interval of each score, the dashed line the learning "
        "curve fitted to the rounds so far (a - b &middot; labels<sup>-c</sup>) and where it leads. The stop "
        "suggestion compares the model's answers on a fixed sample of unlabelled images from one round to the "
        "next. Details below."
    )
    body = [
        _now_line(s, word),
        "<dl>",
        *(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows),
        "</dl>",
        f'<img alt="learning curve against labels and cost" src="{png_data_uri(png)}">',
        how,
    ]
    return ['<section class="manager" id="manager">', *section("What the labels bought", body=body), "</section>"]


def rounds_table(s: dict) -> list[str]:
    """Per round: labels, skips, hours, cost, the metric with its interval, the gain, the cost per point, kappa."""
    cur = s["currency"]
    word = metric_word(s)
    title = f"What each round bought ({_e(word.lower())})"
    if not s["rounds"]:
        return section(title, "No evaluated round yet.")
    head = (
        "<tr><th>round</th><th>labels</th><th>skips</th><th>annotator time</th><th>cost</th><th>total cost</th>"
        f"<th>{_e(word.lower())}</th><th>95 % interval</th><th>gain</th><th>gain interval</th>"
        "<th>cost per point</th><th>agreement (kappa)</th></tr>"
    )
    body = "".join(
        f"<tr><td>{r['round']}</td><td>{r['labels']}</td><td>{r['skips']}</td><td>{_duration(r['hours'])}</td>"
        f"<td>{_money(r['cost'], cur)}</td><td>{_money(r['cost_total'], cur)}</td><td>{_pct(r['value'])}</td>"
        f"<td>{_pct(r['low'])} – {_pct(r['high'])}</td><td>{_pts(r['gain'])}</td>"
        f"<td>{_pts(r['gain_low'])} – {_pts(r['gain_high'])}</td><td>{_money(r['cost_per_point'], cur)}</td>"
        f"<td>{'–' if r['kappa'] is None else format(r['kappa'], '.3f')}</td></tr>"
        for r in s["rounds"]
    )
    sql = note(
        "SQL: the views <code>round_value</code> and <code>round_cost</code> (docs/sql.md). "
        "Round r's labels answer batch r - 1 and train round r's model; its gain is over round r - 1's model, "
        "on the same evaluation images."
    )
    return section(title, body=["<table>" + head + body + "</table>", sql])


def annotators_table(s: dict) -> list[str]:
    cur = s["currency"]
    if not s["annotators"]:
        return section("Annotators", "No label delivered yet.")
    head = (
        '<tr><th class="l">annotator</th><th>labels</th><th>skips</th><th>share skipped</th>'
        '<th>median seconds per answer</th><th class="l">timed from</th><th>annotator time</th><th>cost</th></tr>'
    )
    body = "".join(
        f'<tr><td class="l">{_e(a["annotator"] or "(not given)")}</td><td>{a["labels"]}</td><td>{a["skips"]}</td>'
        f"<td>{_pct(a['share_skipped'])}</td>"
        f"<td>{'–' if a['median_seconds'] is None else format(a['median_seconds'], '.1f')}</td>"
        f'<td class="l">{_e(a["seconds_sources"] or "–")}</td><td>{_duration(a["hours"])}</td>'
        f"<td>{_money(a['cost'], cur)}</td></tr>"
        for a in s["annotators"]
    )
    sql = note(
        'SQL: the view <code>annotator_value</code>. "upper_bound": the time from the batch\'s '
        "proposal to the delivery, shared by the delivery's labels (no time was delivered)."
    )
    return section("Annotators", body=["<table>" + head + body + "</table>", sql])


def study_section(study: dict | None, metric: str) -> list[str]:
    """The newest `al simulate` run: labels to reach the target per strategy, range over seeds."""
    title = "What active learning saved (simulation)"
    if study is None:
        return section(
            title,
            "No <code>al simulate</code> run saved for this project, or no target "
            "set: run <code>al simulate</code> to compare strategies on the images labelled so far.",
        )
    strategies = study["strategies"]
    base = strategies.get("random")
    head = (
        '<tr><th class="l">strategy</th><th>labels to reach the target (median over seeds)</th>'
        "<th>range over seeds</th><th>seeds that reached it</th><th>saved against random</th></tr>"
    )
    body = []
    for name, r in strategies.items():
        more = f"more than {r['max_labels']}"
        med = more if r["median"] is None else f"{r['median']:g}"
        rng = (
            f"{r['low']} – {r['high']}"
            if r["high"] is not None
            else f"{r['low']} – {more}"
            if r["low"] is not None
            else more
        )
        saved = "–"
        if base is not None and name != "random" and r["median"] is not None:
            saved = (
                f"{base['median'] - r['median']:+g} labels"
                if base["median"] is not None
                else f"more than {base['max_labels'] - r['median']:g} labels"
            )
        body.append(
            f'<tr><td class="l">{_e(name)}</td><td>{_e(med)}</td><td>{_e(rng)}</td>'
            f"<td>{r['reached']} of {len(r['per_seed'])}</td><td>{_e(saved)}</td></tr>"
        )
    other_metric = (
        ""
        if metric == "accuracy"
        else (f" The simulation records accuracy only; the target ({_e(metric)}) is compared with accuracy here.")
    )
    caveat = note(
        "Optimistic, said plainly: the simulation answers from the classes the project already "
        "knows and replays selection over this project's images only; when those are the images a strategy "
        "chose to label, that strategy is favoured, and a simulated annotator never errs or skips. Read it "
        f"as an upper bound on what a strategy saves.{other_metric}"
    )
    target = (
        f"<p>Target {_pct(study['target'])} accuracy, seed pool {_e(study['seed_strategy'])}, from "
        f"{_e(study['file'])}.</p>"
    )
    return section(title, body=[target, "<table>" + head + "".join(body) + "</table>", caveat])


def details(s: dict, study: dict | None) -> list[str]:
    return [*rounds_table(s), *annotators_table(s), *study_section(study, s["metric"])]
