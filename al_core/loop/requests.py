"""Changing the loop by hand: close a batch, withdraw a delivery, ask for a file to be ingested again.

``al round next`` and ``al labels retry`` only record a request (``requests``);
the inbox sensor turns it into a round run at its next tick, and the run marks
it done. ``al labels retract`` takes effect at once (from the next round on).
"""

import shutil
import uuid

from al_core.catalogue import labels as labels_q
from al_core.catalogue import now
from al_core.catalogue import requests as requests_q
from al_core.catalogue import rounds as rounds_q
from al_core.config import ProjectConfig
from al_core.files.hashing import MIN_USER_PREFIX_CHARS, sha256_file, short
from al_core.loop.errors import LoopError
from al_core.loop.inbox import ERROR_REPORT_SUFFIX, EVAL_FOLDER, REJECTED_FOLDER
from al_core.loop.state import loop_state

HEX = frozenset("0123456789abcdef")


def close_round(store, round_: int, closed_by: str) -> None:
    """Close batch ``round_`` if it is still open (``closed_by``: 'answered' | 'manual')."""
    with store.transaction() as con:
        rounds_q.close_round(con, round_, closed_by, now())


def _sha_prefix(text: str) -> str:
    prefix = text.strip().lower()
    if len(prefix) < MIN_USER_PREFIX_CHARS or not set(prefix) <= HEX:
        raise LoopError(f"give the file's sha256 (at least {MIN_USER_PREFIX_CHARS} hex digits; "
                        "`al rounds`/the label_files table list them)")
    return prefix


def _find_file(con, sha_prefix: str, statuses: tuple[str, ...]) -> tuple[str, str, str | None]:
    rows = labels_q.label_files_by_prefix(con, sha_prefix, statuses)
    if not rows:
        raise LoopError(f"no label file with sha256 {sha_prefix}... in status {'/'.join(statuses)}")
    if len({r[0] for r in rows}) > 1:
        raise LoopError(f"sha256 prefix {sha_prefix} is ambiguous: {sorted({short(r[0]) for r in rows})}")
    return rows[0]


def retract_file(store, cfg: ProjectConfig, sha_prefix: str, reason: str | None = None) -> dict:
    """Withdraw a whole delivery: its labels leave training from the next round on; the history stays."""
    prefix = _sha_prefix(sha_prefix)
    with store.transaction() as con:
        sha, name, _ = _find_file(con, prefix, ("accepted",))
        st = loop_state(con, cfg)
        n = labels_q.n_labels_of_file(con, sha)
        labels_q.insert_retraction(con, sha, now(), reason, st.label_round)
        labels_q.mark_file_retracted(con, sha, f"retracted: {reason or 'no reason given'}")
    return {"sha256": sha, "file": name, "labels_withdrawn": n, "effective_round": st.label_round}


def request_retry(store, cfg: ProjectConfig, sha_prefix: str) -> dict:
    """Ask the sensor for a new run (new run key) ingesting a file again.

    The file must still be in the inbox (its run failed) or in inbox/rejected/
    (then it is put back into the inbox first, e.g. after its images were ingested).
    """
    want = sha_prefix.strip().lower()
    if len(want) < MIN_USER_PREFIX_CHARS:
        raise LoopError(f"give the file's sha256 (at least {MIN_USER_PREFIX_CHARS} hex digits)")
    found = None
    for folder in (cfg.inbox, cfg.inbox / EVAL_FOLDER, cfg.inbox / REJECTED_FOLDER):
        if not folder.is_dir():
            continue
        found = next((p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.endswith(ERROR_REPORT_SUFFIX)
                      and sha256_file(p).startswith(want)), None)
        if found:
            break
    if found is None:
        raise LoopError(f"no file with sha256 {want}... in {cfg.inbox} or its rejected/ folder")
    if found.parent.name == REJECTED_FOLDER:
        # stored as STAMP-SHAPREFIX-NAME (al_core.loop.ingest_labels): put back under its original name
        original = found.name.split("-", 2)[-1] if found.name.count("-") >= 2 else found.name
        target = cfg.inbox / original
        shutil.move(str(found), str(target))
        found = target
    rid = uuid.uuid4().hex
    with store.transaction() as con:
        requests_q.add_request(con, rid, "retry_file", str(found), now())
    return {"request_id": rid, "file": str(found)}


def request_close_round(store) -> dict | None:
    """Ask the sensor for a round run that closes the open batch whatever its answered share (`al round next`).

    Returns {"request_id", "round"}, or None when no batch is open.
    """
    with store.transaction() as con:
        open_round = rounds_q.latest_open_round(con)
        if open_round is None:
            return None
        rid = uuid.uuid4().hex
        requests_q.add_request(con, rid, "close_round", str(open_round), now())
    return {"request_id": rid, "round": open_round}


def stale_close_request(store, request_id: str, open_round: int | None) -> str | None:
    """The batch a ``close_round`` request asked to close, when that batch is no longer the open one (a request
    queued behind a run that already closed it has nothing to close); None when the request still applies."""
    with store.connect(read_only=True, view=False) as con:
        asked = requests_q.request_arg(con, request_id)
    return None if asked is None or asked == str(open_round) else asked


def finish_request(store, request_id: str, run_id: str | None) -> None:
    """Mark a request done by run ``run_id``."""
    with store.transaction() as con:
        requests_q.finish_request(con, request_id, now(), run_id)
