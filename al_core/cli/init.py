"""`al init [PATH]`: write a commented default project file (al.yaml), atomically; Exit.FAILED when the
file exists (without --force)."""

import argparse
import sys
from pathlib import Path

from al_core.cli.common import print_safe
from al_core.cli.exit_codes import Exit
from al_core.config import DEFAULT_CONFIG_NAME, DEFAULT_YAML, from_dict
from al_core.files.atomic import atomic_write_text


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="al init", description=__doc__)
    ap.add_argument("path", nargs="?", default=DEFAULT_CONFIG_NAME)
    ap.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = ap.parse_args(argv)
    p = Path(args.path)
    if p.exists() and not args.force:
        print_safe(f"al init: {p} exists; use --force to overwrite", file=sys.stderr)
        return Exit.FAILED
    import yaml

    from_dict(yaml.safe_load(DEFAULT_YAML))  # the default must always be valid
    atomic_write_text(p, DEFAULT_YAML)
    print_safe(f"wrote {p}: edit images.root, classes and selection, then `make ui` or `al ingest`")
    return Exit.OK
