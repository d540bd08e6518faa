"""Named queries of `al simulate` (al_core.reporting.simulation): the images with their ground truth,
the evaluation set and the images already proposed. Every function takes an open DuckDB connection."""

from __future__ import annotations


def readable_images_with_truth(con) -> list[tuple[str, str | None, int]]:
    """(image_id, a ground-truth class or None, number of distinct ground-truth classes) of every image with
    a readable ('ok') path, ascending image_id."""
    return [
        (iid, gt, int(n))
        for iid, gt, n in con.execute(
            """SELECT p.image_id, any_value(g.class_name), count(DISTINCT g.class_name)
           FROM (SELECT DISTINCT image_id FROM image_paths WHERE status = 'ok') p
           LEFT JOIN ground_truth g USING (image_id) GROUP BY p.image_id ORDER BY p.image_id"""
        ).fetchall()
    ]


def eval_set_labels(con) -> list[tuple[str, str | None]]:
    """(image_id, label or None while unlabelled) of the evaluation set, ascending image_id."""
    return con.execute("SELECT image_id, label FROM eval_set ORDER BY image_id").fetchall()


def proposed_image_ids(con) -> set[str]:
    """Every image some batch proposed."""
    return {r[0] for r in con.execute("SELECT DISTINCT image_id FROM queries").fetchall()}


def delivered_training_labels(con) -> list[tuple[str, str]]:
    """(image_id, label) of every image's current training label (skips left out), ascending image_id."""
    return con.execute("SELECT image_id, label FROM current_labels WHERE NOT is_skip ORDER BY image_id").fetchall()


def strategies_that_chose(con) -> list[tuple[str, int]]:
    """(strategy, number of images its batches proposed), the seed pool included, most first."""
    return con.execute(
        "SELECT strategy, count(DISTINCT image_id) FROM queries GROUP BY strategy ORDER BY 2 DESC, 1"
    ).fetchall()
