"""`al labels COMMAND ...`: label files.

- ``al labels check FILE``: validate a label file exactly as the inbox sensor
  does (``validate_label_file``), applying nothing. Exit 0 and a summary for a
  valid file; exit 1 and the error report (the ``.errors.json`` content) for a
  bad one; exit 2 when the check cannot run (no project file, no database).

Adding a subcommand: write ``_add_NAME(subparsers, common)`` and ``cmd_NAME(args)
-> int`` and add one entry to SUBCOMMANDS.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from al_core.labels import MAX_REPORT_ERRORS, ParsedLabels, error_report, parse_label_file
from al_core.catalogue import open_store

# The images a label may name: every image with at least one readable path.
KNOWN_IMAGE_IDS_SQL = "SELECT DISTINCT image_id FROM image_paths WHERE status = 'ok'"


class CheckUnavailable(RuntimeError):
    """The check cannot run (project file, database): exit 2."""


def validation_inputs(cfg, store) -> tuple[tuple[str, ...], frozenset[str]]:
    """(classes, known image ids) from the project file and the store, with short read-only connections."""
    from al_core.config import ConfigError
    from al_core.catalogue.store import StoreError

    if not Path(store.db_path).exists():
        raise CheckUnavailable(f"no database at {store.db_path} yet: run `al ingest` (or `make demo`) first, "
                               "or point --db / --config at the project's database")
    try:
        known = frozenset(r[0] for r in store.fetch(KNOWN_IMAGE_IDS_SQL))
        classes = cfg.class_names(store)
    except (StoreError, ConfigError) as e:
        raise CheckUnavailable(str(e)) from e
    return classes, known


def validate_label_file(path, cfg, store) -> ParsedLabels:
    """What the sensor and `al labels check` run: parse_label_file with the project's classes and images."""
    classes, known = validation_inputs(cfg, store)
    return parse_label_file(path, classes=classes, known_image_ids=known, skip_label=cfg.labels.skip_label)


def _project(args) -> tuple:
    """(config, store) from --config / --db."""
    from al_core.config import ConfigError, load_config
    from al_core.catalogue.store import Store

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        raise CheckUnavailable(str(e)) from e
    if not args.db:
        return cfg, open_store(cfg)
    return cfg, Store(Path(args.db), lock_timeout_s=cfg.store_cfg.lock_timeout_s)


# -- check ---------------------------------------------------------------------------
def _add_check(subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "check", parents=[common], help="validate a label file without applying it",
        description="Validate a label file exactly as the inbox sensor does, applying nothing. "
                    "Exit 0: valid (a summary is printed); 1: rejected (the error report is printed); "
                    "2: the check could not run.")
    p.add_argument("file", help="label file: CSV (image_id,label[,annotator]), JSON lines "
                                "or a Label Studio JSON export")


def _print_summary(s: dict, parsed: ParsedLabels, out) -> None:
    print(f"{parsed.path}: valid {parsed.format} file (sha256 {parsed.sha256})", file=out)
    labels = ", ".join(f"{k} {v}" for k, v in s["labels"].items()) or "none"
    print(f"  {s['rows']} labels: {labels}; skips: {s['skips']}", file=out)
    if s["annotators"] or s["rows_without_annotator"]:
        ann = ", ".join(f"{k} {v}" for k, v in s["annotators"].items())
        extra = f"{'; ' if ann else ''}{s['rows_without_annotator']} rows without annotator" if s[
            "rows_without_annotator"] else ""
        print(f"  annotators: {ann}{extra}", file=out)
    if s["n_duplicates"]:
        print(f"  {s['n_duplicates']} repeated rows (same image, same label) counted once", file=out)
    if s["n_cancelled"]:
        print(f"  {s['n_cancelled']} cancelled Label Studio annotations skipped", file=out)
    for d in parsed.decisions:
        others = ", ".join(f"#{o['annotation_id']} {o['label']!r}" for o in d["others"])
        print(f"  task {d['task_id']} (line {d['line']}): annotation #{d['chosen_annotation_id']} "
              f"{d['chosen_label']!r} chosen over {others} (latest updated wins)", file=out)


def _print_report(rep: dict, out) -> None:
    print(f"{rep['file']}: REJECTED, {rep['n_errors']} error(s); nothing in it would be applied "
          f"(format {rep['format']}, sha256 {rep['sha256'] or '-'})", file=out)
    for e in rep["errors"]:
        where = "file" if e["line"] is None else f"line {e['line']}"
        if e["field"]:
            where += f" [{e['field']}]"
        tail = f" (value: {e['value_preview']})" if e["value_preview"] is not None else ""
        print(f"  {where}: {e['message']}{tail}", file=out)
    if rep["n_omitted"]:
        print(f"  ... and {rep['n_omitted']} more error(s) not listed", file=out)


def cmd_check(args) -> int:
    path = Path(args.file)
    if not path.exists():
        print(f"al labels check: {path} does not exist", file=sys.stderr)
        return 2
    try:
        cfg, store = _project(args)
        parsed = validate_label_file(path, cfg, store)
    except CheckUnavailable as e:
        print(f"al labels check: {e}", file=sys.stderr)
        return 2
    if parsed.ok:
        s = parsed.summary()
        if args.json:
            print(json.dumps({**s, "decisions": list(parsed.decisions)}, indent=2, ensure_ascii=False))
        else:
            _print_summary(s, parsed, sys.stdout)
        return 0
    rep = error_report(parsed, MAX_REPORT_ERRORS)
    if args.json:
        print(json.dumps(rep, indent=2, ensure_ascii=False))
    else:
        _print_report(rep, sys.stdout)
    return 1


# -- retract / retry ----------------------------------------------------------------
def _add_retract(subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "retract", parents=[common], help="withdraw a whole delivery (e.g. a bad annotator's)",
        description="Withdraw every label of an accepted label file: they leave training from the next round on; "
                    "the history stays (labels rows are never deleted).")
    p.add_argument("sha256", help="the file's sha256 (a unique prefix of at least 8 hex digits)")
    p.add_argument("--reason", default=None)


def cmd_retract(args) -> int:
    from al_core.loop.rounds import LoopError, retract_file
    from al_core.catalogue.store import StoreError

    cfg, store = _project(args)
    try:
        r = retract_file(store, cfg, args.sha256, args.reason)
    except LoopError as e:
        print(f"al labels retract: {e}", file=sys.stderr)
        return 1
    except StoreError as e:
        print(f"al labels retract: {e}", file=sys.stderr)
        return 3
    print(json.dumps(r) if args.json else
          f"retracted {r['file']} ({r['sha256'][:16]}): {r['labels_withdrawn']} labels leave training "
          f"from round {r['effective_round']} on")
    return 0


def _add_retry(subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "retry", parents=[common], help="ingest a file again whose run failed, or a rejected file",
        description="Ask the inbox sensor for a new run (a new run key) that ingests the file again. The file must "
                    "still be in the inbox (its run failed) or in inbox/rejected/ (it is put back first).")
    p.add_argument("sha256", help="the file's sha256 (a prefix of at least 8 hex digits)")


def cmd_retry(args) -> int:
    from al_core.loop.rounds import LoopError, request_retry
    from al_core.catalogue.store import StoreError

    cfg, store = _project(args)
    try:
        r = request_retry(store, cfg, args.sha256)
    except LoopError as e:
        print(f"al labels retry: {e}", file=sys.stderr)
        return 1
    except StoreError as e:
        print(f"al labels retry: {e}", file=sys.stderr)
        return 3
    print(json.dumps(r) if args.json else
          f"requested a new ingestion of {r['file']} (request {r['request_id']}); "
          f"the inbox sensor launches it within {cfg.sensor.interval_s} s")
    return 0


# -- dispatch --------------------------------------------------------------------------
# name -> (adds the subparser, runs it)
AddParser = Callable[[object, argparse.ArgumentParser], None]  # (subparsers, common options parent) -> None
RunCommand = Callable[[argparse.Namespace], int]  # parsed args -> exit status
SUBCOMMANDS: dict[str, tuple[AddParser, RunCommand]] = {
    "check": (_add_check, cmd_check),
    "retract": (_add_retract, cmd_retract),
    "retry": (_add_retry, cmd_retry),
}


def common_options() -> argparse.ArgumentParser:
    """Options every subcommand takes (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=None,
                        help="project file (default: $AL_CONFIG, else ./al.yaml, else the built-in defaults)")
    common.add_argument("--db", default=None, help="database (default: the project file's data_dir/warehouse.duckdb)")
    common.add_argument("--json", action="store_true", help="print JSON")
    return common


def build_parser() -> tuple[argparse.ArgumentParser, object]:
    """The `al labels` parser and its subparsers object."""
    ap = argparse.ArgumentParser(prog="al labels", description="Label files: " + ", ".join(SUBCOMMANDS) + ".")
    subparsers = ap.add_subparsers(dest="command", metavar="COMMAND")
    common = common_options()
    for add, _run in SUBCOMMANDS.values():
        add(subparsers, common)
    return ap, subparsers


def main(argv: list[str]) -> int:
    ap, _subparsers = build_parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else 2
    if not args.command:
        ap.print_help(sys.stderr)
        return 2
    return int(SUBCOMMANDS[args.command][1](args) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
