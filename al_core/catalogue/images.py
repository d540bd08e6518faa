"""Named queries over the scanned images: ``images``, ``image_paths``, ``ground_truth``, ``scans``."""


def known_image_ids(con) -> set[str]:
    """Ids of every image with at least one readable ('ok') path: the ids a label file may name."""
    return {r[0] for r in con.execute("SELECT DISTINCT image_id FROM image_paths WHERE status = 'ok'").fetchall()}


def ground_truth_classes(con) -> tuple[str, ...]:
    """The distinct ground-truth class names found by the scans (folder names or a manifest's column), sorted."""
    return tuple(r[0] for r in con.execute("SELECT DISTINCT class_name FROM ground_truth ORDER BY 1").fetchall())
