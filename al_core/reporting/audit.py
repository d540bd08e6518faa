"""Audit and export (long: four read-only answers built on the same frames): rounds, lineage, export, snapshots.

Everything here reads the store through short read-only connections
(``store.connect(read_only=True)``): DuckDB lets one process write, and a reader
that holds the file blocks the loop's writer, so each function opens, reads and
closes at once, and does the slow work (probe predictions, file writing) after
the connection is closed. The queries are the named functions of
al_core.catalogue.audit; tables arrive as polars frames.

The SQL views ``round_summary`` and ``label_lineage`` (documented in
docs/sql.md) answer the same questions for analysts. What a label is worth
(which answers count, the training label of an image under ``labels.policy``,
the counts as of a round) has one definition, the views of
al_core.catalogue.label_views, which these functions read; the rest (the
rounds table's probes, the proposing queries, retractions) they compute from
the base tables, and the tests check that both agree. Both take "the latest
probe of a round" from the one rule, al_core.catalogue.probes.LATEST_PROBE_ORDER.

- labels_so_far (a round r): images with a training label as of round r
  (answers ingested in a round <= r, a retracted delivery's rows left out from
  its ``retractions.effective_round`` on); skipped and disputed images are
  counted separately, never as training labels.
- the proposing query of a labels row: the image's latest ``queries`` row from a
  round before the label's round (labels of round r answer batch r-1); none for
  a label of an image that was never proposed (``labels.proposed`` false).
- a labels row is ``current`` (one of the answers that make the image's label),
  ``superseded`` (a later answer of the same annotator, or the image was
  proposed again and answered) or ``retracted`` (its delivery was withdrawn);
  ``decides`` marks the row the training label (or skip) is taken from.
"""

import datetime as _dt
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import polars as pl

from al_core.catalogue import audit as Q
from al_core.catalogue import images as images_q
from al_core.catalogue import labels as labels_q
from al_core.catalogue import quality as quality_q
from al_core.catalogue import relabels as relabels_q
from al_core.catalogue.reports import newest_embedded_config_id
from al_core.catalogue.store import Store, StoreError, now
from al_core.files.atomic import atomic_path
from al_core.files.hashing import MIN_USER_PREFIX_CHARS, short
from al_core.labels.names import ImageNames

EXPORT_FORMATS = ("csv", "parquet")
EXPORT_COLUMNS = (
    "image_id",
    "path",
    "label",
    "label_source",
    "predicted",
    "confidence",
    "probe_id",
    "n_paths",
    "paths",
)
IMAGE_ID_CHARS = 64  # an image id is a sha256 hex digest
AMBIGUOUS_SHOWN = 5  # ids listed in the message for an ambiguous prefix
SNAPSHOT_MODE = 0o444  # snapshots are read-only files
ROUND_COLUMNS = (
    "round",
    "kind",
    "labels_so_far",
    "skips_so_far",
    "labels_ingested",
    "strategy",
    "seed",
    "budget",
    "requested_budget",
    "config_id",
    "probe_id",
    "probe_version",
    "probe_trigger",
    "probe_n_labels",
    "n_probes",
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "n_eval",
    "proposed_at",
    "evaluated_at",
    "status",
    "closed_at",
    "closed_by",
    "note",
    "disputed_so_far",
    "disagreements_so_far",
)
SO_FAR_COLUMNS = ("labels_so_far", "skips_so_far", "disputed_so_far", "disagreements_so_far")
ROUND_TIMES = ("proposed_at", "evaluated_at", "closed_at")


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
def _round_frame(
    rounds: pl.DataFrame, probes: pl.DataFrame, labels: pl.DataFrame, so_far: pl.DataFrame
) -> pl.DataFrame:
    """The rounds table as one frame (ROUND_COLUMNS), one row per round with a batch, a probe or labels."""
    numbers = (
        pl.concat([rounds["round"].cast(pl.Int64), probes["round"].cast(pl.Int64), labels["round"].cast(pl.Int64)])
        .unique()
        .sort()
    )
    ingested = labels.group_by("round").agg(labels_ingested=pl.len().cast(pl.Int64))
    probes = probes.rename({"version": "probe_version", "trigger": "probe_trigger", "n_labels": "probe_n_labels"})
    with_round = lambda f: f.with_columns(pl.col("round").cast(pl.Int64))
    frame = pl.DataFrame({"round": numbers})
    for part in (rounds, so_far.with_columns(pl.col(SO_FAR_COLUMNS).cast(pl.Int64)), ingested, probes):
        frame = frame.join(with_round(part), on="round", how="left")
    return (
        frame.sort("round")
        .with_columns(
            pl.col(*SO_FAR_COLUMNS, "labels_ingested", "n_probes").fill_null(0),
            pl.col("status").fill_null("not proposed"),
        )
        .select(ROUND_COLUMNS)
    )


def rounds_table(store: Store) -> list[dict]:
    """One row per round (with a batch, a probe or ingested labels), ascending.

    Keys: round, kind, labels_so_far, skips_so_far (images every annotator skipped), disputed_so_far (no
    training label: a disagreement under the unanimous policy), disagreements_so_far, labels_ingested, strategy,
    seed, budget, requested_budget, config_id, probe_id, probe_version,
    probe_trigger, probe_n_labels, n_probes, accuracy, balanced_accuracy,
    macro_f1, n_eval, proposed_at, evaluated_at (ISO strings), status ('open',
    'closed', or 'not proposed' for a round that trained a probe but proposed
    no batch, e.g. once the budget is spent), closed_at, closed_by, note.
    The probe and metric columns are those of the round's latest probe
    (al_core.catalogue.probes.LATEST_PROBE_ORDER).
    """
    with store.connect(read_only=True, view=False) as con:
        rounds = Q.rounds_frame(con)
        probes = Q.latest_probe_per_round(con)
        labels = Q.label_events(con)
        so_far = Q.labels_so_far(con)
    rows = _round_frame(rounds, probes, labels, so_far).to_dicts()
    for r in rows:
        r.update({k: iso(r[k]) for k in ROUND_TIMES})
    return rows


# ----------------------------------------------------------------------------- lineage
def _check_image_prefix(image_id: str) -> str:
    p = (image_id or "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]+", p):
        raise AuditError(
            f"{image_id!r} is not an image id: image ids are sha256 hex digests "
            f"(give the whole id or a unique prefix of at least {MIN_USER_PREFIX_CHARS} hex characters)"
        )
    if len(p) < MIN_USER_PREFIX_CHARS:
        raise AuditError(f"image id prefix {p!r} is too short: give at least {MIN_USER_PREFIX_CHARS} hex characters")
    if len(p) > IMAGE_ID_CHARS:
        raise AuditError(f"{image_id!r} is longer than a sha256 image id ({IMAGE_ID_CHARS} hex characters)")
    return p


def _resolve_image_id(con, image_id: str, root: str | os.PathLike | None = None) -> str:
    """The one image id that ``image_id`` (a whole id or a unique prefix, a path relative to ``root`` or as
    listed, a unique file name: al_core.labels.names) names; AuditError otherwise."""
    v = (image_id or "").strip()
    if v and not re.fullmatch(r"[0-9a-fA-F]+", v):
        found, why = ImageNames(images_q.ok_image_paths(con), root).resolve(v)
        if found is not None:
            return found
        if why is not None:
            raise AuditError(why)
        raise AuditError(
            f"{image_id!r} is not an image id, nor the path (relative to the image root) or unique file "
            f"name of an image in the catalogue (or give a sha256 prefix of {MIN_USER_PREFIX_CHARS}+ hex)"
        )
    p = _check_image_prefix(image_id)
    ids = Q.image_ids_with_prefix(con, p, AMBIGUOUS_SHOWN + 1)
    if not ids:
        raise AuditError(f"no image with id {'prefix ' if len(p) < IMAGE_ID_CHARS else ''}{p!r} in the catalogue")
    if len(ids) > 1:
        shown = ", ".join(short(i) + "..." for i in ids[:AMBIGUOUS_SHOWN])
        more = " and more" if len(ids) > AMBIGUOUS_SHOWN else ""
        raise AuditError(f"image id prefix {p!r} is ambiguous: it matches {shown}{more}; give more characters")
    return ids[0]


def _read_lineage(con, iid: str) -> dict:
    """The catalogue rows about one image, as record lists (al_core.catalogue.audit, .labels)."""
    labels = Q.label_records(con, iid)
    return {
        "training": labels_q.image_label(con, iid),
        "disagreements": labels_q.disagreements(con, iid),
        "relabels": relabels_q.relabels_of_image(con, iid),
        "image": Q.image_record(con, iid),
        "paths": Q.image_path_records(con, iid),
        "ground_truth": Q.ground_truth_classes(con, iid),
        "embeddings": Q.embedding_records(con, iid),
        "eval_set": Q.eval_set_record(con, iid),
        "proposals": Q.proposal_records(con, iid),
        "labels": labels,
        "retractions": Q.retraction_records(con, sorted({lab["file_sha256"] for lab in labels})),
        "trained": Q.trained_probe_records(con, iid),
    }


def _retractions_by_file(rets: list[dict]) -> dict[str, dict]:
    """file sha256 -> retracted_at (the first), retracted_from_round (the smallest), reasons."""
    out: dict[str, dict] = {}
    for r in rets:
        e = out.setdefault(
            r["file_sha256"],
            {"retracted_at": r["retracted_at"], "retracted_from_round": int(r["effective_round"]), "reasons": []},
        )
        e["retracted_from_round"] = min(e["retracted_from_round"], int(r["effective_round"]))
        if r["reason"]:
            e["reasons"].append(r["reason"])
    return out


def _probes_of_labels(trained: list[dict]) -> tuple[list[dict], dict[int, list[str]]]:
    """(every probe trained with one of the image's labels, label_id -> its probe ids), by round and version."""
    probes: dict[str, dict] = {}
    probe_ids_of: dict[int, list[str]] = {}
    for t in trained:
        probe_ids_of.setdefault(t["label_id"], []).append(t["probe_id"])
        p = probes.setdefault(
            t["probe_id"],
            {
                "probe_id": t["probe_id"],
                "round": t["round"],
                "version": t["version"],
                "trigger": t["trigger"],
                "sha256": t["sha256"],
                "path": t["path"],
                "trained_at": iso(t["trained_at"]),
                "n_labels": t["n_labels"],
                "accuracy": _f(t["accuracy"]),
                "balanced_accuracy": _f(t["balanced_accuracy"]),
                "label_ids": [],
            },
        )
        p["label_ids"].append(t["label_id"])
    return list(probes.values()), probe_ids_of


def _label_entry(lab: dict, state: str, proposals: list[dict], ret: dict | None, probe_ids: list[str]) -> dict:
    """One labels row of the lineage, with its delivery's retraction and the query it answered."""
    answered = [q for q in proposals if q["round"] < lab["round"]]
    pq = answered[-1] if answered else None
    return {
        "task_id": lab["task_id"],
        "annotated_at": iso(lab["annotated_at"]),
        "seconds": _f(lab["seconds"]),
        "seconds_source": lab["seconds_source"],
        "annotator_as_delivered": lab["annotator_as_delivered"],
        "superseded_because": lab["superseded_because"],
        "decides": bool(lab["decides"]),
        "disagreement": bool(lab["disagreement"]),
        "label_id": lab["label_id"],
        "label": lab["label"],
        "is_skip": bool(lab["is_skip"]),
        "proposed": bool(lab["proposed"]),
        "round": lab["round"],
        "received_at": iso(lab["received_at"]),
        "annotator": lab["annotator"],
        "annotation_id": lab["annotation_id"],
        "line": lab["line"],
        "note": lab["note"],
        "file_id": lab["file_id"],
        "file_name": lab["file_name"],
        "file_sha256": lab["file_sha256"],
        "file_status": lab["file_status"],
        "file_stored_path": lab["file_stored_path"],
        "retracted": ret is not None,
        "retracted_at": iso(ret["retracted_at"]) if ret else None,
        "retracted_from_round": ret["retracted_from_round"] if ret else None,
        "retraction_reason": ("; ".join(ret["reasons"]) or None) if ret else None,
        "state": state,
        "is_current": state == "current",
        "proposed_round": pq["round"] if pq else None,
        "proposed_strategy": pq["strategy"] if pq else None,
        "proposed_score": _f(pq["score"]) if pq else None,
        "proposed_rank": pq["rank"] if pq else None,
        "probe_ids": probe_ids,
    }


def _label_entries(rows: dict) -> tuple[list[dict], list[dict]]:
    """(label entries oldest first, probes): each row's state by the label history's rule (the views)."""
    ret = _retractions_by_file(rows["retractions"])
    probes, probe_ids_of = _probes_of_labels(rows["trained"])
    entries = []
    for lab in rows["labels"]:
        r = ret.get(lab["file_sha256"])
        entries.append(_label_entry(lab, lab["state"], rows["proposals"], r, probe_ids_of.get(lab["label_id"], [])))
    return entries, probes


def _training_entry(rows: dict) -> dict | None:
    """The image's label by the policy (status, label, policy, answers...) and its disagreements, ISO times."""
    t = rows["training"]
    if t is None:
        return None
    stamp = lambda answers: [{**a, "answered_at": iso(a["answered_at"])} for a in answers]
    return {
        **t,
        "answers": stamp(t["answers"]),
        "disagreements": [{**d, "answers": stamp(d["answers"])} for d in rows["disagreements"]],
    }


def _image_entry(img: dict | None) -> dict | None:
    if img is None:
        return None
    return {**img, "first_seen": iso(img["first_seen"])}


def lineage(store: Store, image_id: str, root: str | os.PathLike | None = None) -> dict:
    """Everything the catalogue knows about one image, by full id or unique prefix (>= 8 hex chars), by path
    (relative to ``root``, the image root) or by unique file name.

    Keys: image_id, image (size, format, first_seen, first_scan_id; None if the
    image was never decoded), paths (path, status, error, source, first_seen,
    last_seen), ground_truth (class names from folders/manifest; simulation),
    embeddings (config_id, backbone, dim, part_id, embedded_at), eval_set (label,
    source, added_at, or None), proposals (round, rank, strategy, score, path,
    proposed_at, reason: why it came back, for an image labelled again), labels
    (every labels row, oldest first: label, is_skip,
    proposed, round, received_at, annotator, annotation_id, line, file_id,
    file_name, file_sha256, file_status, file_stored_path, retracted,
    retracted_at, retracted_from_round, retraction_reason, state 'current' |
    'superseded' | 'retracted', is_current, proposed_round / proposed_strategy /
    proposed_score / proposed_rank (the query it answered), probe_ids, task_id,
    annotated_at, seconds, seconds_source, annotator_as_delivered,
    superseded_because, decides, disagreement), current_label (the row the
    image's training label or skip comes from, or None), training (the
    ``image_labels`` row: status 'labelled' | 'skipped' | 'disputed', label,
    policy, the counting answers, and every disagreement of the image with
    its resolution; None when never answered), probes (every probe trained with
    one of its labels: probe_id, round, version, trigger, sha256, path,
    trained_at, n_labels, accuracy, balanced_accuracy, label_ids), relabels (every `al labels relabel` that
    mapped one of its labels: relabel_id, old, new, relabelled_at, label_ids, eval; a label reads as its new class).
    Raises AuditError for an unknown or ambiguous id.
    """
    with store.connect(read_only=True, view=False) as con:
        iid = _resolve_image_id(con, image_id, root)
        rows = _read_lineage(con, iid)
    labels, probes = _label_entries(rows)
    ev = rows["eval_set"]
    return {
        "image_id": iid,
        "image": _image_entry(rows["image"]),
        "paths": [{**p, "first_seen": iso(p["first_seen"]), "last_seen": iso(p["last_seen"])} for p in rows["paths"]],
        "ground_truth": rows["ground_truth"],
        "embeddings": [{**e, "embedded_at": iso(e["embedded_at"])} for e in rows["embeddings"]],
        "eval_set": {**ev, "added_at": iso(ev["added_at"])} if ev else None,
        "proposals": [{**q, "score": _f(q["score"]), "proposed_at": iso(q["proposed_at"])} for q in rows["proposals"]],
        "labels": labels,
        "current_label": next((dict(lab) for lab in labels if lab["decides"]), None),
        "training": _training_entry(rows),
        "probes": probes,
        "relabels": [{**r, "relabelled_at": iso(r["relabelled_at"])} for r in rows["relabels"]],
    }


# ----------------------------------------------------------------------------- export
def export_format(out_path: str | os.PathLike, fmt: str | None = None) -> str:
    """'csv' or 'parquet': ``fmt`` when given, else from the suffix of ``out_path`` (.parquet / .pq), else csv."""
    fmt = (fmt or ("parquet" if Path(out_path).suffix.lower() in (".parquet", ".pq") else "csv")).lower()
    if fmt not in EXPORT_FORMATS:
        raise AuditError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    return fmt


def _read_export_inputs(store: Store) -> tuple[dict | None, str | None, pl.DataFrame, pl.DataFrame]:
    """(latest probe or None, the embedding config of the rows, current labels, one path per image with the
    number of readable paths and all of them)."""
    with store.connect(read_only=True, view=False) as con:
        probe = Q.latest_probe(con)
        config_id = probe["config_id"] if probe else (Q.latest_round_config_id(con) or newest_embedded_config_id(con))
        paths = Q.image_path_frame(con).join(quality_q.duplicate_paths_frame(con), on="image_id", how="left")
        return probe, config_id, Q.image_labels_frame(con), paths


def _predictions(store: Store, cfg, probe: dict | None, config_id: str | None) -> pl.DataFrame:
    """image_id, predicted, confidence, probe_id of every vector of ``config_id`` (nulls without a probe)."""
    from al_core.loop.train import load_probe

    schema = {"image_id": pl.String, "predicted": pl.String, "confidence": pl.Float64, "probe_id": pl.String}
    if config_id is None:
        return pl.DataFrame(schema=schema)
    emb = store.load_embeddings(config_id)
    ids = [str(i) for i in emb.image_ids]
    if probe is None or not ids:
        return pl.DataFrame({"image_id": ids}, schema={"image_id": pl.String}).with_columns(
            pl.lit(None, pl.String).alias("predicted"),
            pl.lit(None, pl.Float64).alias("confidence"),
            pl.lit(None, pl.String).alias("probe_id"),
        )
    # the class list the probe was trained with (its output k is classes[k]), not today's: a class list edited
    # since then (reordered, renamed) relabels nothing; a probe recorded before the list was kept: the project's
    classes = json.loads(probe["classes"]) if probe.get("classes") else list(cfg.class_names(store))
    if len(classes) != int(probe["n_classes"]):
        raise AuditError(
            f"probe {probe['probe_id']} has {probe['n_classes']} classes, the project has {len(classes)} "
            f"({', '.join(classes)}) and no class list is recorded for the probe: cannot name its "
            "predictions"
        )
    proba = load_probe(store, probe["probe_id"]).predict_proba(emb.features)
    k = proba.argmax(axis=1)
    return pl.DataFrame(
        {
            "image_id": ids,
            "predicted": pl.Series(classes, dtype=pl.String).gather(k),
            "confidence": proba[np.arange(len(k)), k].astype(np.float64),
        },
        schema={n: t for n, t in schema.items() if n != "probe_id"},
    ).with_columns(pl.lit(probe["probe_id"], pl.String).alias("probe_id"))


def _export_table(predictions: pl.DataFrame, current: pl.DataFrame, paths: pl.DataFrame) -> pl.DataFrame:
    """The export rows (EXPORT_COLUMNS): every predicted row plus each labelled image without a vector, by id."""
    unembedded = current.select("image_id").join(predictions.select("image_id"), on="image_id", how="anti")
    rows = pl.concat([predictions, unembedded], how="diagonal")
    return (
        rows.join(paths, on="image_id", how="left")
        .join(current, on="image_id", how="left")
        .with_columns(
            label_source=pl.when(pl.col("status") == "disputed")
            .then(pl.lit("disputed"))
            .when(pl.col("label").is_null())
            .then(None)
            .when(pl.col("is_skip"))
            .then(pl.lit("skip"))
            .otherwise(pl.lit("human"))
        )
        .sort("image_id")
        .select(EXPORT_COLUMNS)
    )


def _write_table(table: pl.DataFrame, out: Path, fmt: str) -> None:
    """Write ``table`` atomically (al_core.files.atomic): a reader never sees half a file."""
    with atomic_path(out) as tmp:
        if fmt == "parquet":
            table.write_parquet(tmp)
        else:
            table.write_csv(tmp, quote_style="non_numeric")  # strings quoted, numbers bare, nulls empty


def export(store: Store, cfg, out_path: str | os.PathLike, fmt: str | None = None) -> dict:
    """Write the current labels and the latest probe's predictions, one row per image.

    Predictions are named through the class list the probe was trained with
    (``probes.classes``), so classes reordered or renamed since then relabel
    nothing. Rows: every image with a vector in the latest probe's embedding config (or,
    before any probe, the latest round's config, else the newest config with
    vectors), plus any labelled image without a vector there; ascending
    image_id. Columns: image_id, path (an ok path, else any known), label
    (the training label under ``labels.policy``; the skip label for an image
    every annotator skipped; null for a disputed one), label_source ('human',
    'skip', 'disputed', or null when unanswered), predicted (class
    name), confidence (the predicted class's probability), probe_id (null
    before the first probe, and for an image without a vector), n_paths and
    paths (how many readable paths the image's bytes have, and all of them as a
    JSON list: an exact duplicate has several). ``fmt``: 'csv'
    or 'parquet' (default: from the file suffix, else csv). The file is written
    with polars through al_core.files.atomic (a temporary name beside
    ``out_path``, fsynced and renamed), so a reader never sees half a file.
    Returns a summary dict.
    """
    out = Path(out_path).absolute()
    fmt = export_format(out, fmt)
    probe, config_id, current, paths = _read_export_inputs(store)
    # the database is closed from here on: loading vectors and predicting never holds it
    predictions = _predictions(store, cfg, probe, config_id)
    table = _export_table(predictions, current, paths)
    _write_table(table, out, fmt)
    labelled = table.filter(pl.col("label").is_not_null())
    return {
        "path": str(out),
        "format": fmt,
        "rows": table.height,
        "labelled": int(labelled.filter(pl.col("label_source") == "human").height),
        "skips": int(labelled.filter(pl.col("label_source") == "skip").height),
        "predicted": int(table["predicted"].is_not_null().sum()),
        "probe_id": probe["probe_id"] if probe else None,
        "config_id": config_id,
        "exact_duplicates": int(table.filter(pl.col("n_paths") > 1).height),
        "unembedded_labelled": table.height - predictions.height,
    }


# ----------------------------------------------------------------------------- snapshot
def snapshot(store: Store, dest: str | os.PathLike, *, overwrite: bool = False) -> dict:
    """Write a consistent, read-only copy of the catalogue to ``dest`` (a DuckDB file).

    Consistency: one read-only connection to the catalogue ATTACHes a new file
    and runs ``COPY FROM DATABASE`` inside a single transaction
    (al_core.catalogue.audit.copy_database), so the copy is one MVCC snapshot
    of the last committed state (committed rows only, WAL included: the
    read-only open replays it); while that connection is open, no other process
    can write the file (DuckDB's file lock), so the copy is also exactly the
    state on disk. The lock is held only for the copy itself; a writer waiting
    meanwhile retries within its ``store.lock_timeout_s``.

    The copy is written under a temporary name (al_core.files.atomic.atomic_path),
    checkpointed (no WAL beside it: a copy that leaves one is not published),
    made read-only (mode 0444), fsynced and published as ``dest``; without
    ``overwrite`` an existing ``dest`` is never replaced, even one created
    during the copy. It opens alone (``duckdb -readonly dest`` or
    ``duckdb.connect(dest, read_only=True)``): every table and view is inside,
    ``schema_info`` gains ``snapshot_of`` and ``snapshot_at``, and the
    ``embeddings`` view keeps the absolute paths of the vector part files, so it
    answers on the same machine (the part files are immutable once committed).
    Returns the row count of every table copied (counted inside the copy's
    transaction) and the file's path and size.
    """
    dest = Path(dest).absolute()
    exists = AuditError(f"{dest} exists; choose another name (snapshots are never overwritten)")
    if dest.exists() and not overwrite:
        raise exists
    if dest.resolve() == store.db_path.resolve():
        raise AuditError("the snapshot cannot replace the catalogue itself")
    t0 = time.monotonic()
    try:
        with atomic_path(dest, mode=SNAPSHOT_MODE, replace=overwrite) as tmp:
            with store.connect(read_only=True, view=False) as con:
                counts = Q.copy_database(con, str(tmp), snapshot_of=str(store.db_path), snapshot_at=now().isoformat())
            if tmp.with_name(tmp.name + ".wal").exists():
                raise AuditError(f"snapshot {tmp} left a write-ahead log after its checkpoint; not published")
    except FileExistsError:
        raise exists from None
    return {
        "path": str(dest),
        "bytes": dest.stat().st_size,
        "tables": counts,
        "seconds": round(time.monotonic() - t0, 3),
        "source": str(store.db_path),
    }
