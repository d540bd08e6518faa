"""`al status`: what the store holds (al_core.catalogue.reports.store_summary) and its label quality
(al_core.reporting.quality.quality_summary: exact duplicates with all their paths, near-duplicates, the latest
round's suspects, and every warning: class imbalance, agreement under quality.agreement_floor)."""

import argparse
import json
import sys

from al_core.cli.common import add_config_option, run_with_store


def summary(store) -> dict:
    """The database's path and al_core.catalogue.reports.store_summary, from one read-only connection."""
    from al_core.catalogue.reports import store_summary

    with store.connect(read_only=True, view=False) as con:
        return {"database": str(store.db_path), **store_summary(con)}


def print_quality(q: dict, file=sys.stdout) -> None:
    """The label-quality lines of `al status`."""
    ex = q["exact_duplicates"]
    print(f"exact duplicates {ex['n_images']} images under {ex['n_paths']} paths (one id each)", file=file)
    for r in ex["rows"]:
        print(f"  {r['image_id']}: " + ", ".join(r["paths"]), file=file)
    nd = q["near_duplicates"]
    if nd:
        print(f"near-duplicates {nd['n_pairs']} pairs at cosine >= {nd['threshold']:g} ({nd['method']}), "
              f"{len(q['replacements'])} batch picks replaced", file=file)
    s = q["suspects"]
    if s:
        print(f"suspects        round {s['round']}: {s['n_issues']} of {s['n_labels']} training labels flagged "
              "(`al labels suspects` lists them)", file=file)
    a = q["agreement"]
    if a["n_images_multi"]:
        fk = "-" if a["fleiss_kappa"] is None else f"{a['fleiss_kappa']:.3f}"
        ck = "-" if a["overall_kappa"] is None else f"{a['overall_kappa']:.3f}"
        print(f"agreement       {a['n_images_multi']} images with several answers: Fleiss' kappa {fk}, "
              f"Cohen's kappa (pairs) {ck}", file=file)
    for w in q["warnings"]:
        print(f"WARNING         {w}", file=file)


def print_summary(s: dict, file=sys.stdout) -> None:
    print(f"database        {s['database']} (schema version {s['schema_version']})", file=file)
    print(f"images          {s['images']} distinct (sha256), paths: "
          + ", ".join(f"{k} {v}" for k, v in s["paths_by_status"].items()), file=file)
    print(f"ground truth    {s['ground_truth_classes']} classes (simulation only)", file=file)
    for c in s["embedding_configs"]:
        print(f"embeddings      {c['backbone']} [{c['config_id']}]: {c['vectors']} vectors x {c['dim']} "
              f"in {c['parts']} part files", file=file)


def main(argv: list[str]) -> int:
    ap = add_config_option(argparse.ArgumentParser(prog="al status", description=__doc__))
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)

    def body(cfg, store):
        from al_core.reporting.quality import quality_summary

        s = summary(store)
        q = quality_summary(store, cfg)
        if args.json:
            print(json.dumps({**s, "quality": q}, indent=2, default=str))
        else:
            print_summary(s)
            print_quality(q)

    return run_with_store("al status", args.config, body)
