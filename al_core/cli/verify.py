"""`al verify [--repair]`: check every stored vector part against the catalogue; drop the damaged ones.

Every committed part file is checked: present, the size and sha256 recorded at
its commit, readable as the recorded rows and dimension. Orphan part files (on
disk, never committed) are listed. Exit.OK when every part is intact (orphans
alone are not a fault: a writer may still commit them); Exit.FAILED when a part
is damaged or missing, each named on its own line.

With ``--repair``: the damaged and missing parts are dropped from the catalogue
in one transaction (their images have no vector any more, so the next
`al ingest` embeds them again), a damaged file is moved aside as
``.damaged-part-<id>.parquet``, and orphan files older than ``--orphan-age-s``
and not waiting for a commit are deleted. Exit.OK once repaired.
"""

import argparse
import sys

from al_core.cli.common import add_config_option, print_safe, run_with_store
from al_core.cli.exit_codes import Exit
from al_core.ingest.pipeline import ORPHAN_MIN_AGE_S


def main(argv: list[str]) -> int:
    ap = add_config_option(
        argparse.ArgumentParser(
            prog="al verify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
    )
    ap.add_argument(
        "--repair",
        action="store_true",
        help="drop damaged and missing parts (the next `al ingest` embeds their images again) "
        "and collect old orphan files",
    )
    ap.add_argument(
        "--orphan-age-s",
        type=float,
        default=ORPHAN_MIN_AGE_S,
        metavar="S",
        help=f"with --repair: delete orphan part files older than this (default {ORPHAN_MIN_AGE_S:g})",
    )
    args = ap.parse_args(argv)
    return run_with_store("al verify", args.config, lambda cfg, store: _verify(args, store))


def _verify(args, store) -> int:
    from al_core.catalogue.verify import repair, verify_parts

    report = verify_parts(store)
    bad = report.of_kind("damaged", "missing")
    for p in report.problems:
        where = store.vectors_loc.uri(p.rel_path)
        rows = f", {p.n_rows} vectors of config {p.config_id}" if p.kind != "orphan" else ""
        print_safe(f"{p.kind}: {where} ({p.reason}{rows})")
    print_safe(
        f"al verify: {report.n_parts} parts ({report.n_vectors} vectors) checked: {len(bad)} damaged or "
        f"missing, {len(report.of_kind('orphan'))} orphan file(s)",
        file=sys.stderr,
    )
    if not args.repair:
        if bad:
            print_safe(
                "al verify: run `al verify --repair` to drop them, then `al ingest` embeds their images again",
                file=sys.stderr,
            )
        return Exit.FAILED if bad else Exit.OK
    done = repair(store, report, orphan_min_age_s=args.orphan_age_s)
    print_safe(
        f"al verify --repair: dropped {done['parts_dropped']} part(s) ({done['vectors_dropped']} vectors), "
        f"moved {done['moved_aside']} damaged file(s) aside, removed {done['orphans_removed']} orphan "
        "file(s)" + ("; run `al ingest` to embed those images again" if done["vectors_dropped"] else ""),
        file=sys.stderr,
    )
    return Exit.OK
