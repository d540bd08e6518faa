"""`al rounds`, `al lineage`, `al export`, `al snapshot`: audit and export (al_core.reporting.audit).

Every command reads the project file (``--config PATH``; default $AL_CONFIG,
else ./al.yaml, else the defaults) and uses short read-only connections. When
another process holds the database for longer than the retry window
(``store.lock_timeout_s`` in the project file) the command says so and exits
with Exit.LOCKED (retryable); other problems exit Exit.FAILED, usage errors
Exit.USAGE (al_core.cli.common.run_with_store, al_core.cli.exit_codes).

The `al` table (al_core.cli.COMMANDS) maps each command to its function here
(``rounds_main``, ``lineage_main``, ``export_main``, ``snapshot_main``);
``main(argv)`` dispatches on the first word instead.
"""

import argparse
import datetime as _dt
import sys
from pathlib import Path

from al_core.cli.common import add_arguments, add_config_option, arg, json_safe, print_safe, run_with_store
from al_core.cli.common import terminal_safe as t
from al_core.cli.exit_codes import Exit
from al_core.files.hashing import short


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return add_config_option(argparse.ArgumentParser(prog=prog, description=description))


def _stamp() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")


# ----------------------------------------------------------------------------- formatting
def _num(v, fmt="{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def _when(v: str | None) -> str:
    return "-" if not v else v.replace("T", " ")[:19]


def format_rounds(rows: list[dict]) -> str:
    head = [
        "round",
        "kind",
        "labels",
        "skips",
        "disagree",
        "strategy",
        "seed",
        "budget",
        "answered",
        "probe",
        "accuracy",
        "bal.acc",
        "proposed (UTC)",
        "evaluated (UTC)",
        "status",
    ]
    body = []
    for r in rows:
        probe = "-" if r["probe_id"] is None else f"v{r['probe_version']} ({r['probe_n_labels']})"
        body.append(
            [
                str(r["round"]),
                t(r["kind"] or "-"),
                str(r["labels_so_far"]),
                str(r["skips_so_far"]),
                str(r["disagreements_so_far"]),
                t(r["strategy"] or "-"),
                _num(r["seed"], "{}"),
                _num(r["budget"], "{}"),
                "-" if r.get("proposed") is None else f"{r['answered']}/{r['proposed']}",
                probe,
                _num(r["accuracy"]),
                _num(r["balanced_accuracy"]),
                _when(r["proposed_at"]),
                _when(r["evaluated_at"]),
                t(r["status"]),
            ]
        )
    if not body:
        return "no rounds yet: the seed pool has not been proposed"
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
    notes = [f"round {r['round']}: {t(r['note'])}" for r in rows if r.get("note")]
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body), *notes])


def format_lineage(d: dict) -> str:
    """The lineage as text; every value from outside (paths, errors, labels, file names, annotators, notes) goes
    through ``terminal_safe``, so it can neither act on the terminal nor start a line of its own."""
    out = [f"image {t(d['image_id'])}"]
    img = d["image"]
    if img:
        out.append(
            f"  ingested      {_when(img['first_seen'])} UTC (scan {t(img['first_scan_id'])}), "
            f"{t(img['format'] or '?')} {img['width']}x{img['height']}, {img['size_bytes']} bytes"
        )
    else:
        out.append("  ingested      never decoded (no images row)")
    for p in d["paths"]:
        err = f" ({t(p['error'])})" if p["error"] else ""
        out.append(f"  path          {t(p['path'])} [{t(p['status'])}{err}] last seen {_when(p['last_seen'])}")
    if d["ground_truth"]:
        out.append(f"  ground truth  {t(', '.join(d['ground_truth']))} (folder/manifest; simulation only)")
    for e in d["embeddings"] or [None]:
        out.append(
            "  embedding     none"
            if e is None
            else f"  embedding     {t(e['config_id'])} ({t(e['backbone'])}, {e['dim']}-d) at {_when(e['embedded_at'])}"
        )
    if d["eval_set"]:
        ev = d["eval_set"]
        out.append(
            f"  eval set      yes ({t(ev['source'])}), label {t(ev['label'] or '(not labelled yet)')}; "
            "never proposed, never trained on"
        )
    for q in d["proposals"] or [None]:
        out.append(
            "  proposed      never"
            if q is None
            else f"  proposed      round {q['round']} by {t(q['strategy'])}, rank {q['rank']}, score "
            f"{_num(q['score'], '{:.6g}')}, at {_when(q['proposed_at'])}"
            + (f"\n                why: {t(q['reason'])}" if q.get("reason") else "")
        )
    if not d["labels"]:
        out.append("  labels        none")
    for lab in d["labels"]:
        ans = (
            f"answering batch {lab['proposed_round']} ({t(lab['proposed_strategy'])})"
            if lab["proposed_round"] is not None
            else "for an image never proposed (flagged)"
        )
        state = lab["state"] + (f" from round {lab['retracted_from_round']}" if lab["retracted"] else "")
        state += ", decides" if lab["decides"] else ""
        why = f" ({t(lab['superseded_because'])})" if lab["superseded_because"] else ""
        out.append(
            f"  label #{lab['label_id']:<6} {t(repr(lab['label']))}{' (skip)' if lab['is_skip'] else ''} "
            f"[{state}]{why} round {lab['round']}, {ans}"
        )
        out.append(
            f"                 file {t(lab['file_name'])} sha256 {t(lab['file_sha256'])} ({t(lab['file_status'])})"
        )
        who = t(lab["annotator"] or "-")
        ann = f", annotation {t(lab['annotation_id'])}" if lab["annotation_id"] else ""
        ann += f", task {t(lab['task_id'])}" if lab["task_id"] else ""
        line = f", line {lab['line']}" if lab["line"] is not None else ""
        at = f", annotated {_when(lab['annotated_at'])} UTC" if lab["annotated_at"] else ""
        spent = f", {lab['seconds']:.1f} s ({t(lab['seconds_source'])})" if lab["seconds"] is not None else ""
        out.append(f"                 annotator {who}{ann}{line}{at}, received {_when(lab['received_at'])} UTC{spent}")
        if lab.get("note"):
            out.append(f"                 note {t(lab['note'])}")
    tr = d.get("training")
    if tr:
        label = t(tr["label"]) if tr["status"] == "labelled" else "-"
        out.append(
            f"  training      {tr['status']}: {label} (policy {t(tr['policy'])}, {tr['n_answers']} counting "
            f"answer(s) by {tr['n_annotators']} annotator(s))"
        )
        for dis in tr["disagreements"]:
            votes = ", ".join(f"{t(a['annotator'] or 'unnamed')} {t(repr(a['label']))}" for a in dis["answers"])
            batch = f"batch {dis['answers_round']}" if dis["answers_round"] is not None else "no batch"
            out.append(f"  DISAGREEMENT  {batch}, round {dis['label_round']}: {votes}; {t(dis['resolution'])}")
    for r in d.get("relabels", []):
        rows = ", ".join(f"#{i}" for i in r["label_ids"] or [])
        what = "; ".join(x for x in (f"label {rows}" if rows else "", "evaluation label" if r["eval"] else "") if x)
        out.append(
            f"  RELABEL       {t(repr(r['old']))} -> {t(repr(r['new']))} at {_when(r['relabelled_at'])} UTC "
            f"(`al labels relabel`, relabel {r['relabel_id']}): {what}; the delivered rows are kept"
        )
    if not d["probes"]:
        out.append("  probes        none trained with this image")
    for p in d["probes"]:
        out.append(
            f"  probe         {t(p['probe_id'])} round {p['round']} v{p['version']} ({t(p['trigger'])}), "
            f"{p['n_labels']} labels, accuracy {_num(p['accuracy'])}, balanced {_num(p['balanced_accuracy'])}"
            f", sha256 {short(p['sha256'])}.."
        )
    return "\n".join(out)


# ----------------------------------------------------------------------------- commands
def _command(prog: str, description: str, argv: list[str], arguments, body) -> int:
    """``prog``: parse ``argv`` (``--config`` and ``arguments``, each al_core.cli.common.arg), then run
    ``body(args, cfg, store)`` on the project's store (run_with_store: a failure is one line and a status)."""
    args = add_arguments(_parser(prog, description), arguments).parse_args(argv)
    return run_with_store(prog, args.config, lambda cfg, store: body(args, cfg, store))


def _out_option(what: str, default: str):
    """``--out PATH``: the file to write, by default ``<data_dir>/{default}`` (``_out_path``)."""
    return arg("--out", metavar="PATH", default=None, help=f"{what} (default: <data_dir>/{default})")


def _out_path(args, cfg, folder: str, name: str, suffix: str) -> Path:
    """``--out``, else ``<data_dir>/folder/name-<UTC timestamp>.suffix``."""
    return Path(args.out) if args.out else cfg.data_dir / folder / f"{name}-{_stamp()}.{suffix}"


def rounds_main(argv: list[str]) -> int:
    return _command(
        "al rounds",
        "One row per round: labels so far, strategy, seed, budget, answered/proposed of its batch, accuracy, when.",
        argv,
        [arg("--json", action="store_true", help="print a JSON list instead of a table")],
        _rounds,
    )


def _rounds(args, cfg, store) -> None:
    from al_core.catalogue import rounds as rounds_q
    from al_core.reporting.audit import rounds_table

    rows = rounds_table(store)
    with store.connect(read_only=True, view=False) as con:  # answered/proposed of each batch
        for r in rows:  # a round that proposed no batch has neither
            r["answered"], r["proposed"] = rounds_q.answered_count(con, r["round"]) if r["kind"] else (None, None)
    print_safe(json_safe(rows, indent=2) if args.json else format_rounds(rows))


LINEAGE_IMAGE_HELP = (
    "the image's sha256 or a unique prefix (>= 8 hex chars), its path relative to the image root, or its file name "
    "when unique"
)


def lineage_main(argv: list[str]) -> int:
    return _command(
        "al lineage",
        "Where one image came from, who labelled it, and which probes learnt from it.",
        argv,
        [
            arg("image_id", metavar="IMAGE", help=LINEAGE_IMAGE_HELP),
            arg("--json", action="store_true", help="print JSON"),
        ],
        _lineage,
    )


def _lineage(args, cfg, store) -> None:
    from al_core.loop.outbox import image_names_root
    from al_core.reporting.audit import lineage

    d = lineage(store, args.image_id, image_names_root(cfg))
    print_safe(json_safe(d, indent=2) if args.json else format_lineage(d))


def export_main(argv: list[str]) -> int:
    formats = arg(
        "--format",
        choices=["csv", "parquet"],
        default=None,
        help="file format (default: from the --out suffix, else csv)",
    )
    return _command(
        "al export",
        "Write the current labels and the latest probe's predictions for every image.",
        argv,
        [_out_option("output file", "exports/labels-<UTC timestamp>.csv or .parquet"), formats],
        _export,
    )


def _export(args, cfg, store) -> None:
    from al_core.reporting.audit import export, export_format

    fmt = export_format(args.out or "", args.format)
    s = export(store, cfg, _out_path(args, cfg, "exports", "labels", fmt), fmt)
    probe = f"probe {s['probe_id']}" if s["probe_id"] else "no probe yet (no predictions)"
    print_safe(
        f"wrote {s['path']} ({s['format']}): {s['rows']} images, {s['labelled']} labelled, {s['skips']} "
        f"skipped, {s['predicted']} predicted by {probe}; {s['exact_duplicates']} images under several "
        "paths (columns n_paths, paths)"
    )


def snapshot_main(argv: list[str]) -> int:
    return _command(
        "al snapshot",
        "Write a consistent read-only copy of the database for analysts.",
        argv,
        [_out_option("snapshot file", "snapshots/warehouse-<UTC timestamp>.duckdb")],
        _snapshot,
    )


def _snapshot(args, cfg, store) -> None:
    from al_core.reporting.audit import snapshot

    s = snapshot(store, _out_path(args, cfg, "snapshots", "warehouse", "duckdb"))
    n = sum(s["tables"].values())
    print_safe(
        f"wrote {s['path']} ({s['bytes'] / 1e6:.1f} MB, {len(s['tables'])} tables, {n} rows) in "
        f"{s['seconds']:.2f} s\nopen it with: duckdb -readonly {s['path']}"
    )


SUBCOMMANDS = {"rounds": rounds_main, "lineage": lineage_main, "export": export_main, "snapshot": snapshot_main}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
    usage = f"usage: {' | '.join(SUBCOMMANDS)} [ARGS...]"
    if argv[:1] in (["-h"], ["--help"]):
        print(usage)
        return Exit.OK
    if argv:
        print(f"unknown audit command {argv[0]!r}", file=sys.stderr)
    print(usage, file=sys.stderr)
    return Exit.USAGE


if __name__ == "__main__":
    sys.exit(main())
