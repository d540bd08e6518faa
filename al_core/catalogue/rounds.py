"""Named queries over the batches: ``rounds`` (one row per proposed batch) and ``queries`` (its images)."""

from collections.abc import Sequence


def last_round_and_spent(con) -> tuple[int | None, int]:
    """(highest proposed batch or None, images proposed over all batches)."""
    last, spent = con.execute("SELECT max(round), coalesce(sum(budget), 0) FROM rounds").fetchone()
    return last, int(spent)


def latest_open_round(con) -> int | None:
    """The highest batch still waiting for labels, or None."""
    return con.execute("SELECT max(round) FROM rounds WHERE status = 'open'").fetchone()[0]


def open_batches(con) -> list[tuple[int, str]]:
    """(round, strategy) of every open batch, in round order."""
    return con.execute("SELECT round, strategy FROM rounds WHERE status = 'open' ORDER BY round").fetchall()


def round_exists(con, round_: int) -> bool:
    return con.execute("SELECT 1 FROM rounds WHERE round = ?", [round_]).fetchone() is not None


def insert_round(con, *, round_: int, kind: str, strategy: str, seed: int, budget: int, requested_budget: int,
                 config_id: str, probe_id: str | None, proposed_at, select_seconds: float, run_id: str | None,
                 note: str | None) -> None:
    """Record batch ``round_`` as open."""
    con.execute(
        """INSERT INTO rounds (round, kind, strategy, seed, budget, requested_budget, config_id, probe_id, status,
                               proposed_at, select_seconds, run_id, note)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, ?)""",
        [round_, kind, strategy, seed, budget, requested_budget, config_id, probe_id, proposed_at, select_seconds,
         run_id, note])


def close_round(con, round_: int, closed_by: str, closed_at) -> None:
    """Close batch ``round_`` if it is open (``closed_by``: 'answered' | 'manual'); a closed batch stays as it is."""
    con.execute("UPDATE rounds SET status = 'closed', closed_at = ?, closed_by = ? WHERE round = ? AND status = 'open'",
                [closed_at, closed_by, round_])


def insert_queries(con, round_: int, strategy: str, batch: Sequence[tuple]) -> None:
    """The images of batch ``round_``: (image_id, path, score or None[, the row's strategy]) in rank order (rank 1
    first); the row's strategy defaults to ``strategy`` ('relabel' for an image to label again)."""
    if not batch:
        return
    con.executemany("INSERT INTO queries (round, rank, image_id, path, score, strategy) VALUES (?, ?, ?, ?, ?, ?)",
                    [[round_, rank, iid, path, score, (rest[0] if rest else strategy)]
                     for rank, (iid, path, score, *rest) in enumerate(batch, 1)])


def batch_of_round(con, round_: int) -> list[tuple[str, str, float | None]]:
    """(image_id, path, score) of batch ``round_`` in rank order."""
    return con.execute("SELECT image_id, path, score FROM queries WHERE round = ? ORDER BY rank", [round_]).fetchall()


def proposed_image_ids(con) -> set[str]:
    """Every image proposed in any batch."""
    return {r[0] for r in con.execute("SELECT DISTINCT image_id FROM queries").fetchall()}


def answered_count(con, round_: int) -> tuple[int, int]:
    """(answered, proposed) images of batch ``round_``; an image with a current label (a skip too) is answered, an
    image to label again (strategy 'relabel') by a label ingested after the batch (a later round)."""
    n_prop, n_ans = con.execute(
        """SELECT count(*), count(*) FILTER (WHERE CASE WHEN q.strategy = 'relabel' THEN EXISTS (
                  SELECT 1 FROM labels l WHERE l.image_id = q.image_id AND l.round > q.round
                  AND l.file_sha256 NOT IN (SELECT file_sha256 FROM retractions)) ELSE c.image_id IS NOT NULL END)
           FROM queries q LEFT JOIN current_labels c ON c.image_id = q.image_id WHERE q.round = ?""",
        [round_]).fetchone()
    return int(n_ans), int(n_prop)


def proposal_problems(con, round_: int) -> dict:
    """Images of batch ``round_`` that should not have been proposed, with its size and recorded budget.

    already_labelled_or_skipped: labelled (not retracted) in a round up to ``round_``; in_eval_set; proposed_before:
    in an earlier batch (rows to label again, strategy 'relabel', are neither); proposed: the batch's size;
    recorded_budget: ``rounds.budget`` (None: no such batch).
    """
    labelled, in_eval, earlier, n, budget = con.execute(
        """WITH q AS (SELECT image_id, strategy = 'relabel' AS again FROM queries WHERE round = ?),
                lab AS (SELECT image_id FROM labels WHERE round <= ?
                        AND file_sha256 NOT IN (SELECT file_sha256 FROM retractions)),
                earlier AS (SELECT image_id FROM queries WHERE round < ?)
           SELECT (SELECT count(*) FROM q WHERE NOT again AND image_id IN (SELECT image_id FROM lab)),
                  (SELECT count(*) FROM q WHERE image_id IN (SELECT image_id FROM eval_set)),
                  (SELECT count(*) FROM q WHERE NOT again AND image_id IN (SELECT image_id FROM earlier)),
                  (SELECT count(*) FROM q),
                  (SELECT budget FROM rounds WHERE round = ?)""", [round_, round_, round_, round_]).fetchone()
    return {"already_labelled_or_skipped": int(labelled), "in_eval_set": int(in_eval),
            "proposed_before": int(earlier), "proposed": int(n), "recorded_budget": budget}
