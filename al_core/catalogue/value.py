"""Named queries of what the labels bought (al_core.value): the stop set, each probe's predictions, the
intervals and the stop rule's kappa per probe, the cost rates, label times, and the views ``label_times``,
``round_cost``, ``round_value`` and ``annotator_value`` (al_core.catalogue.value_schema; docs/sql.md).

Every function takes an open DuckDB connection (``con``); the writers run inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import polars as pl

from al_core.catalogue.probes import LATEST_PROBE_ORDER

INTERVAL_COLUMNS = (
    "probe_id",
    "round",
    "metric",
    "value",
    "low",
    "high",
    "method",
    "n_eval",
    "resamples",
    "seed",
    "prev_probe_id",
    "gain",
    "gain_low",
    "gain_high",
    "n_paired",
    "computed_at",
)
COST_RATE_COLUMNS = ("annotator", "role", "currency", "per_label", "per_hour", "overhead")
LABEL_TIME_COLUMNS = ("task_id", "annotated_at", "seconds", "seconds_source")


# ----------------------------------------------------------------------------- the stop set
def stop_set_ids(con) -> list[str]:
    """The stop set's images, ascending (empty before it is drawn)."""
    return [r[0] for r in con.execute("SELECT image_id FROM stop_set ORDER BY image_id").fetchall()]


def put_stop_set(con, image_ids: Sequence[str], seed: int, drawn_at) -> None:
    """Record the stop set (once: an image already in it stays as it is)."""
    if image_ids:
        con.executemany(
            "INSERT INTO stop_set (image_id, seed, drawn_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [[iid, int(seed), drawn_at] for iid in image_ids],
        )


# ----------------------------------------------------------------------------- predictions
def put_predictions(con, probe_id: str, subset: str, rows: Sequence[tuple[str, str | None, str]]) -> None:
    """A probe's (image_id, label or None, predicted) on ``subset`` ('eval' | 'stop'), replacing earlier ones
    (one INSERT ... SELECT over an Arrow table)."""
    import pyarrow as pa

    con.execute("DELETE FROM probe_predictions WHERE probe_id = ? AND subset = ?", [probe_id, subset])
    if not rows:
        return
    ids, labels, preds = zip(*rows, strict=True)
    con.register(
        "_preds",
        pa.table(
            {
                "image_id": pa.array(ids, pa.string()),
                "label": pa.array(labels, pa.string()),
                "predicted": pa.array(preds, pa.string()),
            }
        ),
    )
    try:
        con.execute(
            """INSERT INTO probe_predictions (probe_id, subset, image_id, label, predicted)
                       SELECT ?, ?, image_id, label, predicted FROM _preds""",
            [probe_id, subset],
        )
    finally:
        con.unregister("_preds")


def predictions(con, probe_id: str, subset: str) -> dict[str, tuple[str | None, str]]:
    """image_id -> (label, predicted) of a probe on ``subset``; empty when none were stored."""
    return {
        iid: (lab, pred)
        for iid, lab, pred in con.execute(
            "SELECT image_id, label, predicted FROM probe_predictions WHERE probe_id = ? AND subset = ?",
            [probe_id, subset],
        ).fetchall()
    }


def previous_round_probe(con, round_: int) -> str | None:
    """The latest probe (LATEST_PROBE_ORDER) of the highest round below ``round_`` that has a probe, or None."""
    row = con.execute(
        f"""SELECT probe_id FROM probes WHERE round = (SELECT max(round) FROM probes WHERE round < ?)
                          ORDER BY {LATEST_PROBE_ORDER} LIMIT 1""",
        [round_],
    ).fetchone()
    return row[0] if row else None


# ----------------------------------------------------------------------------- intervals and kappa
def put_intervals(con, probe_id: str, rows: Iterable[dict]) -> None:
    """One probe's rows of ``probe_intervals`` (dicts with INTERVAL_COLUMNS), replacing earlier ones."""
    rows = [[r[c] for c in INTERVAL_COLUMNS] for r in rows]
    con.execute("DELETE FROM probe_intervals WHERE probe_id = ?", [probe_id])
    if rows:
        con.executemany(
            f"INSERT INTO probe_intervals ({', '.join(INTERVAL_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(INTERVAL_COLUMNS))})",
            rows,
        )


def put_stability(
    con, *, probe_id: str, round_: int, prev_probe_id: str | None, kappa: float | None, n_stop: int, computed_at
) -> None:
    con.execute(
        """INSERT OR REPLACE INTO probe_stability (probe_id, round, prev_probe_id, kappa, n_stop, computed_at)
                   VALUES (?, ?, ?, ?, ?, ?)""",
        [probe_id, round_, prev_probe_id, kappa, n_stop, computed_at],
    )


def has_stability(con, probe_id: str) -> bool:
    """Whether the probe's stop-set agreement is recorded."""
    return con.execute("SELECT 1 FROM probe_stability WHERE probe_id = ?", [probe_id]).fetchone() is not None


def kappa_by_round(con) -> dict[int, float | None]:
    """round -> the stop rule's kappa of the round's latest probe (rounds whose latest probe has one recorded)."""
    return {
        int(r): k
        for r, k in con.execute(
            f"""SELECT p.round, s.kappa FROM (
              SELECT probe_id, round, row_number() OVER (PARTITION BY round ORDER BY {LATEST_PROBE_ORDER}) AS rn
              FROM probes) p JOIN probe_stability s ON s.probe_id = p.probe_id
            WHERE p.rn = 1 ORDER BY p.round"""
        ).fetchall()
    }


# ----------------------------------------------------------------------------- cost rates and label times
def put_cost_rates(con, rows: Iterable[Sequence], updated_at) -> None:
    """Replace the cost rates with ``rows`` (COST_RATE_COLUMNS each; annotator None: the default row)."""
    rows = [[*r, updated_at] for r in rows]
    con.execute("DELETE FROM cost_rates")
    if rows:
        con.executemany(
            f"INSERT INTO cost_rates ({', '.join(COST_RATE_COLUMNS)}, updated_at) "
            f"VALUES ({', '.join('?' * (len(COST_RATE_COLUMNS) + 1))})",
            rows,
        )


# ----------------------------------------------------------------------------- the views
def round_value(con, metric: str) -> pl.DataFrame:
    """The ``round_value`` rows of ``metric``, ascending round."""
    return con.execute("SELECT * FROM round_value WHERE metric = ? ORDER BY round", [metric]).pl()


def round_cost(con) -> pl.DataFrame:
    return con.execute("SELECT * FROM round_cost ORDER BY round").pl()


def annotator_value(con) -> pl.DataFrame:
    return con.execute("SELECT * FROM annotator_value ORDER BY annotator").pl()


def cost_totals(con) -> dict:
    """labels, skips, hours, labels_untimed, labels_upper_bound, cost (None without cost rates) and currency over
    every labels row."""
    row = con.execute(
        """SELECT count(*) FILTER (WHERE NOT is_skip), count(*) FILTER (WHERE is_skip),
                  coalesce(sum(seconds), 0) / 3600, count(*) FILTER (WHERE seconds IS NULL),
                  count(*) FILTER (WHERE seconds_source = 'upper_bound'),
                  CASE WHEN (SELECT count(*) FROM cost_rates) > 0 THEN coalesce(sum(cost), 0) END,
                  (SELECT any_value(currency) FROM cost_rates)
           FROM label_times"""
    ).fetchone()
    keys = ("labels", "skips", "hours", "labels_untimed", "labels_upper_bound", "cost", "currency")
    return dict(zip(keys, row, strict=True))
