"""Start and stop a real Label Studio server for a project (docs/label-studio.md).

``LabelStudioServer(data_dir, image_root)`` is a context manager: it starts ``label-studio start`` from its own
virtual environment (``make labelstudio``) in a new process group,

- bound to 127.0.0.1 (``--internal-host``; ``--host`` would only set the URL prefix), on the given or a free port;
  another address only with ``allow_remote=True`` (``al labelstudio serve --host ADDR --allow-remote``);
- with its database, media and secret key under ``data_dir`` (a project's ``<data_dir>/label-studio``);
- with local file serving on, and ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT`` the image root's PARENT folder, as Label
  Studio documents it (a Local Files storage on the image root then serves every image below it);
- with a first account (email, password, API token; passed in the environment, not on the command line) created on
  the first start and kept in ``account.json`` beside the database (mode 0600), so a restart reuses it;
  ``--enable-legacy-api-token`` makes ``Authorization: Token`` work; sign-up without the organisation's invite link
  is off;
- refusing to start a second server on a data folder whose ``label-studio.pid`` names a live process group;
- without talking to the internet: the version check, analytics and error reports are off;
- with ``task_files`` (the default here), a Local Files target storage writes one ``<task id>.json`` per task (the
  task with all its annotations, annotators as objects with their email) and rewrites it on every Submit or Update
  (``FUTURE_SAVE_TASK_TO_STORAGE``); Label Studio's own default, kept with ``task_files=False``, writes one file per
  annotation named by the annotation id, without an extension (docs/label-studio.md, "Target storage").

It waits until ``/health`` answers and the token is accepted, writes the process group id to
``label-studio.pid`` and its URL to ``label-studio.url`` (so ``al labelstudio push/pull`` find the project's own
server), and ``describe()`` gives the URL and the account.
On exit it stops the whole process group (SIGTERM, then SIGKILL after STOP_TIMEOUT_S), also when the block failed.
"""

import contextlib
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from al_core.files.atomic import atomic_write_text
from al_core.labelstudio.urls import document_root_for

START_TIMEOUT_S = 180  # migrations on a fresh database took ~25 s here on an idle 2-core machine; minutes under load
STOP_TIMEOUT_S = 20  # SIGTERM stops Django's runserver in well under a second
POLL_S = 0.5  # between two /health probes while starting
HOST = "127.0.0.1"
DEFAULT_EMAIL = "admin@example.com"  # a normal-looking address: Label Studio's login form rejects odd ones (a@b.c)
LS_VENV_NAME = ".venv-labelstudio"  # `make labelstudio` installs label-studio here, beside the project's .venv
EXECUTABLE_ENV = "AL_LABEL_STUDIO_BIN"  # overrides where the `label-studio` executable is
ACCOUNT_FILE = "account.json"
LOG_FILE = "label-studio.log"
PID_FILE = "label-studio.pid"  # the process group id while it runs: `kill -TERM -- -$(cat ...)` stops it
URL_FILE = "label-studio.url"  # its URL while it runs: `al labelstudio push|pull` find the local server by it

# Inherited variables Label Studio would read instead of our settings (it reads NAME, LABEL_STUDIO_NAME and
# HEARTEX_NAME): a shell's USERNAME, HOST or PORT must not become the account, the URL prefix or the port.
_SHADOWING = (
    "HOST",
    "PORT",
    "USERNAME",
    "PASSWORD",
    "USER_TOKEN",
    "DATABASE_NAME",
    "DJANGO_DB",
    "BASE_DATA_DIR",
    "LOCAL_FILES_SERVING_ENABLED",
    "LOCAL_FILES_DOCUMENT_ROOT",
    "DISABLE_SIGNUP_WITHOUT_LINK",
    "FUTURE_SAVE_TASK_TO_STORAGE",
    "FUTURE_SAVE_TASK_TO_STORAGE_JSON_EXT",
)


class LabelStudioError(RuntimeError):
    """Label Studio is not installed, did not start, or stopped."""


@dataclass(frozen=True)
class Account:
    email: str
    password: str
    token: str


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def running_pid(data_dir: str | Path) -> int | None:
    """The process group of a Label Studio running on ``data_dir`` (its pid file names a live group), if any."""
    try:
        pid = int((Path(data_dir) / PID_FILE).read_text())
        os.killpg(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    except PermissionError:
        pass
    return pid


def running_url(data_dir: str | Path) -> str | None:
    """The URL of the Label Studio running on ``data_dir`` (``label-studio.url``), or None when none runs."""
    if running_pid(data_dir) is None:
        return None
    try:
        return (Path(data_dir) / URL_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def default_executable() -> Path:
    """``$AL_LABEL_STUDIO_BIN``, else ``.venv-labelstudio/bin/label-studio`` in the checkout holding al_core."""
    if os.environ.get(EXECUTABLE_ENV):
        return Path(os.environ[EXECUTABLE_ENV])
    return Path(__file__).resolve().parents[2] / LS_VENV_NAME / "bin" / "label-studio"


def load_or_create_account(data_dir: Path, email: str = DEFAULT_EMAIL) -> Account:
    """The account of ``data_dir/account.json``, or a new one (random password and 40-hex token) written there."""
    path = Path(data_dir) / ACCOUNT_FILE
    if path.exists():
        return Account(**json.loads(path.read_text()))
    account = Account(email=email, password=secrets.token_urlsafe(18), token=secrets.token_hex(20))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(asdict(account), indent=2) + "\n")
    os.chmod(path, 0o600)
    return account


def server_env(data_dir: Path, document_root: Path, *, task_files: bool = True, extra: dict | None = None) -> dict:
    """The process environment of the server (see the module docstring)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "HEARTEX_")) and k not in _SHADOWING
    }
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(document_root),
        LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
        LABEL_STUDIO_LATEST_VERSION_CHECK="false",
        LABEL_STUDIO_COLLECT_ANALYTICS="false",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
        FUTURE_SAVE_TASK_TO_STORAGE=str(task_files).lower(),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


class LabelStudioServer:
    """A running Label Studio on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        data_dir: str | Path,
        image_root: str | Path,
        *,
        port: int | None = None,
        email: str = DEFAULT_EMAIL,
        task_files: bool = True,
        document_root: str | Path | None = None,
        executable: str | Path | None = None,
        extra_env: dict | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
        host: str = HOST,
        allow_remote: bool = False,
    ):
        if not is_loopback(host) and not allow_remote:
            raise LabelStudioError(
                f"refusing to bind Label Studio to {host}, which is not a loopback address: "
                "anyone who can reach it could sign in or read the images; pass --allow-remote "
                "(allow_remote=True) if that is what you want"
            )
        self.host = host
        self.data_dir = Path(data_dir).absolute()
        self.image_root = Path(image_root).absolute()
        # Label Studio's documented setup: the image folder's parent. A target storage (the inbox) must lie under
        # it too; pass a common ancestor of both when the inbox is elsewhere.
        self.document_root = Path(document_root).absolute() if document_root else document_root_for(self.image_root)
        if self.document_root not in self.image_root.parents:
            raise LabelStudioError(
                f"the document root {self.document_root} must be a parent folder of the images "
                f"{self.image_root} (Label Studio refuses a storage equal to the root)"
            )
        self.task_files = task_files
        # the address this process probes it at (a bind to every interface answers on loopback too)
        probe = HOST if _is_unspecified(host) else host
        self.port = port or free_port(probe)
        self.url = f"http://{'[' + probe + ']' if ':' in probe else probe}:{self.port}"
        self.executable = Path(executable) if executable else default_executable()
        self.email, self.extra_env, self.start_timeout_s = email, extra_env, start_timeout_s
        self.log_path = self.data_dir / LOG_FILE
        self.account: Account | None = None
        self.proc: subprocess.Popen | None = None
        self.started_s: float | None = None  # seconds from Popen until the token was accepted

    @classmethod
    def for_project(cls, cfg, **kwargs) -> "LabelStudioServer":
        """The server of a project: data under ``<data_dir>/label-studio``, images under ``images.root``."""
        if cfg.image_root is None:
            raise LabelStudioError("images.manifest projects have no image folder to serve: set images.root")
        kwargs.setdefault("document_root", cfg.document_root)
        return cls(cfg.data_dir / "label-studio", cfg.image_root, **kwargs)

    def command(self) -> list[str]:
        """The command line (the account goes in the environment, out of `ps`)."""
        return [
            str(self.executable),
            "start",
            "--no-browser",
            "--internal-host",
            self.host,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--enable-legacy-api-token",
            "--log-level",
            "WARNING",
        ]

    def running_pid(self) -> int | None:
        """The process group of a Label Studio already running on this data folder (its pid file), if any."""
        return running_pid(self.data_dir)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "LabelStudioServer":
        if not self.executable.exists():
            raise LabelStudioError(f"Label Studio is not installed at {self.executable}: run `make labelstudio`")
        if not self.image_root.is_dir():
            raise LabelStudioError(f"image root {self.image_root} is not a folder")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if (pid := self.running_pid()) is not None:
            raise LabelStudioError(
                f"a Label Studio already runs on {self.data_dir} (process group {pid}): "
                f"stop it first (kill -TERM -- -{pid})"
            )
        self.account = a = load_or_create_account(self.data_dir, self.email)
        env = server_env(self.data_dir, self.document_root, task_files=self.task_files, extra=self.extra_env)
        # the first account (created on the first start, kept after): Label Studio reads these as --username etc.
        env.update(LABEL_STUDIO_USERNAME=a.email, LABEL_STUDIO_PASSWORD=a.password, LABEL_STUDIO_USER_TOKEN=a.token)
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.data_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        self.started_s = time.monotonic() - t0
        atomic_write_text(self.data_dir / PID_FILE, f"{self.proc.pid}\n")
        atomic_write_text(self.data_dir / URL_FILE, f"{self.url}\n")
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.alive():
                raise LabelStudioError(
                    f"Label Studio exited with {self.proc.returncode} while starting; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        self._check_token()
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                last = str(e)
            time.sleep(POLL_S)
        raise LabelStudioError(
            f"Label Studio did not answer on {self.url} within {self.start_timeout_s:.0f} s "
            f"({last}); log {self.log_path}:\n{self.log_tail()}"
        )

    def _check_token(self) -> None:
        req = urllib.request.Request(
            self.url + "/api/current-user/whoami", headers={"Authorization": f"Token {self.account.token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                who = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise LabelStudioError(
                f"Label Studio at {self.url} refused the token of {self.data_dir / ACCOUNT_FILE} (HTTP {e.code}): "
                "the database was made with another account; move the folder away to start afresh"
            ) from None
        if who.get("email") != self.account.email:
            raise LabelStudioError(f"the token of {self.data_dir / ACCOUNT_FILE} belongs to {who.get('email')}")

    def describe(self) -> str:
        a = self.account
        return (
            f"Label Studio {self.url} (bound to {self.host}; data {self.data_dir})\n"
            f"  log in as {a.email} / {a.password}   API token {a.token}\n"
            f"  local files: document root {self.document_root}, images {self.image_root}"
        )

    def stop(self) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after STOP_TIMEOUT_S."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(STOP_TIMEOUT_S)
        # children left in the group after the leader went (none expected from runserver --noreload)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        (self.data_dir / PID_FILE).unlink(missing_ok=True)
        (self.data_dir / URL_FILE).unlink(missing_ok=True)

    def wait(self) -> int:
        """Block until the server exits (Ctrl-C stops it); the exit status."""
        try:
            return self.proc.wait()
        except KeyboardInterrupt:
            self.stop()
            return self.proc.returncode

    def __enter__(self) -> "LabelStudioServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(data_dir: str | Path, image_root: str | Path, *, echo=print, **kwargs) -> int:
    """Start Label Studio, print the URL and the account, and run until Ctrl-C (``al labelstudio serve`` will call it).

    ``kwargs`` go to LabelStudioServer (port, email, task_files, document_root, ...). SIGTERM stops it as Ctrl-C does.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        # Ctrl-C stops it also when it was started with SIGINT ignored or blocked (as a script's background job)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    server = LabelStudioServer(data_dir, image_root, **kwargs)
    with server:
        echo(server.describe())
        echo("Ctrl-C stops it.")
        return server.wait()
