"""The `al` command line.

Subcommands are dispatched lazily so that `al --help` stays fast: each entry of
COMMANDS names a module of this package and the function in it that takes
``argv: list[str]`` and returns the exit status (al_core.cli.exit_codes.Exit).
`al bench NAME ...` runs `al_core.bench.NAME.main(...)`. Ctrl-C in any command
exits with Exit.INTERRUPTED and no traceback.
"""

import importlib
import pkgutil
import sys

from al_core.cli.exit_codes import Exit


def _entry(target: str, help_: str) -> tuple[str, str, str]:
    """A command's (module, function, one-line help): ``target`` names a module of this package and the function
    in it, "module:function", or just "module" for its ``main``."""
    module, _, function = target.partition(":")
    return f"al_core.cli.{module}", function or "main", help_


# name -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "backbones": _entry("backbones", "list the registered backbones and whether their weights are here"),
    "ingest": _entry("ingest", "scan an image folder (or manifest) and embed the images into the store"),
    "labels": _entry("labels", "check, retract or retry label files; relabel a class; list suspects"),
    "labelstudio": _entry(
        "labelstudio", "run Label Studio for the project, push the open batch to it, pull its annotations"
    ),
    "status": _entry("status", "print what the store holds, what the labels cost and bought"),
    "report": _entry("report", "write the HTML report (opens on the manager's page)"),
    "rounds": _entry("audit:rounds_main", "one row per round: labels so far, strategy, seed, accuracy, when"),
    "lineage": _entry("audit:lineage_main", "where an image came from, who labelled it, which probes used it"),
    "export": _entry("audit:export_main", "write current labels and the latest probe's predictions (CSV/Parquet)"),
    "snapshot": _entry("audit:snapshot_main", "write a consistent read-only copy of the database for analysts"),
    "simulate": _entry("simulate", "compare strategies in process on the embedded images (no annotators)"),
    "init": _entry("init", "write a commented default project file (al.yaml)"),
    "round": _entry("round", "`al round next`: close the open batch by hand"),
    "verify": _entry("verify", "check the stored vector parts against the catalogue; --repair drops damaged ones"),
    "simulate-annotator": _entry("annotator", "answer query sets in the outbox from the ground truth (demo, tests)"),
}


def _bench_names() -> list[str]:
    import al_core.bench as bench

    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))


def _usage() -> str:
    lines = ["usage: al COMMAND [ARGS...]", "", "commands:"]
    for name, (_, _, help_) in sorted(COMMANDS.items()):
        lines.append(f"  {name:<18} {help_}")
    lines.append(f"  {'bench NAME':<18} benchmarks: {', '.join(_bench_names())}")
    lines.append("")
    lines.append("`al COMMAND --help` describes each command.")
    return "\n".join(lines)


def _bench(rest: list[str]) -> int:
    names = _bench_names()
    if rest and rest[0] in names:
        module = importlib.import_module(f"al_core.bench.{rest[0]}")
        return int(module.main(rest[1:]) or Exit.OK)
    if rest and rest[0] not in ("-h", "--help"):
        print(f"al bench: unknown benchmark {rest[0]!r}; known: {', '.join(names)}", file=sys.stderr)
        return Exit.USAGE
    print(f"usage: al bench NAME [ARGS...]\nbenchmarks: {', '.join(names)}")
    return Exit.OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return Exit.OK
    cmd, rest = argv[0], argv[1:]
    if cmd != "bench" and cmd not in COMMANDS:
        print(f"al: unknown command {cmd!r}\n\n{_usage()}", file=sys.stderr)
        return Exit.USAGE
    try:
        if cmd == "bench":
            return _bench(rest)
        module_name, function, _ = COMMANDS[cmd]
        return int(getattr(importlib.import_module(module_name), function)(rest) or Exit.OK)
    except KeyboardInterrupt:
        print(f"al {cmd}: interrupted", file=sys.stderr)
        return Exit.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
