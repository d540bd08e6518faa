"""Named queries over the labels: ``label_files``, ``labels`` (and its ``current_labels`` view), ``retractions``
and ``eval_set``."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, fields

# The columns of a labels row that the loop supplies per row (label_id, received_at and round are set per insert).
LABEL_ROW_COLUMNS = ("image_id", "label", "is_skip", "proposed", "file_sha256", "file_id", "annotation_id",
                     "annotator", "line", "note")
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


_LABEL_FILE_COLUMNS = tuple(f.name for f in fields(LabelFileRecord))


def insert_label_files(con, records: Iterable[LabelFileRecord]) -> None:
    rows = [list(astuple(r)) for r in records]
    if rows:
        con.executemany(f"INSERT INTO label_files ({', '.join(_LABEL_FILE_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(_LABEL_FILE_COLUMNS))})", rows)


def ingested_shas(con) -> set[str]:
    """sha256 of every label file whose bytes were ingested (accepted, duplicate or retracted)."""
    return {r[0] for r in con.execute(
        f"SELECT DISTINCT sha256 FROM label_files WHERE status IN ({', '.join('?' * len(INGESTED_STATUSES))})",
        list(INGESTED_STATUSES)).fetchall()}


def label_file_history(con) -> dict[str, list[tuple[str, str | None, str, bool]]]:
    """sha256 -> [(status, stored_path, original_name, is_eval)] of every recorded delivery, oldest first."""
    out: dict = {}
    for sha, status, stored, name, is_eval in con.execute(
            "SELECT sha256, status, stored_path, original_name, is_eval FROM label_files "
            "ORDER BY received_at").fetchall():
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
        f"AND status IN ({', '.join('?' * len(statuses))}) ORDER BY sha256", [sha_prefix, *statuses]).fetchall()


def rejected_files_by_prefix(con, sha_prefix: str) -> list[tuple[str, str, str | None, bool]]:
    """(sha256, original_name, stored_path, is_eval) of every rejected delivery whose sha256 starts with
    ``sha_prefix``, newest first."""
    return [(sha, name, stored, bool(ev)) for sha, name, stored, ev in con.execute(
        "SELECT sha256, original_name, stored_path, is_eval FROM label_files WHERE status = 'rejected' "
        "AND sha256 <> '' AND starts_with(sha256, ?) ORDER BY received_at DESC", [sha_prefix]).fetchall()]


def mark_put_back(con, stored_path: str, new_path: str) -> None:
    """A rejected file moved from ``stored_path`` back into the inbox (as ``new_path``) by `al labels retry`: the
    rows stored there lose their stored path (the file is no longer there; its next ingestion records it anew)."""
    con.execute("UPDATE label_files SET stored_path = NULL, reason = concat(reason, ?) WHERE stored_path = ?",
                [f"; put back into the inbox as {new_path} by al labels retry", stored_path])


def is_eval_delivery(con, sha256: str) -> bool:
    """Whether an accepted delivery of these bytes went into inbox/eval/ (labels of the evaluation set)."""
    return bool(con.execute("SELECT bool_or(is_eval) FROM label_files WHERE sha256 = ? AND status = 'accepted'",
                            [sha256]).fetchone()[0])


def mark_file_retracted(con, sha256: str, reason: str) -> None:
    con.execute("UPDATE label_files SET status = 'retracted', reason = ? WHERE sha256 = ? AND status = 'accepted'",
                [reason, sha256])


def insert_retraction(con, sha256: str, retracted_at, reason: str | None, effective_round: int) -> None:
    con.execute("INSERT INTO retractions (file_sha256, retracted_at, reason, effective_round) VALUES (?, ?, ?, ?)",
                [sha256, retracted_at, reason, effective_round])


# ----------------------------------------------------------------------------- labels
def current_labels(con) -> list[tuple[str, str, bool, int]]:
    """(image_id, label, is_skip, label_id) of every image's current label (newest, not retracted)."""
    return con.execute("SELECT image_id, label, is_skip, label_id FROM current_labels").fetchall()


def current_label_by_image(con) -> dict[str, str]:
    return dict(con.execute("SELECT image_id, label FROM current_labels").fetchall())


def n_labels_of_file(con, sha256: str) -> int:
    return int(con.execute("SELECT count(*) FROM labels WHERE file_sha256 = ?", [sha256]).fetchone()[0])


def next_label_id(con) -> int:
    return int(con.execute("SELECT coalesce(max(label_id), 0) + 1 FROM labels").fetchone()[0])


def insert_labels(con, columns: Mapping[str, Sequence], start: int, stop: int, first_label_id: int, received_at,
                  round_: int) -> None:
    """Rows [start, stop) of ``columns`` (LABEL_ROW_COLUMNS -> values) as one INSERT ... SELECT over an Arrow table.

    label_id counts up from ``first_label_id``; every row gets ``received_at`` and ``round_``.
    """
    import pyarrow as pa

    if stop <= start:
        return
    types = {"is_skip": pa.bool_(), "proposed": pa.bool_(), "line": pa.int32()}
    tbl = pa.table({"label_id": pa.array(range(first_label_id, first_label_id + stop - start), pa.int64()),
                    **{c: pa.array(columns[c][start:stop], types.get(c, pa.string())) for c in LABEL_ROW_COLUMNS}})
    cols = ", ".join(LABEL_ROW_COLUMNS)
    con.register("_new_labels", tbl)
    try:
        con.execute(f"""INSERT INTO labels (label_id, {cols}, received_at, round)
                        SELECT label_id, {cols}, ?::TIMESTAMP, ?::INTEGER FROM _new_labels""", [received_at, round_])
    finally:
        con.unregister("_new_labels")


def unknown_labels_of_round(con, round_: int, classes: Sequence[str]) -> tuple[int, int]:
    """(labels naming no known image, labels naming none of ``classes``) among the labels ingested in ``round_``."""
    unknown_img, unknown_cls = con.execute(
        """SELECT count(*) FILTER (image_id NOT IN (SELECT image_id FROM images)),
                  count(*) FILTER (label NOT IN (SELECT unnest(?::VARCHAR[]))) FROM labels WHERE round = ?""",
        [list(classes), round_]).fetchone()
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
        con.executemany("INSERT INTO eval_set (image_id, label, source, added_at) VALUES (?, ?, 'holdout', ?) "
                        "ON CONFLICT DO NOTHING", rows)


def set_eval_labels(con, rows: Iterable[tuple[str, str]], added_at) -> None:
    """Labels delivered into inbox/eval/: added to the eval set (source 'inbox/eval'), or the label replaced."""
    rows = [[iid, label, added_at] for iid, label in rows]
    if rows:
        con.executemany("""INSERT INTO eval_set (image_id, label, source, added_at) VALUES (?, ?, 'inbox/eval', ?)
                           ON CONFLICT (image_id) DO UPDATE SET label = excluded.label""", rows)


def labelled_eval_set(con) -> list[tuple[str, str]]:
    """(image_id, label) of every eval image with a label, by image_id."""
    return con.execute("SELECT image_id, label FROM eval_set WHERE label IS NOT NULL ORDER BY image_id").fetchall()
