"""`al report`: write the project's HTML report (al_core.reporting.report.write_report) and print its path.

The report opens on the manager's page: the metric now with its interval, labels, hours and cost so far,
the projection to the target, the stop suggestion and the learning curve; the details follow. One
self-contained file (no script, no external resource), written atomically; default
``<data_dir>/reports/report.html``.
"""

import argparse

from al_core.cli.common import add_config_option, run_with_store


def main(argv: list[str]) -> int:
    ap = add_config_option(argparse.ArgumentParser(prog="al report", description=__doc__.split("\n\n")[0]))
    ap.add_argument(
        "--out", metavar="PATH", default=None, help="where to write it (default: <data_dir>/reports/report.html)"
    )
    args = ap.parse_args(argv)

    def body(cfg, store):
        from al_core.reporting.report import write_report

        print(write_report(store, cfg, args.out))

    return run_with_store("al report", args.config, body)
