"""Label quality in the report and in `al status`: suspects, class balance, agreement, duplicates.

:func:`quality_summary` reads what the loop stored (al_core.catalogue.quality:
the latest label-quality assessment, the near-duplicate pass of the latest
batch's embedding config, the batch rules' replacements, the exact-duplicate
view) and computes the agreement figures from the annotators' votes
(al_core.quality.agreement), in one short read-only connection;
``warnings`` gathers every sentence a user should see (imbalance, agreement
under ``quality.agreement_floor``). :func:`quality_sections` renders it as the
report's HTML sections, the suspects as a gallery.
"""

from __future__ import annotations

from al_core.catalogue import quality as quality_q
from al_core.catalogue.audit import latest_round_config_id
from al_core.catalogue.reports import newest_embedded_config_id
from al_core.files.hashing import short
from al_core.reporting.data import _class_names  # the project's classes, or [] (the report still renders)
from al_core.reporting.gallery import gallery_png
from al_core.reporting.plots import png_data_uri
from al_core.reporting.sections import escaped as _e
from al_core.reporting.sections import note, section

SUSPECTS_SHOWN = 40  # suspects in the report's gallery and table
DUPLICATES_SHOWN = 20  # exact-duplicate images and near-duplicate pairs listed
DISAGREEMENTS_SHOWN = 20  # images with the least agreement listed


def _json(text, default):
    import json

    try:
        return json.loads(text) if text else default
    except (TypeError, ValueError):
        return default


def _agreement(votes, final, classes, floor: float) -> dict:
    from al_core.quality.agreement import agreement

    a = agreement(votes, final, classes)
    warnings = []
    if a["n_images_multi"]:
        low = [(f"Cohen's kappa {p['a']} / {p['b']}", p["kappa"]) for p in a["pairs"] if p["kappa"] is not None]
        low.append(("Fleiss' kappa of the group", a["fleiss_kappa"]))
        warnings += [
            f"agreement below quality.agreement_floor ({floor:g}): {name} = {k:.3f}"
            for name, k in low
            if k is not None and k < floor
        ]
    a["warnings"] = warnings
    a["images"] = sorted(a["images"], key=lambda im: (im["agreement"], im["image_id"]))
    return a


def quality_summary(store, cfg) -> dict:
    """Keys: suspects (round, probe_id, n_labels, n_issues, method, rows), balance (round, label_counts,
    predicted_share, warnings; None before an assessment), agreement (al_core.quality.agreement.agreement plus
    warnings), exact_duplicates (n_images, n_paths, rows), near_duplicates (the pass: config_id, n_pairs, threshold,
    method, computed_at, rows; None before one), replacements (every batch's), warnings."""
    classes = _class_names(cfg, store)
    with store.connect(read_only=True, view=False) as con:
        run = quality_q.latest_quality_run(con)
        suspects = quality_q.suspect_records(con, run["round"], SUSPECTS_SHOWN) if run else []
        votes = quality_q.annotation_votes(con)
        final = quality_q.final_labels(con)
        n_dup, n_dup_paths, dup_rows = quality_q.exact_duplicate_summary(con, DUPLICATES_SHOWN)
        cid = latest_round_config_id(con) or newest_embedded_config_id(con)
        nd = quality_q.near_duplicate_run(con, cid) if cid else None
        nd_rows = quality_q.near_duplicate_records(con, cid, DUPLICATES_SHOWN) if nd else []
        replaced = quality_q.batch_replacement_records(con)
    balance = None
    if run:
        balance = {
            "round": run["round"],
            "label_counts": _json(run["label_counts"], {}),
            "predicted_share": _json(run["predicted_share"], {}),
            "warnings": _json(run["balance_warnings"], []),
        }
    agreement = _agreement(votes, final, classes or sorted({v[2] for v in votes}), cfg.quality.agreement_floor)
    warnings = [*(balance["warnings"] if balance else []), *agreement["warnings"]]
    return {
        "suspects": {
            "round": run["round"],
            "probe_id": run["probe_id"],
            "n_labels": run["n_labels"],
            "n_issues": run["n_issues"],
            "method": run["method"],
            "rows": suspects,
        }
        if run
        else None,
        "balance": balance,
        "agreement": agreement,
        "exact_duplicates": {"n_images": n_dup, "n_paths": n_dup_paths, "rows": dup_rows},
        "near_duplicates": (
            {
                "config_id": cid,
                "n_pairs": nd["n_pairs"],
                "threshold": nd["threshold"],
                "method": nd["method"],
                "computed_at": nd["computed_at"],
                "rows": nd_rows,
            }
            if nd
            else None
        ),
        "replacements": replaced,
        "warnings": warnings,
    }


# ----------------------------------------------------------------------------- HTML
def _f(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _table(head: list[str], rows: list[list], left: int = 1) -> str:
    cell = lambda i, v, tag: f"<{tag}{' class=l' if i < left else ''}>{_e(v)}</{tag}>"
    return (
        "<table><tr>"
        + "".join(cell(i, h, "th") for i, h in enumerate(head))
        + "</tr>"
        + "".join("<tr>" + "".join(cell(i, v, "td") for i, v in enumerate(r)) + "</tr>" for r in rows)
        + "</table>"
    )


def _suspects_section(s: dict | None) -> list[str]:
    title = "Suspected label errors"
    if s is None:
        return section(title, "No round assessed yet (the assessment follows each round's probe).")
    intro = (
        f"Round {s['round']}: {s['n_labels']} training labels, each scored by a probe "
        f"that did not see it (out-of-fold, cross-validation) with cleanlab ({_e(s['method'])}); "
        f"{s['n_issues']} flagged as likely wrong, lowest label quality first."
    )
    rows = s["rows"]
    if not rows:
        return section(title, intro, [note("No label is flagged.")])
    items = [(r["path"] or "", f"{r['given']} → {r['suggested']}\nq {r['quality']:.3f}") for r in rows]
    image = f'<img alt="suspected label errors" src="{png_data_uri(gallery_png(items, cols=8, thumb=72))}">'
    table = _table(
        ["image", "given", "suggested", "label quality", "P(suggested)", "annotations"],
        [
            [
                short(r["image_id"]),
                r["given"],
                r["suggested"],
                _f(r["quality"]),
                _f(r["suggested_prob"]),
                r["n_annotations"],
            ]
            for r in rows
        ],
        left=3,
    )
    after = note(
        "`al labels suspects` lists them; `selection.relabel_fraction` sends the worst back to the annotators."
    )
    return section(title, intro, [image, table, after])


def _balance_section(b: dict | None) -> list[str]:
    if b is None:
        return section("Class balance", "No round assessed yet.")
    counts, share = b["label_counts"], b["predicted_share"]
    intro = (
        f"Round {b['round']}: training labels per class, and the share of the unlabelled "
        "pool the round's probe predicts as each class."
    )
    table = _table(
        ["class", "training labels", "predicted share of the pool"],
        [[c, n, f"{share.get(c, 0):.1%}"] for c, n in counts.items()],
    )
    return section("Class balance", intro, [table, *(f'<p class="warn">{_e(w)}</p>' for w in b["warnings"])])


def _agreement_section(a: dict) -> list[str]:
    title = "Agreement between annotators"
    if not a["n_images_multi"]:
        return section(title, "No image has answers from two annotators yet.")
    intro = (
        f"{a['n_images_multi']} images with two or more annotators' answers; "
        f"annotators: {_e(', '.join(a['annotators']))}. Fleiss' kappa {_f(a['fleiss_kappa'])} "
        f"({a['fleiss_images']} images with {a['fleiss_m']} answers each); Cohen's kappa over the pairs "
        f"(weighted by common images) {_f(a['overall_kappa'])}."
    )
    parts = [f'<p class="warn">{_e(w)}</p>' for w in a["warnings"]]
    classes = list(next(iter(a["pairs"]), {}).get("per_class", {}))
    parts.append(
        _table(
            ["pair", "common images", "Cohen's kappa", *[f"κ {c}" for c in classes]],
            [
                [f"{p['a']} / {p['b']}", p["n_common"], _f(p["kappa"]), *[_f(p["per_class"][c]) for c in classes]]
                for p in a["pairs"]
            ],
        )
    )
    parts.append(
        _table(
            ["annotator", "answers", "agreement with the final label"],
            [[w, v["n"], _f(v["agreement_with_final"])] for w, v in a["annotator_agreement"].items()],
        )
    )
    worst = [im for im in a["images"] if im["agreement"] < 1][:DISAGREEMENTS_SHOWN]
    if worst:
        parts.append(
            _table(
                ["image", "votes", "agreement", "final"],
                [
                    [
                        short(im["image_id"]),
                        ", ".join(f"{k} {n}" for k, n in im["votes"].items()),
                        _f(im["agreement"]),
                        im["final"],
                    ]
                    for im in worst
                ],
                left=2,
            )
        )
    return section(title, intro, parts)


def _duplicates_section(s: dict) -> list[str]:
    ex = s["exact_duplicates"]
    intro = (
        "Exact duplicates (the same bytes under several paths, one image): "
        f"{ex['n_images']} images, {ex['n_paths']} paths."
    )
    parts = []
    if ex["rows"]:
        parts.append(
            _table(["image", "paths"], [[short(r["image_id"]), " | ".join(r["paths"])] for r in ex["rows"]], left=2)
        )
    nd = s["near_duplicates"]
    if nd is None:
        parts.append(note("No near-duplicate pass yet (it runs before the first batch)."))
    else:
        parts.append(
            note(
                f"Near-duplicates (cosine similarity of the embeddings at least "
                f"{nd['threshold']:g}, {_e(nd['method'])} search): {nd['n_pairs']} pairs; a batch never holds "
                f"two of them ({len(s['replacements'])} picks replaced so far)."
            )
        )
        if nd["rows"]:
            parts.append(
                _table(
                    ["cosine", "image", "twin"],
                    [[_f(r["cosine"], 4), r["path"], r["twin_path"]] for r in nd["rows"]],
                    left=0,
                )
            )
    return section("Duplicates", intro, parts)


def quality_sections(store, cfg) -> list[str]:
    """The report's label-quality sections (HTML parts): suspects, class balance, agreement, duplicates."""
    s = quality_summary(store, cfg)
    return [
        *_suspects_section(s["suspects"]),
        *_balance_section(s["balance"]),
        *_agreement_section(s["agreement"]),
        *_duplicates_section(s),
    ]
