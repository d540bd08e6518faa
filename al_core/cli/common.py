"""What the `al` commands share: the ``--config`` option, arguments declared as data (``arg``, ``add_arguments``)
and running a command against the project's store, with every failure turned into a one-line message and a status
of the one table, al_core.cli.exit_codes.Exit.

- a project file that is missing or invalid (ConfigError, also one met while running, such as no class
  list): Exit.USAGE;
- the database locked by another process for the whole ``store.lock_timeout_s``: Exit.LOCKED (retryable;
  the message names the setting);
- any other problem with the store or the data (StoreError, LookupError, ValueError, OSError,
  RuntimeError): Exit.FAILED.

Text from outside (annotator names, notes, file names, labels, paths, error
previews) is inert where it is printed: ``terminal_safe`` shows every character
a terminal would act on as an escape (``\\x1b``, ``\\u202e``), ``print_safe``
prints our own multi-line text with it, and ``json_safe`` writes JSON whose
strings carry such characters only as ``\\u`` escapes. Every command prints
through them.
"""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from collections.abc import Callable

from al_core.cli.exit_codes import Exit

CONFIG_HELP = "project file (default: $AL_CONFIG, else ./al.yaml in this folder)"


def add_config_option(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--config PATH`` (CONFIG_HELP) to ``ap``; return ``ap``."""
    ap.add_argument("--config", metavar="PATH", default=None, help=CONFIG_HELP)
    return ap


def arg(*flags: str, **options) -> tuple[tuple[str, ...], dict]:
    """One argument of a command declared as data: ``add_argument(*flags, **options)`` (``add_arguments``)."""
    return flags, options


def add_arguments(ap: argparse.ArgumentParser, arguments) -> argparse.ArgumentParser:
    """``ap.add_argument(*flags, **options)`` for each (flags, options) of ``arguments`` (``arg``); return ``ap``."""
    for flags, options in arguments:
        ap.add_argument(*flags, **options)
    return ap


# Characters a terminal acts on: C0 and C1 controls and DEL (category Cc: escape sequences, carriage return,
# bell, backspace), format characters (Cf: bidi overrides, zero-width), line and paragraph separators, and lone
# surrogates (bytes of a name that were not UTF-8).
_ACTIVE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def _escape(ch: str) -> str:
    o = ord(ch)
    if 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{o - 0xDC00:02x}"
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def terminal_safe(text, *, keep_newlines: bool = False) -> str:
    """``text`` (any value; None is '') with every character a terminal would act on written as an escape
    (``\\x1b``, ``\\x07``, ``\\u202e``): printed, it can set no title, clear no screen, move no cursor and
    reverse no text. ``keep_newlines``: line breaks stay (our own multi-line output)."""
    s = "" if text is None else str(text)
    if s.isascii() and s.isprintable():
        return s
    return "".join(
        ch if (ch == "\n" and keep_newlines) or unicodedata.category(ch) not in _ACTIVE_CATEGORIES else _escape(ch)
        for ch in s
    )


def print_safe(text, *, file=None, flush: bool = False) -> None:
    """Print ``text`` through ``terminal_safe`` (line breaks kept)."""
    print(terminal_safe(text, keep_newlines=True), file=sys.stdout if file is None else file, flush=flush)


def json_safe(obj, **kw) -> str:
    """``json.dumps(obj, ensure_ascii=False, **kw)`` with every character a terminal acts on written as a
    ``\\uXXXX`` escape (JSON escapes C0 controls itself; C1 controls, bidi and format characters it leaves raw)."""
    text = json.dumps(obj, ensure_ascii=False, **kw)
    if text.isascii():
        return text
    return "".join(
        f"\\u{ord(ch):04x}" if ord(ch) > 0x7E and unicodedata.category(ch) in _ACTIVE_CATEGORIES else ch for ch in text
    )


def fail(prog: str, message: str, status: Exit = Exit.FAILED) -> Exit:
    """Print ``prog: message`` on stderr (``terminal_safe``); return ``status``."""
    print(terminal_safe(f"{prog}: {message}"), file=sys.stderr)
    return status


def locked_message(store, cfg) -> str:
    where = cfg.source_file or "the defaults (no project file)"
    return (
        f"the database {store.db_path} is locked by another process (a loop run writing?) and stayed "
        f"locked for the whole retry window of {store.lock_timeout_s:g} s, the setting store.lock_timeout_s "
        f"(from {where}). The command stopped there, nothing half-written; retry in a moment, or raise "
        "store.lock_timeout_s."
    )


def announce_project(prog: str, cfg, config_path: str | None) -> None:
    """The first line of every command (stderr): which project file it follows, and how it was found.

    The repository's own demo file, found only because the command ran in the
    repository's folder, is named as such: forgetting $AL_CONFIG must not go unnoticed.
    """
    from al_core.config import config_origin
    from al_core.config.schema import DEMO_PROJECT_NAME

    origin = config_origin(config_path)
    line = f"{prog}: project {cfg.name!r} from {cfg.source_file} ({origin})"
    if cfg.name == DEMO_PROJECT_NAME and origin != "--config":
        line += "; this is the demo's project file: set $AL_CONFIG or --config for your own project"
    print(terminal_safe(line), file=sys.stderr)


def load_project_or_fail(prog: str, config_path: str | None):
    """(cfg, None) after announcing the project, or (None, Exit.USAGE) after a one-line message."""
    from al_core.config import ConfigError, load_config

    try:
        cfg = load_config(config_path)
    except (ConfigError, OSError) as e:
        return None, fail(prog, f"cannot read the project file: {e}", Exit.USAGE)
    announce_project(prog, cfg, config_path)
    return cfg, None


def run_with_store(
    prog: str,
    config_path: str | None,
    body: Callable,
    *,
    usage_errors: tuple[type[BaseException], ...] = (),
    creates_database: bool = False,
) -> int:
    """Load the project file, open its store, return ``body(cfg, store)`` (None: Exit.OK).

    Failures become a message on stderr and a status (module docstring);
    exceptions in ``usage_errors`` (a wrong argument found while running) give
    Exit.USAGE. Unless ``creates_database`` (al ingest), a project without a
    database yet is Exit.FAILED with the command that makes one: no command
    creates an empty database by accident.
    """
    from al_core.catalogue import open_store
    from al_core.catalogue.store import StoreError, StoreLockedError
    from al_core.config import ConfigError

    cfg, status = load_project_or_fail(prog, config_path)
    if cfg is None:
        return status
    if not creates_database and not cfg.db_path.exists():
        return fail(prog, f"project {cfg.name!r} has no database yet ({cfg.db_path}): run `al ingest` first")
    store = open_store(cfg)
    try:
        return int(Exit.OK if (status := body(cfg, store)) is None else status)
    except StoreLockedError:
        return fail(prog, locked_message(store, cfg), Exit.LOCKED)
    except (ConfigError, *usage_errors) as e:
        return fail(prog, str(e), Exit.USAGE)
    except StoreError as e:  # includes AuditError and SchemaVersionError
        return fail(prog, str(e))
    except (LookupError, ValueError, OSError, RuntimeError) as e:
        return fail(prog, f"{type(e).__name__}: {e}")
