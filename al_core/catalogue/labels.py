"""Named queries over the labels: ``label_files``, ``labels`` (with the views of al_core.catalogue.label_views:
``answers``, ``image_labels``, ``label_disagreements``, ``adjudication_queue``), ``label_settings``, ``annotators``,
``retractions`` and ``eval_set``."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, fields

from al_core.catalogue.label_views import OLDEST_FIRST

# The columns of a labels row that the loop supplies per row (label_id, received_at and round are set per insert).
LABEL_ROW_COLUMNS = (
    "image_id",
    "label",
    "is_skip",
    "proposed",
    "file_sha256",
    "file_id",
    "annotation_id",
    "annotator",
    "line",
    "note",
    "task_id",
    "annotated_at",
    "seconds",
    "seconds_source",
)
INGESTED_STATUSES = ("accepted", "duplicate", "retracted")  # a label file whose bytes count as ingested


@dataclass(frozen=True)
class LabelFileRecord:
    """One ``label_files`` row: a delivered file and what became of it."""

    file_id: str
    sha256: str
    original_name: str
    stored_path: str | None  # where the file was moved (accepted/ or rejected/)
    format: str | None
    status: str  # accepted | duplicate | rejected | retracted
    reason: str | None
    n_rows: int
    n_applied: int
    n_unproposed: int
    n_skips: int
    is_eval: bool
    received_at: object
    round: int
    run_id: str | None
    n_warnings: int = 0  # problems that did not reject the file (an empty annotation...): its report lists them


_LABEL_FILE_COLUMNS = tuple(f.name for f in fields(LabelFileRecord))


def insert_label_files(con, records: Iterable[LabelFileRecord]) -> None:
    rows = [list(astuple(r)) for r in records]
    if rows:
        con.executemany(
            f"INSERT INTO label_files ({', '.join(_LABEL_FILE_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(_LABEL_FILE_COLUMNS))})",
            rows,
        )


def ingested_shas(con) -> set[str]:
    """sha256 of every label file whose bytes were ingested (accepted, duplicate or retracted)."""
    return {
        r[0]
        for r in con.execute(
            f"SELECT DISTINCT sha256 FROM label_files WHERE status IN ({', '.join('?' * len(INGESTED_STATUSES))})",
            list(INGESTED_STATUSES),
        ).fetchall()
    }


def label_file_history(con) -> dict[str, list[tuple[str, str | None, str, bool]]]:
    """sha256 -> [(status, stored_path, original_name, is_eval)] of every recorded delivery, oldest first."""
    out: dict = {}
    for sha, status, stored, name, is_eval in con.execute(
        "SELECT sha256, status, stored_path, original_name, is_eval FROM label_files ORDER BY received_at"
    ).fetchall():
        out.setdefault(sha, []).append((status, stored, name, bool(is_eval)))
    return out


def set_stored_path(con, file_id: str, stored_path: str) -> None:
    """Where a recorded file was moved, when the name chosen at its commit was taken by the time it moved."""
    con.execute("UPDATE label_files SET stored_path = ? WHERE file_id = ?", [stored_path, file_id])


def count_label_files(con) -> int:
    return int(con.execute("SELECT count(*) FROM label_files").fetchone()[0])


def label_files_by_prefix(con, sha_prefix: str, statuses: Sequence[str]) -> list[tuple[str, str, str | None]]:
    """Distinct (sha256, original_name, stored_path) of files whose sha256 starts with ``sha_prefix``."""
    return con.execute(
        f"SELECT DISTINCT sha256, original_name, stored_path FROM label_files WHERE starts_with(sha256, ?) "
        f"AND status IN ({', '.join('?' * len(statuses))}) ORDER BY sha256",
        [sha_prefix, *statuses],
    ).fetchall()


def rejected_files_by_prefix(con, sha_prefix: str) -> list[tuple[str, str, str | None, bool]]:
    """(sha256, original_name, stored_path, is_eval) of every rejected delivery whose sha256 starts with
    ``sha_prefix``, newest first."""
    return [
        (sha, name, stored, bool(ev))
        for sha, name, stored, ev in con.execute(
            "SELECT sha256, original_name, stored_path, is_eval FROM label_files WHERE status = 'rejected' "
            "AND sha256 <> '' AND starts_with(sha256, ?) ORDER BY received_at DESC",
            [sha_prefix],
        ).fetchall()
    ]


def mark_put_back(con, stored_path: str, new_path: str) -> None:
    """A rejected file moved from ``stored_path`` back into the inbox (as ``new_path``) by `al labels retry`: the
    rows stored there lose their stored path (the file is no longer there; its next ingestion records it anew)."""
    con.execute(
        "UPDATE label_files SET stored_path = NULL, reason = concat(reason, ?) WHERE stored_path = ?",
        [f"; put back into the inbox as {new_path} by al labels retry", stored_path],
    )


def is_eval_delivery(con, sha256: str) -> bool:
    """Whether an accepted delivery of these bytes went into inbox/eval/ (labels of the evaluation set)."""
    return bool(
        con.execute(
            "SELECT bool_or(is_eval) FROM label_files WHERE sha256 = ? AND status = 'accepted'", [sha256]
        ).fetchone()[0]
    )


def mark_file_retracted(con, sha256: str, reason: str) -> None:
    con.execute(
        "UPDATE label_files SET status = 'retracted', reason = ? WHERE sha256 = ? AND status = 'accepted'",
        [reason, sha256],
    )


def insert_retraction(con, sha256: str, retracted_at, reason: str | None, effective_round: int) -> None:
    con.execute(
        "INSERT INTO retractions (file_sha256, retracted_at, reason, effective_round) VALUES (?, ?, ?, ?)",
        [sha256, retracted_at, reason, effective_round],
    )


# ----------------------------------------------------------------------------- labels
def training_labels(con) -> list[tuple[str, str, int]]:
    """(image_id, label, label_id) of every image with a training label (``image_labels``, status 'labelled')."""
    return con.execute(
        "SELECT image_id, label, label_id FROM image_labels WHERE status = 'labelled' ORDER BY image_id"
    ).fetchall()


def image_statuses(con) -> dict[str, str]:
    """image_id -> 'labelled' | 'skipped' | 'disputed' of every answered image (``image_labels``)."""
    return dict(con.execute("SELECT image_id, status FROM image_labels").fetchall())


def current_answers(con) -> list[tuple[str, str | None, int, str, object, object]]:
    """(image_id, annotator, answer_window, label, received_at, annotated_at) of each annotator's latest answer
    per image and window (the ``answers`` view, retracted rows left out): what a new answer replaces."""
    return con.execute(
        """SELECT image_id, annotator, answer_window, label, received_at, annotated_at FROM answers
           WHERE NOT retracted AND rank_in_window = 1"""
    ).fetchall()


def dated_answer_keys(con) -> set[tuple]:
    """(image_id, annotator, answer_window, label, annotation_id, annotated_at) of every stored answer that carries
    its annotation time (retracted rows left out): the same answer delivered again is recognised by it."""
    return set(
        con.execute(
            """SELECT image_id, annotator, answer_window, label, annotation_id, annotated_at FROM answers
           WHERE NOT retracted AND annotated_at IS NOT NULL"""
        ).fetchall()
    )


def set_label_policy(con, policy: str, set_at) -> None:
    """Record ``labels.policy``, which the ``image_labels`` view applies (written only when it changes)."""
    con.execute(
        """INSERT INTO label_settings (name, value, set_at) VALUES ('policy', ?, ?)
                   ON CONFLICT (name) DO UPDATE SET value = excluded.value, set_at = excluded.set_at
                   WHERE label_settings.value <> excluded.value""",
        [policy, set_at],
    )


def label_policy(con) -> str | None:
    """The policy the views apply now (None: never recorded, the views use the default)."""
    row = con.execute("SELECT value FROM label_settings WHERE name = 'policy'").fetchone()
    return row[0] if row else None


def annotator_emails(con) -> dict[str, str]:
    """Label Studio user id -> email, as recorded in ``annotators``."""
    return dict(con.execute("SELECT user_id, email FROM annotators").fetchall())


def record_annotators(con, emails: Mapping[str, str], source: str, seen_at) -> None:
    """Record Label Studio user id -> email (``source``: where it was learnt, e.g. a file name or 'api'); a known
    id takes the newer email."""
    rows = [[str(uid), email, source, seen_at] for uid, email in sorted(emails.items())]
    if rows:
        con.executemany(
            """INSERT INTO annotators (user_id, email, source, seen_at) VALUES (?, ?, ?, ?)
                           ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, source = excluded.source,
                           seen_at = excluded.seen_at""",
            rows,
        )


def label_state_counts(con, label_round: int | None = None) -> dict:
    """disagreements (images whose counting answers disagree now), disputed (no training label under the
    unanimous policy), adjudication_queued, skipped (images whose answers are all skips), and, for
    ``label_round``, new_disagreements (disagreements among answers ingested in that round)."""
    dis, disputed, skipped = con.execute(
        """SELECT count(*) FILTER (WHERE disagreement), count(*) FILTER (WHERE status = 'disputed'),
                  count(*) FILTER (WHERE status = 'skipped') FROM image_labels"""
    ).fetchone()
    queued = con.execute("SELECT count(*) FROM adjudication_queue").fetchone()[0]
    new = 0
    if label_round is not None:
        new = con.execute("SELECT count(*) FROM label_disagreements WHERE label_round = ?", [label_round]).fetchone()[0]
    return {
        "disagreements": int(dis),
        "disputed": int(disputed),
        "adjudication_queued": int(queued),
        "skipped": int(skipped),
        "new_disagreements": int(new),
        "policy": label_policy(con),
    }


def adjudication_queue(con) -> list[str]:
    """Images to propose again for adjudication (disputed, not in an open batch, not held out), oldest first."""
    return [r[0] for r in con.execute("SELECT image_id FROM adjudication_queue").fetchall()]


def disagreements(con, image_id: str | None = None) -> list[dict]:
    """``label_disagreements`` rows (every window of an image whose annotators' answers disagreed), by image."""
    where, args = ("WHERE image_id = ?", [image_id]) if image_id else ("", [])
    cur = con.execute(
        f"""SELECT image_id, answers_round, label_round, classes, n_annotators, answers, is_current,
                                 policy, image_status, training_label, resolution
                          FROM label_disagreements {where} ORDER BY image_id, label_round""",
        args,
    )
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def image_label(con, image_id: str) -> dict | None:
    """The ``image_labels`` row of one image (status, label, label_id, policy, disagreement, n_answers...) and
    its counting answers (``answers``: annotator, label, is_skip, label_id, answered_at; oldest first), or None."""
    cur = con.execute(
        """SELECT status, label, label_id, policy, disagreement, n_answers, n_skips, n_classes, n_annotators,
                  answers_round, label_round FROM image_labels WHERE image_id = ?""",
        [image_id],
    )
    row = cur.fetchone()
    if row is None:
        return None
    out = dict(zip([c[0] for c in cur.description], row, strict=True))
    cur = con.execute(
        f"""SELECT annotator, label, is_skip, label_id, answered_at FROM answers
            WHERE image_id = ? AND state = 'current' ORDER BY {OLDEST_FIRST}""",
        [image_id],
    )
    out["answers"] = [dict(zip([c[0] for c in cur.description], r, strict=True)) for r in cur.fetchall()]
    return out


def n_labels_of_file(con, sha256: str) -> int:
    return int(con.execute("SELECT count(*) FROM labels WHERE file_sha256 = ?", [sha256]).fetchone()[0])


def next_label_id(con) -> int:
    return int(con.execute("SELECT coalesce(max(label_id), 0) + 1 FROM labels").fetchone()[0])


def insert_labels(
    con, columns: Mapping[str, Sequence], start: int, stop: int, first_label_id: int, received_at, round_: int
) -> None:
    """Rows [start, stop) of ``columns`` (LABEL_ROW_COLUMNS -> values) as one INSERT ... SELECT over an Arrow table.

    label_id counts up from ``first_label_id``; every row gets ``received_at`` and ``round_``.
    """
    import pyarrow as pa

    if stop <= start:
        return
    types = {
        "is_skip": pa.bool_(),
        "proposed": pa.bool_(),
        "line": pa.int32(),
        "annotated_at": pa.timestamp("us"),
        "seconds": pa.float64(),
    }
    tbl = pa.table(
        {
            "label_id": pa.array(range(first_label_id, first_label_id + stop - start), pa.int64()),
            **{c: pa.array(columns[c][start:stop], types.get(c, pa.string())) for c in LABEL_ROW_COLUMNS},
        }
    )
    cols = ", ".join(LABEL_ROW_COLUMNS)
    con.register("_new_labels", tbl)
    try:
        con.execute(
            f"""INSERT INTO labels (label_id, {cols}, received_at, round)
                        SELECT label_id, {cols}, ?::TIMESTAMP, ?::INTEGER FROM _new_labels""",
            [received_at, round_],
        )
    finally:
        con.unregister("_new_labels")


def unknown_labels_of_round(con, round_: int, classes: Sequence[str]) -> tuple[int, int]:
    """(labels naming no known image, labels naming none of ``classes``) among the labels ingested in ``round_``."""
    unknown_img, unknown_cls = con.execute(
        """SELECT count(*) FILTER (image_id NOT IN (SELECT image_id FROM images)),
                  count(*) FILTER (label NOT IN (SELECT unnest(?::VARCHAR[]))) FROM labels WHERE round = ?""",
        [list(classes), round_],
    ).fetchone()
    return int(unknown_img), int(unknown_cls)


# ----------------------------------------------------------------------------- eval set
def eval_image_ids(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT image_id FROM eval_set").fetchall()}


def n_holdout(con) -> int:
    """Images held out by the loop (source 'holdout')."""
    return int(con.execute("SELECT count(*) FROM eval_set WHERE source = 'holdout'").fetchone()[0])


def add_holdout(con, rows: Iterable[tuple[str, str | None]], added_at) -> None:
    """(image_id, label or None) held out (source 'holdout'); an image already in the eval set stays as it is."""
    rows = [[iid, label, added_at] for iid, label in rows]
    if rows:
        con.executemany(
            "INSERT INTO eval_set (image_id, label, source, added_at) VALUES (?, ?, 'holdout', ?) "
            "ON CONFLICT DO NOTHING",
            rows,
        )


def set_eval_labels(con, rows: Iterable[tuple[str, str]], added_at) -> None:
    """Labels delivered into inbox/eval/: added to the eval set (source 'inbox/eval'), or the label replaced."""
    rows = [[iid, label, added_at] for iid, label in rows]
    if rows:
        con.executemany(
            """INSERT INTO eval_set (image_id, label, source, added_at) VALUES (?, ?, 'inbox/eval', ?)
                           ON CONFLICT (image_id) DO UPDATE SET label = excluded.label""",
            rows,
        )


def labelled_eval_set(con) -> list[tuple[str, str]]:
    """(image_id, label) of every eval image with a label, by image_id."""
    return con.execute("SELECT image_id, label FROM eval_set WHERE label IS NOT NULL ORDER BY image_id").fetchall()
