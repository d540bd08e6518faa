"""Benchmarks run by `al bench <name> ...`.

Each module `al_core.bench.<name>` exposes `main(argv: list[str]) -> int` with
its own argparse parser, prints its JSON result on stdout and writes it to
`--json OUT` when given. Results and the commands that produced them are
recorded in docs/benchmarks.md.
"""

import json as _json
import sys as _sys
from pathlib import Path as _Path


def md_row(cells) -> str:
    """One line of a markdown table: ``| a | b |``."""
    return "| " + " | ".join(cells) + " |"


def child_command(module: str, args, forward: tuple[str, ...] = (), **options) -> list[str]:
    """``python -m module --name value ...``: a benchmark's child process, given the parent's options named in
    ``forward`` (read from ``args``), then ``options``: one ``--name value`` each (``_`` in a name written ``-``,
    the value as ``str``)."""
    cmd = [_sys.executable, "-m", module]
    for name, value in [*((f, getattr(args, f)) for f in forward), *options.items()]:
        cmd += [f"--{name.replace('_', '-')}", str(value)]
    return cmd


def emit(result: dict, json_path: str | None, *, indent: int = 1) -> None:
    """Print ``result`` as JSON on stdout and, when ``json_path`` is given, write it there too."""
    text = _json.dumps(result, indent=indent)
    print(text)
    if json_path:
        _Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        _Path(json_path).write_text(text + "\n")
