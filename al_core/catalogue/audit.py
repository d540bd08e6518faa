"""Named queries of the audit (al_core.reporting.audit): the rounds table, one image's lineage, the
export's inputs, and the snapshot copy.

Every function takes an open DuckDB connection (``con``), so a caller composes
them inside one ``store.connect(read_only=True)``. Tables that leave DuckDB
come back as polars frames (``.pl()``, through Arrow); single records as dicts.
"""

from __future__ import annotations

import polars as pl

from al_core.catalogue.probes import LATEST_PROBE_ORDER


def _records(cur) -> list[dict]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def _record(cur) -> dict | None:
    rows = _records(cur)
    return rows[0] if rows else None


# ----------------------------------------------------------------------------- rounds
def rounds_frame(con) -> pl.DataFrame:
    """Every ``rounds`` row (the batches proposed), ascending round."""
    return con.execute(
        """SELECT round, kind, strategy, seed, budget, requested_budget, config_id, status, proposed_at,
                  closed_at, closed_by, note FROM rounds ORDER BY round"""
    ).pl()


def latest_probe_per_round(con) -> pl.DataFrame:
    """One row per round with a probe: its latest probe (LATEST_PROBE_ORDER) and that probe's metrics.

    Columns: round, probe_id, version, trigger, n_labels (the probe's training
    labels), trained_at, n_probes (probe versions of the round), accuracy,
    balanced_accuracy, macro_f1, per_class_recall, confusion (JSON text),
    n_eval, evaluated_at (metric columns null while the probe is not evaluated), classes (JSON text: the
    probe's class list; null for a probe recorded before it was kept), per_class_n_eval (JSON text: class ->
    evaluation images; null for metrics recorded before schema version 8).
    """
    return con.execute(
        f"""SELECT p.round, p.probe_id, p.version, p.trigger, p.n_labels, p.trained_at, p.n_probes,
                   m.accuracy, m.balanced_accuracy, m.macro_f1, m.per_class_recall, m.confusion, m.n_eval,
                   m.evaluated_at, p.classes, m.per_class_n_eval
            FROM (SELECT *, count(*) OVER (PARTITION BY round) AS n_probes,
                         row_number() OVER (PARTITION BY round ORDER BY {LATEST_PROBE_ORDER}) AS rn
                  FROM probes) p
            LEFT JOIN metrics m ON m.probe_id = p.probe_id
            WHERE p.rn = 1 ORDER BY p.round"""
    ).pl()


def labels_so_far(con) -> pl.DataFrame:
    """One row per round of ``round_summary``: round, labels_so_far, skips_so_far, disputed_so_far,
    disagreements_so_far (the ``image_labels`` definition as of each round)."""
    return con.execute(
        """SELECT round, labels_so_far, skips_so_far, disputed_so_far, disagreements_so_far FROM round_summary
           ORDER BY round"""
    ).pl()


def label_events(con) -> pl.DataFrame:
    """Every labels row, ascending label_id: label_id, image_id, is_skip, round, and retracted_from (the
    first round from which its delivery is retracted: the smallest ``effective_round``; null when never)."""
    return con.execute(
        """SELECT l.label_id, l.image_id, l.is_skip, l.round, r.retracted_from
           FROM labels l
           LEFT JOIN (SELECT file_sha256, min(effective_round) AS retracted_from FROM retractions
                      GROUP BY file_sha256) r ON r.file_sha256 = l.file_sha256
           ORDER BY l.label_id"""
    ).pl()


# ----------------------------------------------------------------------------- lineage
def image_ids_with_prefix(con, prefix: str, limit: int) -> list[str]:
    """Up to ``limit`` image ids known anywhere in the catalogue (images, paths, labels, vectors) that
    start with ``prefix``, ascending."""
    rows = con.execute(
        """SELECT image_id FROM (
             SELECT image_id FROM images UNION SELECT image_id FROM image_paths WHERE image_id IS NOT NULL
             UNION SELECT image_id FROM labels UNION SELECT image_id FROM embedding_index)
           WHERE starts_with(image_id, ?) ORDER BY image_id LIMIT ?""",
        [prefix, int(limit)],
    ).fetchall()
    return [r[0] for r in rows]


def image_record(con, image_id: str) -> dict | None:
    """The ``images`` row (size_bytes, width, height, format, first_seen, first_scan_id), or None."""
    return _record(
        con.execute(
            "SELECT size_bytes, width, height, format, first_seen, first_scan_id FROM images WHERE image_id = ?",
            [image_id],
        )
    )


def image_path_records(con, image_id: str) -> list[dict]:
    """Every path of the image (path, status, error, source, first_seen, last_seen), by path."""
    return _records(
        con.execute(
            """SELECT path, status, error, source, first_seen, last_seen FROM image_paths
           WHERE image_id = ? ORDER BY path""",
            [image_id],
        )
    )


def ground_truth_classes(con, image_id: str) -> list[str]:
    """The image's ground-truth class names (folders or manifest), sorted."""
    return [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT class_name FROM ground_truth WHERE image_id = ? ORDER BY 1", [image_id]
        ).fetchall()
    ]


def embedding_records(con, image_id: str) -> list[dict]:
    """The image's vectors: config_id, backbone, dim, part_id, embedded_at (the part's creation), oldest first."""
    return _records(
        con.execute(
            """SELECT e.config_id, c.backbone, c.dim, e.part_id, p.created_at AS embedded_at FROM embedding_index e
           LEFT JOIN embedding_configs c ON c.config_id = e.config_id
           LEFT JOIN embedding_parts p ON p.part_id = e.part_id
           WHERE e.image_id = ? ORDER BY p.created_at, e.config_id""",
            [image_id],
        )
    )


def eval_set_record(con, image_id: str) -> dict | None:
    """The image's ``eval_set`` row (label, source, added_at), or None when it is not held out."""
    return _record(con.execute("SELECT label, source, added_at FROM eval_set WHERE image_id = ?", [image_id]))


def proposal_records(con, image_id: str) -> list[dict]:
    """Every batch that proposed the image: round, rank, strategy, score, path, proposed_at, reason (why it is in
    the batch when it is not the strategy's own pick: labelled again, a near-duplicate's replacement; else None),
    by round."""
    return _records(
        con.execute(
            """SELECT q.round, q.rank, q.strategy, q.score, q.path, r.proposed_at, w.reason FROM queries q
           LEFT JOIN rounds r ON r.round = q.round
           LEFT JOIN query_reasons w ON w.round = q.round AND w.image_id = q.image_id
           WHERE q.image_id = ? ORDER BY q.round""",
            [image_id],
        )
    )


def label_records(con, image_id: str) -> list[dict]:
    """Every labels row of the image (the ``label_lineage`` view) with its label file (file_name, file_status,
    file_stored_path), its state by the label history's rule (state, is_current, superseded_because, decides,
    disagreement) and its task, time and time spent, oldest first."""
    return _records(
        con.execute(
            """SELECT label_id, label, is_skip, proposed, label_round AS round, received_at, annotator, annotation_id,
                  line, note, file_id, file_name, file_sha256, file_status, file_stored_path, state, is_current,
                  superseded_because, decides, disagreement, annotator_as_delivered, task_id, annotated_at, seconds,
                  seconds_source
           FROM label_lineage WHERE image_id = ? ORDER BY label_id""",
            [image_id],
        )
    )


def retraction_records(con, file_sha256s: list[str]) -> list[dict]:
    """The retractions of these label files (file_sha256, retracted_at, effective_round, reason), oldest first."""
    if not file_sha256s:
        return []
    return _records(
        con.execute(
            """SELECT file_sha256, retracted_at, effective_round, reason FROM retractions
           WHERE file_sha256 IN (SELECT unnest(?)) ORDER BY retracted_at""",
            [list(file_sha256s)],
        )
    )


def trained_probe_records(con, image_id: str) -> list[dict]:
    """One row per (probe, label of the image) the probe trained on: label_id and the probe's probe_id, round,
    version, trigger, sha256, path, trained_at, n_labels, accuracy, balanced_accuracy; by round, version."""
    return _records(
        con.execute(
            """SELECT pl.label_id, p.probe_id, p.round, p.version, p.trigger, p.sha256, p.path, p.trained_at,
                  p.n_labels, m.accuracy, m.balanced_accuracy
           FROM probe_labels pl JOIN labels l ON l.label_id = pl.label_id
           JOIN probes p ON p.probe_id = pl.probe_id LEFT JOIN metrics m ON m.probe_id = p.probe_id
           WHERE l.image_id = ? ORDER BY p.round, p.version, p.probe_id, pl.label_id""",
            [image_id],
        )
    )


# ----------------------------------------------------------------------------- export
def latest_probe(con) -> dict | None:
    """The newest probe: the latest probe (LATEST_PROBE_ORDER) of the highest round that has one.

    Keys: probe_id, round, config_id, n_classes, classes (JSON text: the class list it was trained with; None for
    a probe recorded before the list was kept); None before the first probe.
    """
    return _record(
        con.execute(
            f"SELECT probe_id, round, config_id, n_classes, classes FROM probes "
            f"ORDER BY round DESC, {LATEST_PROBE_ORDER} LIMIT 1"
        )
    )


def latest_round_config_id(con) -> str | None:
    """The embedding config the latest proposed batch selected from, or None before the first batch."""
    row = con.execute("SELECT config_id FROM rounds ORDER BY round DESC LIMIT 1").fetchone()
    return row[0] if row else None


def image_labels_frame(con) -> pl.DataFrame:
    """The label of every answered image (``image_labels``): image_id, label (the training label; the skip row's
    label for a skipped image; null for a disputed one), is_skip, status ('labelled' | 'skipped' | 'disputed')."""
    return con.execute(
        """SELECT i.image_id, coalesce(i.label, l.label) AS label, i.status = 'skipped' AS is_skip, i.status
           FROM image_labels i LEFT JOIN labels l ON l.label_id = i.label_id ORDER BY i.image_id"""
    ).pl()


def image_path_frame(con) -> pl.DataFrame:
    """One path per known image: image_id, path (the smallest readable path, else the smallest known)."""
    return con.execute(
        """SELECT image_id, coalesce(min(path) FILTER (WHERE status = 'ok'), min(path)) AS path FROM image_paths
           WHERE image_id IS NOT NULL GROUP BY image_id ORDER BY image_id"""
    ).pl()


# ----------------------------------------------------------------------------- snapshot
def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def copy_database(con, dest: str, *, snapshot_of: str, snapshot_at: str) -> dict[str, int]:
    """Copy the connection's database into a new DuckDB file ``dest`` as one transaction; return row counts.

    ATTACHes ``dest``, runs ``COPY FROM DATABASE`` and counts the rows of every
    base table inside one transaction (one MVCC snapshot: the counts are those
    of the copy), records ``snapshot_of`` and ``snapshot_at`` in the copy's
    ``schema_info``, commits, CHECKPOINTs the copy (no write-ahead log left
    beside it) and DETACHes it, also on failure (the transaction is rolled back).
    """
    src_name = con.execute("SELECT current_database()").fetchone()[0]
    src = _quote_ident(src_name)
    con.execute(f"ATTACH {_quote_literal(str(dest))} AS al_snapshot (READ_WRITE)")
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"COPY FROM DATABASE {src} TO al_snapshot")
            tables = [
                r[0]
                for r in con.execute(
                    """SELECT table_name FROM duckdb_tables()
                   WHERE database_name = ? AND schema_name = 'main' AND NOT temporary ORDER BY 1""",
                    [src_name],
                ).fetchall()
            ]
            counts = {
                t: int(con.execute(f"SELECT count(*) FROM {src}.main.{_quote_ident(t)}").fetchone()[0]) for t in tables
            }
            con.execute("DELETE FROM al_snapshot.main.schema_info WHERE key IN ('snapshot_of', 'snapshot_at')")
            con.execute(
                "INSERT INTO al_snapshot.main.schema_info (key, value) VALUES ('snapshot_of', ?), ('snapshot_at', ?)",
                [snapshot_of, snapshot_at],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("CHECKPOINT al_snapshot")
    finally:
        con.execute("DETACH al_snapshot")
    return counts
