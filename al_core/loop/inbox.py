"""The inbox: which label files are ready to read, what they are validated against, and what a sensor tick sees.

A label file is validated with ``parse_label_file`` against ``validation_inputs(cfg, store)``: the inbox
sensor (``look_at_inbox``), the round run (``al_core.loop.ingest_labels``) and ``al labels check`` all call it,
so all three judge a file by the same classes and the same known images.
"""

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from al_core.catalogue import images, info
from al_core.catalogue import labels as labels_q
from al_core.catalogue import requests as requests_q
from al_core.config import ConfigError, ProjectConfig
from al_core.files.hashing import DATABASE_ID_CHARS, RUN_KEY_DIGEST_CHARS, sha256_file
from al_core.loop.errors import LoopError
from al_core.loop.state import LoopState, loop_state, pending_work

INBOX_SUFFIXES = (".csv", ".jsonl", ".json")
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")
ERROR_REPORT_SUFFIX = ".errors.json"  # beside a rejected file; never read as a label file
EVAL_FOLDER = "eval"  # inbox/eval/: labels for the evaluation set, not for training
ACCEPTED_FOLDER, REJECTED_FOLDER = "accepted", "rejected"  # inbox/accepted/, inbox/rejected/: ingested files


def list_inbox(inbox: Path, settle_s: float = 2.0, now_s: float | None = None) -> list[Path]:
    """Label files ready to read, ordered by (mtime_ns, name).

    The rule for a file still being written: names starting with '.' or ending
    in .tmp/.part/... are never read (write there, then rename), and a file
    modified less than ``settle_s`` seconds ago is left for the next tick.
    """
    if not inbox.is_dir():
        return []
    t = time.time() if now_s is None else now_s
    out = []
    for e in os.scandir(inbox):
        if not e.is_file(follow_symlinks=False) or e.name.startswith("."):
            continue
        low = e.name.lower()
        if low.endswith(IGNORED_SUFFIXES) or not low.endswith(INBOX_SUFFIXES) or low.endswith(ERROR_REPORT_SUFFIX):
            continue
        st = e.stat(follow_symlinks=False)
        if t - st.st_mtime < settle_s:
            continue
        out.append((st.st_mtime_ns, e.name, Path(e.path)))
    return [p for _, _, p in sorted(out)]


def pending_files(cfg: ProjectConfig) -> list[Path]:
    """The settled label files of the inbox, then of inbox/eval/ (``list_inbox`` with ``sensor.settle_s``)."""
    return (list_inbox(cfg.inbox, cfg.sensor.settle_s)
            + list_inbox(cfg.inbox / EVAL_FOLDER, cfg.sensor.settle_s))


class ValidationUnavailable(LoopError):
    """The inputs a label file is validated against cannot be read (no database yet, a locked or unreadable one,
    no class list): nothing can be judged now."""


def validation_inputs(cfg: ProjectConfig, store) -> tuple[tuple[str, ...], frozenset[str]]:
    """(classes, known image ids) a label file is validated against, with short read-only connections.

    The classes are the project's (``cfg.class_names(store)``); the known images
    are every image with a readable path (``catalogue.images.known_image_ids``).
    Raises ValidationUnavailable with the reason.
    """
    from al_core.catalogue import StoreError

    try:
        with store.connect(read_only=True, view=False) as con:
            known = frozenset(images.known_image_ids(con))
        classes = cfg.class_names(store)
    except (StoreError, ConfigError) as e:
        raise ValidationUnavailable(str(e)) from e
    return classes, known


# ----------------------------------------------------------------------------- a sensor tick
@dataclass
class PendingFile:
    """A label file waiting in the inbox, validated as the round run will validate it."""

    path: Path
    sha256: str
    parsed: object  # al_core.labels.ParsedLabels


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

    def files_digest(self) -> str:
        """RUN_KEY_DIGEST_CHARS of a digest of the pending files' paths and bytes (part of the run key)."""
        digest = hashlib.sha256()
        for f in self.files:
            digest.update(f"{f.path}\0{f.sha256}\n".encode())
        return digest.hexdigest()[:RUN_KEY_DIGEST_CHARS]


def look_at_inbox(store, cfg: ProjectConfig) -> InboxView:
    """Read the loop's state and the open requests, and validate every pending label file (before the seed pool
    exists, files are not looked at). Raises StoreError (busy or unreadable database) or ValidationUnavailable."""
    from al_core.labels import parse_label_file

    with store.connect(read_only=True, view=False) as con:
        view = InboxView(
            state=loop_state(con, cfg),
            has_embeddings=info.has_asset_output(con, "embeddings"),
            database_id=(info.database_id(con) or "db")[:DATABASE_ID_CHARS],
            n_label_files=labels_q.count_label_files(con),
            requests=requests_q.open_requests(con),
            pending=pending_work(con, cfg))
    if view.state.last_round is None:
        return view
    paths = pending_files(cfg)
    if paths:
        classes, known = validation_inputs(cfg, store)
        for p in paths:
            parsed = parse_label_file(p, classes=classes, known_image_ids=known, skip_label=cfg.labels.skip_label)
            view.files.append(PendingFile(p, sha256_file(p), parsed))
    return view
