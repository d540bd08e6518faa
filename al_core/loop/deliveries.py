"""Label files as files: reading a delivery safely, where it is stored, and moving it there.

The inbox is written by other people, so nothing here follows a link or
replaces a file (al_core.files.safe):

- ``read_and_validate`` opens each delivery once without following a link,
  hashes it from that descriptor, and validates it (the parser's second read
  must see the same bytes); a file over MAX_FILE_BYTES, and an entry that is
  not a regular file when opened, is refused unread (recorded as rejected, with
  the reason); a path that is not a file of the inbox or of inbox/eval/ is not
  read at all.
- A delivery keeps its kind: ``Delivery.is_eval`` is true for a file of
  inbox/eval/, and is recorded with it (``label_files.is_eval``) wherever the
  file goes; ``committed_not_moved`` matches a crashed delivery by kind too.
- ``stored_path`` names the place in inbox/accepted/ or inbox/rejected/:
  ``STAMP-SHAPREFIX-NAME``, shortened to fit NAME_MAX with room for the error
  report's suffix, and never a name that is taken.
- ``safe_folders`` makes inbox/accepted/ and inbox/rejected/ real folders
  before anything is committed (a link planted there is set aside);
  ``move_files`` moves after the commit, never replacing a file.
"""

import datetime as _dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from al_core.catalogue import labels as labels_q
from al_core.config import ProjectConfig
from al_core.files.hashing import FILE_PREFIX_CHARS
from al_core.files.safe import (
    NAME_MAX_BYTES,
    UnsafeEntry,
    ensure_dir,
    fit_name,
    move_no_replace,
    numbered,
    open_regular,
    printable_name,
    sha256_of,
)
from al_core.loop.errors import LoopError
from al_core.loop.inbox import ACCEPTED_FOLDER, ERROR_REPORT_SUFFIX, EVAL_FOLDER, REJECTED_FOLDER, Refused

Log = Callable[[str], None]

# A stored name is STAMP-SHAPREFIX-NAME; NAME is shortened so that the name with ERROR_REPORT_SUFFIX and a
# "-NNN" taken-name counter still fits NAME_MAX_BYTES (the whole original name stays in label_files).
STORED_NAME_MAX_BYTES = NAME_MAX_BYTES - len(ERROR_REPORT_SUFFIX) - len("-999")
FREE_NAME_TRIES = 1000  # stored_path: names tried (name, name-1, ..., name-999), within the counter's 4 bytes


@dataclass
class Delivery:
    """A label file as read and validated before the write lock."""

    path: Path
    sha256: str  # "" for an entry that was not read
    parsed: object | None  # ParsedLabels; None when its bytes were already ingested (not parsed again)
    is_eval: bool = False  # delivered into inbox/eval/ (its kind, kept wherever the file goes)

    @property
    def name(self) -> str:
        """The name as recorded and shown (al_core.files.safe.printable_name)."""
        return printable_name(self.path.name)


# ----------------------------------------------------------------------------- names
def _stored_name(name: str, sha: str) -> str:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
    prefix = f"{stamp}-{sha[:FILE_PREFIX_CHARS] or 'unread'}-"
    return prefix + fit_name(printable_name(name), STORED_NAME_MAX_BYTES - len(prefix))


def stored_path(folder: Path, name: str, sha: str, taken: set) -> Path:
    """Where an ingested file is stored: ``folder/STAMP-SHAPREFIX-NAME`` (UTC seconds, FILE_PREFIX_CHARS of its
    sha256, the printable name shortened to fit STORED_NAME_MAX_BYTES), else ``...-1``, ``-2``: the first name
    neither on disk (nor its error report) nor in ``taken``, to which it is added."""
    base = _stored_name(name, sha)
    for i in range(FREE_NAME_TRIES):
        p = folder / numbered(base, i)
        if p not in taken and not os.path.lexists(p) and not os.path.lexists(f"{p}{ERROR_REPORT_SUFFIX}"):
            taken.add(p)
            return p
    raise LoopError(f"no free name for {base} in {folder}")


# ----------------------------------------------------------------------------- reading
def kind_of_path(cfg: ProjectConfig, path: Path) -> bool | None:
    """True for a file of inbox/eval/, False for one of the inbox itself, None for any other path (not read)."""
    parent = Path(os.path.abspath(path)).parent
    if parent == Path(os.path.abspath(cfg.inbox)):
        return False
    return True if parent == Path(os.path.abspath(cfg.inbox / EVAL_FOLDER)) else None


def refusal_report(r: Refused, reason: str):
    """The error report of an entry that was not read: one whole-file error, the reason."""
    from al_core.labels.results import LabelError, ParsedLabels

    return ParsedLabels(r.name, "", None, (), (LabelError(None, None, reason),), 0, ())


def read_and_validate(
    store, cfg: ProjectConfig, files: Sequence, validate: Callable, log: Log
) -> tuple[list[Delivery], list[Refused]]:
    """(deliveries, refused entries) of ``files`` (module docstring). Bytes already ingested are not parsed."""
    from al_core.labels import MAX_FILE_BYTES

    with store.connect(read_only=True, view=False) as con:
        ingested = labels_q.ingested_shas(con)
    out, refused = [], []
    for f in files:
        path = Path(f)
        is_eval = kind_of_path(cfg, path)
        name = printable_name(path.name)
        if is_eval is None:
            log(f"{printable_name(str(path))}: not a file of the inbox or inbox/{EVAL_FOLDER}/: not read")
            continue
        try:
            with open_regular(path, root=cfg.inbox) as fh:
                size = os.fstat(fh.fileno()).st_size
                sha = sha256_of(fh) if size <= MAX_FILE_BYTES else ""
        except FileNotFoundError:
            log(f"{name}: gone before ingestion (already moved by an earlier run?)")
            continue
        except UnsafeEntry as e:
            refused.append(Refused(path, name, f"{e.reason} (when the round run read it)", name))
            continue
        except OSError as e:
            log(f"{name}: cannot be read now ({e.strerror or e}); left in the inbox for the next run")
            continue
        if size > MAX_FILE_BYTES:  # never read: hashing 16 GiB costs minutes, and it would be rejected anyway
            refused.append(
                Refused(
                    path,
                    name,
                    f"{size} bytes, over the {MAX_FILE_BYTES}-byte limit (MAX_FILE_BYTES):"
                    " not read; split it into several deliveries",
                    name,
                )
            )
            continue
        parsed = None
        if sha not in ingested:
            parsed = validate(path)
            if parsed.sha256 != sha:
                log(f"{name}: changed while being read; left in the inbox for the next run")
                continue
        out.append(Delivery(path, sha, parsed, bool(is_eval)))
    return out, refused


def committed_not_moved(hist: list, d: Delivery) -> str | None:
    """The stored path of an earlier delivery of these bytes under this name and of this kind (training or
    evaluation) whose rows were committed but whose file was never moved (a crash between the commit and the
    move, or half-way through the move: the stored name is then this very file), or None.

    ``hist``: (status, stored_path, original_name, is_eval) of the deliveries of these bytes, oldest first."""
    for status, stored, original, is_eval in hist:
        if (
            status in ("accepted", "rejected")
            and stored
            and original == d.name
            and is_eval == d.is_eval
            and (not os.path.lexists(stored) or _same_entry(stored, d.path))
        ):
            return stored
    return None


def _same_entry(a, b) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


# ----------------------------------------------------------------------------- after the commit
def safe_folders(cfg: ProjectConfig, log: Log) -> None:
    """inbox/accepted/ and inbox/rejected/ as real folders (created when missing), and inbox/eval/ a folder or
    absent: an entry planted under one of these names (a link) is set aside, never followed. Called before the
    write transaction, so files are never committed and then left without a safe place to go."""
    if not cfg.inbox.is_dir():
        return  # nothing delivered yet: nothing to move
    for name, create in ((ACCEPTED_FOLDER, True), (REJECTED_FOLDER, True), (EVAL_FOLDER, False)):
        _, aside = ensure_dir(cfg.inbox, name, create=create)
        if aside:
            log(
                f"inbox/{name} was not a folder (a link planted there?): set aside as inbox/{printable_name(aside)}, "
                "never followed" + ("; a new folder made" if create else "")
            )


def move_refused(refused: Sequence[Refused], cfg: ProjectConfig, taken: set, warn: Log) -> list[tuple[Refused, Path]]:
    """Move each refused entry as it is (a link as a link, never followed) into inbox/rejected/ under a free
    stored name; (entry, where it is now) of those moved. One that cannot be moved is reported with ``warn`` and
    left (not recorded: it is refused again by a later run, never recorded twice)."""
    out = []
    for r in refused:
        if not os.path.lexists(r.path):
            continue
        dest = stored_path(cfg.inbox / REJECTED_FOLDER, r.path.name, "", taken)
        try:
            out.append((r, move_no_replace(r.path, dest, root=cfg.inbox)))
        except OSError as e:
            warn(
                f"{r.name}: refused ({r.reason}) but cannot be moved into {REJECTED_FOLDER}/ now ({e}); left where "
                "it is"
            )
    return out


def write_error_reports(reports: Sequence[tuple[object, Path]], cfg: ProjectConfig, warn: Log) -> None:
    """Each (ParsedLabels, path) report, atomically, in a folder of the inbox that is no link (one that cannot be
    written now, e.g. rejected/ swapped for a link after ``safe_folders``, is reported with ``warn``)."""
    from al_core.labels import write_error_report

    for parsed, dest in reports:
        try:
            write_error_report(parsed, dest, within=cfg.inbox)
        except OSError as e:
            warn(
                f"{printable_name(dest.name)}: the error report cannot be written now ({e}); the rejection and its "
                "reason are recorded in label_files"
            )


def move_files(store, moves: Sequence[tuple[Path, Path, str | None]], cfg: ProjectConfig, log: Log, warn: Log) -> None:
    """Move every (source, destination, file_id) to its place, never replacing a file, never following a link.

    A file whose chosen name was taken meanwhile goes under the next free one
    (its error report follows it), and its ``label_files`` row is updated
    (file_id None: nothing to update). One that cannot be moved now stays in the
    inbox: its rows are committed, so a later run recognises it and moves it.
    """
    renamed = []
    for src, dst, file_id in moves:
        if not os.path.lexists(src):  # moved meanwhile by another run that committed the same bytes: nothing to do
            log(f"{printable_name(src.name)}: already moved by another run")
            continue
        try:
            final = move_no_replace(src, dst, root=cfg.inbox)
        except OSError as e:
            warn(
                f"{printable_name(src.name)}: committed, but cannot be moved to {dst.parent.name}/ now "
                f"({e.strerror or e}); it stays in the inbox and a later run moves it"
            )
            continue
        if final != dst:
            renamed.append((file_id, final, dst))
    for file_id, final, dst in renamed:
        report = dst.with_name(dst.name + ERROR_REPORT_SUFFIX)
        if os.path.lexists(report):
            move_no_replace(report, final.with_name(final.name + ERROR_REPORT_SUFFIX), root=cfg.inbox)
        if file_id is not None:
            with store.transaction() as con:
                labels_q.set_stored_path(con, file_id, str(final))
        log(f"{dst.name} was taken: stored as {final.name}")
