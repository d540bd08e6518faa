"""`make ui`: the Dagster UI and daemon, with the UI refusing requests for any host but its own.

The risk (DNS rebinding): the UI's GraphQL API has no authentication and can
launch runs, wipe assets and edit schedules. Bound to 127.0.0.1 it cannot be
reached from another machine, but a web page the user visits can: the page's
own host name is made to resolve to 127.0.0.1, and the browser then sends the
page's requests to the UI, with the page's name in the ``Host`` header.
dagster-webserver (1.13) answers any ``Host`` header and has no setting to
restrict it (its CLI has no allowed-hosts option; its app adds no such
middleware). So the UI runs here as dagster-webserver's own application
wrapped in ``HostGuard``, an ASGI middleware in the only server that listens:
a request (HTTP or websocket, which the UI uses for live updates) whose
``Host`` is not the bound address, ``localhost`` or ``127.0.0.1`` with the
port (plus ``[::1]`` on IPv6 loopback, and the names in $AL_UI_ALLOWED_HOSTS)
is refused with 403 before it reaches the application. A proxy in front
would not do: the webserver behind it would listen on a loopback port of its
own that a rebound page could reach directly.

    python -m al_assets.tools.ui -h 127.0.0.1 -p 3000 -w workspace.yaml

starts ``dagster-daemon run`` (sensors, schedules, the run queue) and the
guarded webserver (``--webserver-only`` runs just the latter), and stops both
on Ctrl-C or SIGTERM. Their output (and their runs') goes whole to
``$DAGSTER_HOME/ui-console.log``; the terminal shows the runs' own lines,
warnings and errors, no line more often than every 30 s
(al_assets.tools.console).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from al_assets.tools.console import ConsoleTee
from al_core.files.processes import stop_group

ALLOWED_HOSTS_ENV = "AL_UI_ALLOWED_HOSTS"  # extra host[:port] names, comma-separated (e.g. behind a reverse proxy)
LOOPBACK_NAMES = ("localhost", "127.0.0.1")
STOP_TIMEOUT_S = 20  # SIGTERM stops the webserver and the daemon in a few seconds
CONSOLE_LOG_NAME = "ui-console.log"  # every line the daemon, the webserver and their runs print (the last one .1)


def _unspecified(bind: str) -> bool:
    """Whether ``bind`` is the any-address (every interface), which names no host."""
    try:
        return not bind or ipaddress.ip_address(bind).is_unspecified
    except ValueError:
        return False  # a host name


def allowed_hosts(bind: str, port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """The ``Host`` header values the UI answers: the bound address (unless a wildcard), ``localhost`` and
    ``127.0.0.1`` (``[::1]`` when bound to ``::1``), each with ``:port``; and each of ``extra`` as given (a name
    without a port gets ``:port``). Lower case."""
    names = {*LOOPBACK_NAMES}
    if not _unspecified(bind):
        names.add(f"[{bind}]" if ":" in bind else bind)
    out = {f"{n}:{port}".lower() for n in names}
    for e in extra:
        e = e.strip().lower()
        if e:
            out.add(e if e.rsplit(":", 1)[-1].isdigit() and not e.endswith("]") else f"{e}:{port}")
    return frozenset(out)


class HostGuard:
    """ASGI middleware: HTTP and websocket requests whose ``Host`` header is not in ``allowed`` get 403 and never
    reach ``app`` (lifespan events pass through)."""

    def __init__(self, app, allowed: Iterable[str]):
        self.app, self.allowed = app, frozenset(h.lower() for h in allowed)

    def _host(self, scope) -> str:
        for k, v in scope.get("headers") or ():
            if k == b"host":
                return v.decode("latin-1").strip().lower()
        return ""

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or self._host(scope) in self.allowed:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":  # closing before accepting: the server answers the handshake with 403
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        body = (
            b"al-pipeline UI: refused, this request names another host (DNS rebinding protection); open the "
            b"UI by its own address, e.g. http://127.0.0.1:PORT\n"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _extra_hosts() -> list[str]:
    return [h for h in os.environ.get(ALLOWED_HOSTS_ENV, "").split(",") if h.strip()]


def run_webserver(host: str, port: int, workspace: str) -> int:
    """dagster-webserver on ``host:port`` with its application wrapped in HostGuard (blocks until stopped)."""
    import dagster_webserver.cli as web

    make_app = web.create_app_from_workspace_process_context
    allowed = allowed_hosts(host, port, _extra_hosts())

    def guarded(*a, **kw):
        return HostGuard(make_app(*a, **kw), allowed)

    web.create_app_from_workspace_process_context = guarded
    with contextlib.suppress(KeyboardInterrupt):
        web.cli.main(
            args=["-h", host, "-p", str(port), "-w", workspace],
            prog_name="dagster-webserver",
            auto_envvar_prefix="DAGSTER_WEBSERVER",
            standalone_mode=False,
        )
    return 0


def console_log_path() -> Path:
    """Where every line of the daemon, the webserver and their runs goes: $DAGSTER_HOME/CONSOLE_LOG_NAME (the
    Makefile sets DAGSTER_HOME), else data/CONSOLE_LOG_NAME under the current folder."""
    return (Path(os.environ.get("DAGSTER_HOME") or "data") / CONSOLE_LOG_NAME).absolute()


def prepare_instance() -> None:
    """Open the Dagster instance of $DAGSTER_HOME once, so that its SQLite storage exists before the daemon and
    the webserver start: two processes creating a fresh storage at the same moment both stamp its schema
    version, and every later open fails ("Version table 'alembic_version' has more than one head present")."""
    if not os.environ.get("DAGSTER_HOME"):
        return  # no home: Dagster's own error, from the daemon, names it
    import dagster as dg

    with dg.DagsterInstance.get():
        pass


def _stop(proc: subprocess.Popen) -> None:
    stop_group(proc, STOP_TIMEOUT_S)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="al_assets.tools.ui", add_help=False, description=__doc__)
    ap.add_argument("--help", action="help")
    ap.add_argument("-h", "--host", default="127.0.0.1")
    ap.add_argument("-p", "--port", type=int, default=3000)
    ap.add_argument("-w", "--workspace", default="workspace.yaml")
    ap.add_argument("--webserver-only", action="store_true", help="run the guarded webserver, no daemon")
    args = ap.parse_args(argv)
    if args.webserver_only:
        return run_webserver(args.host, args.port, args.workspace)
    bin_dir = os.path.dirname(sys.executable)
    console = ConsoleTee(console_log_path(), sys.stdout)
    console.say(
        f"al-pipeline UI on http://{args.host}:{args.port} (requests for other host names are refused); "
        f"Ctrl-C stops it. Shown here: the runs' own lines, warnings and errors; every Dagster line (debug "
        f"events, sensor ticks) in {console.log_path}"
    )
    prepare_instance()
    piped = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "start_new_session": True}
    daemon = subprocess.Popen([os.path.join(bin_dir, "dagster-daemon"), "run", "-w", args.workspace], **piped)
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "al_assets.tools.ui",
            "--webserver-only",
            "-h",
            args.host,
            "-p",
            str(args.port),
            "-w",
            args.workspace,
        ],
        **piped,
    )
    for p in (daemon, web):
        console.pump(p.stdout)
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop["now"] and web.poll() is None and daemon.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                web.wait(timeout=1)
    except KeyboardInterrupt:
        pass
    finally:
        _stop(web)
        _stop(daemon)
        console.close(STOP_TIMEOUT_S)
    return 0 if stop["now"] or web.returncode in (0, -signal.SIGTERM) else 1


if __name__ == "__main__":
    sys.exit(main())
