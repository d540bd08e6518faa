"""The report's HTML page: one self-contained text (inline CSS, pictures as base64 data URIs, no script,
no external resource), built section by section from al_core.reporting.data."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import polars as pl

from al_core.catalogue import labels as labels_q
from al_core.loop.annotator import SIMULATED_ANNOTATORS
from al_core.loop.evaluation import recall_text
from al_core.reporting import data, value_page
from al_core.reporting.gallery import gallery_items, gallery_png
from al_core.reporting.plots import clean_curve, confusion_png, learning_curve_png, png_data_uri
from al_core.reporting.quality import quality_sections
from al_core.reporting.sections import escaped as _e
from al_core.reporting.sections import note, section

GALLERY_MAX_ITEMS = 200  # images shown in the report's gallery at most

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;
 padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}dl{display:grid;grid-template-columns:max-content auto;
 gap:.2em 1.2em}dt{color:#666}dd{margin:0}img{max-width:100%;height:auto}.muted{color:#777;font-size:.9em}
code{background:#f4f4f4;padding:0 .2em}.warn{color:#a33}
"""


def _fmt(v, digits=3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="{png_data_uri(png)}">'


def _head() -> list[str]:
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>al-pipeline report</title>",
        f"<style>{_CSS}{value_page.CSS}</style></head><body>",
        "<h1>al-pipeline report</h1>",
        f'<p class="muted">Written {_e(_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))}; '
        "one self-contained file, works offline.</p>",
    ]


def _summary_section(s: dict) -> list[str]:
    emb = s["embedding"]
    rows = [
        ("project", s["project"]),
        ("database", s["database"]),
        (
            "backbone",
            f"{emb['backbone']} ({emb['dim']}-d {emb['dtype']}, {emb['vectors']} vectors)"
            if emb
            else f"{s['configured_backbone']} (nothing embedded yet)",
        ),
        ("embedding config", f"{emb['config_id']}; preprocessing {emb['preprocessing']}" if emb else "–"),
        ("classes", f"{len(s['classes'])}: {', '.join(s['classes'])}" if s["classes"] else "–"),
        ("images", s["images"]),
        ("labels so far", f"{s['labels']} ({s['skips']} skipped)"),
        (
            "rounds",
            f"{s['rounds']} proposed ({s['open_rounds']} open), {s['proposed']} images proposed; total "
            f"budget {s['total_budget']} labels delivered (skips not counted)",
        ),
        (
            "strategies",
            f"seed {s['seed_strategy']}, then {s['query_strategy']}, {s['budget_per_round']} images per round",
        ),
        ("evaluation set", f"{s['eval_images']} images, {s['eval_labelled']} labelled"),
    ]
    return ["<h2>Summary</h2><dl>", *(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows), "</dl>"]


def _curve_section(curves: dict, problems: list[str], simulated: tuple[int, int] = (0, 0)) -> list[str]:
    """``simulated``: (labels the simulated annotator delivered, every label): the loop's curve says "simulated"
    only when some of its labels were."""
    n_sim, n_all = simulated
    loop = "The labelling loop's accuracy on its hold-out after each round" + (
        f" ({n_sim} of its {n_all} labels delivered by the simulated annotator, from the ground truth)" if n_sim else ""
    )
    sims = any(str(name).startswith("simulated") for name in curves)
    parts = [
        _img(learning_curve_png(curves), "learning curve"),
        note(
            _e(loop)
            + (
                ", and every <code>al simulate</code> run saved in the reports "
                "folder (mean over seeds, band: ± one standard deviation; these "
                "simulations answer from the ground truth)"
                if sims
                else ""
            )
            + "."
        ),
    ]
    shown = [(name, pts) for name, pts in ((n, clean_curve(p)) for n, p in curves.items()) if pts]
    if shown:
        parts.append(
            '<table><tr><th class="l">curve</th><th>points</th><th>labels</th>'
            "<th>first accuracy</th><th>last accuracy</th></tr>"
            + "".join(
                f'<tr><td class="l">{_e(name)}</td><td>{len(pts)}</td><td>{pts[0][0]:.0f}–{pts[-1][0]:.0f}'
                f"</td><td>{_fmt(pts[0][1])}</td><td>{_fmt(pts[-1][1])}</td></tr>"
                for name, pts in shown
            )
            + "</table>"
        )
    if problems:
        parts.append(note("Skipped: " + "; ".join(_e(p) for p in problems)))
    return section("Learning curve", body=parts)


def _rounds_section(rounds: pl.DataFrame, metrics: pl.DataFrame, galleries: dict | None = None) -> list[str]:
    """One row per round with a batch or an evaluated probe: labels, metrics, strategy, budget, status, and a
    link to the batch's review gallery (``galleries``: round -> link relative to the report)."""
    galleries = galleries or {}
    table = rounds.join(
        metrics.select("round", "n_labels", "accuracy", "balanced_accuracy", "macro_f1"),
        on="round",
        how="full",
        coalesce=True,
    ).sort("round")
    if table.is_empty():
        return section("Rounds", "No round yet.")
    head = (
        "<tr><th>round</th><th>labels</th><th>accuracy</th><th>balanced accuracy</th><th>macro F1</th>"
        '<th class="l">strategy (batch proposed)</th><th>proposed</th><th class="l">status</th>'
        '<th class="l">gallery</th></tr>'
    )
    body = []
    for r in table.to_dicts():
        proposed = r["kind"] is not None  # a rounds row (kind is NOT NULL there)
        strat = f"{r['strategy']} ({r['kind']})" if proposed else "–"
        body.append(
            f"<tr><td>{r['round']}</td><td>{_e('–' if r['n_labels'] is None else r['n_labels'])}</td>"
            f"<td>{_fmt(r['accuracy'])}</td><td>{_fmt(r['balanced_accuracy'])}</td><td>{_fmt(r['macro_f1'])}</td>"
            f'<td class="l">{_e(strat)}</td><td>{_e(r["budget"] if proposed else "–")}</td>'
            f'<td class="l">{_e(r["status"] if proposed else "–")}</td><td class="l">{_gallery_link(galleries, r)}'
            "</td></tr>"
        )
    return section(
        "Rounds",
        body=[
            "<table>"
            + head
            + "".join(body)
            + "</table>"
            + note(
                "Round r trains the probe on every label delivered for the batches before it "
                "(labels: how many), evaluates it on the hold-out, then proposes batch r with the strategy shown."
            )
        ],
    )


def _confusion_section(last: dict | None, classes: list[str]) -> list[str]:
    if last is None:
        return section("Confusion matrix", "No evaluated round yet.")
    intro = (
        f"Round {last['round']} (probe {_e(last['probe_id'])}, "
        f"{last['n_labels']} labels, {last['n_eval']} evaluation images)."
    )
    parts = [_img(confusion_png(last["confusion"], classes), "confusion matrix")]
    if isinstance(last["per_class_recall"], dict) and last["per_class_recall"]:
        counts = last.get("per_class_n_eval") or {}
        parts.append(
            '<table><tr><th class="l">class</th><th>evaluation images</th><th>recall</th></tr>'
            + "".join(
                f'<tr><td class="l">{_e(c)}</td><td>{_e(str(counts.get(c, "–")))}</td>'
                f"<td>{_e(recall_text(r, counts.get(c)))}</td></tr>"
                for c, r in last["per_class_recall"].items()
            )
            + "</table>"
        )
    return section("Confusion matrix", intro, parts)


def _gallery_section(rnd: int | None, strat: str | None, queries: list[dict]) -> list[str]:
    if not queries:
        return section("Latest proposed images", "No images proposed yet.")
    more = len(queries) - GALLERY_MAX_ITEMS
    intro = (
        f"Batch {rnd}, {len(queries)} images proposed by {_e(strat)}, "
        "in rank order with their scores" + (f" (first {GALLERY_MAX_ITEMS} shown)" if more > 0 else "") + "."
    )
    image = _img(
        gallery_png(gallery_items(queries, GALLERY_MAX_ITEMS), cols=10, thumb=72),
        "images proposed in the latest round",
    )
    table = (
        '<table><tr><th>rank</th><th>score</th><th class="l">image</th></tr>'
        + "".join(
            f'<tr><td>{q["rank"]}</td><td>{_fmt(q["score"], 4)}</td><td class="l">{_e(q["path"])}</td></tr>'
            for q in queries[:GALLERY_MAX_ITEMS]
        )
        + "</table>"
    )
    return section("Latest proposed images", intro, [image, table])


def _gallery_link(galleries: dict, row: dict) -> str:
    r = row["round"]
    return f'<a href="{_e(galleries[r])}">batch {r}</a>' if r in galleries else "–"


def _galleries(cfg, out_dir) -> dict[int, str]:
    """round -> the batch's review gallery (al_core.loop.outbox.batch_page) as a link relative to ``out_dir``,
    for every batch whose gallery is in the outbox; the evaluation list's under key -1."""
    import os
    import urllib.parse

    from al_core.loop import outbox

    pages = {r: outbox.batch_page(cfg.outbox, r) for r in outbox.batches_in(cfg.outbox)}
    pages[-1] = outbox.eval_page(cfg.outbox)
    rel = lambda p: urllib.parse.quote(os.path.relpath(p.absolute(), Path(out_dir).absolute()).replace(os.sep, "/"))
    return {r: rel(p) for r, p in pages.items() if p.exists()}


def build_report_html(store, cfg, out_dir=None) -> str:
    """The report's HTML text: the manager's page (al_core.reporting.value_page) first, then the summary,
    learning curves, rounds, what each round bought, annotators, the study's comparison, the latest
    confusion matrix, the latest batch and label quality (suspects, class balance, agreement, duplicates:
    al_core.reporting.quality)."""
    from al_core.reporting.study import study_comparison
    from al_core.value.summary import curve_of, value_summary

    metrics = data.latest_metrics(store)
    last = data.last_confusion(metrics)
    curves, problems = data.all_curves(store, cfg)
    value = value_summary(store, cfg)
    with store.connect(read_only=True, view=False) as con:
        simulated = labels_q.n_labels_by(con, SIMULATED_ANNOTATORS)
    galleries = _galleries(cfg, cfg.reports_dir if out_dir is None else out_dir)
    parts = [
        *_head(),
        *value_page.first_screen(value, curve_of(value)),
        *_summary_section(data.project_summary(store, cfg)),
        *_curve_section(curves, problems, simulated),
        *_rounds_section(data.round_overview(store), metrics, galleries),
        *([f'<p>Evaluation set: <a href="{_e(galleries[-1])}">its review gallery</a>.</p>'] if -1 in galleries else []),
        *value_page.details(value, study_comparison(cfg.reports_dir, cfg.target.value)),
        *_confusion_section(last, data.confusion_classes(last, cfg, store) if last else []),
        *_gallery_section(*data.latest_query_set(store)),
        *quality_sections(store, cfg),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
