"""Mapping a class's labels to another class (`al labels relabel OLD NEW`), recorded, never rewriting the history.

Schema version 8 (``RELABEL_MIGRATION``): ``class_relabels`` holds one row per mapping (old, new, when, how many
rows); ``relabelled_rows`` one row per labels row it maps (``label_id``: the row, delivered as ``old``, now read as
``new``) and per evaluation label it changed (``eval_image_id``, with the ``old`` label kept). A labels row is never
updated: the ``answers`` macro, ``annotation_votes`` and ``current_labels`` read a row's label through the latest
mapping of it (``relabelled_labels``), so the policy, the training labels, lineage and the audit views all see the
new class, and ``labels.label`` keeps what was delivered. An evaluation label is replaced in ``eval_set`` (it has no
history of its own) after its old value is recorded in ``relabelled_rows``.
"""

from al_core.catalogue.label_views import _ANSWERS_ASOF

_MAPPED = "coalesce(rl.label, l.label)"  # a labels row's label as read now: its latest mapping, else as delivered


def _mapped_answers_macro() -> str:
    """Version 4's ``answers_asof`` with each row's label read through ``relabelled_labels``."""
    sql = _ANSWERS_ASOF.replace("CREATE MACRO", "CREATE OR REPLACE MACRO", 1)
    for old, new in (
        ("l.image_id, l.label, l.is_skip", f"l.image_id, {_MAPPED} AS label, l.is_skip"),
        ("  LEFT JOIN win w ON", "  LEFT JOIN relabelled_labels rl ON rl.label_id = l.label_id\n  LEFT JOIN win w ON"),
    ):
        if sql.count(old) != 1:
            raise RuntimeError(f"schema version 8: the answers macro no longer holds {old!r}")
        sql = sql.replace(old, new)
    return sql


RELABEL_MIGRATION: list[str] = [
    """CREATE TABLE class_relabels (       -- one `al labels relabel OLD NEW`
        relabel_id INTEGER PRIMARY KEY, old VARCHAR NOT NULL, new VARCHAR NOT NULL,
        round INTEGER NOT NULL,            -- the loop's round when it was recorded
        n_labels INTEGER NOT NULL,         -- labels rows it maps
        n_eval INTEGER NOT NULL,           -- evaluation labels it changed
        relabelled_at TIMESTAMP NOT NULL)""",
    """CREATE TABLE relabelled_rows (      -- what one relabel changed, row by row
        relabel_id INTEGER NOT NULL,
        label_id BIGINT,                   -- a labels row now read as `new` (NULL for an evaluation label)
        eval_image_id VARCHAR,             -- an eval_set image whose label was `old` (NULL for a labels row)
        old VARCHAR NOT NULL, new VARCHAR NOT NULL)""",
    # each mapped labels row's label as read now: the latest relabel of it
    """CREATE VIEW relabelled_labels AS
        SELECT label_id, arg_max(new, relabel_id) AS label, max(relabel_id) AS relabel_id
        FROM relabelled_rows WHERE label_id IS NOT NULL GROUP BY label_id""",
    "ALTER TABLE metrics ADD COLUMN per_class_n_eval VARCHAR DEFAULT NULL",  # JSON: class -> evaluation images
    _mapped_answers_macro(),
    f"""CREATE OR REPLACE VIEW annotation_votes AS
        SELECT image_id, annotator, label, label_id, round FROM (
          SELECT l.image_id, coalesce(l.annotator, '-') AS annotator, {_MAPPED} AS label, l.is_skip, l.label_id,
                 l.round, row_number() OVER (PARTITION BY l.image_id, coalesce(l.annotator, '-')
                                             ORDER BY l.label_id DESC) AS rn
          FROM labels l LEFT JOIN relabelled_labels rl ON rl.label_id = l.label_id
          WHERE l.file_sha256 NOT IN (SELECT file_sha256 FROM retractions))
        WHERE rn = 1 AND NOT is_skip""",
    f"""CREATE OR REPLACE VIEW current_labels AS
        SELECT l.* REPLACE ({_MAPPED} AS label) FROM labels l JOIN image_labels i ON i.label_id = l.label_id
        LEFT JOIN relabelled_labels rl ON rl.label_id = l.label_id""",
]


def delivered_classes(con) -> set[str]:
    """Every class a non-skip labels row (read through its mappings) or an evaluation label names: a cheap
    superset of ``labelled_classes``'s keys (one scan of the base tables, no policy)."""
    rows = con.execute(
        f"""SELECT DISTINCT {_MAPPED} FROM labels l LEFT JOIN relabelled_labels rl ON rl.label_id = l.label_id
            WHERE NOT l.is_skip UNION SELECT DISTINCT label FROM eval_set WHERE label IS NOT NULL"""
    ).fetchall()
    return {r[0] for r in rows}


def labelled_classes(con) -> dict[str, tuple[int, int]]:
    """class -> (images whose counting answers name it, evaluation images labelled with it): every class the
    labels use now (each annotator's current answer, skips and retracted deliveries left out; mappings applied)."""
    out: dict[str, list[int]] = {}
    for label, n in con.execute(
        """SELECT label, count(DISTINCT image_id) FROM answers WHERE state = 'current' AND NOT is_skip
               GROUP BY label"""
    ).fetchall():
        out.setdefault(label, [0, 0])[0] = int(n)
    for label, n in con.execute(
        "SELECT label, count(*) FROM eval_set WHERE label IS NOT NULL GROUP BY label"
    ).fetchall():
        out.setdefault(label, [0, 0])[1] = int(n)
    return {c: (a, b) for c, (a, b) in out.items()}


def relabel_class(con, old: str, new: str, round_: int, at) -> dict:
    """Record the mapping ``old`` -> ``new`` (call inside one transaction): every labels row read as ``old``
    (superseded and retracted ones too, so the history reads the same) is mapped, every evaluation label ``old``
    becomes ``new`` with its old value recorded. Returns the ``class_relabels`` row as a dict."""
    relabel_id = int(con.execute("SELECT coalesce(max(relabel_id), 0) + 1 FROM class_relabels").fetchone()[0])
    con.execute(
        f"""INSERT INTO relabelled_rows (relabel_id, label_id, eval_image_id, old, new)
            SELECT ?, l.label_id, NULL, ?, ? FROM labels l LEFT JOIN relabelled_labels rl ON rl.label_id = l.label_id
            WHERE NOT l.is_skip AND {_MAPPED} = ?""",
        [relabel_id, old, new, old],
    )
    con.execute(
        """INSERT INTO relabelled_rows (relabel_id, label_id, eval_image_id, old, new)
                   SELECT ?, NULL, image_id, label, ? FROM eval_set WHERE label = ?""",
        [relabel_id, new, old],
    )
    n_labels, n_eval = con.execute(
        "SELECT count(label_id), count(eval_image_id) FROM relabelled_rows WHERE relabel_id = ?", [relabel_id]
    ).fetchone()
    con.execute(
        """UPDATE eval_set SET label = ? WHERE image_id IN (
                     SELECT eval_image_id FROM relabelled_rows WHERE relabel_id = ? AND eval_image_id IS NOT NULL)""",
        [new, relabel_id],
    )
    row = {
        "relabel_id": relabel_id,
        "old": old,
        "new": new,
        "round": int(round_),
        "n_labels": int(n_labels),
        "n_eval": int(n_eval),
        "relabelled_at": at,
    }
    con.execute(
        """INSERT INTO class_relabels (relabel_id, old, new, round, n_labels, n_eval, relabelled_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
        list(row.values()),
    )
    return row


def relabels_of_image(con, image_id: str) -> list[dict]:
    """Every mapping that changed one of the image's labels rows or its evaluation label, oldest first:
    relabel_id, old, new, relabelled_at, label_ids (its rows mapped), eval (its evaluation label changed)."""
    cur = con.execute(
        """SELECT c.relabel_id, c.old, c.new, c.relabelled_at,
                  list(r.label_id ORDER BY r.label_id) FILTER (WHERE r.label_id IS NOT NULL) AS label_ids,
                  bool_or(r.eval_image_id IS NOT NULL) AS eval
           FROM relabelled_rows r JOIN class_relabels c ON c.relabel_id = r.relabel_id
           LEFT JOIN labels l ON l.label_id = r.label_id
           WHERE l.image_id = ? OR r.eval_image_id = ?
           GROUP BY ALL ORDER BY c.relabel_id""",
        [image_id, image_id],
    )
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
