"""Benchmarks run by `al bench <name> ...`.

Each module `al_core.bench.<name>` exposes `main(argv: list[str]) -> int` with
its own argparse parser, prints its JSON result on stdout and writes it to
`--json OUT` when given. Results and the commands that produced them are
recorded in docs/benchmarks.md.
"""

import json as _json
from pathlib import Path as _Path


def emit(result: dict, json_path: str | None, *, indent: int = 1) -> None:
    """Print ``result`` as JSON on stdout and, when ``json_path`` is given, write it there too."""
    text = _json.dumps(result, indent=indent)
    print(text)
    if json_path:
        _Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        _Path(json_path).write_text(text + "\n")
