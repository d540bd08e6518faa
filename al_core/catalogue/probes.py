"""Named queries over the trained probes: ``probes``, ``probe_labels``, ``metrics``."""

import json
from collections.abc import Sequence

# The one rule for "the latest probe of a round": the highest version, then the newest training time.
LATEST_PROBE_ORDER = "version DESC, trained_at DESC"


def latest_probe_of_round(con, round_: int) -> dict | None:
    """The round's latest probe (LATEST_PROBE_ORDER) with its metrics, or None when the round has none."""
    cur = con.execute(
        f"""SELECT p.probe_id, p.round, p.version, p.trigger, p.path, p.sha256, p.config_id, p.n_labels,
                   m.accuracy, m.balanced_accuracy, m.macro_f1, m.n_eval
            FROM probes p LEFT JOIN metrics m USING (probe_id)
            WHERE p.round = ? ORDER BY {
            LATEST_PROBE_ORDER.replace("version", "p.version").replace("trained_at", "p.trained_at")
        } LIMIT 1""",
        [round_],
    )
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row, strict=True))


def n_probes_of_round(con, round_: int) -> int:
    return int(con.execute("SELECT count(*) FROM probes WHERE round = ?", [round_]).fetchone()[0])


def insert_probe(
    con,
    *,
    probe_id: str,
    round_: int,
    version: int,
    trigger: str,
    path: str,
    sha256: str,
    config_id: str,
    n_labels: int,
    n_classes: int,
    seed: int,
    train_seconds: float,
    trained_at,
    run_id: str | None,
    classes: Sequence[str] | None = None,
) -> None:
    """Record a probe; ``classes``: the class list it was trained with (output k is classes[k]), kept as JSON."""
    con.execute(
        """INSERT INTO probes (probe_id, round, version, trigger, path, sha256, config_id, n_labels, n_classes, seed,
                               train_seconds, trained_at, run_id, classes)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            probe_id,
            round_,
            version,
            trigger,
            path,
            sha256,
            config_id,
            n_labels,
            n_classes,
            seed,
            train_seconds,
            trained_at,
            run_id,
            None if classes is None else json.dumps(list(classes)),
        ],
    )


def probe_classes(con, probe_id: str) -> tuple[str, ...] | None:
    """The class list probe ``probe_id`` was trained with, or None (unknown probe, or recorded before the list was
    kept)."""
    row = con.execute("SELECT classes FROM probes WHERE probe_id = ?", [probe_id]).fetchone()
    if row is None or row[0] is None:
        return None
    return tuple(json.loads(row[0]))


def insert_probe_labels(con, probe_id: str, label_ids) -> None:
    """The labels a probe was trained on (one INSERT ... SELECT over an Arrow table)."""
    import pyarrow as pa

    label_ids = list(label_ids)
    con.register(
        "_probe_labels",
        pa.table(
            {
                "probe_id": pa.array([probe_id] * len(label_ids), pa.string()),
                "label_id": pa.array(label_ids, pa.int64()),
            }
        ),
    )
    try:
        con.execute("INSERT INTO probe_labels (probe_id, label_id) SELECT probe_id, label_id FROM _probe_labels")
    finally:
        con.unregister("_probe_labels")


def probe_file(con, probe_id: str) -> tuple[str, str] | None:
    """(path, sha256) recorded for a probe, or None for an unknown probe."""
    return con.execute("SELECT path, sha256 FROM probes WHERE probe_id = ?", [probe_id]).fetchone()


def put_metrics(
    con,
    *,
    probe_id: str,
    round_: int,
    accuracy: float | None,
    balanced_accuracy: float | None,
    macro_f1: float | None,
    per_class_recall: str,
    confusion: str,
    n_labels: int,
    n_eval: int,
    evaluated_at,
    per_class_n_eval: str | None = None,
) -> None:
    """A probe's metrics (``per_class_recall``, ``confusion`` and ``per_class_n_eval`` as JSON text); they replace
    earlier ones."""
    con.execute(
        """INSERT OR REPLACE INTO metrics (probe_id, round, accuracy, balanced_accuracy, macro_f1, per_class_recall,
                                           confusion, n_labels, n_eval, evaluated_at, per_class_n_eval)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            probe_id,
            round_,
            accuracy,
            balanced_accuracy,
            macro_f1,
            per_class_recall,
            confusion,
            n_labels,
            n_eval,
            evaluated_at,
            per_class_n_eval,
        ],
    )


def latest_probed_round(con) -> int | None:
    """The highest round with a trained probe, or None before the first probe."""
    return con.execute("SELECT max(round) FROM probes").fetchone()[0]
