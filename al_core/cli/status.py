"""`al status`: what the store holds (al_core.catalogue.reports.store_summary)."""

import argparse

from al_core.cli.common import add_config_option, json_safe, print_safe, run_with_store
from al_core.cli.common import terminal_safe as t


def summary(store) -> dict:
    """The database's path and al_core.catalogue.reports.store_summary, from one read-only connection."""
    from al_core.catalogue.reports import store_summary

    with store.connect(read_only=True, view=False) as con:
        return {"database": str(store.db_path), **store_summary(con)}


def print_summary(s: dict, file=None) -> None:
    """The summary as text; paths, statuses and names go through ``terminal_safe``."""
    print_safe(f"database        {t(s['database'])} (schema version {s['schema_version']})", file=file)
    print_safe(f"images          {s['images']} distinct (sha256), paths: "
               + ", ".join(f"{t(k)} {v}" for k, v in s["paths_by_status"].items()), file=file)
    print_safe(f"ground truth    {s['ground_truth_classes']} classes (simulation only)", file=file)
    for c in s["embedding_configs"]:
        print_safe(f"embeddings      {t(c['backbone'])} [{t(c['config_id'])}]: {c['vectors']} vectors x {c['dim']} "
                   f"in {c['parts']} part files", file=file)


def main(argv: list[str]) -> int:
    ap = add_config_option(argparse.ArgumentParser(prog="al status", description=__doc__))
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)

    def body(cfg, store):
        s = summary(store)
        if args.json:
            print_safe(json_safe(s, indent=2))
        else:
            print_summary(s)

    return run_with_store("al status", args.config, body)
