"""`al labels COMMAND ...`: label files.

- ``al labels check FILE``: validate a label file with the parser the inbox
  sensor runs (``parse_label_file``, through ``validate_label_file``) against
  the project's classes and the store's known image ids, applying nothing.
  Exit.OK and a summary for a valid file; Exit.FAILED and the error report (the
  ``.errors.json`` content) for a bad one; Exit.USAGE when the check cannot run
  (no project file, no database).
- ``al labels retract SHA256`` / ``al labels retry SHA256``: withdraw an
  accepted training delivery / ask for a file to be ingested again (a rejected
  one is put back into the folder of its kind, never over a waiting file). Exit.FAILED when the
  file cannot be found or retracted, Exit.LOCKED when the database stayed
  locked (al_core.cli.exit_codes).
- ``al labels relabel OLD NEW``: map every label of class OLD to NEW (a class of
  the project file), recorded in the label history (al_core.loop.class_changes).
  Exit.FAILED for an OLD no label uses or a NEW not in the class list.
- ``al labels suspects [--round R]``: the suspected label errors of the latest
  (or round R's) label-quality assessment, lowest label quality first
  (al_core.loop.label_quality). Exit.FAILED without a database.

Adding a subcommand: one entry in SUBCOMMANDS (its help, description, arguments and
what runs it: ``loop_subcommand`` for one loop function, else a ``cmd_NAME(args) -> int``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

from al_core.catalogue import open_store
from al_core.cli.common import (
    CONFIG_HELP,
    add_arguments,
    announce_project,
    arg,
    fail,
    json_safe,
    locked_message,
    print_safe,
)
from al_core.cli.common import terminal_safe as t
from al_core.cli.exit_codes import Exit
from al_core.files.hashing import short
from al_core.labels import MAX_REPORT_ERRORS, LabelError, ParsedLabels, error_report, parse_label_file
from al_core.loop.inbox import ValidationUnavailable, validation_inputs  # the sensor's and the round run's inputs

RunCommand = Callable[[argparse.Namespace], int]  # parsed args -> exit status


class CheckUnavailable(RuntimeError):
    """The check cannot run (project file, database): Exit.USAGE."""


def validate_label_file(path, cfg, store) -> ParsedLabels:
    """What the sensor and `al labels check` run: parse_label_file with the project's classes and images."""
    try:
        classes, known = validation_inputs(cfg, store)
    except ValidationUnavailable as e:
        raise CheckUnavailable(str(e)) from e
    return parse_label_file(path, classes=classes, known_image_ids=known, skip_label=cfg.labels.skip_label)


def _project(args) -> tuple:
    """(config, store) from --config / --db.

    With --db and no project file at all, the settings are the defaults and the
    classes come from the database's ground truth (a check against a bare database).
    """
    from al_core.catalogue.store import Store
    from al_core.config import ConfigError, find_config_path, from_dict, load_config

    try:
        if args.db and find_config_path(args.config) is None:
            cfg = from_dict({}, base_dir=Path(args.db).absolute().parent)
            print_safe(
                f"al labels {args.command}: no project file; the defaults, with the classes of {args.db}",
                file=sys.stderr,
            )
        else:
            cfg = load_config(args.config)
            announce_project(f"al labels {args.command}", cfg, args.config)
    except ConfigError as e:
        raise CheckUnavailable(str(e)) from e
    if not args.db:
        return cfg, open_store(cfg)
    return cfg, Store(Path(args.db), lock_timeout_s=cfg.store_cfg.lock_timeout_s)


# -- check ---------------------------------------------------------------------------
def _summary_text(s: dict, parsed: ParsedLabels) -> str:
    """The summary of a valid file; every value from the file goes through ``terminal_safe``."""
    labels = ", ".join(f"{t(k)} {v}" for k, v in s["labels"].items()) or "none"
    lines = [
        f"{t(parsed.path)}: valid {parsed.format} file (sha256 {parsed.sha256})",
        f"  {s['rows']} labels: {labels}; skips: {s['skips']}",
    ]
    if s["annotators"] or s["rows_without_annotator"]:
        ann = ", ".join(f"{t(k)} {v}" for k, v in s["annotators"].items())
        extra = (
            f"{'; ' if ann else ''}{s['rows_without_annotator']} rows without annotator"
            if s["rows_without_annotator"]
            else ""
        )
        lines.append(f"  annotators: {ann}{extra}")
    if s["n_duplicates"]:
        lines.append(f"  {s['n_duplicates']} repeated rows (same image, annotator and label) counted once")
    if s["n_cancelled"]:
        lines.append(f"  {s['n_cancelled']} cancelled Label Studio annotations (Skip): each a skip")
    if s["n_drafts"] or s["n_unanswered"]:
        lines.append(f"  {s['n_drafts']} drafts and {s['n_unanswered']} tasks without an answer: not answers")
    for d in parsed.decisions:
        answers = ", ".join(
            f"#{t(a['annotation_id'])} {t(repr(a['label']))} by {t(a['annotator'] or 'unnamed')}" for a in d["answers"]
        )
        lines.append(f"  task {t(d['task_id'])}: {len(d['answers'])} answers kept, newest first: {answers}")
    lines += [f"  WARNING {t(str(w))}" for w in parsed.warnings]
    if parsed.warnings_dropped:
        lines.append(f"  ... and {parsed.warnings_dropped} more warning(s)")
    return "\n".join(lines)


def _report_text(rep: dict) -> str:
    """The error report of a rejected file; every value from the file goes through ``terminal_safe``."""
    lines = [
        f"{t(rep['file'])}: REJECTED, {rep['n_errors']} error(s); nothing in it would be applied "
        f"(format {rep['format']}, sha256 {rep['sha256'] or '-'})",
        *(f"  {t(str(LabelError(**e)))}" for e in rep["errors"]),
    ]
    if rep["n_omitted"]:
        lines.append(f"  ... and {rep['n_omitted']} more error(s) not listed")
    return "\n".join(lines)


def cmd_check(args) -> int:
    path = Path(args.file)
    if not path.exists():
        return fail("al labels check", f"{path} does not exist", Exit.USAGE)  # fail() escapes it
    try:
        cfg, store = _project(args)
        parsed = validate_label_file(path, cfg, store)
    except CheckUnavailable as e:
        return fail("al labels check", str(e), Exit.USAGE)
    if parsed.ok:
        s = parsed.summary()
        if args.json:
            print_safe(
                json_safe(
                    {**s, "decisions": list(parsed.decisions), "warnings": [w.as_dict() for w in parsed.warnings]},
                    indent=2,
                )
            )
        else:
            print_safe(_summary_text(s, parsed))
        return Exit.OK
    rep = error_report(parsed, MAX_REPORT_ERRORS)
    print_safe(json_safe(rep, indent=2) if args.json else _report_text(rep))
    return Exit.FAILED


# -- retract, retry, relabel: one loop function each ---------------------------------
def _loop_command(prog: str, args, action: Callable, describe: Callable, **json_kw) -> int:
    """Run ``action(store, cfg)`` (a loop function), print ``describe(result, cfg)`` or the JSON result
    (``json_safe(result, **json_kw)``)."""
    from al_core.catalogue.store import StoreError, StoreLockedError
    from al_core.loop import LoopError

    try:
        cfg, store = _project(args)
    except CheckUnavailable as e:
        return fail(prog, str(e), Exit.USAGE)
    if not store.db_path.exists():  # a writable connection would create an empty database
        return fail(prog, f"no database at {store.db_path} yet: run `al ingest` first")
    try:
        r = action(store, cfg)
    except StoreLockedError:
        return fail(prog, locked_message(store, cfg), Exit.LOCKED)
    except (LoopError, StoreError) as e:
        return fail(prog, str(e))
    print_safe(json_safe(r, **json_kw) if args.json else describe(r, cfg))
    return Exit.OK


def loop_subcommand(function: str, params: tuple[str, ...], describe: Callable) -> RunCommand:
    """The run of a subcommand that calls one loop function through ``_loop_command``: ``function``
    ("module:name", imported when it runs, so that `al labels` starts without the loop's imports) with the store,
    the config and the arguments named ``params``; ``describe(result, cfg)`` is what it prints without --json."""

    def run(args) -> int:
        module, name = function.split(":")
        action = getattr(importlib.import_module(module), name)
        call = lambda store, cfg: action(store, cfg, *(getattr(args, p) for p in params))
        return _loop_command(f"al labels {args.command}", args, call, describe)

    return run


def _retracted(r: dict, cfg) -> str:
    return (
        f"retracted {t(r['file'])} ({short(r['sha256'])}): {r['labels_withdrawn']} labels leave "
        f"training from round {r['effective_round']} on"
    )


def _retry_requested(r: dict, cfg) -> str:
    return (
        f"requested a new ingestion of {t(r['file'])} (request {r['request_id']}); "
        f"the inbox sensor launches it within {cfg.sensor.interval_s} s"
    )


def _relabelled(r: dict, cfg) -> str:
    return (
        f"relabelled {t(repr(r['old']))} -> {t(repr(r['new']))}: {r['n_labels']} label(s) and "
        f"{r['n_eval']} evaluation label(s) mapped (relabel {r['relabel_id']}, recorded in the label "
        "history); the next round trains on them"
    )


# -- suspects ------------------------------------------------------------------------
SUSPECTS_LISTED = 20  # rows `al labels suspects` prints by default


def cmd_suspects(args) -> int:
    from al_core.catalogue import quality as quality_q

    def read(store, cfg) -> dict:
        with store.connect(read_only=True, view=False) as con:
            run = quality_q.latest_quality_run(con, args.round)
            rows = quality_q.suspect_records(con, run["round"], args.limit or None) if run else []
        return {"run": run, "suspects": rows}

    describe = lambda r, cfg: _describe_suspects(r, args.round)
    return _loop_command("al labels suspects", args, read, describe, indent=2, default=str)


def _describe_suspects(r: dict, asked_round: int | None) -> str:
    run = r["run"]
    if run is None:
        which = f"round {asked_round}" if asked_round is not None else "any round"
        return f"no label-quality assessment of {which} yet (one follows each round's probe)"
    lines = [
        f"round {run['round']}: {run['n_issues']} of {run['n_labels']} training labels flagged "
        f"({t(run['method'])}, {run['n_folds']} folds, probe {t(run['probe_id'])})"
    ]
    for x in r["suspects"]:
        given, suggested = t(repr(x["given"])), t(repr(x["suggested"]))
        lines.append(
            f"  {short(x['image_id'])}  given {given:<14} suggested {suggested:<14} quality {x['quality']:.3f}  "
            f"p {x['suggested_prob']:.2f}  {x['n_annotations']} ann.  {t(x['path'])}"
        )
    return "\n".join(lines)


# -- the table ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Subcommand:
    """One `al labels` subcommand: its one-line help, its --help description, its arguments
    (al_core.cli.common.arg: the flags and options of one ``add_argument``) and what runs it (parsed args -> exit
    status)."""

    help: str
    description: str
    arguments: tuple[tuple[tuple[str, ...], dict], ...]
    run: RunCommand


SUBCOMMANDS: dict[str, Subcommand] = {
    "check": Subcommand(
        help="validate a label file without applying it",
        description="Validate a label file with the inbox sensor's parser against the project's classes and "
        "images, applying nothing. Exit 0: valid (a summary is printed); 1: rejected (the error "
        "report is printed); 2: the check could not run.",
        arguments=(
            arg(
                "file",
                help="label file: CSV (image_id,label[,annotator,annotation_id,note,seconds]), JSON "
                "lines, or any Label Studio export (JSON, JSON_MIN, CSV, TSV, target-storage file)",
            ),
        ),
        run=cmd_check,
    ),
    "retract": Subcommand(
        help="withdraw a whole delivery (e.g. a bad annotator's)",
        description="Withdraw every label of an accepted label file: they leave training from the next round on; "
        "the history stays (labels rows are never deleted).",
        arguments=(
            arg("sha256", help="the file's sha256 (a unique prefix of at least 8 hex digits)"),
            arg("--reason", default=None),
        ),
        run=loop_subcommand("al_core.loop:retract_file", ("sha256", "reason"), _retracted),
    ),
    "retry": Subcommand(
        help="ingest a file again whose run failed, or a rejected file",
        description="Ask the inbox sensor for a new run (a new run key) that ingests the file again. The file must "
        "still be in the inbox or inbox/eval/ (its run failed), or be a rejected delivery in "
        "inbox/rejected/: it is put back first, into the folder of its kind (an evaluation file into "
        "inbox/eval/), never over a file waiting there (then as NAME-1.csv).",
        arguments=(arg("sha256", help="the file's sha256 (a prefix of at least 8 hex digits)"),),
        run=loop_subcommand("al_core.loop:request_retry", ("sha256",), _retry_requested),
    ),
    "relabel": Subcommand(
        help="map every label of a class to another (a class renamed or removed)",
        description="Map every label of class OLD to class NEW (in the project file's classes), in one transaction: "
        "the mapping is recorded in the label history (no delivered label is rewritten; `al lineage` "
        "shows it) and the evaluation set's OLD labels become NEW. Use it after renaming or removing a "
        "class that has labels: the round runs again from then on.",
        arguments=(
            arg("old", help="the class the labels name now"),
            arg("new", help="a class of the project file's classes"),
        ),
        run=loop_subcommand("al_core.loop.class_changes:relabel", ("old", "new"), _relabelled),
    ),
    "suspects": Subcommand(
        help="list the suspected label errors of a round",
        description="The training labels that cleanlab flags as likely wrong, lowest label quality first: each "
        "scored against a probe that did not see it (out-of-fold). Columns: image, given label, the probe's "
        "suggestion, label quality (0..1), the suggestion's probability, annotations, one path.",
        arguments=(
            arg("--round", type=int, default=None, help="the round (default: the latest assessed)"),
            arg("--limit", type=int, default=SUSPECTS_LISTED, help=f"rows at most (default {SUSPECTS_LISTED}; 0: all)"),
        ),
        run=cmd_suspects,
    ),
}


def common_options() -> argparse.ArgumentParser:
    """Options every subcommand takes (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=None, help=CONFIG_HELP)
    common.add_argument("--db", default=None, help="database (default: the project file's data_dir/warehouse.duckdb)")
    common.add_argument("--json", action="store_true", help="print JSON")
    return common


def build_parser() -> tuple[argparse.ArgumentParser, object]:
    """The `al labels` parser and its subparsers object."""
    ap = argparse.ArgumentParser(prog="al labels", description="Label files: " + ", ".join(SUBCOMMANDS) + ".")
    subparsers = ap.add_subparsers(dest="command", metavar="COMMAND")
    common = common_options()
    for name, sub in SUBCOMMANDS.items():
        p = subparsers.add_parser(name, parents=[common], help=sub.help, description=sub.description)
        add_arguments(p, sub.arguments)
    return ap, subparsers


def main(argv: list[str]) -> int:
    ap, _subparsers = build_parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (argparse's 2, Exit.USAGE)
        return e.code if isinstance(e.code, int) else Exit.USAGE
    if not args.command:
        ap.print_help(sys.stderr)
        return Exit.USAGE
    return int(SUBCOMMANDS[args.command].run(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
