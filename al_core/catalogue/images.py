"""Named queries over the scanned images: ``images``, ``image_paths``, ``ground_truth``, ``scans``."""


def known_image_ids(con) -> set[str]:
    """Ids of every image with at least one readable ('ok') path: the ids a label file may name."""
    return {r[0] for r in con.execute("SELECT DISTINCT image_id FROM image_paths WHERE status = 'ok'").fetchall()}


def ground_truth_classes(con) -> tuple[str, ...]:
    """The distinct ground-truth class names found by the scans (folder names or a manifest's column), sorted."""
    return tuple(r[0] for r in con.execute("SELECT DISTINCT class_name FROM ground_truth ORDER BY 1").fetchall())


def ok_path_of(con, image_ids=None) -> dict[str, str]:
    """image_id -> its first readable path (min over 'ok' paths); of ``image_ids`` only, when given."""
    if image_ids is None:
        return dict(con.execute(
            "SELECT image_id, min(path) FROM image_paths WHERE status = 'ok' GROUP BY 1").fetchall())
    return dict(con.execute("SELECT image_id, min(path) FROM image_paths WHERE status = 'ok' "
                            "AND image_id IN (SELECT unnest(?)) GROUP BY 1", [list(image_ids)]).fetchall())


def known_images_with_ground_truth(con) -> list[tuple[str, str | None]]:
    """(image_id, a ground-truth class or None) of every known image, by image_id."""
    return con.execute(
        """SELECT p.image_id, any_value(g.class_name) FROM (SELECT DISTINCT image_id FROM image_paths
           WHERE status = 'ok') p LEFT JOIN ground_truth g USING (image_id) GROUP BY p.image_id ORDER BY p.image_id"""
    ).fetchall()


def ground_truth_of(con, image_ids) -> dict[str, str]:
    """image_id -> a ground-truth class, for those of ``image_ids`` that have one."""
    return dict(con.execute("SELECT image_id, any_value(class_name) FROM ground_truth "
                            "WHERE image_id IN (SELECT unnest(?)) GROUP BY 1", [list(image_ids)]).fetchall())


def path_status_counts(con, source: str) -> dict[str, int]:
    """status -> number of paths of ``source`` (an image root or manifest)."""
    rows = con.execute("SELECT status, count(*) FROM image_paths WHERE source = ? GROUP BY status ORDER BY status",
                       [source]).fetchall()
    return {s: int(n) for s, n in rows}
