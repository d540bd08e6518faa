"""The `al` command line.

Subcommands are dispatched lazily so that `al --help` stays fast: each entry of
COMMANDS names a module exposing `main(argv: list[str]) -> int`.
`al bench NAME ...` runs `al_core.bench.NAME.main(...)`.
"""

import importlib
import pkgutil
import sys

# name -> (module path, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "backbones": ("al_core.backbones_cli", "list the registered backbones and whether their weights are here"),
    "ingest": ("al_core.ingest_cli", "scan an image folder (or manifest) and embed the images into the store"),
    "labels": ("al_core.labels_cli", "check, retract or retry label files"),
    "status": ("al_core.status_cli", "print what the store holds"),
    "rounds": ("al_core.rounds_cli", "one row per round: labels so far, strategy, seed, accuracy, when"),
    "lineage": ("al_core.lineage_cli", "where an image came from, who labelled it, which probes used it"),
    "export": ("al_core.export_cli", "write current labels and the latest probe's predictions (CSV/Parquet)"),
    "snapshot": ("al_core.snapshot_cli", "write a consistent read-only copy of the database for analysts"),
    "simulate": ("al_core.simulate_cli", "compare strategies in process on the embedded images (no annotators)"),
    "init": ("al_core.init_cli", "write a commented default project file (al.yaml)"),
    "round": ("al_core.round_cli", "`al round next`: close the open batch by hand"),
    "simulate-annotator": ("al_core.annotator", "answer query sets in the outbox from the ground truth (demo, tests)"),
}


def _bench_names() -> list[str]:
    import al_core.bench as bench

    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))


def _usage() -> str:
    lines = ["usage: al COMMAND [ARGS...]", "", "commands:"]
    for name, (_, help_) in sorted(COMMANDS.items()):
        lines.append(f"  {name:<18} {help_}")
    lines.append(f"  {'bench NAME':<18} benchmarks: {', '.join(_bench_names())}")
    lines.append("")
    lines.append("`al COMMAND --help` describes each command.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "bench":
        names = _bench_names()
        if not rest or rest[0] in ("-h", "--help") or rest[0] not in names:
            if rest and rest[0] not in ("-h", "--help"):
                print(f"al bench: unknown benchmark {rest[0]!r}; known: {', '.join(names)}", file=sys.stderr)
                return 2
            print(f"usage: al bench NAME [ARGS...]\nbenchmarks: {', '.join(names)}")
            return 0
        module = importlib.import_module(f"al_core.bench.{rest[0]}")
        return int(module.main(rest[1:]) or 0)
    if cmd not in COMMANDS:
        print(f"al: unknown command {cmd!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[cmd][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
