"""`al status`: what the store holds (al_core.catalogue.reports.store_summary), then what the labels bought:
cost so far, the projection to the target and the stop suggestion (al_core.value.summary)."""

import argparse
import json
import sys

from al_core.cli.common import add_config_option, run_with_store


def summary(store) -> dict:
    """The database's path and al_core.catalogue.reports.store_summary, from one read-only connection."""
    from al_core.catalogue.reports import store_summary

    with store.connect(read_only=True, view=False) as con:
        return {"database": str(store.db_path), **store_summary(con)}


def print_summary(s: dict, file=None) -> None:
    file = file or sys.stdout  # looked up when called: a redirected or replaced stdout is followed
    print(f"database        {s['database']} (schema version {s['schema_version']})", file=file)
    print(f"images          {s['images']} distinct (sha256), paths: "
          + ", ".join(f"{k} {v}" for k, v in s["paths_by_status"].items()), file=file)
    print(f"ground truth    {s['ground_truth_classes']} classes (simulation only)", file=file)
    for c in s["embedding_configs"]:
        print(f"embeddings      {c['backbone']} [{c['config_id']}]: {c['vectors']} vectors x {c['dim']} "
              f"in {c['parts']} part files", file=file)


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
    file = file or sys.stdout
    print("what the labels bought", file=file)
    for key in ("metric_now", "labels_so_far", "annotator_time", "cost_so_far", "cost_per_point", "projection",
                "stop_suggestion", "next_batch", "budget"):
        print(f"  {key.replace('_', ' '):<18}{v['lines'][key]}", file=file)


def main(argv: list[str]) -> int:
    ap = add_config_option(argparse.ArgumentParser(prog="al status", description=__doc__))
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)

    def body(cfg, store):
        s = summary(store)
        v = value_status(cfg, store)
        if args.json:
            print(json.dumps({**s, "value": v}, indent=2, default=str))
        else:
            print_summary(s)
            print_value(v)

    return run_with_store("al status", args.config, body)
