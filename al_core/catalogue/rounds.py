"""Named queries over the batches: ``rounds`` (one row per proposed batch) and ``queries`` (its images)."""

from collections.abc import Sequence

ADJUDICATION = "adjudication"  # queries.strategy of an image proposed again because its answers disagree
RELABEL = "relabel"  # queries.strategy of an image proposed again to be labelled again (a suspected label error)


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


def round_record(con, round_: int) -> dict | None:
    """The ``rounds`` row of batch ``round_`` as a dict (kind, strategy, seed, budget, requested_budget, config_id,
    probe_id, status, select_seconds, run_id, note), or None."""
    cur = con.execute(
        """SELECT kind, strategy, seed, budget, requested_budget, config_id, probe_id, status,
                                select_seconds, run_id, note FROM rounds WHERE round = ?""",
        [round_],
    )
    row = cur.fetchone()
    return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))


def insert_round(
    con,
    *,
    round_: int,
    kind: str,
    strategy: str,
    seed: int,
    budget: int,
    requested_budget: int,
    config_id: str,
    probe_id: str | None,
    proposed_at,
    select_seconds: float,
    run_id: str | None,
    note: str | None,
) -> None:
    """Record batch ``round_`` as open."""
    con.execute(
        """INSERT INTO rounds (round, kind, strategy, seed, budget, requested_budget, config_id, probe_id, status,
                               proposed_at, select_seconds, run_id, note)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, ?)""",
        [
            round_,
            kind,
            strategy,
            seed,
            budget,
            requested_budget,
            config_id,
            probe_id,
            proposed_at,
            select_seconds,
            run_id,
            note,
        ],
    )


def close_round(con, round_: int, closed_by: str, closed_at) -> None:
    """Close batch ``round_`` if it is open (``closed_by``: 'answered' | 'manual'); a closed batch stays as it is."""
    con.execute(
        "UPDATE rounds SET status = 'closed', closed_at = ?, closed_by = ? WHERE round = ? AND status = 'open'",
        [closed_at, closed_by, round_],
    )


def insert_queries(con, round_: int, strategy: str, batch: Sequence[tuple]) -> None:
    """The images of batch ``round_`` in rank order (rank 1 first): (image_id, path, score or None), optionally
    followed by the row's strategy (default ``strategy``; 'adjudication' for an image proposed again), the probe's
    predicted class and its probability (the pre-label; None when not made)."""
    if not batch:
        return
    rows = []
    for rank, row in enumerate(batch, 1):
        iid, path, score, *rest = row
        row_strategy, predicted, predicted_score = (*rest, None, None, None)[:3]
        rows.append([round_, rank, iid, path, score, row_strategy or strategy, predicted, predicted_score])
    con.executemany(
        """INSERT INTO queries (round, rank, image_id, path, score, strategy, predicted, predicted_score)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
        rows,
    )


def batch_of_round(con, round_: int) -> list[tuple[str, str, float | None]]:
    """(image_id, path, score) of batch ``round_`` in rank order."""
    return con.execute("SELECT image_id, path, score FROM queries WHERE round = ? ORDER BY rank", [round_]).fetchall()


def round_probe_id(con, round_: int) -> str | None:
    """The probe that scored the pool of batch ``round_`` (None for the seed pool or an unknown batch)."""
    row = con.execute("SELECT probe_id FROM rounds WHERE round = ?", [round_]).fetchone()
    return row[0] if row else None


def batch_rows(con, round_: int) -> list[tuple[str, str, float | None, str, str | None, float | None]]:
    """(image_id, path, score, strategy, predicted, predicted_score) of batch ``round_`` in rank order."""
    return con.execute(
        """SELECT image_id, path, score, strategy, predicted, predicted_score FROM queries
                          WHERE round = ? ORDER BY rank""",
        [round_],
    ).fetchall()


def proposed_image_ids(con) -> set[str]:
    """Every image proposed in any batch."""
    return {r[0] for r in con.execute("SELECT DISTINCT image_id FROM queries").fetchall()}


def open_batch_image_ids(con) -> set[str]:
    """Every image of a batch still open (waiting for labels)."""
    return {
        r[0]
        for r in con.execute(
            "SELECT DISTINCT q.image_id FROM queries q JOIN rounds r ON r.round = q.round WHERE r.status = 'open'"
        ).fetchall()
    }


def latest_proposals(con) -> dict[str, tuple[int, object]]:
    """image_id -> (round, proposed_at) of its latest batch: the batch a label ingested now answers."""
    return {
        iid: (int(r), at)
        for iid, r, at in con.execute(
            """SELECT q.image_id, max(q.round), arg_max(r.proposed_at, q.round) FROM queries q
           JOIN rounds r ON r.round = q.round GROUP BY q.image_id"""
        ).fetchall()
    }


def answered_count(con, round_: int) -> tuple[int, int]:
    """(answered, proposed) images of batch ``round_`` (the ``batch_answers`` view): an image is answered by an
    answer ingested after the batch was proposed, a skip or a disputed answer included."""
    n_prop, n_ans = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE answered) FROM batch_answers WHERE round = ?", [round_]
    ).fetchone()
    return int(n_ans), int(n_prop)


def batch_answer_summary(con, round_: int) -> dict:
    """Batch ``round_``: proposed, answered, skipped (every answer a skip), disputed, and the unanswered images
    (image_id, path) in rank order."""
    n, answered, skipped = con.execute(
        """SELECT count(*), count(*) FILTER (WHERE answered), count(*) FILTER (WHERE skipped_only)
           FROM batch_answers WHERE round = ?""",
        [round_],
    ).fetchone()
    disputed = con.execute(
        """SELECT count(*) FROM queries q JOIN image_labels i ON i.image_id = q.image_id
           WHERE q.round = ? AND i.status = 'disputed' AND i.label_round > q.round""",
        [round_],
    ).fetchone()[0]
    missing = con.execute(
        "SELECT image_id, path FROM batch_answers WHERE round = ? AND NOT answered ORDER BY rank", [round_]
    ).fetchall()
    return {
        "round": round_,
        "proposed": int(n),
        "answered": int(answered),
        "skipped": int(skipped),
        "disputed": int(disputed),
        "unanswered": [{"image_id": i, "path": p} for i, p in missing],
    }


def proposal_problems(con, round_: int, *, skipped_may_return: bool = False) -> dict:
    """Images of batch ``round_`` that should not have been proposed, with its size and recorded budget.

    already_labelled_or_skipped: rows not proposed for adjudication or to be labelled again (``RELABEL``) whose
    image had, when the batch was proposed
    (answers ingested up to ``round_``, ``image_labels_at``), a training label, a dispute, or only skips (unless
    ``skipped_may_return``: ``labels.propose_skipped_again``); adjudication rows whose image was not disputed count
    too. in_eval_set; proposed_before: in an earlier batch that is still open; proposed: the batch's size;
    recorded_budget: ``rounds.budget`` (None: no such batch).
    """
    labelled, in_eval, earlier, n, budget = con.execute(
        """WITH q AS (SELECT image_id, strategy FROM queries WHERE round = ?),
                st AS (SELECT image_id, status FROM image_labels_at(?)),
                bad AS (SELECT q.image_id FROM q JOIN st ON st.image_id = q.image_id
                        WHERE (q.strategy = ? AND st.status <> 'disputed')
                           OR (q.strategy NOT IN (?, ?)
                               AND (st.status IN ('labelled', 'disputed') OR (st.status = 'skipped' AND NOT ?)))),
                earlier AS (SELECT qq.image_id FROM queries qq JOIN rounds r ON r.round = qq.round
                            WHERE qq.round < ? AND r.status = 'open')
           SELECT (SELECT count(*) FROM bad),
                  (SELECT count(*) FROM q WHERE image_id IN (SELECT image_id FROM eval_set)),
                  (SELECT count(*) FROM q WHERE strategy <> ? AND image_id IN (SELECT image_id FROM earlier)),
                  (SELECT count(*) FROM q),
                  (SELECT budget FROM rounds WHERE round = ?)""",
        [round_, round_, ADJUDICATION, ADJUDICATION, RELABEL, bool(skipped_may_return), round_, RELABEL, round_],
    ).fetchone()
    return {
        "already_labelled_or_skipped": int(labelled),
        "in_eval_set": int(in_eval),
        "proposed_before": int(earlier),
        "proposed": int(n),
        "recorded_budget": budget,
    }


def budget_used(con) -> tuple[int, int, int]:
    """What counts against ``selection.total_budget``: (labels delivered that are not skips, skips delivered,
    images of open batches still waiting for an answer). Every labels row counts (a relabel or a later
    retracted delivery was labelling work too)."""
    delivered, skips = con.execute(
        "SELECT count(*) FILTER (WHERE NOT is_skip), count(*) FILTER (WHERE is_skip) FROM labels"
    ).fetchone()
    waiting = con.execute(
        """SELECT count(*) FROM queries q JOIN rounds r ON r.round = q.round
           WHERE r.status = 'open' AND q.image_id NOT IN (SELECT image_id FROM current_labels)"""
    ).fetchone()[0]
    return int(delivered), int(skips), int(waiting)
