"""Changing the loop by hand: close a batch, withdraw a delivery, ask for a file to be ingested again.

``al round next`` and ``al labels retry`` only record a request (``requests``);
the inbox sensor turns it into a round run at its next tick, and the run marks
it done. ``al labels retract`` takes effect at once (from the next round on).
"""

import os
import uuid
from pathlib import Path

from al_core.catalogue import labels as labels_q
from al_core.catalogue import now
from al_core.catalogue import requests as requests_q
from al_core.catalogue import rounds as rounds_q
from al_core.config import ProjectConfig
from al_core.files.hashing import MIN_USER_PREFIX_CHARS, short
from al_core.files.safe import ensure_dir, is_regular_file, move_no_replace, open_regular, sha256_of
from al_core.loop.errors import LoopError
from al_core.loop.inbox import EVAL_FOLDER, REJECTED_FOLDER, survey_inbox
from al_core.loop.state import loop_state

HEX = frozenset("0123456789abcdef")


def close_round(store, round_: int, closed_by: str) -> None:
    """Close batch ``round_`` if it is still open (``closed_by``: 'answered' | 'manual')."""
    with store.transaction() as con:
        rounds_q.close_round(con, round_, closed_by, now())


def _sha_prefix(text: str) -> str:
    prefix = text.strip().lower()
    if len(prefix) < MIN_USER_PREFIX_CHARS or not set(prefix) <= HEX:
        raise LoopError(
            f"give the file's sha256 (at least {MIN_USER_PREFIX_CHARS} hex digits; "
            "`al rounds`/the label_files table list them)"
        )
    return prefix


def _find_file(con, sha_prefix: str, statuses: tuple[str, ...]) -> tuple[str, str, str | None]:
    rows = labels_q.label_files_by_prefix(con, sha_prefix, statuses)
    if not rows:
        raise LoopError(f"no label file with sha256 {sha_prefix}... in status {'/'.join(statuses)}")
    if len({r[0] for r in rows}) > 1:
        raise LoopError(f"sha256 prefix {sha_prefix} is ambiguous: {sorted({short(r[0]) for r in rows})}")
    return rows[0]


def retract_file(store, cfg: ProjectConfig, sha_prefix: str, reason: str | None = None) -> dict:
    """Withdraw a whole training delivery: its labels leave training from the next round on; the history stays.

    An evaluation delivery (inbox/eval/) keeps its kind: it is not retracted (its labels label the evaluation
    set, never training); deliver corrected evaluation labels instead.
    """
    prefix = _sha_prefix(sha_prefix)
    with store.transaction() as con:
        sha, name, _ = _find_file(con, prefix, ("accepted",))
        if labels_q.is_eval_delivery(con, sha):
            raise LoopError(
                f"{name} ({short(sha)}) was delivered into inbox/{EVAL_FOLDER}/: its labels label the "
                "evaluation set, not training, so there is nothing to retract; deliver corrected "
                f"labels into inbox/{EVAL_FOLDER}/ (the newest label of an image wins)"
            )
        st = loop_state(con, cfg)
        n = labels_q.n_labels_of_file(con, sha)
        labels_q.insert_retraction(con, sha, now(), reason, st.label_round)
        labels_q.mark_file_retracted(con, sha, f"retracted: {reason or 'no reason given'}")
    return {"sha256": sha, "file": name, "labels_withdrawn": n, "effective_round": st.label_round}


def _waiting_file(cfg: ProjectConfig, prefix: str) -> Path | None:
    """A label file still in the inbox or inbox/eval/ (its run failed) whose sha256 starts with ``prefix``:
    regular files only, opened without following a link."""
    for p in survey_inbox(cfg.inbox, settle_s=0.0).ready:
        try:
            with open_regular(p, root=cfg.inbox) as f:
                if sha256_of(f).startswith(prefix):
                    return p
        except OSError:
            continue
    return None


def _put_back(cfg: ProjectConfig, prefix: str, rejected: list) -> tuple[Path, Path]:
    """Move the newest rejected delivery matching ``prefix`` back into the folder of its kind (inbox/ or
    inbox/eval/) under its original name, never over a file waiting there (then ``name-1`` ...). Returns (where
    it was stored, its path now)."""
    if len({r[0] for r in rejected}) > 1:
        raise LoopError(f"sha256 prefix {prefix} is ambiguous: {sorted({short(r[0]) for r in rejected})}")
    rejected_dir = Path(os.path.abspath(cfg.inbox / REJECTED_FOLDER))
    for _sha, original, stored, is_eval in rejected:
        if stored and is_regular_file(stored) and Path(os.path.abspath(stored)).parent == rejected_dir:
            folder = cfg.inbox / EVAL_FOLDER if is_eval else cfg.inbox
            if is_eval:
                ensure_dir(cfg.inbox, EVAL_FOLDER)
            return Path(stored), move_no_replace(stored, folder / Path(original).name, root=cfg.inbox)
    raise LoopError(f"the rejected file {short(rejected[0][0])} is no longer in {cfg.inbox / REJECTED_FOLDER}")


def request_retry(store, cfg: ProjectConfig, sha_prefix: str) -> dict:
    """Ask the sensor for a new run (new run key) ingesting a file again.

    The file must still be in the inbox or inbox/eval/ (its run failed), or be a
    recorded rejected delivery in inbox/rejected/: it is then put back into the
    folder of its kind (an evaluation file into inbox/eval/) under its original
    name, and never over a file waiting there (a corrected file of the same name
    keeps its name; the retried one becomes ``name-1``). Nothing is followed
    through a link.
    """
    prefix = _sha_prefix(sha_prefix)
    found, stored = _waiting_file(cfg, prefix), None
    if found is None:
        with store.connect(read_only=True, view=False) as con:
            rejected = labels_q.rejected_files_by_prefix(con, prefix)
        if not rejected:
            raise LoopError(
                f"no file with sha256 {prefix}... in {cfg.inbox}, its {EVAL_FOLDER}/ folder or among the "
                "recorded rejected deliveries"
            )
        stored, found = _put_back(cfg, prefix, rejected)
    rid = uuid.uuid4().hex
    with store.transaction() as con:
        if stored is not None:  # so that its next ingestion validates it again (not "committed, never moved")
            labels_q.mark_put_back(con, str(stored), str(found))
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
