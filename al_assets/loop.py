"""The labelling loop as assets, one dynamic partition per round.

Round 0: ``seed_pool`` proposes batch 0. Round r >= 1 (one run, started by the
inbox sensor): ``round_labels`` ingests the label files that answer batch r-1;
once that batch is answered to the configured fraction (or closed by hand),
``probe`` trains on every label so far, ``eval_metrics`` scores it on the
evaluation set and ``query_set`` proposes batch r. When the batch is not yet
answered, ``probe`` yields nothing and the rest of the run is skipped.

Assets stay thin: each reads its inputs, calls al_core.loop.rounds, and returns a
small JSON summary with metadata that justifies it.
"""

import dagster as dg

from resources.project import ProjectResource
from al_core.catalogue import open_store

rounds_partitions = dg.DynamicPartitionsDefinition(name="rounds")

LOOP_GROUP = "labelling_loop"


class RoundLabelsConfig(dg.Config):
    """What the sensor hands to a round run."""

    files: list[str] = []
    force_close: bool = False  # `al round next`: close the open batch whatever its answered share
    request_id: str | None = None  # the CLI request this run serves, if any


def _round(context) -> int:
    try:
        return int(context.partition_key)
    except ValueError:
        raise dg.Failure(f"round partitions are integers, got {context.partition_key!r}") from None


def _pool(cfg, store, config_id):
    from al_core.loop.rounds import load_pool

    return load_pool(store, cfg, config_id, cfg.class_names(store))


@dg.asset(partitions_def=rounds_partitions, group_name=LOOP_GROUP, io_manager_key="store_io_manager",
          kinds={"duckdb"}, tags={"al/writes": "true"})
def seed_pool(context: dg.AssetExecutionContext, embeddings: dict, project: ProjectResource) -> dg.Output[dict]:
    """Batch 0: the first images to label, chosen by the seed strategy from unlabelled features."""
    from al_core.loop.rounds import ensure_eval_set, propose

    if _round(context) != 0:
        raise dg.Failure("seed_pool exists only for round 0")
    cfg = project.load()
    store = open_store(cfg)
    classes = cfg.class_names(store)
    held = ensure_eval_set(store, cfg, classes)
    pool = _pool(cfg, store, embeddings["config_id"])
    prop = propose(store, cfg, 0, pool, run_id=context.run_id)
    if prop is None:
        raise dg.Failure("total budget is 0 or no image can be proposed")
    value = {**prop.as_dict(), "config_id": embeddings["config_id"], "eval_holdout": held["holdout"]}
    return dg.Output(value, metadata=_proposal_metadata(prop, embeddings, cfg, pool) | {
        "eval_holdout": held["holdout"]} | _pictures(store, cfg, ("proposed_images",)))


def _proposal_metadata(prop, embeddings, cfg, pool) -> dict:
    return {
        "round": prop.round,
        "strategy": prop.strategy,
        "budget": prop.budget,
        "requested_budget": prop.requested_budget,
        "seed": prop.seed,
        "backbone": embeddings.get("backbone", "?"),
        "embedding_config": embeddings["config_id"],
        "candidates": prop.n_candidates,
        "labelled_so_far": int(len(pool.labeled)),
        "select_seconds": dg.MetadataValue.float(round(prop.select_seconds, 3)),
        "outbox_csv": dg.MetadataValue.path(prop.outbox_files[0]),
        "note": prop.note or "",
        "proposed": dg.MetadataValue.md(_table(prop)),
    }


def _table(prop, n: int = 20) -> str:
    rows = ["| rank | image_id | score |", "| --- | --- | --- |"]
    for i, (iid, sc) in enumerate(zip(prop.image_ids[:n], prop.scores[:n], strict=True), 1):
        rows.append(f"| {i} | `{iid[:16]}` | {sc:.4g} |")
    if len(prop.image_ids) > n:
        rows.append(f"| ... | {len(prop.image_ids) - n} more | |")
    return "\n".join(rows)


@dg.asset(partitions_def=rounds_partitions, group_name=LOOP_GROUP, io_manager_key="store_io_manager",
          kinds={"duckdb"}, tags={"al/writes": "true"})
def round_labels(context: dg.AssetExecutionContext, config: RoundLabelsConfig, project: ProjectResource
                 ) -> dg.Output[dict]:
    """The label files ingested in this round (answering the previous batch), validated and applied atomically."""
    from al_core.loop.rounds import ingest_label_files, repair_outbox
    from al_core.catalogue.store import now

    r = _round(context)
    if r < 1:
        raise dg.Failure("labels belong to rounds >= 1 (round 0 is the seed pool)")
    cfg = project.load()
    store = open_store(cfg)
    classes = cfg.class_names(store)
    for path in repair_outbox(store, cfg, classes):  # a run that stopped between a batch's commit and its CSV
        context.log.warning(f"outbox: wrote {path}, missing although its batch was committed")
    rep = ingest_label_files(store, cfg, config.files, round_=r, classes=classes,
                             run_id=context.run_id, log=context.log.info)
    value = rep.as_dict()
    force = bool(config.force_close) and rep.requested_round is None
    if force and config.request_id:  # `al round next` closes the batch that was open when it was asked
        asked = store.fetch("SELECT arg FROM requests WHERE request_id = ?", [config.request_id])
        if asked and asked[0][0] is not None and asked[0][0] != str(rep.open_round):
            context.log.warning(f"`al round next` asked to close batch {asked[0][0]}, which an earlier run closed: "
                                "nothing to close")
            force = False
    value["force_close"] = force
    if config.request_id:
        with store.transaction() as con:
            con.execute("UPDATE requests SET done_at = ?, run_id = ? WHERE request_id = ?",
                        [now(), context.run_id, config.request_id])
    counts = rep.counts
    return dg.Output(value, metadata={
        "round": r,
        "files_accepted": counts.get("accepted", 0),
        "files_rejected": counts.get("rejected", 0),
        "files_duplicate": counts.get("duplicate", 0),
        "labels_applied": value["labels_applied"],
        "open_batch": rep.open_round if rep.open_round is not None else -1,
        "answered": f"{rep.answered}/{rep.proposed}",
        "ready_for_next_round": rep.ready or force,
        "files": dg.MetadataValue.json(value["files"]),
    })


@dg.asset(partitions_def=rounds_partitions, group_name=LOOP_GROUP, io_manager_key="store_io_manager",
          kinds={"pytorch", "duckdb"}, output_required=False, tags={"al/writes": "true"})
def probe(context: dg.AssetExecutionContext, round_labels: dict, embeddings: dict, project: ProjectResource):
    """The linear probe trained on every label so far (safetensors file; path and sha256 recorded)."""
    from al_core.loop.rounds import close_round, train_probe

    r = _round(context)
    cfg = project.load()
    store = open_store(cfg)
    trigger = context.run.tags.get("al/trigger", "round")
    if trigger == "round":
        if not (round_labels.get("ready") or round_labels.get("force_close")):
            context.log.info(f"batch {round_labels.get('open_round')} answered {round_labels.get('answered')}/"
                             f"{round_labels.get('proposed')}: below selection.answered_fraction="
                             f"{cfg.selection.answered_fraction}; waiting for more labels")
            return
        if round_labels.get("open_round") is not None:
            close_round(store, round_labels["open_round"], "manual" if round_labels.get("force_close") else "answered")
    pool = _pool(cfg, store, embeddings["config_id"])
    _, rec = train_probe(store, cfg, r, pool, trigger=trigger, run_id=context.run_id)
    yield dg.Output(rec.as_dict() | {"config_id": embeddings["config_id"]}, metadata={
        "round": r, "version": rec.version, "trigger": trigger,
        "labels": rec.n_labels, "classes": len(pool.classes),
        "epochs": rec.n_epochs, "train_seconds": dg.MetadataValue.float(round(rec.train_seconds, 3)),
        "weights": dg.MetadataValue.path(rec.path), "sha256": rec.sha256,
        "backbone": embeddings.get("backbone", "?"), "embedding_config": embeddings["config_id"],
    })


@dg.asset(partitions_def=rounds_partitions, group_name=LOOP_GROUP, io_manager_key="store_io_manager",
          kinds={"duckdb"}, tags={"al/writes": "true"})
def eval_metrics(context: dg.AssetExecutionContext, probe: dict, embeddings: dict, project: ProjectResource
                 ) -> dg.Output[dict]:
    """Accuracy, balanced accuracy, macro F1, per-class recall and confusion matrix of this round's probe."""
    from al_core.loop.rounds import evaluate, load_probe

    r = _round(context)
    cfg = project.load()
    store = open_store(cfg)
    pool = _pool(cfg, store, embeddings["config_id"])
    m = evaluate(store, cfg, r, pool, load_probe(store, probe["probe_id"]), probe["probe_id"])
    meta = {
        "round": r, "probe_id": probe["probe_id"], "labels": m["n_labels"], "eval_images": m["n_eval"],
        "accuracy": dg.MetadataValue.float(m["accuracy"] if m["accuracy"] is not None else float("nan")),
        "balanced_accuracy": dg.MetadataValue.float(
            m["balanced_accuracy"] if m["balanced_accuracy"] is not None else float("nan")),
        "macro_f1": dg.MetadataValue.float(m["macro_f1"] if m["macro_f1"] is not None else float("nan")),
        "per_class_recall": dg.MetadataValue.json(m["per_class_recall"]),
    }
    meta.update(_pictures(store, cfg, ("learning_curve", "confusion_matrix")))
    return dg.Output(m, metadata=meta)


def _pictures(store, cfg, keys) -> dict:
    """Plots as markdown metadata (PNG data URIs), so the UI shows them next to the numbers."""
    from al_core.reporting.report import metadata_images

    pics = metadata_images(store, cfg)
    return {k: dg.MetadataValue.md(pics[k]) for k in keys if k in pics}


@dg.asset(partitions_def=rounds_partitions, group_name=LOOP_GROUP, io_manager_key="store_io_manager",
          kinds={"duckdb"}, output_required=False, tags={"al/writes": "true"})
def query_set(context: dg.AssetExecutionContext, probe: dict, embeddings: dict, project: ProjectResource):
    """The batch proposed in this round by the query strategy, scored by this round's probe."""
    from al_core.loop.rounds import load_probe, propose

    r = _round(context)
    if context.run.tags.get("al/trigger", "round") != "round":
        context.log.info("retraining run: no new batch is proposed")
        return
    cfg = project.load()
    store = open_store(cfg)
    pool = _pool(cfg, store, embeddings["config_id"])
    prop = propose(store, cfg, r, pool, probe=load_probe(store, probe["probe_id"]), probe_id=probe["probe_id"],
                   run_id=context.run_id)
    if prop is None:
        context.log.warning(f"total labelling budget ({cfg.selection.total_budget}) is spent or no candidate is left: "
                            "nothing more is proposed")
        yield dg.Output({"round": r, "stopped": "total budget spent", "budget": 0},
                        metadata={"round": r, "stopped": "total labelling budget spent", "budget": 0})
        return
    yield dg.Output(prop.as_dict() | {"probe_id": probe["probe_id"], "config_id": embeddings["config_id"]},
                    metadata=_proposal_metadata(prop, embeddings, cfg, pool) | {"probe_id": probe["probe_id"]}
                    | _pictures(store, cfg, ("proposed_images",)))
