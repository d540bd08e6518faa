"""`al simulate-annotator`: answer query sets in the outbox from the ground truth (demo, tests)."""

import argparse
import time

from al_core.cli.common import add_config_option, fail, print_safe
from al_core.cli.exit_codes import Exit
from al_core.config import ConfigError, load_config
from al_core.loop.annotator import __doc__ as ANNOTATOR_DOC
from al_core.loop.annotator import answer_round, pending_rounds, second_opinion


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="al simulate-annotator", description=ANNOTATOR_DOC, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_option(ap)
    ap.add_argument("--noise", type=float, default=0.0, help="share of wrong labels (default 0)")
    ap.add_argument("--skip", type=float, default=0.0, help="share of skip answers (default 0)")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to wait before delivering each answer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--second-share",
        type=float,
        default=0.0,
        help="share of each batch a second annotator answers too (default 0: none)",
    )
    ap.add_argument("--second-noise", type=float, default=0.0, help="share of the second annotator's wrong labels")
    ap.add_argument("--watch", action="store_true", help="keep answering new query sets until --timeout")
    ap.add_argument("--timeout", type=float, default=600.0, help="with --watch: stop after this many seconds")
    args = ap.parse_args(argv)
    if not (0 <= args.noise <= 1 and 0 <= args.skip <= 1 and args.noise + args.skip <= 1):
        ap.error("--noise and --skip are shares in [0, 1] whose sum is at most 1")
    if not (0 <= args.second_share <= 1 and 0 <= args.second_noise <= 1):
        ap.error("--second-share and --second-noise are shares in [0, 1]")
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        return fail("al simulate-annotator", f"cannot read the project file: {e}", Exit.USAGE)
    deadline = time.monotonic() + args.timeout
    while True:
        for r in pending_rounds(cfg):
            time.sleep(args.delay)
            if args.second_share > 0:
                q = second_opinion(cfg, r, share=args.second_share, noise=args.second_noise, seed=args.seed)
                if q is not None:
                    print(f"second annotator answered part of batch {r}: {q}", flush=True)
            p = answer_round(cfg, r, noise=args.noise, skip=args.skip, seed=args.seed)
            print_safe(f"answered batch {r}: {p}", flush=True)
        if not args.watch or time.monotonic() > deadline:
            return Exit.OK
        time.sleep(1.0)
