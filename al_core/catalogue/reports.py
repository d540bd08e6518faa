"""Named queries of the HTML report (al_core.reporting) and of `al status`: what the project holds.

Every function takes an open DuckDB connection (``con``). Tables come back as
polars frames (``.pl()``, through Arrow); summaries as dicts. The per-round
probe metrics of the report are al_core.catalogue.audit.latest_probe_per_round
(the one rule for "the latest probe of a round").
"""

from __future__ import annotations

import polars as pl


def newest_embedded_config_id(con) -> str | None:
    """The most recently registered embedding config that has vectors (ties: smallest id), or None."""
    row = con.execute(
        """SELECT c.config_id FROM embedding_configs c
           WHERE EXISTS (SELECT 1 FROM embedding_index i WHERE i.config_id = c.config_id)
           ORDER BY c.created_at DESC, c.config_id LIMIT 1"""
    ).fetchone()
    return row[0] if row else None


def round_overview(con) -> pl.DataFrame:
    """Every proposed batch: round, kind, strategy, budget, status; ascending round."""
    return con.execute("SELECT round, kind, strategy, budget, status FROM rounds ORDER BY round").pl()


def latest_batch(con) -> tuple[int, str] | None:
    """(round, strategy) of the latest proposed batch, or None before the seed pool."""
    row = con.execute("SELECT round, strategy FROM rounds ORDER BY round DESC LIMIT 1").fetchone()
    return (int(row[0]), row[1]) if row else None


def batch_queries(con, round_: int) -> pl.DataFrame:
    """The images batch ``round_`` proposed: rank, image_id, path, score; by rank."""
    return con.execute(
        "SELECT rank, image_id, path, score FROM queries WHERE round = ? ORDER BY rank", [int(round_)]
    ).pl()


def project_counts(con) -> dict:
    """images (distinct readable), rounds, open_rounds, proposed (images in every batch), labels, skips, disputed
    (images with a training label, skipped by every annotator, disputed: ``image_labels``), eval_images,
    eval_labelled."""
    images = con.execute("SELECT count(DISTINCT image_id) FROM image_paths WHERE status = 'ok'").fetchone()[0]
    rounds, open_, proposed = con.execute(
        "SELECT count(*), count(*) FILTER (status = 'open'), coalesce(sum(budget), 0) FROM rounds"
    ).fetchone()
    labels, skips, disputed = con.execute(
        """SELECT count(*) FILTER (status = 'labelled'), count(*) FILTER (status = 'skipped'),
                  count(*) FILTER (status = 'disputed') FROM image_labels"""
    ).fetchone()
    eval_images, eval_labelled = con.execute("SELECT count(*), count(label) FROM eval_set").fetchone()
    return {
        "images": int(images),
        "rounds": int(rounds),
        "open_rounds": int(open_),
        "proposed": int(proposed),
        "labels": int(labels),
        "skips": int(skips),
        "disputed": int(disputed),
        "eval_images": int(eval_images),
        "eval_labelled": int(eval_labelled),
    }


def embedding_config_summary(con, config_id: str) -> dict | None:
    """config_id, backbone, dim, dtype, preprocessing (JSON text), vectors (count) of a config, or None."""
    row = con.execute(
        """SELECT config_id, backbone, dim, dtype, preprocessing,
                  (SELECT count(*) FROM embedding_index i WHERE i.config_id = c.config_id)
           FROM embedding_configs c WHERE config_id = ?""",
        [config_id],
    ).fetchone()
    if row is None:
        return None
    return {
        "config_id": row[0],
        "backbone": row[1],
        "dim": int(row[2]),
        "dtype": row[3],
        "preprocessing": row[4],
        "vectors": int(row[5]),
    }


def store_summary(con) -> dict:
    """What `al status` prints: schema_version, images, paths_by_status, ground_truth_classes, scans, and
    embedding_configs (config_id, backbone, dim, vectors, parts; oldest first)."""
    one = lambda sql: con.execute(sql).fetchone()[0]
    configs = con.execute(
        """SELECT c.config_id, c.backbone, c.dim,
                  (SELECT count(*) FROM embedding_index i WHERE i.config_id = c.config_id),
                  (SELECT count(*) FROM embedding_parts p WHERE p.config_id = c.config_id)
           FROM embedding_configs c ORDER BY c.created_at"""
    ).fetchall()
    return {
        "schema_version": int(one("SELECT value FROM schema_info WHERE key = 'schema_version'")),
        "images": int(one("SELECT count(*) FROM images")),
        "paths_by_status": {
            s: int(n)
            for s, n in con.execute("SELECT status, count(*) FROM image_paths GROUP BY 1 ORDER BY 1").fetchall()
        },
        "ground_truth_classes": int(one("SELECT count(DISTINCT class_name) FROM ground_truth")),
        "scans": int(one("SELECT count(*) FROM scans")),
        "embedding_configs": [
            {"config_id": c, "backbone": b, "dim": int(d), "vectors": int(n), "parts": int(p)}
            for c, b, d, n, p in configs
        ],
    }
