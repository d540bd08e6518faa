"""Named queries over the embeddings' catalogue rows: ``embedding_parts``, ``embedding_index``,
``embedding_failures``."""


def parts_signature(con, config_id: str) -> tuple:
    """(number of parts, rows over all parts, highest part id) of a config: it changes whenever a part is committed."""
    return tuple(con.execute("SELECT count(*), coalesce(sum(n_rows), 0), max(part_id) FROM embedding_parts "
                             "WHERE config_id = ?", [config_id]).fetchone())


def coverage_gaps(con, source: str, config_id: str) -> tuple[int, int]:
    """(ok images of ``source`` with neither a vector of ``config_id`` nor a recorded failure, duplicate vectors)."""
    missing, dup = con.execute(
        """WITH ok AS (SELECT DISTINCT image_id FROM image_paths WHERE status = 'ok' AND source = ?),
                idx AS (SELECT image_id FROM embedding_index WHERE config_id = ?),
                failed AS (SELECT DISTINCT image_id FROM embedding_failures WHERE config_id = ?)
           SELECT (SELECT count(*) FROM ok WHERE image_id NOT IN (SELECT image_id FROM idx)
                                        AND image_id NOT IN (SELECT image_id FROM failed)),
                  (SELECT count(*) - count(DISTINCT image_id) FROM idx)""",
        [source, config_id, config_id]).fetchone()
    return int(missing), int(dup)
