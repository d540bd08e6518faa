"""`al round next`: close the open batch by hand (whatever its answered share).

The CLI never starts Dagster itself: it records a request in the database, and
the inbox sensor turns it into a round run (through the instance's one-run
queue) at its next tick.
"""

import argparse
import sys
import uuid

from al_core.config import load_config
from al_core.catalogue.store import StoreError, now
from al_core.catalogue import open_store


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="al round", description=__doc__)
    ap.add_argument("action", choices=["next"])
    ap.add_argument("--config", help="project file (default: $AL_CONFIG, else ./al.yaml)")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    store = open_store(cfg)
    try:
        with store.transaction() as con:
            open_round = con.execute("SELECT max(round) FROM rounds WHERE status = 'open'").fetchone()[0]
            if open_round is None:
                print("al round next: no open batch to close", file=sys.stderr)
                return 1
            rid = uuid.uuid4().hex
            con.execute("INSERT INTO requests VALUES (?, 'close_round', ?, ?, NULL, NULL)", [rid, str(open_round), now()])
    except StoreError as e:
        print(f"al round next: {e}", file=sys.stderr)
        return 3
    print(f"requested: close batch {open_round} and start the next round (request {rid}); "
          f"the inbox sensor launches it within {cfg.sensor.interval_s} s")
    return 0
