"""`al labelstudio serve|push|pull`: Label Studio for the project (docs/label-studio.md).

- ``serve``: the project's own Label Studio (al_core.labelstudio.server): bound to 127.0.0.1 (another address only
  with ``--allow-remote``), local files served from the document root (``label_studio.document_root``, by default
  the image folder's parent), its data under ``<data_dir>/label-studio``; prints the URL and the account and runs
  until Ctrl-C (or SIGTERM), which stops it.
- ``push``: create or update the Label Studio project and import the open batch; pushing again adds nothing twice.
- ``pull``: write the annotations new since the last pull into the inbox, where the inbox sensor ingests them.

``push`` and ``pull`` talk to ``--url`` (else ``label_studio.url``) with the token in ``$LABEL_STUDIO_API_KEY``
(``label_studio.token_env``), else to the project's own server while ``serve`` runs. The token is never printed.
A user error (no server, a refused token, no open batch) is one line naming the fix, with Exit.FAILED.
"""

from __future__ import annotations

import argparse
import signal
import sys

from al_core.cli.common import add_config_option, fail, load_project_or_fail, print_safe, run_with_store
from al_core.cli.exit_codes import Exit


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def _serve(args) -> int:
    from al_core.labelstudio.server import LabelStudioError, LabelStudioServer

    prog = "al labelstudio serve"
    cfg, status = load_project_or_fail(prog, args.config)
    if cfg is None:
        return status
    try:
        server = LabelStudioServer.for_project(cfg, port=args.port, host=args.host, allow_remote=args.allow_remote)
    except LabelStudioError as e:
        return fail(prog, str(e), Exit.USAGE)
    if sys.platform != "win32":  # SIGTERM stops it as Ctrl-C does
        signal.signal(signal.SIGTERM, _interrupt)
    # Ctrl-C stops it also when it was started with SIGINT ignored or blocked (as a script's background job)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        with server:
            print_safe(server.describe(), flush=True)
            print("Ctrl-C stops it.", flush=True)
            try:
                code = server.proc.wait()
            except KeyboardInterrupt:
                print(f"{prog}: stopping Label Studio", file=sys.stderr)
                return Exit.OK
    except LabelStudioError as e:
        return fail(prog, str(e).splitlines()[0] + f" (log: {server.log_path})")
    return fail(prog, f"Label Studio exited by itself with status {code}; log: {server.log_path}")


def _connected(prog: str, args, action):
    """``action(cfg, store, client)`` run with the store and a checked client; user errors as one line."""
    from al_core.loop.labelstudio_sync import LabelStudioUserError, connect

    def body(cfg, store):
        try:
            client = connect(cfg, args.url)
            return action(cfg, store, client)
        except LabelStudioUserError as e:
            return fail(prog, str(e))

    return run_with_store(prog, args.config, body)


def _push(args) -> int:
    from al_core.loop.labelstudio_sync import push_batch

    def action(cfg, store, client):
        r = push_batch(store, cfg, client)
        rounds = ", ".join(str(x) for x in r["rounds"])
        print_safe(
            f"pushed batch {rounds} to Label Studio project {r['project_id']} ({r['title']!r}) at {r['url']}: "
            f"{r['imported']} task(s) imported, {r['already_there']} already there"
        )
        print_safe(f"  label at {r['url']}/projects/{r['project_id']}/data")

    return _connected("al labelstudio push", args, action)


def _pull(args) -> int:
    from al_core.loop.labelstudio_sync import pull_annotations

    def action(cfg, store, client):
        r = pull_annotations(cfg, client, export_type=args.format)
        if r["file"] is None:
            print_safe(
                f"nothing new in Label Studio project {r['project_id']} ({r['annotations']} annotation(s), "
                "all pulled before)"
            )
        else:
            print_safe(
                f"pulled {r['new_or_updated']} new or updated annotation(s) of {r['annotations']} as "
                f"{r['format']} into {r['file']}; the inbox sensor ingests it"
            )

    return _connected("al labelstudio pull", args, action)


def build_parser() -> argparse.ArgumentParser:
    from al_core.config.schema import LABEL_STUDIO_EXPORT_FORMATS
    from al_core.labelstudio.server import HOST

    ap = argparse.ArgumentParser(
        prog="al labelstudio", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    serve = add_config_option(sub.add_parser("serve", help="run the project's own Label Studio until Ctrl-C"))
    serve.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    serve.add_argument("--host", default=HOST, help=f"address to bind (default {HOST})")
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host that is not a loopback address (anyone who reaches it can sign in)",
    )
    for name, help_ in (
        ("push", "create or update the Label Studio project and import the open batch"),
        ("pull", "write new annotations into the inbox"),
    ):
        p = add_config_option(sub.add_parser(name, help=help_))
        p.add_argument(
            "--url",
            default=None,
            help="a team's Label Studio (default: label_studio.url, else the "
            "project's own `al labelstudio serve`); token from "
            "$LABEL_STUDIO_API_KEY (label_studio.token_env)",
        )
        if name == "pull":
            p.add_argument(
                "--format",
                choices=LABEL_STUDIO_EXPORT_FORMATS,
                default=None,
                help="export format written into the inbox (default: label_studio.pull_format)",
            )
    return ap


def main(argv: list[str]) -> int:
    ap = build_parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else Exit.USAGE
    if not args.command:
        ap.print_help(sys.stderr)
        return Exit.USAGE
    return int({"serve": _serve, "push": _push, "pull": _pull}[args.command](args))
