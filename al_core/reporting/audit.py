"""Audit and export: rounds, per-image lineage, label export, database snapshots.

Everything here reads the store through short read-only connections
(``store.connect(read_only=True)``): DuckDB lets one process write, and a reader
that holds the file blocks the loop's writer, so each function opens, reads and
closes at once, and does the slow work (probe predictions, file writing) after
the connection is closed.

The SQL views ``round_summary`` and ``label_lineage`` (schema version 2,
documented in docs/sql.md) answer the same questions for analysts; the Python
functions below compute them from the base tables on their own, and the tests
check that both agree.

Definitions shared with the views:

- labels_so_far (a round r): training labels as of round r: for each image its
  newest labels row (highest label_id) ingested in a round <= r, leaving out
  rows of a retracted delivery from its ``retractions.effective_round`` on;
  skips are counted separately, never as training labels.
- the proposing query of a labels row: the image's latest ``queries`` row from a
  round before the label's round (labels of round r answer batch r-1); none for
  a label of an image that was never proposed (``labels.proposed`` false).
- a labels row is ``current`` (what the loop uses now, ``current_labels``),
  ``superseded`` (a newer label of the same image won) or ``retracted`` (its
  delivery was withdrawn).
"""

import datetime as _dt
import os
import re
import time
from pathlib import Path

import numpy as np

from al_core.catalogue.store import Store, StoreError, now

EXPORT_FORMATS = ("csv", "parquet")
EXPORT_COLUMNS = ("image_id", "path", "label", "label_source", "predicted", "confidence", "probe_id")
MIN_PREFIX = 8


class AuditError(StoreError):
    """An audit request that cannot be answered (unknown image, bad argument); the message says why."""


def iso(ts) -> str | None:
    """A catalogue timestamp (naive UTC) as an ISO 8601 string with a Z."""
    if ts is None:
        return None
    if isinstance(ts, _dt.datetime):
        if ts.tzinfo is not None:
            ts = ts.astimezone(_dt.UTC).replace(tzinfo=None)
        return ts.isoformat() + "Z"
    return str(ts)


def _f(v):
    return None if v is None else float(v)


# ----------------------------------------------------------------------------- rounds
def rounds_table(store: Store) -> list[dict]:
    """One row per round (with a batch, a probe or ingested labels), ascending.

    Keys: round, kind, labels_so_far, skips_so_far, labels_ingested, strategy,
    seed, budget, requested_budget, config_id, probe_id, probe_version,
    probe_trigger, probe_n_labels, n_probes, accuracy, balanced_accuracy,
    macro_f1, n_eval, proposed_at, evaluated_at (ISO strings), status ('open',
    'closed', or 'not proposed' for a round that trained a probe but proposed
    no batch, e.g. once the budget is spent), closed_at, closed_by, note.
    The probe and metric columns are those of the round's latest probe version.
    """
    with store.connect(read_only=True, view=False) as con:
        rounds = con.execute(
            """SELECT round, kind, strategy, seed, budget, requested_budget, config_id, status, proposed_at,
                      closed_at, closed_by, note FROM rounds""").fetchall()
        probes = con.execute(
            """SELECT p.probe_id, p.round, p.version, p.trigger, p.n_labels, p.trained_at,
                      m.accuracy, m.balanced_accuracy, m.macro_f1, m.n_eval, m.evaluated_at
               FROM probes p LEFT JOIN metrics m ON m.probe_id = p.probe_id""").fetchall()
        labels = con.execute(
            "SELECT label_id, image_id, is_skip, round, file_sha256 FROM labels ORDER BY label_id").fetchall()
        retractions = con.execute("SELECT file_sha256, effective_round FROM retractions").fetchall()
    retracted_from: dict[str, int] = {}
    for sha, eff in retractions:
        retracted_from[sha] = min(int(eff), retracted_from.get(sha, int(eff)))
    by_round = {r[0]: r for r in rounds}
    latest: dict[int, tuple] = {}
    n_probes: dict[int, int] = {}
    for p in probes:
        rnd = p[1]
        n_probes[rnd] = n_probes.get(rnd, 0) + 1
        if rnd not in latest or (p[2], p[5]) > (latest[rnd][2], latest[rnd][5]):
            latest[rnd] = p
    ingested: dict[int, int] = {}
    for _, _, _, rnd, _ in labels:
        ingested[rnd] = ingested.get(rnd, 0) + 1
    out = []
    for rnd in sorted(set(by_round) | set(latest) | set(ingested)):
        state: dict[str, bool] = {}  # image -> is_skip of its newest label as of this round
        for _label_id, image_id, is_skip, lrnd, sha in labels:  # ascending label_id: the newest wins
            if lrnd <= rnd and not (sha in retracted_from and retracted_from[sha] <= rnd):
                state[image_id] = bool(is_skip)
        n_skip = sum(state.values())
        r = by_round.get(rnd)
        p = latest.get(rnd)
        out.append({
            "round": rnd,
            "kind": r[1] if r else None,
            "labels_so_far": len(state) - n_skip,
            "skips_so_far": n_skip,
            "labels_ingested": ingested.get(rnd, 0),
            "strategy": r[2] if r else None,
            "seed": r[3] if r else None,
            "budget": r[4] if r else None,
            "requested_budget": r[5] if r else None,
            "config_id": r[6] if r else None,
            "probe_id": p[0] if p else None,
            "probe_version": p[2] if p else None,
            "probe_trigger": p[3] if p else None,
            "probe_n_labels": p[4] if p else None,
            "n_probes": n_probes.get(rnd, 0),
            "accuracy": _f(p[6]) if p else None,
            "balanced_accuracy": _f(p[7]) if p else None,
            "macro_f1": _f(p[8]) if p else None,
            "n_eval": p[9] if p else None,
            "proposed_at": iso(r[8]) if r else None,
            "evaluated_at": iso(p[10]) if p else None,
            "status": r[7] if r else "not proposed",
            "closed_at": iso(r[9]) if r else None,
            "closed_by": r[10] if r else None,
            "note": r[11] if r else None,
        })
    return out


# ----------------------------------------------------------------------------- lineage
def _resolve_image_id(con, image_id: str) -> str:
    p = (image_id or "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]+", p):
        raise AuditError(f"{image_id!r} is not an image id: image ids are sha256 hex digests "
                         f"(give the whole id or a unique prefix of at least {MIN_PREFIX} hex characters)")
    if len(p) < MIN_PREFIX:
        raise AuditError(f"image id prefix {p!r} is too short: give at least {MIN_PREFIX} hex characters")
    if len(p) > 64:
        raise AuditError(f"{image_id!r} is longer than a sha256 image id (64 hex characters)")
    rows = con.execute(
        """SELECT image_id FROM (
             SELECT image_id FROM images UNION SELECT image_id FROM image_paths WHERE image_id IS NOT NULL
             UNION SELECT image_id FROM labels UNION SELECT image_id FROM embedding_index)
           WHERE starts_with(image_id, ?) ORDER BY image_id LIMIT 6""", [p]).fetchall()
    if not rows:
        raise AuditError(f"no image with id {'prefix ' if len(p) < 64 else ''}{p!r} in the catalogue")
    if len(rows) > 1:
        shown = ", ".join(r[0][:16] + "..." for r in rows[:5])
        more = " and more" if len(rows) > 5 else ""
        raise AuditError(f"image id prefix {p!r} is ambiguous: it matches {shown}{more}; give more characters")
    return rows[0][0]


def lineage(store: Store, image_id: str) -> dict:
    """Everything the catalogue knows about one image, by full id or unique prefix (>= 8 hex chars).

    Keys: image_id, image (size, format, first_seen, first_scan_id; None if the
    image was never decoded), paths (path, status, error, source, first_seen,
    last_seen), ground_truth (class names from folders/manifest; simulation),
    embeddings (config_id, backbone, dim, part_id, embedded_at), eval_set (label,
    source, added_at, or None), proposals (round, rank, strategy, score, path,
    proposed_at), labels (every labels row, oldest first: label, is_skip,
    proposed, round, received_at, annotator, annotation_id, line, file_id,
    file_name, file_sha256, file_status, file_stored_path, retracted,
    retracted_at, retracted_from_round, state 'current' | 'superseded' |
    'retracted', is_current, proposed_round / proposed_strategy /
    proposed_score / proposed_rank (the query it answered), probe_ids),
    current_label (the current row, or None), probes (every probe trained with
    one of its labels: probe_id, round, version, trigger, sha256, path,
    trained_at, n_labels, accuracy, balanced_accuracy, label_ids).
    Raises AuditError for an unknown or ambiguous id.
    """
    with store.connect(read_only=True, view=False) as con:
        iid = _resolve_image_id(con, image_id)
        q = lambda sql: con.execute(sql, [iid]).fetchall()  # noqa: E731
        img = q("SELECT size_bytes, width, height, format, first_seen, first_scan_id FROM images WHERE image_id = ?")
        paths = q("""SELECT path, status, error, source, first_seen, last_seen FROM image_paths
                     WHERE image_id = ? ORDER BY path""")
        truth = q("SELECT DISTINCT class_name FROM ground_truth WHERE image_id = ? ORDER BY 1")
        emb = q("""SELECT e.config_id, c.backbone, c.dim, e.part_id, p.created_at FROM embedding_index e
                   LEFT JOIN embedding_configs c ON c.config_id = e.config_id
                   LEFT JOIN embedding_parts p ON p.part_id = e.part_id
                   WHERE e.image_id = ? ORDER BY p.created_at, e.config_id""")
        ev = q("SELECT label, source, added_at FROM eval_set WHERE image_id = ?")
        props = q("""SELECT q.round, q.rank, q.strategy, q.score, q.path, r.proposed_at FROM queries q
                     LEFT JOIN rounds r ON r.round = q.round WHERE q.image_id = ? ORDER BY q.round""")
        labs = q("""SELECT l.label_id, l.label, l.is_skip, l.proposed, l.round, l.received_at, l.annotator,
                           l.annotation_id, l.line, l.note, l.file_id, f.original_name, l.file_sha256, f.status,
                           f.stored_path
                    FROM labels l LEFT JOIN label_files f ON f.file_id = l.file_id
                    WHERE l.image_id = ? ORDER BY l.label_id""")
        shas = sorted({r[12] for r in labs})
        rets = con.execute(
            "SELECT file_sha256, retracted_at, effective_round, reason FROM retractions "
            "WHERE file_sha256 IN (SELECT unnest(?)) ORDER BY retracted_at", [shas]).fetchall() if shas else []
        trained = q("""SELECT pl.label_id, p.probe_id, p.round, p.version, p.trigger, p.sha256, p.path, p.trained_at,
                              p.n_labels, m.accuracy, m.balanced_accuracy
                       FROM probe_labels pl JOIN labels l ON l.label_id = pl.label_id
                       JOIN probes p ON p.probe_id = pl.probe_id LEFT JOIN metrics m ON m.probe_id = p.probe_id
                       WHERE l.image_id = ? ORDER BY p.round, p.version, p.probe_id, pl.label_id""")
    ret: dict[str, dict] = {}
    for sha, at, eff, reason in rets:
        r = ret.setdefault(sha, {"retracted_at": at, "retracted_from_round": int(eff), "reasons": []})
        r["retracted_from_round"] = min(r["retracted_from_round"], int(eff))
        if reason:
            r["reasons"].append(reason)
    # current: the newest row of a delivery that is not retracted (the current_labels rule)
    live = [r for r in labs if r[12] not in ret]
    current_id = live[-1][0] if live else None
    probes: dict[str, dict] = {}
    probe_ids_of: dict[int, list[str]] = {}
    for label_id, pid, rnd, ver, trig, sha, path, at, n_labels, acc, bacc in trained:
        probe_ids_of.setdefault(label_id, []).append(pid)
        p = probes.setdefault(pid, {"probe_id": pid, "round": rnd, "version": ver, "trigger": trig, "sha256": sha,
                                    "path": path, "trained_at": iso(at), "n_labels": n_labels,
                                    "accuracy": _f(acc), "balanced_accuracy": _f(bacc), "label_ids": []})
        p["label_ids"].append(label_id)
    labels = []
    for (label_id, label, is_skip, proposed, rnd, received, annotator, ann_id, line, note, file_id, fname, sha,
         fstatus, stored) in labs:
        answered = [p for p in props if p[0] < rnd]
        pq = answered[-1] if answered else None
        r = ret.get(sha)
        state = "retracted" if r else ("current" if label_id == current_id else "superseded")
        labels.append({
            "label_id": label_id, "label": label, "is_skip": bool(is_skip), "proposed": bool(proposed),
            "round": rnd, "received_at": iso(received), "annotator": annotator, "annotation_id": ann_id,
            "line": line, "note": note, "file_id": file_id, "file_name": fname, "file_sha256": sha,
            "file_status": fstatus, "file_stored_path": stored,
            "retracted": r is not None, "retracted_at": iso(r["retracted_at"]) if r else None,
            "retracted_from_round": r["retracted_from_round"] if r else None,
            "retraction_reason": "; ".join(r["reasons"]) or None if r else None,
            "state": state, "is_current": state == "current",
            "proposed_round": pq[0] if pq else None, "proposed_strategy": pq[2] if pq else None,
            "proposed_score": _f(pq[3]) if pq else None, "proposed_rank": pq[1] if pq else None,
            "probe_ids": probe_ids_of.get(label_id, []),
        })
    return {
        "image_id": iid,
        "image": ({"size_bytes": img[0][0], "width": img[0][1], "height": img[0][2], "format": img[0][3],
                   "first_seen": iso(img[0][4]), "first_scan_id": img[0][5]} if img else None),
        "paths": [{"path": p, "status": s, "error": e, "source": src, "first_seen": iso(f), "last_seen": iso(la)}
                  for p, s, e, src, f, la in paths],
        "ground_truth": [r[0] for r in truth],
        "embeddings": [{"config_id": c, "backbone": b, "dim": d, "part_id": pid, "embedded_at": iso(at)}
                       for c, b, d, pid, at in emb],
        "eval_set": {"label": ev[0][0], "source": ev[0][1], "added_at": iso(ev[0][2])} if ev else None,
        "proposals": [{"round": r, "rank": k, "strategy": s, "score": _f(sc), "path": p, "proposed_at": iso(at)}
                      for r, k, s, sc, p, at in props],
        "labels": labels,
        "current_label": next((dict(lab) for lab in labels if lab["is_current"]), None),
        "probes": list(probes.values()),
    }


# ----------------------------------------------------------------------------- export
def _atomic_target(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_name(f".{out.name}.tmp-{os.getpid()}")


def _fsync_replace(tmp: Path, out: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out)


def export(store: Store, cfg, out_path: str | os.PathLike, fmt: str | None = None) -> dict:
    """Write the current labels and the latest probe's predictions, one row per image.

    Rows: every image with a vector in the latest probe's embedding config (or,
    before any probe, the latest round's / the newest config), plus any
    labelled image without a vector there; ascending image_id. Columns:
    image_id, path (an ok path, else any known), label (current label: newest
    non-retracted; the skip label for a skip), label_source ('human', 'skip',
    or null when unlabelled), predicted (class name), confidence (the predicted
    class's probability), probe_id (null before the first probe, and for an
    image without a vector). ``fmt``: 'csv' or 'parquet' (default: from the
    file suffix, else csv). The file is written to a temporary name beside
    ``out_path``, fsynced and renamed, so a reader never sees half a file.
    Returns a summary dict.
    """
    import pyarrow as pa

    from al_core.loop.train import load_probe

    out = Path(out_path).absolute()
    fmt = (fmt or ("parquet" if out.suffix.lower() in (".parquet", ".pq") else "csv")).lower()
    if fmt not in EXPORT_FORMATS:
        raise AuditError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    with store.connect(read_only=True, view=False) as con:
        probe_row = con.execute(
            """SELECT probe_id, config_id, n_classes FROM probes
               ORDER BY round DESC, version DESC, trained_at DESC LIMIT 1""").fetchone()
        if probe_row:
            config_id = probe_row[1]
        else:
            r = con.execute("SELECT config_id FROM rounds ORDER BY round DESC LIMIT 1").fetchone() or \
                con.execute("SELECT config_id FROM embedding_configs ORDER BY created_at DESC LIMIT 1").fetchone()
            config_id = r[0] if r else None
        current = {iid: (label, bool(skip)) for iid, label, skip in con.execute(
            "SELECT image_id, label, is_skip FROM current_labels").fetchall()}
        paths = dict(con.execute(
            """SELECT image_id, coalesce(min(path) FILTER (WHERE status = 'ok'), min(path)) FROM image_paths
               WHERE image_id IS NOT NULL GROUP BY image_id""").fetchall())
    # the database is closed from here on: loading vectors and predicting never holds it
    probe_id = probe_row[0] if probe_row else None
    if config_id is not None:
        emb = store.load_embeddings(config_id)
        ids = [str(i) for i in emb.image_ids]
    else:
        emb, ids = None, []
    predicted: list = [None] * len(ids)
    confidence = np.full(len(ids), np.nan)
    if probe_row and len(ids):
        classes = list(cfg.class_names(store))
        if len(classes) != int(probe_row[2]):
            raise AuditError(f"probe {probe_id} has {probe_row[2]} classes, the project has {len(classes)} "
                             f"({', '.join(classes)}): cannot name its predictions")
        probe = load_probe(store, probe_id)
        proba = probe.predict_proba(emb.features)
        k = proba.argmax(axis=1)
        predicted = [classes[j] for j in k]
        confidence = proba[np.arange(len(k)), k].astype(np.float64)
    rows_ids = ids + sorted(set(current) - set(ids))
    n_extra = len(rows_ids) - len(ids)
    predicted = predicted + [None] * n_extra
    confidence = np.concatenate([confidence, np.full(n_extra, np.nan)])
    has_pred = [p is not None for p in predicted]
    order = np.argsort(np.asarray(rows_ids, dtype=object).astype(str), kind="stable") if rows_ids else []
    rows_ids = [rows_ids[i] for i in order]
    predicted = [predicted[i] for i in order]
    has_pred = [has_pred[i] for i in order]
    confidence = confidence[order] if len(rows_ids) else confidence
    labels = [current.get(i, (None, False)) for i in rows_ids]
    table = pa.table({
        "image_id": pa.array(rows_ids, pa.string()),
        "path": pa.array([paths.get(i) for i in rows_ids], pa.string()),
        "label": pa.array([lab for lab, _ in labels], pa.string()),
        "label_source": pa.array([None if lab is None else ("skip" if skip else "human") for lab, skip in labels],
                                 pa.string()),
        "predicted": pa.array(predicted, pa.string()),
        "confidence": pa.array(confidence, pa.float64(), mask=~np.asarray(has_pred, dtype=bool)),
        "probe_id": pa.array([probe_id if h else None for h in has_pred], pa.string()),
    })
    tmp = _atomic_target(out)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, tmp, write_options=pcsv.WriteOptions(quoting_style="needed"))
        _fsync_replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    n_human = sum(1 for lab, skip in labels if lab is not None and not skip)
    n_skip = sum(1 for lab, skip in labels if lab is not None and skip)
    return {"path": str(out), "format": fmt, "rows": len(rows_ids), "labelled": n_human, "skips": n_skip,
            "predicted": int(sum(has_pred)), "probe_id": probe_id, "config_id": config_id,
            "unembedded_labelled": n_extra}


# ----------------------------------------------------------------------------- snapshot
def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def snapshot(store: Store, dest: str | os.PathLike, *, overwrite: bool = False) -> dict:
    """Write a consistent, read-only copy of the catalogue to ``dest`` (a DuckDB file).

    Consistency: one read-only connection to the catalogue ATTACHes a new file
    and runs ``COPY FROM DATABASE`` inside a single transaction, so the copy is
    one MVCC snapshot of the last committed state (committed rows only, WAL
    included: the read-only open replays it); while that connection is open, no
    other process can write the file (DuckDB's file lock), so the copy is also
    exactly the state on disk. The lock is held only for the copy itself; a
    writer waiting meanwhile retries within its ``store.lock_timeout_s``.

    The copy is written to a temporary name, checkpointed (no WAL beside it),
    made read-only (mode 0444), and renamed to ``dest``. It opens alone
    (``duckdb -readonly dest`` or ``duckdb.connect(dest, read_only=True)``):
    every table and view is inside, ``schema_info`` gains ``snapshot_of`` and
    ``snapshot_at``, and the ``embeddings`` view keeps the absolute paths of
    the vector part files, so it answers on the same machine (the part files are
    immutable once committed). Returns the row count of every table copied
    (counted inside the copy's transaction) and the file's path and size.
    """
    dest = Path(dest).absolute()
    if dest.exists() and not overwrite:
        raise AuditError(f"{dest} exists; choose another name (snapshots are never overwritten)")
    if dest.resolve() == store.db_path.resolve():
        raise AuditError("the snapshot cannot replace the catalogue itself")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    wal = tmp.with_name(tmp.name + ".wal")
    for p in (tmp, wal):
        if p.exists():
            p.unlink()
    t0 = time.monotonic()
    counts: dict[str, int] = {}
    try:
        with store.connect(read_only=True, view=False) as con:
            src_name = con.execute("SELECT current_database()").fetchone()[0]
            src = _quote_ident(src_name)
            lit = "'" + str(tmp).replace("'", "''") + "'"
            con.execute(f"ATTACH {lit} AS al_snapshot (READ_WRITE)")
            try:
                con.execute("BEGIN TRANSACTION")
                try:
                    con.execute(f"COPY FROM DATABASE {src} TO al_snapshot")
                    tables = [r[0] for r in con.execute(
                        """SELECT table_name FROM duckdb_tables()
                           WHERE database_name = ? AND schema_name = 'main' AND NOT temporary ORDER BY 1""",
                        [src_name]).fetchall()]
                    for t in tables:
                        counts[t] = int(con.execute(f"SELECT count(*) FROM {src}.main.{_quote_ident(t)}").fetchone()[0])
                    con.execute("DELETE FROM al_snapshot.main.schema_info WHERE key IN ('snapshot_of', 'snapshot_at')")
                    con.execute("INSERT INTO al_snapshot.main.schema_info VALUES ('snapshot_of', ?), ('snapshot_at', ?)",
                                [str(store.db_path), now().isoformat()])
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("CHECKPOINT al_snapshot")
            finally:
                con.execute("DETACH al_snapshot")
        if wal.exists():
            raise AuditError(f"snapshot {tmp} left a write-ahead log after its checkpoint; not published")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o444)
        os.replace(tmp, dest)
    finally:
        for p in (tmp, wal):
            if p.exists():
                p.unlink()
    return {"path": str(dest), "bytes": dest.stat().st_size, "tables": counts,
            "seconds": round(time.monotonic() - t0, 3), "source": str(store.db_path)}
