"""`al round next`: close the open batch by hand (whatever its answered share).

The CLI never starts Dagster itself: it records a ``close_round`` request in the
database (al_core.catalogue.requests), and the inbox sensor turns it into a
round run (through the instance's one-run queue) at its next tick. Exit.FAILED
when there is no database or no open batch.
"""

import argparse

from al_core.cli.common import add_config_option, fail, run_with_store
from al_core.cli.exit_codes import Exit


def main(argv: list[str]) -> int:
    ap = add_config_option(argparse.ArgumentParser(prog="al round", description=__doc__))
    ap.add_argument("action", choices=["next"])
    args = ap.parse_args(argv)

    def body(cfg, store):
        from al_core.loop import request_close_round

        if not store.db_path.exists():  # a writable connection would create an empty database
            return fail("al round next", f"no database at {store.db_path}: run `al ingest` (or `make demo`) first")
        req = request_close_round(store)
        if req is None:
            return fail("al round next", "no open batch to close", Exit.FAILED)
        print(
            f"requested: close batch {req['round']} and start the next round (request {req['request_id']}); "
            f"the inbox sensor launches it within {cfg.sensor.interval_s} s"
        )

    return run_with_store("al round next", args.config, body)
