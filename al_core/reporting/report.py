"""Pictures and the HTML report: learning curves, confusion matrix, gallery of proposed images.

Everything here works without Dagster. Matplotlib and Pillow are imported
inside the functions (matplotlib's object API with the Agg canvas: no pyplot,
no global backend switch), so importing this module stays cheap.

- :func:`learning_curve_png`, :func:`confusion_png`, :func:`gallery_png`: PNG bytes.
- :func:`loop_curves`: the running project's learning curve from the catalogue.
- :func:`simulate_curves`: the curves of every ``al simulate`` run saved under
  ``<data_dir>/reports/simulate*.json``.
- :func:`write_report`: one self-contained offline HTML file (images as base64
  data URIs, inline CSS, no script, no external resource), written atomically.
- :func:`metadata_images`: small markdown snippets with embedded PNGs for
  Dagster's ``MetadataValue.md``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "learning_curve_png",
    "confusion_png",
    "gallery_png",
    "loop_curves",
    "simulate_curves",
    "all_curves",
    "latest_metrics",
    "latest_query_set",
    "write_report",
    "metadata_images",
    "png_data_uri",
]

Curve = list  # list[tuple[int, float]] or list[tuple[int, float, float]]

METADATA_MAX_BYTES = 200_000  # per markdown snippet (base64 included)
GALLERY_MAX_ITEMS = 200  # images shown in the report's gallery at most
_GREY = (128, 128, 128)


# ----------------------------------------------------------------------------- figures
def _figure(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _png(fig, dpi: float) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _clean_curve(points) -> list[tuple[float, float, float | None]]:
    out = []
    for p in points or []:
        if p is None or len(p) < 2 or p[1] is None:
            continue
        std = p[2] if len(p) > 2 else None
        try:
            n, acc = float(p[0]), float(p[1])
        except (TypeError, ValueError):
            continue
        if n != n or acc != acc:  # NaN
            continue
        out.append((n, acc, None if std is None or std != std else float(std)))
    return sorted(out, key=lambda t: t[0])


def learning_curve_png(
    curves: dict[str, list[tuple]],
    *,
    title: str = "Accuracy against number of labels",
    figsize: tuple[float, float] = (6.4, 4.0),
    dpi: float = 100,
) -> bytes:
    """Accuracy against labels, one line per strategy; a shaded band where points are (n, mean, std).

    Curves whose name starts with "simulated" are dashed (see :func:`simulate_curves`).

    Points with a missing (None/NaN) accuracy are left out. An empty ``curves``
    gives a figure that says so (never an exception).
    """
    fig = _figure(figsize)
    ax = fig.add_subplot(1, 1, 1)
    drawn = 0
    for i, (name, points) in enumerate(curves.items()):
        pts = _clean_curve(points)
        if not pts:
            continue
        color = f"C{i % 10}"
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        simulated = str(name).startswith("simulated")
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.3 if simulated else 2.2, color=color,
                linestyle="--" if simulated else "-", label=str(name))
        if any(p[2] is not None for p in pts):
            sd = [p[2] or 0.0 for p in pts]
            ax.fill_between(xs, [y - s for y, s in zip(ys, sd)], [y + s for y, s in zip(ys, sd)],
                            color=color, alpha=0.15, linewidth=0)
        drawn += 1
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("labelled images")
    ax.set_ylabel("accuracy (hold-out)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no evaluated round yet", ha="center", va="center", transform=ax.transAxes, color="0.4")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    return _png(fig, dpi)


def confusion_png(
    confusion: list[list[int]],
    classes: Sequence[str],
    *,
    title: str = "Confusion matrix (rows: true class, normalised; numbers: counts)",
    dpi: float = 100,
    max_size_in: float = 12.0,
) -> bytes:
    """Row-normalised confusion matrix (colour: share of the true class), counts written in the cells.

    Counts are written while there are at most 30 classes. An empty matrix
    gives a figure that says so.
    """
    import numpy as np

    m = np.asarray(confusion if confusion else [], dtype=np.float64)
    if m.ndim != 2 or m.size == 0 or m.shape[0] != m.shape[1]:
        fig = _figure((4.0, 3.0))
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, "no confusion matrix yet", ha="center", va="center", transform=ax.transAxes, color="0.4")
        return _png(fig, dpi)
    k = m.shape[0]
    names = [str(c) for c in classes][:k] + [f"class {i}" for i in range(len(classes), k)]
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    side = min(max_size_in, max(3.5, 1.2 + 0.45 * k))
    fig = _figure((side + 1.0, side))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    fs = 8 if k <= 12 else 6
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=fs)
    ax.set_yticklabels(names, fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                c = int(m[i, j])
                if c or i == j:
                    ax.text(j, i, str(c), ha="center", va="center", fontsize=fs,
                            color="white" if norm[i, j] > 0.5 else "black")
    return _png(fig, dpi)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType support
        return ImageFont.load_default()


def _fit_text(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _thumbnail(path: str, thumb: int):
    """The image scaled to fit thumb x thumb (RGB), or None when it cannot be read."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.draft("RGB", (thumb, thumb))  # JPEG: decode at reduced size (cheap)
            im = im.convert("RGB")
            # scale to fit the tile, up as well as down (CIFAR-sized images are 32 px)
            return ImageOps.contain(im, (thumb, thumb), Image.Resampling.LANCZOS)
    except Exception:  # missing, unreadable, corrupt, decompression bomb: a grey tile instead
        return None


def gallery_png(items: list[tuple[str, str]], *, cols: int = 10, thumb: int = 64) -> bytes:
    """Thumbnails in a grid, each with its caption (one or more lines, e.g. rank and score).

    A missing or unreadable image becomes a grey tile marked "unreadable";
    this never raises for a bad image. An empty list gives a small tile that
    says so.
    """
    from PIL import Image, ImageDraw

    thumb = max(16, int(thumb))
    cols = max(1, int(cols))
    font_size = max(8, min(12, thumb // 6))
    font = _font(font_size)
    pad = 4
    n_lines = max([len(str(c).split("\n")) for _, c in items] or [1])
    line_h = font_size + 3
    tile_w = max(thumb, 64)
    tile_h = thumb + n_lines * line_h + 2
    if not items:
        img = Image.new("RGB", (240, 40), "white")
        ImageDraw.Draw(img).text((8, 12), "no images proposed yet", fill=(90, 90, 90), font=font)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        return buf.getvalue()
    ncols = min(cols, len(items))
    nrows = -(-len(items) // ncols)
    img = Image.new("RGB", (pad + ncols * (tile_w + pad), pad + nrows * (tile_h + pad)), "white")
    draw = ImageDraw.Draw(img)
    for i, (path, caption) in enumerate(items):
        r, c = divmod(i, ncols)
        x0, y0 = pad + c * (tile_w + pad), pad + r * (tile_h + pad)
        t = _thumbnail(str(path), thumb)
        if t is None:
            tx = x0 + (tile_w - thumb) // 2
            draw.rectangle([tx, y0, tx + thumb - 1, y0 + thumb - 1], fill=_GREY)
            label = _fit_text(draw, "unreadable", font, thumb - 4)
            draw.text((tx + 2, y0 + thumb // 2 - font_size // 2), label, fill=(235, 235, 235), font=font)
        else:
            img.paste(t, (x0 + (tile_w - t.width) // 2, y0 + (thumb - t.height) // 2))
        for j, line in enumerate(str(caption).split("\n")):
            draw.text((x0, y0 + thumb + 2 + j * line_h), _fit_text(draw, line, font, tile_w), fill=(20, 20, 20),
                      font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# ----------------------------------------------------------------------------- reading the catalogue
def _tables(con) -> set[str]:
    return {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}


_LATEST_METRICS_SQL = """
    SELECT p.round, p.version, p.probe_id, m.n_labels, m.n_eval, m.accuracy, m.balanced_accuracy, m.macro_f1,
           m.per_class_recall, m.confusion, m.evaluated_at, p.trigger
    FROM metrics m JOIN probes p USING (probe_id)
    QUALIFY row_number() OVER (PARTITION BY p.round ORDER BY p.version DESC, m.evaluated_at DESC) = 1
    ORDER BY p.round"""


def latest_metrics(store) -> list[dict]:
    """One dict per probe round with metrics: the latest probe version of that round."""
    with store.connect(read_only=True, view=False) as con:
        rows = con.execute(_LATEST_METRICS_SQL).fetchall()
    out = []
    for (rnd, version, probe_id, n_labels, n_eval, acc, bacc, f1, pcr, conf, at, trigger) in rows:
        out.append({
            "round": int(rnd), "version": int(version), "probe_id": probe_id, "n_labels": int(n_labels),
            "n_eval": int(n_eval), "accuracy": acc, "balanced_accuracy": bacc, "macro_f1": f1,
            "per_class_recall": _json_or(pcr, {}), "confusion": _json_or(conf, []), "evaluated_at": at,
            "trigger": trigger,
        })
    return out


def _json_or(s, default):
    if s is None:
        return default
    try:
        return json.loads(s)
    except (TypeError, ValueError):
        return default


def _loop_label(rounds: list[tuple]) -> str:
    """'dropquery (seed: centroid)' from (round, kind, strategy) rows; strategies joined by ' → ' if changed."""
    seeds = [s for _, k, s in rounds if k == "seed"]
    queries: list[str] = []
    for _, k, s in rounds:
        if k == "query" and (not queries or queries[-1] != s):
            queries.append(s)
    seed = seeds[0] if seeds else None
    if queries:
        name = " → ".join(queries)
        return f"{name} (seed: {seed})" if seed else name
    if seed:
        return f"seed pool only (seed: {seed})"
    return "labelling loop"


def loop_curves(store) -> dict[str, list[tuple[int, float]]]:
    """The live loop's learning curve: ``{label: [(n_labels, accuracy), ...]}`` (empty dict before any metrics).

    One point per probe round with an accuracy (the latest probe version of
    the round). The label names the query strategy of the project's rounds
    and its seed strategy, e.g. ``"dropquery (seed: centroid)"`` (several
    query strategies, when the configuration changed, are joined by ``→``).
    """
    metrics = [m for m in latest_metrics(store) if m["accuracy"] is not None]
    if not metrics:
        return {}
    rounds = store.fetch("SELECT round, kind, strategy FROM rounds ORDER BY round")
    return {_loop_label(rounds): [(m["n_labels"], float(m["accuracy"])) for m in metrics]}


def simulate_curves(reports_dir: str | os.PathLike) -> tuple[dict[str, list[tuple]], list[str]]:
    """Curves of every ``simulate*.json`` under ``reports_dir`` (oldest first; a later run of the same
    strategy and seed strategy replaces an earlier one), as ``(n, mean, std)`` points; and the
    problems met (unreadable files are skipped, named in the list)."""
    d = Path(reports_dir)
    curves: dict[str, list[tuple]] = {}
    problems: list[str] = []
    if not d.is_dir():
        return curves, problems
    files = sorted(d.glob("simulate*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            seed = data.get("seed_strategy")
            for name, s in data["strategies"].items():
                acc = s["accuracy_per_round"]
                labels = s["labels_per_round"]
                std = s.get("std_per_round") or [None] * len(acc)
                key = f"simulated: {name}" + (f" (seed: {seed})" if seed else "")
                curves[key] = [(int(n), a, sd) for n, a, sd in zip(labels, acc, std, strict=True)]
        except Exception as e:  # a foreign or broken file must not break the report
            problems.append(f"{f.name}: {type(e).__name__}: {e}")
    return curves, problems


def all_curves(store, cfg) -> tuple[dict[str, list[tuple]], list[str]]:
    """The live loop's curve plus every saved simulation's (see :func:`simulate_curves`)."""
    curves = dict(loop_curves(store))
    sim, problems = simulate_curves(cfg.reports_dir)
    curves.update(sim)
    return curves, problems


def latest_query_set(store) -> tuple[int | None, str | None, list[dict]]:
    """(round, strategy, [{rank, image_id, path, score}]) of the latest proposed batch."""
    with store.connect(read_only=True, view=False) as con:
        row = con.execute("SELECT round, strategy FROM rounds ORDER BY round DESC LIMIT 1").fetchone()
        if row is None:
            return None, None, []
        q = con.execute("SELECT rank, image_id, path, score FROM queries WHERE round = ? ORDER BY rank",
                        [row[0]]).fetchall()
    return int(row[0]), row[1], [{"rank": int(r), "image_id": i, "path": p, "score": s} for r, i, p, s in q]


def _gallery_items(queries: list[dict], limit: int) -> list[tuple[str, str]]:
    items = []
    for q in queries[:limit]:
        score = q["score"]
        if score is None:
            cap = f"#{q['rank']}"
        else:
            cap = f"#{q['rank']}  " + (f"{score:.3f}" if 1e-3 <= abs(score) < 1e3 or score == 0 else f"{score:.2e}")
        items.append((q["path"], cap))
    return items


def _confusion_classes(m: dict, cfg, store) -> list[str]:
    k = len(m["confusion"])
    names = list(m["per_class_recall"].keys()) if isinstance(m["per_class_recall"], dict) else []
    if len(names) == k:
        return names
    try:
        names = list(cfg.class_names(store))
    except Exception:
        names = []
    return names if len(names) == k else [f"class {i}" for i in range(k)]


def _summary(store, cfg) -> dict:
    with store.connect(read_only=True, view=False) as con:
        t = _tables(con)
        q = lambda sql, p=None: con.execute(sql, p or []).fetchall()  # noqa: E731
        n_images = int(q("SELECT count(DISTINCT image_id) FROM image_paths WHERE status = 'ok'")[0][0])
        rounds = q("SELECT count(*), count(*) FILTER (status = 'open'), coalesce(sum(budget), 0) FROM rounds")[0]
        labels = q("SELECT count(*) FILTER (NOT is_skip), count(*) FILTER (is_skip) FROM current_labels")[0] \
            if "labels" in t else (0, 0)
        eval_n = q("SELECT count(*), count(label) FROM eval_set")[0]
        cid = q("SELECT config_id FROM rounds ORDER BY round DESC LIMIT 1")
        if not cid:
            cid = q("""SELECT c.config_id FROM embedding_configs c
                       WHERE EXISTS (SELECT 1 FROM embedding_index i WHERE i.config_id = c.config_id)
                       ORDER BY c.created_at DESC LIMIT 1""")
        emb = None
        if cid:
            r = q("""SELECT config_id, backbone, dim, dtype, preprocessing,
                            (SELECT count(*) FROM embedding_index i WHERE i.config_id = c.config_id)
                     FROM embedding_configs c WHERE config_id = ?""", [cid[0][0]])
            if r:
                emb = {"config_id": r[0][0], "backbone": r[0][1], "dim": int(r[0][2]), "dtype": r[0][3],
                       "preprocessing": r[0][4], "vectors": int(r[0][5])}
    try:
        classes = list(cfg.class_names(store))
    except Exception:
        classes = []
    return {
        "project": cfg.source_file or str(Path(cfg.base_dir) / "(default settings, no al.yaml)"),
        "database": str(store.db_path), "images": n_images,
        "rounds": int(rounds[0]), "open_rounds": int(rounds[1]), "proposed": int(rounds[2]),
        "labels": int(labels[0]), "skips": int(labels[1]), "eval_images": int(eval_n[0]),
        "eval_labelled": int(eval_n[1]), "embedding": emb, "classes": classes,
        "configured_backbone": cfg.backbone.name,
        "seed_strategy": cfg.selection.seed_strategy, "query_strategy": cfg.selection.query_strategy,
        "budget_per_round": cfg.selection.budget_per_round, "total_budget": cfg.selection.total_budget,
    }


# ----------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;
 padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}dl{display:grid;grid-template-columns:max-content auto;
 gap:.2em 1.2em}dt{color:#666}dd{margin:0}img{max-width:100%;height:auto}.muted{color:#777;font-size:.9em}
code{background:#f4f4f4;padding:0 .2em}
"""


def _e(v) -> str:
    return html.escape("" if v is None else str(v))


def _fmt(v, digits=3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="{png_data_uri(png)}">'


def _round_table(store, metrics: list[dict]) -> str:
    rounds = {int(r[0]): r for r in store.fetch(
        "SELECT round, kind, strategy, budget, status FROM rounds ORDER BY round")}
    by_round = {m["round"]: m for m in metrics}
    keys = sorted(set(rounds) | set(by_round))
    if not keys:
        return '<p class="muted">No round yet.</p>'
    head = ("<tr><th>round</th><th>labels</th><th>accuracy</th><th>balanced accuracy</th><th>macro F1</th>"
            '<th class="l">strategy (batch proposed)</th><th>proposed</th><th class="l">status</th></tr>')
    body = []
    for k in keys:
        m = by_round.get(k, {})
        r = rounds.get(k)
        strat = f"{r[2]} ({r[1]})" if r else "–"
        body.append(
            f"<tr><td>{k}</td><td>{_e(m.get('n_labels', '–'))}</td><td>{_fmt(m.get('accuracy'))}</td>"
            f"<td>{_fmt(m.get('balanced_accuracy'))}</td><td>{_fmt(m.get('macro_f1'))}</td>"
            f'<td class="l">{_e(strat)}</td><td>{_e(r[3] if r else "–")}</td>'
            f'<td class="l">{_e(r[4] if r else "–")}</td></tr>')
    return ("<table>" + head + "".join(body) + "</table>"
            '<p class="muted">Round r trains the probe on every label delivered for the batches before it '
            "(labels: how many), evaluates it on the hold-out, then proposes batch r with the strategy shown.</p>")


def build_report_html(store, cfg) -> str:
    """The report's HTML text (see :func:`write_report`)."""
    s = _summary(store, cfg)
    metrics = latest_metrics(store)
    curves, problems = all_curves(store, cfg)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>al-pipeline report</title>", f"<style>{_CSS}</style></head><body>",
        "<h1>al-pipeline report</h1>",
        f'<p class="muted">Written {_e(_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))}; '
        "one self-contained file, works offline.</p>",
        "<h2>Summary</h2><dl>",
    ]
    emb = s["embedding"]
    rows = [
        ("project", s["project"]), ("database", s["database"]),
        ("backbone", f"{emb['backbone']} ({emb['dim']}-d {emb['dtype']}, {emb['vectors']} vectors)" if emb
         else f"{s['configured_backbone']} (nothing embedded yet)"),
        ("embedding config", f"{emb['config_id']}; preprocessing {emb['preprocessing']}" if emb else "–"),
        ("classes", f"{len(s['classes'])}: {', '.join(s['classes'])}" if s["classes"] else "–"),
        ("images", s["images"]),
        ("labels so far", f"{s['labels']} ({s['skips']} skipped)"),
        ("rounds", f"{s['rounds']} proposed ({s['open_rounds']} open), {s['proposed']} images proposed of a "
                   f"total budget of {s['total_budget']}"),
        ("strategies", f"seed {s['seed_strategy']}, then {s['query_strategy']}, "
                       f"{s['budget_per_round']} images per round"),
        ("evaluation set", f"{s['eval_images']} images, {s['eval_labelled']} labelled"),
    ]
    parts += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows]
    parts.append("</dl>")

    parts.append("<h2>Learning curve</h2>")
    parts.append(_img(learning_curve_png(curves), "learning curve"))
    parts.append('<p class="muted">The labelling loop\'s accuracy on its hold-out after each round, and every '
                 "<code>al simulate</code> run saved in the reports folder (mean over seeds, band: ± one standard "
                 "deviation; simulated annotators answer from the ground truth).</p>")
    shown = [(name, _clean_curve(pts)) for name, pts in curves.items()]
    shown = [(name, pts) for name, pts in shown if pts]
    if shown:
        parts.append('<table><tr><th class="l">curve</th><th>points</th><th>labels</th>'
                     "<th>first accuracy</th><th>last accuracy</th></tr>" + "".join(
                         f'<tr><td class="l">{_e(name)}</td><td>{len(pts)}</td><td>{pts[0][0]:.0f}–{pts[-1][0]:.0f}'
                         f"</td><td>{_fmt(pts[0][1])}</td><td>{_fmt(pts[-1][1])}</td></tr>" for name, pts in shown)
                     + "</table>")
    if problems:
        parts.append('<p class="muted">Skipped: ' + "; ".join(_e(p) for p in problems) + "</p>")

    parts.append("<h2>Rounds</h2>")
    parts.append(_round_table(store, metrics))

    parts.append("<h2>Confusion matrix</h2>")
    last = next((m for m in reversed(metrics) if m["confusion"]), None)
    if last is None:
        parts.append('<p class="muted">No evaluated round yet.</p>')
    else:
        classes = _confusion_classes(last, cfg, store)
        parts.append(f'<p class="muted">Round {last["round"]} (probe {_e(last["probe_id"])}, '
                     f'{last["n_labels"]} labels, {last["n_eval"]} evaluation images).</p>')
        parts.append(_img(confusion_png(last["confusion"], classes), "confusion matrix"))
        if isinstance(last["per_class_recall"], dict) and last["per_class_recall"]:
            parts.append('<table><tr><th class="l">class</th><th>recall</th></tr>' + "".join(
                f'<tr><td class="l">{_e(c)}</td><td>{_fmt(r)}</td></tr>' for c, r in last["per_class_recall"].items())
                + "</table>")

    parts.append("<h2>Latest proposed images</h2>")
    rnd, strat, queries = latest_query_set(store)
    if not queries:
        parts.append('<p class="muted">No images proposed yet.</p>')
    else:
        more = len(queries) - GALLERY_MAX_ITEMS
        parts.append(f'<p class="muted">Batch {rnd}, {len(queries)} images proposed by {_e(strat)}, '
                     "in rank order with their scores" + (f" (first {GALLERY_MAX_ITEMS} shown)" if more > 0 else "")
                     + ".</p>")
        parts.append(_img(gallery_png(_gallery_items(queries, GALLERY_MAX_ITEMS), cols=10, thumb=72),
                          "images proposed in the latest round"))
        parts.append('<table><tr><th>rank</th><th>score</th><th class="l">image</th></tr>' + "".join(
            f'<tr><td>{q["rank"]}</td><td>{_fmt(q["score"], 4)}</td><td class="l">{_e(q["path"])}</td></tr>'
            for q in queries[:GALLERY_MAX_ITEMS]) + "</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_report(store, cfg, out_path: str | os.PathLike | None = None) -> Path:
    """Write the HTML report (default ``<data_dir>/reports/report.html``) atomically; return its path.

    One self-contained file: summary, learning curve (the loop's plus every
    saved ``al simulate`` run), per-round table, latest confusion matrix and a
    gallery of the latest proposed images, every picture a base64 data URI.
    """
    out = Path(out_path) if out_path is not None else cfg.reports_dir / "report.html"
    _atomic_write_bytes(out, build_report_html(store, cfg).encode("utf-8"))
    return out


# ----------------------------------------------------------------------------- Dagster metadata
def _md(png: bytes, alt: str) -> str:
    return f"![{alt}]({png_data_uri(png)})"


def metadata_images(store, cfg) -> dict[str, str]:
    """Markdown snippets with embedded PNGs for ``MetadataValue.md``, each under ~200 KB.

    Keys (present only when there is something to show): ``learning_curve``,
    ``confusion_matrix``, ``proposed_images``. Opens the store read-only:
    call it when this process holds no writable connection to the database.
    """
    out: dict[str, str] = {}
    curves, _ = all_curves(store, cfg)
    if any(_clean_curve(v) for v in curves.values()):
        out["learning_curve"] = _md(learning_curve_png(curves, figsize=(5.0, 3.2), dpi=80), "learning curve")
    metrics = latest_metrics(store)
    last = next((m for m in reversed(metrics) if m["confusion"]), None)
    if last is not None:
        classes = _confusion_classes(last, cfg, store)
        for dpi, size in ((80, 7.0), (60, 5.0), (45, 4.0)):
            md = _md(confusion_png(last["confusion"], classes, dpi=dpi, max_size_in=size,
                                   title=f"Confusion, round {last['round']} (rows normalised; counts)"),
                     "confusion matrix")
            if len(md) <= METADATA_MAX_BYTES:
                out["confusion_matrix"] = md
                break
    _, _, queries = latest_query_set(store)
    if queries:
        for n, thumb in ((100, 56), (50, 48), (30, 40), (20, 32)):
            md = _md(gallery_png(_gallery_items(queries, n), cols=10, thumb=thumb), "proposed images")
            if len(md) <= METADATA_MAX_BYTES:
                out["proposed_images"] = md
                break
    return out
