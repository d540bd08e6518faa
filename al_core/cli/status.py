"""`al status`: what the store holds (al_core.catalogue.reports.store_summary), where the labelling stands
(the label policy, skipped and disputed images, disagreements, the open batch's missing answers), its label
quality (al_core.reporting.quality.quality_summary: exact duplicates with all their paths, near-duplicates, the
latest round's suspects, and every warning: class imbalance, agreement under quality.agreement_floor), then what
the labels bought: cost so far, the projection to the target and the stop suggestion (al_core.value.summary)."""

import argparse

from al_core.cli.common import add_config_option, json_safe, print_safe, run_with_store
from al_core.cli.common import terminal_safe as t

UNANSWERED_SHOWN = 10  # unanswered images of the open batch listed by name (--json lists every one)


def summary(store) -> dict:
    """The database's path, al_core.catalogue.reports.store_summary and ``labelling`` (label_state_counts and
    the open batch's batch_answer_summary), from one read-only connection."""
    from al_core.catalogue import labels as labels_q
    from al_core.catalogue import rounds as rounds_q
    from al_core.catalogue.reports import store_summary

    with store.connect(read_only=True, view=False) as con:
        labelling = labels_q.label_state_counts(con)
        open_round = rounds_q.latest_open_round(con)
        if open_round is not None:
            labelling["batch"] = rounds_q.batch_answer_summary(con, open_round)
        return {"database": str(store.db_path), **store_summary(con), "labelling": labelling}


def print_quality(q: dict, file=None) -> None:
    """The label-quality lines of `al status`; paths and names go through ``terminal_safe``."""
    ex = q["exact_duplicates"]
    print_safe(f"exact duplicates {ex['n_images']} images under {ex['n_paths']} paths (one id each)", file=file)
    for r in ex["rows"]:
        print_safe(f"  {t(r['image_id'])}: " + ", ".join(t(p) for p in r["paths"]), file=file)
    nd = q["near_duplicates"]
    if nd:
        print_safe(
            f"near-duplicates {nd['n_pairs']} pairs at cosine >= {nd['threshold']:g} ({t(nd['method'])}), "
            f"{len(q['replacements'])} batch picks replaced",
            file=file,
        )
    s = q["suspects"]
    if s:
        print_safe(
            f"suspects        round {s['round']}: {s['n_issues']} of {s['n_labels']} training labels flagged "
            "(`al labels suspects` lists them)",
            file=file,
        )
    a = q["agreement"]
    if a["n_images_multi"]:
        fk = "-" if a["fleiss_kappa"] is None else f"{a['fleiss_kappa']:.3f}"
        ck = "-" if a["overall_kappa"] is None else f"{a['overall_kappa']:.3f}"
        print_safe(
            f"agreement       {a['n_images_multi']} images with several answers: Fleiss' kappa {fk}, "
            f"Cohen's kappa (pairs) {ck}",
            file=file,
        )
    for w in q["warnings"]:
        print_safe(f"WARNING         {t(w)}", file=file)


def print_summary(s: dict, file=None) -> None:
    """The summary as text; paths, statuses and names go through ``terminal_safe``."""
    print_safe(f"database        {t(s['database'])} (schema version {s['schema_version']})", file=file)
    print_safe(
        f"images          {s['images']} distinct (sha256), paths: "
        + ", ".join(f"{t(k)} {v}" for k, v in s["paths_by_status"].items()),
        file=file,
    )
    print_safe(f"ground truth    {s['ground_truth_classes']} classes (simulation only)", file=file)
    for c in s["embedding_configs"]:
        print_safe(
            f"embeddings      {t(c['backbone'])} [{t(c['config_id'])}]: {c['vectors']} vectors x {c['dim']} "
            f"in {c['parts']} part files",
            file=file,
        )
    lab = s["labelling"]
    print_safe(
        f"labels          policy {t(lab['policy'] or 'latest')}: {lab['skipped']} images skipped, "
        f"{lab['disputed']} disputed ({lab['adjudication_queued']} queued for adjudication), "
        f"{lab['disagreements']} with annotators disagreeing",
        file=file,
    )
    b = lab.get("batch")
    if b:
        print_safe(
            f"open batch      {b['round']}: {b['answered']}/{b['proposed']} answered ({b['skipped']} skipped, "
            f"{b['disputed']} disputed)",
            file=file,
        )
        for m in b["unanswered"][:UNANSWERED_SHOWN]:
            print_safe(f"  no answer yet {t(m['image_id'])} {t(m['path'])}", file=file)
        if len(b["unanswered"]) > UNANSWERED_SHOWN:
            print_safe(
                f"  ... and {len(b['unanswered']) - UNANSWERED_SHOWN} more (al status --json lists them)", file=file
            )


# ---------------------------------------------------------------- what the labels bought (al_core.value.summary)
def value_status(cfg, store) -> dict | None:
    """Cost so far, the projection and the stop suggestion (al_core.reporting.value_text.lines), or None
    before the loop has a round."""
    from al_core.reporting.value_text import lines
    from al_core.value.summary import public, value_summary

    s = value_summary(store, cfg)
    if s["now"] is None and not s["labels"] and not s["skips"]:
        return None
    return {"lines": lines(s), "summary": public(s)}


def print_value(v: dict | None, file=None) -> None:
    if v is None:
        return
    print_safe("what the labels bought", file=file)
    for key in (
        "metric_now",
        "labels_so_far",
        "annotator_time",
        "cost_so_far",
        "cost_per_point",
        "projection",
        "stop_suggestion",
        "next_batch",
        "budget",
    ):
        print_safe(f"  {key.replace('_', ' '):<18}{t(v['lines'][key])}", file=file)


def main(argv: list[str]) -> int:
    ap = add_config_option(argparse.ArgumentParser(prog="al status", description=__doc__))
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)

    def body(cfg, store):
        from al_core.reporting.quality import quality_summary

        s = summary(store)
        v = value_status(cfg, store)
        q = quality_summary(store, cfg)
        if args.json:
            print_safe(json_safe({**s, "quality": q, "value": v}, indent=2, default=str))
        else:
            print_summary(s)
            print_quality(q)
            print_value(v)

    return run_with_store("al status", args.config, body)
