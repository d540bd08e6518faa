"""Named queries of label quality (schema version 6): assessments (``label_quality_runs``, ``label_quality``, the
``label_suspects`` view), near-duplicates (``near_duplicate_runs``, ``near_duplicates``), why images are in a batch
(``query_reasons``, ``batch_replacements``), and exact duplicates (the ``exact_duplicates`` view)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from al_core.catalogue.rounds import RELABEL  # re-exported: the loop reads it from here

LABEL_QUALITY_RUN_COLUMNS = (
    "probe_id",
    "round",
    "n_labels",
    "n_folds",
    "seed",
    "method",
    "n_issues",
    "label_counts",
    "predicted_share",
    "balance_warnings",
    "seconds",
    "computed_at",
)
LABEL_QUALITY_COLUMNS = (
    "probe_id",
    "round",
    "image_id",
    "label_id",
    "given",
    "suggested",
    "quality",
    "given_prob",
    "suggested_prob",
    "is_issue",
    "rank",
    "relabel_score",
    "consensus",
    "consensus_quality",
    "n_annotations",
)
NEAR_DUPLICATE_RUN_COLUMNS = (
    "config_id",
    "parts_signature",
    "threshold",
    "method",
    "n_images",
    "n_pairs",
    "seconds",
    "computed_at",
)


def _records(cur) -> list[dict]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _insert(con, table: str, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
    if rows:
        con.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [list(r) for r in rows],
        )


# ----------------------------------------------------------------------------- assessments
def put_label_quality(con, run: dict, rows: Sequence[Sequence]) -> None:
    """Record an assessment (``run``: LABEL_QUALITY_RUN_COLUMNS) and its rows (LABEL_QUALITY_COLUMNS), replacing
    an earlier one of the same probe."""
    con.execute("DELETE FROM label_quality WHERE probe_id = ?", [run["probe_id"]])
    con.execute("DELETE FROM label_quality_runs WHERE probe_id = ?", [run["probe_id"]])
    _insert(con, "label_quality_runs", LABEL_QUALITY_RUN_COLUMNS, [[run[c] for c in LABEL_QUALITY_RUN_COLUMNS]])
    _insert(con, "label_quality", LABEL_QUALITY_COLUMNS, rows)


def latest_quality_run(con, round_: int | None = None) -> dict | None:
    """The latest assessment (of ``round_``, else of the highest round assessed), or None."""
    where, params = ("WHERE round = ?", [int(round_)]) if round_ is not None else ("", [])
    rows = _records(
        con.execute(
            f"SELECT * FROM label_quality_runs {where} ORDER BY round DESC, computed_at DESC, probe_id DESC LIMIT 1",
            params,
        )
    )
    return rows[0] if rows else None


def quality_runs(con) -> list[dict]:
    """Every round's latest assessment, by round."""
    return _records(
        con.execute(
            """SELECT * EXCLUDE (rn) FROM (SELECT *, row_number() OVER (PARTITION BY round
                                       ORDER BY computed_at DESC, probe_id DESC) AS rn FROM label_quality_runs)
           WHERE rn = 1 ORDER BY round"""
        )
    )


def suspect_records(con, round_: int | None = None, limit: int | None = None) -> list[dict]:
    """The suspects (``label_suspects``) of ``round_`` (default: the highest round assessed), lowest quality first."""
    if round_ is None:
        run = latest_quality_run(con)
        if run is None:
            return []
        round_ = run["round"]
    sql = "SELECT * FROM label_suspects WHERE round = ? ORDER BY rank"
    params: list = [int(round_)]
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    return _records(con.execute(sql, params))


def relabel_ranking(con, probe_id: str) -> list[dict]:
    """The rows of an assessment in the order to label again: ActiveLab score when there is one, else quality;
    ties by rank. Keys: image_id, label_id, given, suggested, quality, relabel_score, is_issue."""
    return _records(
        con.execute(
            """SELECT image_id, label_id, given, suggested, quality, relabel_score, is_issue FROM label_quality
           WHERE probe_id = ? ORDER BY coalesce(relabel_score, quality), rank""",
            [probe_id],
        )
    )


def relabel_counts(con) -> dict[str, int]:
    """image_id -> how many batches proposed it to be labelled again."""
    return {
        iid: int(n)
        for iid, n in con.execute(
            "SELECT image_id, count(*) FROM queries WHERE strategy = ? GROUP BY image_id", [RELABEL]
        ).fetchall()
    }


def open_relabel_ids(con) -> set[str]:
    """Images proposed to be labelled again in a batch still open."""
    return {
        r[0]
        for r in con.execute(
            """SELECT DISTINCT q.image_id FROM queries q JOIN rounds r ON r.round = q.round
           WHERE r.status = 'open' AND q.strategy = ?""",
            [RELABEL],
        ).fetchall()
    }


# ----------------------------------------------------------------------------- near-duplicates
def near_duplicate_run(con, config_id: str) -> dict | None:
    rows = _records(con.execute("SELECT * FROM near_duplicate_runs WHERE config_id = ?", [config_id]))
    return rows[0] if rows else None


def put_near_duplicates(
    con, run: dict, image_ids: Sequence[str], twin_ids: Sequence[str], cosine: Sequence[float]
) -> None:
    """Replace the near-duplicate pairs and the run record of ``run['config_id']`` (NEAR_DUPLICATE_RUN_COLUMNS)."""
    import pyarrow as pa

    cid = run["config_id"]
    con.execute("DELETE FROM near_duplicates WHERE config_id = ?", [cid])
    con.execute("DELETE FROM near_duplicate_runs WHERE config_id = ?", [cid])
    _insert(con, "near_duplicate_runs", NEAR_DUPLICATE_RUN_COLUMNS, [[run[c] for c in NEAR_DUPLICATE_RUN_COLUMNS]])
    if len(image_ids):
        con.register(
            "_pairs",
            pa.table(
                {
                    "image_id": pa.array(list(image_ids), pa.string()),
                    "twin_id": pa.array(list(twin_ids), pa.string()),
                    "cosine": pa.array(np.asarray(cosine, np.float64)),
                }
            ),
        )
        try:
            con.execute(
                "INSERT INTO near_duplicates (config_id, image_id, twin_id, cosine) "
                "SELECT ?, image_id, twin_id, cosine FROM _pairs",
                [cid],
            )
        finally:
            con.unregister("_pairs")


def near_duplicate_pairs(con, config_id: str) -> list[tuple[str, str, float]]:
    """(image_id, twin_id, cosine) of every pair of the config's last pass, by image_id, twin_id."""
    return con.execute(
        "SELECT image_id, twin_id, cosine FROM near_duplicates WHERE config_id = ? ORDER BY image_id, twin_id",
        [config_id],
    ).fetchall()


def near_duplicate_records(con, config_id: str, limit: int) -> list[dict]:
    """The most similar pairs (with one ok path each), cosine descending."""
    return _records(
        con.execute(
            """SELECT d.image_id, d.twin_id, d.cosine,
                  (SELECT min(path) FROM image_paths p WHERE p.image_id = d.image_id AND p.status = 'ok') AS path,
                  (SELECT min(path) FROM image_paths p WHERE p.image_id = d.twin_id AND p.status = 'ok') AS twin_path
           FROM near_duplicates d WHERE d.config_id = ? ORDER BY d.cosine DESC, d.image_id, d.twin_id LIMIT ?""",
            [config_id, int(limit)],
        )
    )


# ----------------------------------------------------------------------------- batches
def put_batch_rules(con, round_: int, replacements: Sequence[tuple], reasons: Sequence[tuple[str, str]]) -> None:
    """What the batch rules did to batch ``round_``: replacements (dropped_id, twin_id, cosine, replacement_id,
    how) and reasons (image_id, reason) of the images that are not the strategy's own picks."""
    _insert(
        con,
        "batch_replacements",
        ("round", "dropped_id", "twin_id", "cosine", "replacement_id", "how"),
        [[round_, *r] for r in replacements],
    )
    _insert(con, "query_reasons", ("round", "image_id", "reason"), [[round_, *r] for r in reasons])


def batch_replacement_records(con, round_: int | None = None) -> list[dict]:
    """Replacements by the near-duplicate rule (of ``round_``, or of every batch), by round."""
    where, params = ("WHERE round = ?", [int(round_)]) if round_ is not None else ("", [])
    return _records(con.execute(f"SELECT * FROM batch_replacements {where} ORDER BY round, dropped_id", params))


def query_reason_of(con, image_id: str) -> dict[int, str]:
    """round -> why the image is in that batch (only batches that recorded a reason)."""
    return {
        int(r): why
        for r, why in con.execute("SELECT round, reason FROM query_reasons WHERE image_id = ?", [image_id]).fetchall()
    }


# ----------------------------------------------------------------------------- exact duplicates
def exact_duplicate_summary(con, limit: int) -> tuple[int, int, list[dict]]:
    """(images with several readable paths, their paths in all, the first ``limit`` of them: image_id, n_paths,
    paths), most paths first."""
    n_images, n_paths = con.execute("SELECT count(*), coalesce(sum(n_paths), 0) FROM exact_duplicates").fetchone()
    rows = _records(
        con.execute(
            "SELECT image_id, n_paths, paths FROM exact_duplicates ORDER BY n_paths DESC, image_id LIMIT ?",
            [int(limit)],
        )
    )
    return int(n_images), int(n_paths), rows


def duplicate_paths_frame(con):
    """image_id, n_paths, paths (a JSON list of every readable path, sorted) of every image with a readable path,
    as a polars frame."""
    return con.execute(
        """SELECT image_id, count(*) AS n_paths, CAST(to_json(list(path ORDER BY path)) AS VARCHAR) AS paths
           FROM image_paths WHERE status = 'ok' AND image_id IS NOT NULL GROUP BY image_id ORDER BY image_id"""
    ).pl()


# ----------------------------------------------------------------------------- agreement
def annotation_votes(con) -> list[tuple[str, str, str]]:
    """(image_id, annotator, label) of the ``annotation_votes`` view: each annotator's latest class label per image."""
    return con.execute(
        "SELECT image_id, annotator, label FROM annotation_votes ORDER BY image_id, annotator"
    ).fetchall()


def awaiting_relabel_ids(con) -> set[str]:
    """Images of an open batch proposed to be labelled again and not answered since (a label of a later round)."""
    return {
        r[0]
        for r in con.execute(
            """SELECT DISTINCT q.image_id FROM queries q JOIN rounds r ON r.round = q.round
           WHERE r.status = 'open' AND q.strategy = ? AND NOT EXISTS (
             SELECT 1 FROM labels l WHERE l.image_id = q.image_id AND l.round > q.round
             AND l.file_sha256 NOT IN (SELECT file_sha256 FROM retractions))""",
            [RELABEL],
        ).fetchall()
    }


def agreement_views(con) -> dict:
    """What the agreement views hold: image_agreement (rows), annotator_agreement, annotator_pair_kappa."""
    return {
        "images": _records(con.execute("SELECT * FROM image_agreement")),
        "annotators": _records(con.execute("SELECT * FROM annotator_agreement")),
        "pairs": _records(con.execute("SELECT * FROM annotator_pair_kappa")),
    }


def final_labels(con) -> dict[str, str]:
    """image_id -> the current class label (skips left out)."""
    return dict(con.execute("SELECT image_id, label FROM current_labels WHERE NOT is_skip").fetchall())


def batch_strategies(con, round_: int) -> list[str]:
    """Each row's strategy of batch ``round_``, in rank order ('relabel' for an image to label again)."""
    return [
        r[0]
        for r in con.execute("SELECT strategy FROM queries WHERE round = ? ORDER BY rank", [int(round_)]).fetchall()
    ]
