"""The inbox: which label files are ready to read, what they are validated against, and what a sensor tick sees.

A label file is validated with ``parse_label_file`` against ``validation_inputs(cfg, store)``: the inbox
sensor (``look_at_inbox``), the round run (``al_core.loop.ingest_labels``) and ``al labels check`` all call it,
so all three judge a file by the same classes and the same known images.
"""

import datetime as _dt
import hashlib
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from al_core.catalogue import images, info
from al_core.catalogue import labels as labels_q
from al_core.catalogue import requests as requests_q
from al_core.config import ConfigError, ProjectConfig
from al_core.files.hashing import DATABASE_ID_CHARS, RUN_KEY_DIGEST_CHARS
from al_core.labels.names import ImageNames
from al_core.loop.errors import ValidationUnavailable
from al_core.loop.outbox import image_names_root
from al_core.loop.state import LoopState, loop_state, pending_work

INBOX_SUFFIXES = (".csv", ".jsonl", ".json")
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")
ERROR_REPORT_SUFFIX = ".errors.json"  # beside a rejected file; never read as a label file
EVAL_FOLDER = "eval"  # inbox/eval/: labels for the evaluation set, not for training
ACCEPTED_FOLDER, REJECTED_FOLDER = "accepted", "rejected"  # inbox/accepted/, inbox/rejected/: ingested files
PROJECT_FOLDERS = (ACCEPTED_FOLDER, REJECTED_FOLDER, EVAL_FOLDER)  # the inbox's own sub-folders
# A modification time further than this in the future is not believed (a wrong clock, or set by hand): the file's
# change time (set by the kernel, never by the writer) settles and orders it instead.
FUTURE_MTIME_TOLERANCE_S = 5.0
SHOWN_ENTRIES = 10  # entries named in a sensor message (waiting, ignored, refused) before "and N more"


@dataclass(frozen=True)
class Refused:
    """An inbox entry with a label-file name that is never read: a link, FIFO, socket, device or folder, or a
    name that is not UTF-8. A round run records it (``label_files`` status rejected, with ``reason``) and moves
    it, never followed, into inbox/rejected/."""

    path: Path
    name: str  # printable (al_core.files.safe.printable_name)
    reason: str
    identity: str  # name and inode: part of the sensor's run key

    @property
    def is_eval(self) -> bool:
        return self.path.parent.name == EVAL_FOLDER


@dataclass
class InboxSurvey:
    """What one look at the inbox (and inbox/eval/) found, every entry accounted for."""

    ready: list[Path] = field(default_factory=list)  # settled label files, by (mtime_ns, name)
    refused: list[Refused] = field(default_factory=list)
    waiting: list[tuple[str, str]] = field(default_factory=list)  # (name, why): still being written
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (name, why): not label files, left alone
    notes: list[str] = field(default_factory=list)  # said about ready files (a modification time in the future)
    sizes: dict = field(default_factory=dict)  # ready path -> (size, mtime_ns, inode) at the look

    def describe(self) -> str:
        """The entries that are not ready, in words (empty when there are none)."""
        parts = []
        for what, items in (
            ("refused", [(r.name, r.reason) for r in self.refused]),
            ("waiting", self.waiting),
            ("ignored", self.ignored),
        ):
            if items:
                shown = "; ".join(f"{n} ({why})" for n, why in items[:SHOWN_ENTRIES])
                more = f"; and {len(items) - SHOWN_ENTRIES} more" if len(items) > SHOWN_ENTRIES else ""
                parts.append(f"{len(items)} {what}: {shown}{more}")
        return ". ".join(parts)


def _label_name(low: str) -> bool:
    return low.endswith(INBOX_SUFFIXES) and not low.endswith(ERROR_REPORT_SUFFIX)


def _look(folder: Path, rel: str, survey: InboxSurvey, settle_s: float, t: float, *, top: bool) -> None:
    """Account for every entry of ``folder`` (shown as ``rel``NAME) in ``survey``; never follows a link."""
    from al_core.files.safe import is_utf8_name, kind_of, printable_name

    ready = []
    with os.scandir(folder) as it:
        entries = list(it)
    for e in entries:
        name, shown = e.name, rel + printable_name(e.name)
        if name.startswith("."):
            continue  # hidden: a temporary being written (write there, then rename)
        try:
            st = e.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # gone meanwhile
        kind = kind_of(st.st_mode)
        if top and name in PROJECT_FOLDERS:
            if kind != "folder":
                survey.ignored.append(
                    (
                        shown,
                        f"a {kind} where the inbox's {name}/ folder belongs: never followed; "
                        "the next round run sets it aside",
                    )
                )
            continue
        low = name.lower()
        if not is_utf8_name(name):
            if _label_name(low) or kind == "regular file":
                survey.refused.append(
                    Refused(
                        Path(e.path),
                        shown,
                        "its name is not valid UTF-8: rename it and deliver it again",
                        f"{shown}:{st.st_ino}",
                    )
                )
            else:
                survey.ignored.append((shown, f"a {kind} with a name that is not UTF-8"))
            continue
        if low.endswith(IGNORED_SUFFIXES):
            survey.waiting.append((shown, "a temporary name: still being written"))
            continue
        if not _label_name(low):
            survey.ignored.append((shown, f"a {kind}, not a label file ({', '.join(INBOX_SUFFIXES)})"))
            continue
        if kind != "regular file":
            survey.refused.append(
                Refused(
                    Path(e.path),
                    shown,
                    f"a {kind} with a label-file name: never followed or read",
                    f"{shown}:{st.st_ino}",
                )
            )
            continue
        mtime_ns = st.st_mtime_ns
        if st.st_mtime > t + FUTURE_MTIME_TOLERANCE_S:
            survey.notes.append(
                f"{shown}: modification time {_dt.datetime.fromtimestamp(st.st_mtime, _dt.UTC)} "
                "is in the future; its change time settles and orders it"
            )
            mtime_ns = min(st.st_ctime_ns, int(t * 1e9))
        if t - mtime_ns / 1e9 < settle_s:
            survey.waiting.append((shown, f"modified less than {settle_s:g} s ago: still being written?"))
            continue
        ready.append((mtime_ns, name, Path(e.path)))
        survey.sizes[Path(e.path)] = (st.st_size, st.st_mtime_ns, st.st_ino)
    survey.ready += [p for _, _, p in sorted(ready)]


def survey_inbox(inbox: Path, settle_s: float = 2.0, now_s: float | None = None) -> InboxSurvey:
    """Every entry of ``inbox`` and of ``inbox/eval/`` accounted for (ready, refused, waiting or ignored).

    The rule for a file still being written: names starting with '.' or ending
    in .tmp/.part/... are never read (write there, then rename), and a file
    modified less than ``settle_s`` seconds ago is left for the next tick. A
    folder, link, FIFO, socket or device with a label-file name, and any file
    whose name is not UTF-8, is refused (``Refused``). inbox/eval/ is looked at
    only when it is a real folder.
    """
    survey = InboxSurvey()
    if not inbox.is_dir():
        return survey
    t = time.time() if now_s is None else now_s
    _look(inbox, "", survey, settle_s, t, top=True)
    ev = inbox / EVAL_FOLDER
    try:
        is_dir = stat.S_ISDIR(os.lstat(ev).st_mode)
    except FileNotFoundError:
        is_dir = False
    if is_dir:
        _look(ev, f"{EVAL_FOLDER}/", survey, settle_s, t, top=False)
    return survey


def list_inbox(inbox: Path, settle_s: float = 2.0, now_s: float | None = None) -> list[Path]:
    """The label files of ``inbox`` ready to read, ordered by (mtime_ns, name) (``survey_inbox``'s ready files
    of the folder itself)."""
    return [p for p in survey_inbox(inbox, settle_s, now_s).ready if p.parent == inbox]


def pending_files(cfg: ProjectConfig) -> list[Path]:
    """The settled label files of the inbox, then of inbox/eval/ (``survey_inbox`` with ``sensor.settle_s``)."""
    return survey_inbox(cfg.inbox, cfg.sensor.settle_s).ready


def validation_inputs(cfg: ProjectConfig, store) -> tuple[tuple[str, ...], ImageNames]:
    """(classes, known images) a label file is validated against, with short read-only connections.

    The classes are the project's (``cfg.class_names(store)``); the known images
    are every image with a readable path (``catalogue.images.ok_image_paths``), named by sha256 id, by path
    relative to the image root (``image_names_root``) or by a unique file name (al_core.labels.names).
    Raises ValidationUnavailable with the reason: ClassListChanged when labels
    use a class the list no longer has (al_core.loop.class_changes).
    """
    from al_core.catalogue import StoreError
    from al_core.loop.class_changes import check_labelled_classes

    try:
        with store.connect(read_only=True, view=False) as con:
            known = ImageNames(images.ok_image_paths(con), image_names_root(cfg))
        classes = cfg.class_names(store)
        check_labelled_classes(store, classes)
    except (StoreError, ConfigError) as e:
        raise ValidationUnavailable(str(e)) from e
    return classes, known


# ----------------------------------------------------------------------------- a sensor tick
# What one sensor tick reads of label files to validate them: past it, the remaining files are passed to the run
# unvalidated (the run validates every file). Dagster gives a tick 60 s; validating costs about 17 s per 1 M CSV
# rows of ~90 B (docs/reliability.md), so 128 MiB is about 25 s. A file over MAX_FILE_BYTES is never read by a tick:
# it is rejected by its size.
SENSOR_READ_BUDGET_BYTES = 128 << 20


@dataclass
class PendingFile:
    """A label file waiting in the inbox, validated as the round run will validate it (``parsed`` None: not read
    at this tick, ``note`` says why)."""

    path: Path
    sha256: str  # of every byte the validation read; "" when not read
    parsed: object | None  # al_core.labels.ParsedLabels
    identity: str = ""  # size, mtime and inode at the look: the run key of a file not read
    note: str | None = None


@dataclass
class InboxView:
    """What the inbox sensor needs at one tick, read in one short look at the database and the inbox."""

    state: LoopState
    has_embeddings: bool
    database_id: str  # DATABASE_ID_CHARS of the database's id: run keys of two projects never collide
    n_label_files: int  # label_files rows: part of every run key, so a re-delivery after an ingestion gets a new key
    requests: list[tuple[str, str, str | None]]  # open CLI requests: (request_id, kind, arg)
    pending: str | None  # the work a round run owes with no file delivered (state.pending_work)
    files: list[PendingFile] = field(default_factory=list)
    survey: InboxSurvey = field(default_factory=InboxSurvey)

    def files_digest(self) -> str:
        """RUN_KEY_DIGEST_CHARS of a digest of the pending files' paths and bytes (size, mtime and inode for a file
        not read) and of the refused entries (part of the run key)."""
        digest = hashlib.sha256()
        for f in self.files:
            digest.update(os.fsencode(f.path) + f"\0{f.sha256 or f.identity}\n".encode())
        for r in self.survey.refused:
            digest.update(f"refused\0{r.identity}\n".encode())
        return digest.hexdigest()[:RUN_KEY_DIGEST_CHARS]


def _pending(paths: list[Path], survey: InboxSurvey, validate) -> list[PendingFile]:
    """Validate the ready files until SENSOR_READ_BUDGET_BYTES are spent; each file is read once."""
    from al_core.labels import MAX_FILE_BYTES

    out, budget = [], SENSOR_READ_BUDGET_BYTES
    for p in paths:
        size, mtime_ns, ino = survey.sizes.get(p, (0, 0, 0))
        identity = f"{size}:{mtime_ns}:{ino}"
        if size > MAX_FILE_BYTES:
            out.append(
                PendingFile(
                    p,
                    "",
                    None,
                    identity,
                    f"{size} bytes, over the {MAX_FILE_BYTES}-byte limit (MAX_FILE_BYTES): the run rejects it unread",
                )
            )
        elif size > budget:
            out.append(
                PendingFile(
                    p,
                    "",
                    None,
                    identity,
                    f"not validated at this tick (over the tick's "
                    f"{SENSOR_READ_BUDGET_BYTES}-byte read budget); the run "
                    "validates it",
                )
            )
        else:
            budget -= size
            parsed = validate(p)
            out.append(PendingFile(p, parsed.sha256, parsed, identity))
    return out


def look_at_inbox(store, cfg: ProjectConfig) -> InboxView:
    """Read the loop's state and the open requests, and validate the pending label files (before the seed pool
    exists, files are not looked at). Raises StoreError (busy or unreadable database) or ValidationUnavailable."""
    from al_core.labels import parse_label_file

    with store.connect(read_only=True, view=False) as con:
        view = InboxView(
            state=loop_state(con, cfg),
            has_embeddings=info.has_asset_output(con, "embeddings"),
            database_id=(info.database_id(con) or "db")[:DATABASE_ID_CHARS],
            n_label_files=labels_q.count_label_files(con),
            requests=requests_q.open_requests(con),
            pending=pending_work(con, cfg),
        )
    if view.state.last_round is None:
        return view
    view.survey = survey_inbox(cfg.inbox, cfg.sensor.settle_s)
    if view.survey.ready:
        classes, known = validation_inputs(cfg, store)
        view.files = _pending(
            view.survey.ready,
            view.survey,
            lambda p: parse_label_file(
                p, classes=classes, known_image_ids=known, skip_label=cfg.labels.skip_label, root=cfg.inbox
            ),
        )
    return view
