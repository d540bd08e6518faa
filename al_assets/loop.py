"""The labelling loop as assets, one dynamic partition per round.

Round 0: ``seed_pool`` proposes batch 0. Round r >= 1 (one run, started by the
inbox sensor): ``round_labels`` ingests the label files that answer batch r-1;
once that batch is answered to the configured fraction (or closed by hand),
``probe`` trains on every label so far, ``eval_metrics`` scores it on the
evaluation set, ``label_quality`` assesses the training labels (suspected label
errors, class balance) and ``query_set`` proposes batch r. When the batch is not yet
answered, ``probe`` yields nothing and the rest of the run is skipped.

Each asset only orchestrates: it calls one step of ``al_core.loop`` with the
project config and the store, and builds the metadata that justifies its value.
"""

import dagster as dg

from al_assets.failures import one_line_failures
from al_core.catalogue import open_store
from al_core.files.hashing import short
from resources.project import ProjectResource

rounds_partitions = dg.DynamicPartitionsDefinition(name="rounds")

LOOP_GROUP = "labelling_loop"
PROPOSED_ROWS_SHOWN = 20  # rows of the proposed-batch table in the asset's metadata


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


def _trigger(context) -> str:
    return context.run.tags.get("al/trigger", "round")


def _project(project: ProjectResource):
    cfg = project.load()
    return cfg, open_store(cfg)


def _round_asset(**kw):
    """``dg.asset`` for a step of a round: one partition per round, its value in the catalogue, a writer of it
    (``kinds`` defaults to duckdb); ``kw`` adds or overrides (output_required, op_tags, deps, kinds)."""
    return dg.asset(
        partitions_def=rounds_partitions,
        group_name=LOOP_GROUP,
        io_manager_key="store_io_manager",
        **{"kinds": {"duckdb"}, "tags": {"al/writes": "true"}, **kw},
    )


@_round_asset()
def seed_pool(context: dg.AssetExecutionContext, embeddings: dict, project: ProjectResource) -> dg.Output[dict]:
    """Batch 0: the first images to label, chosen by the seed strategy from unlabelled features."""
    from al_core.loop.proposal import propose_seed

    if _round(context) != 0:
        raise dg.Failure("seed_pool exists only for round 0")
    cfg, store = _project(project)
    with one_line_failures():
        prop = propose_seed(store, cfg, embeddings["config_id"], run_id=context.run.run_id)
    if prop.already_proposed:
        context.log.info(f"batch 0 {prop.note} (a retried run); the outbox files are in place")
    for w in prop.warnings:
        context.log.warning(w)
    from al_core.loop.holdout import eval_set_state

    ev = eval_set_state(store, cfg)
    context.log.info(
        f"batch 0: {prop.budget} image(s) to label in {prop.outbox_files[0]} (gallery "
        f"{prop.outbox_files[-1]}); deliver the filled file into {cfg.inbox}/"
    )
    if ev["todo"]:
        context.log.warning(ev["todo"])
    _push_to_label_studio(context, store, cfg)
    return dg.Output(
        prop.as_dict(),
        metadata=_proposal_metadata(prop, embeddings)
        | {
            "eval_holdout": prop.eval_holdout,
            "eval_labelled": dg.MetadataValue.text(f"{ev['labelled']}/{ev['size']}"),
            "eval_todo": dg.MetadataValue.text(ev["todo"] or "the evaluation set is labelled"),
            **({"eval_list": dg.MetadataValue.path(ev["csv"])} if ev["csv"] else {}),
            **({"eval_review_page": dg.MetadataValue.path(ev["page"])} if ev["page"] else {}),
        }
        | _pictures(store, cfg, ("proposed_images",)),
    )


def _push_to_label_studio(context, store, cfg) -> None:
    """label_studio.push_on_proposal: the batch pushed as `al labelstudio push` does; a failure is a warning."""
    from al_core.loop.labelstudio_sync import push_if_configured

    if (done := push_if_configured(store, cfg)) is not None:
        (context.log.info if done[0] else context.log.warning)(done[1])


def _proposal_metadata(prop, embeddings) -> dict:
    return {
        "round": prop.round,
        "strategy": prop.strategy,
        "budget": prop.budget,
        "requested_budget": prop.requested_budget,
        "seed": prop.seed,
        "backbone": embeddings.get("backbone", "?"),
        "embedding_config": prop.config_id,
        "candidates": prop.n_candidates,
        "labelled_so_far": prop.n_labelled,
        "select_seconds": dg.MetadataValue.float(round(prop.select_seconds, 3)),
        "budget_left": -1 if prop.budget_left is None else prop.budget_left,  # labels still to buy after this batch
        "outbox_csv": dg.MetadataValue.path(prop.outbox_files[0]),
        "review_page": dg.MetadataValue.path(prop.outbox_files[-1]),  # the batch's gallery (round-NNNN.html)
        "note": prop.note or "",
        "classes": ", ".join(prop.classes),  # the class list the batch was scored with (the probe's, in order)
        "adjudication": prop.n_adjudication,
        "warnings": dg.MetadataValue.json(prop.warnings),
        "proposed": dg.MetadataValue.md(_table(prop)),
    } | _batch_rules_metadata(prop)


def _batch_rules_metadata(prop) -> dict:
    """What the batch rules did (al_core.loop.batch_rules): images to label again, near-duplicates replaced."""
    rules = prop.batch_rules or {}
    return {
        "relabelled": rules.get("relabel", 0),
        "near_duplicate_pairs": rules.get("near_duplicate_pairs", 0),
        "near_duplicates_replaced": dg.MetadataValue.json(rules.get("near_duplicates_replaced", [])),
    }


def _table(prop, n: int = PROPOSED_ROWS_SHOWN) -> str:
    """The batch's first ``n`` rows as its CSV lists them: rank, file, predicted class and probability, score,
    strategy (the review gallery, ``review_page``, shows every image)."""
    import csv

    from al_core.files.safe import open_regular

    esc = lambda v: str(v).replace("|", "\\|").replace("\n", " ")
    rows = ["| rank | file | predicted | probability | score | strategy |", "| --- | --- | --- | --- | --- | --- |"]
    try:
        with open_regular(prop.outbox_files[0]) as raw:
            batch = list(csv.DictReader(raw.read().decode("utf-8").splitlines()))[:n]
    except (OSError, UnicodeDecodeError):
        batch = [
            {"rank": i, "path": short(iid), "score": sc}
            for i, (iid, sc) in enumerate(zip(prop.image_ids[:n], prop.scores[:n], strict=True), 1)
        ]
    for r in batch:
        rows.append(
            f"| {esc(r['rank'])} | `{esc(r['path'])}` | {esc(r.get('predicted') or '-')} | "
            f"{esc(r.get('probability') or '-')} | {esc(r.get('score') or '-')} | "
            f"{esc(r.get('strategy', ''))} |"
        )
    if len(prop.image_ids) > n:
        rows.append(f"| ... | {len(prop.image_ids) - n} more | | | | |")
    return "\n".join(rows)


@_round_asset()
def round_labels(
    context: dg.AssetExecutionContext, config: RoundLabelsConfig, project: ProjectResource
) -> dg.Output[dict]:
    """The label files ingested in this round (answering the previous batch), validated and applied atomically."""
    from al_core.loop.ingest_labels import ingest_round_labels

    r = _round(context)
    cfg, store = _project(project)
    res = ingest_round_labels(
        store,
        cfg,
        r,
        config.files,
        force_close=config.force_close,
        request_id=config.request_id,
        run_id=context.run.run_id,
        log=context.log.info,
        warn=context.log.warning,
    )
    value, rep = res.as_dict(), res.report
    counts = rep.counts
    status = _round_status(rep, res.force_close)
    context.instance.add_run_tags(context.run.run_id, {"al/status": status})  # the runs list shows why it is green
    if status.startswith("waiting"):
        context.log.info(f"round {r}: {status}: the rest of the run is skipped until the batch is answered")
    for f in rep.files:
        if f.status == "rejected":
            context.log.warning(f"{f.name} rejected: {f.reason}")
    return dg.Output(
        value,
        metadata={
            "status": dg.MetadataValue.text(status),
            "round": r,
            "files_accepted": counts.get("accepted", 0),
            "files_rejected": counts.get("rejected", 0),
            "files_duplicate": counts.get("duplicate", 0),
            "labels_applied": value["labels_applied"],
            "open_batch": rep.open_round if rep.open_round is not None else -1,
            "answered": f"{rep.answered}/{rep.proposed}",
            "ready_for_next_round": rep.ready or res.force_close,
            "files": dg.MetadataValue.json(value["files"]),
            **_labelling_metadata(rep.labelling),
        },
    )


def _round_status(rep, force_close: bool) -> str:
    """One phrase for the run's tag ``al/status`` and the metadata: ``waiting for labels (10/20)`` while the open
    batch is not answered enough, else what the run goes on to do."""
    if rep.ready or force_close:
        return f"answered ({rep.answered}/{rep.proposed}): training the next round"
    if rep.open_round is None:
        return "no open batch"
    return f"waiting for labels ({rep.answered}/{rep.proposed})"


def _labelling_metadata(state: dict) -> dict:
    """The round's label state (al_core.loop.label_history.labelling_state): disagreements are never dropped."""
    batch = state.get("batch") or {}
    return {
        "label_policy": state.get("policy") or "latest",
        "disagreements": state.get("disagreements", 0),
        "new_disagreements": state.get("new_disagreements", 0),
        "disputed": state.get("disputed", 0),
        "adjudication_queued": state.get("adjudication_queued", 0),
        "skipped_images": state.get("skipped", 0),
        "batch_skipped": batch.get("skipped", 0),
        "unanswered": dg.MetadataValue.json(batch.get("unanswered", [])),
    }


@_round_asset(kinds={"pytorch", "duckdb"}, output_required=False)
def probe(context: dg.AssetExecutionContext, round_labels: dict, embeddings: dict, project: ProjectResource):
    """The linear probe trained on every label so far (safetensors file; path and sha256 recorded)."""
    from al_core.loop.train import train_round_probe

    cfg, store = _project(project)
    with one_line_failures():
        rec = train_round_probe(
            store,
            cfg,
            _round(context),
            embeddings["config_id"],
            batch=round_labels,
            trigger=_trigger(context),
            run_id=context.run.run_id,
            log=context.log.info,
        )
    if rec is None:  # the batch is not answered yet: nothing more this run
        return
    yield dg.Output(
        rec.as_dict(),
        metadata={
            "round": rec.round,
            "version": rec.version,
            "trigger": rec.trigger,
            "labels": rec.n_labels,
            "classes": rec.n_classes,
            "epochs": rec.n_epochs,
            "train_seconds": dg.MetadataValue.float(round(rec.train_seconds, 3)),
            "weights": dg.MetadataValue.path(rec.path),
            "sha256": rec.sha256,
            "backbone": embeddings.get("backbone", "?"),
            "embedding_config": rec.config_id,
        },
    )


def _metric(v: float | None) -> dg.MetadataValue:
    return dg.MetadataValue.float(v if v is not None else float("nan"))


@_round_asset()
def eval_metrics(
    context: dg.AssetExecutionContext, probe: dict, embeddings: dict, project: ProjectResource
) -> dg.Output[dict]:
    """Accuracy, balanced accuracy, macro F1, per-class recall and confusion matrix of this round's probe."""
    from al_core.loop.evaluation import METRIC_NAMES, evaluate_round, per_class_summary

    cfg, store = _project(project)
    with one_line_failures():
        m = evaluate_round(store, cfg, _round(context), embeddings["config_id"], probe["probe_id"])
    text = dg.MetadataValue.text  # counts as text: the UI plots numeric entries, and only the metrics should be
    return dg.Output(
        m,
        metadata={
            "round": text(str(m["round"])),
            "probe_id": m["probe_id"],
            "labels": text(str(m["n_labels"])),
            "eval_images": text(str(m["n_eval"])),
            "status": text(m["status"]),
            **{k: _metric(m[k]) for k in METRIC_NAMES},
            "per_class_recall": dg.MetadataValue.json(m["per_class_recall"]),
            "per_class": dg.MetadataValue.json(per_class_summary(m)),  # recall and evaluation images, "n/a" with none
        }
        | _value(store, cfg)
        | _pictures(store, cfg, ("confusion_matrix",)),
    )


def _value(store, cfg) -> dict:
    """The manager's page as metadata (al_core.reporting.value_metadata): the learning curve inline, the numbers
    as text."""
    from al_core.reporting.value_metadata import value_metadata

    wrap = {"md": dg.MetadataValue.md, "text": dg.MetadataValue.text}
    return {k: wrap[kind](v) for k, (kind, v) in value_metadata(store, cfg).items()}


def _pictures(store, cfg, keys) -> dict:
    """Plots as markdown metadata (PNG data URIs), so the UI shows them next to the numbers."""
    from al_core.reporting.report import metadata_images

    pics = metadata_images(store, cfg, keys)  # only these pictures are drawn
    return {k: dg.MetadataValue.md(pics[k]) for k in keys if k in pics}


# query_set runs before eval_metrics (both wait only for the probe): the next batch reaches the outbox
# before the evaluation draws its plots
PROPOSE_FIRST = {"dagster/priority": "1"}


@_round_asset(op_tags=PROPOSE_FIRST)
def label_quality(
    context: dg.AssetExecutionContext, probe: dict, embeddings: dict, project: ProjectResource
) -> dg.Output[dict]:
    """Suspected label errors (out-of-fold probe, cleanlab) and class balance of this round's training labels."""
    from al_core.loop.label_quality import assess_round

    cfg, store = _project(project)
    q = assess_round(store, cfg, _round(context), embeddings["config_id"], probe["probe_id"])
    for w in q["warnings"]:
        context.log.warning(w)
    return dg.Output(
        q,
        metadata={
            "round": q["round"],
            "probe_id": q["probe_id"],
            "labels": q["n_labels"],
            "folds": q["n_folds"],
            "suspects": q["n_issues"],
            "method": q["method"],
            "suspected_label_errors": dg.MetadataValue.md(_suspects_table(q["suspects"])),
            "class_balance": dg.MetadataValue.md(_balance_table(q)),
            "imbalance_warnings": dg.MetadataValue.json(q["warnings"]),
        },
    )


def _suspects_table(rows: list[dict]) -> str:
    out = ["| image_id | given | suggested | quality |", "| --- | --- | --- | --- |"]
    out += [f"| `{short(r['image_id'])}` | {r['given']} | {r['suggested']} | {r['quality']:.3f} |" for r in rows]
    return "\n".join(out) if rows else "no suspected label error"


def _balance_table(q: dict) -> str:
    out = ["| class | training labels | predicted share of the pool |", "| --- | --- | --- |"]
    out += [f"| {c} | {n} | {q['predicted_share'][c]:.1%} |" for c, n in q["label_counts"].items()]
    return "\n".join(out)


@_round_asset(output_required=False, op_tags=PROPOSE_FIRST, deps=[label_quality])
def query_set(context: dg.AssetExecutionContext, probe: dict, embeddings: dict, project: ProjectResource):
    """The batch proposed in this round by the query strategy, scored by this round's probe."""
    from al_core.loop.proposal import propose_round

    r = _round(context)
    if _trigger(context) != "round":
        context.log.info("retraining run: no new batch is proposed")
        return
    cfg, store = _project(project)
    with one_line_failures():
        prop = propose_round(store, cfg, r, embeddings["config_id"], probe["probe_id"], run_id=context.run.run_id)
    if prop is None:
        from al_core.loop.state import stop_reason

        with store.connect(read_only=True, view=False) as con:
            why = stop_reason(con, cfg) or "no candidate left"
        context.log.warning(
            f"nothing more is proposed: {why} (selection.total_budget = {cfg.selection.total_budget} labels)"
        )
        yield dg.Output({"round": r, "stopped": why, "budget": 0}, metadata={"round": r, "stopped": why, "budget": 0})
        return
    if prop.already_proposed:
        context.log.info(f"batch {r} {prop.note} (a retried run); the outbox files are in place")
    for w in prop.warnings:
        context.log.warning(w)
    context.log.info(
        f"batch {r}: {prop.budget} image(s) to label in {prop.outbox_files[0]} (gallery "
        f"{prop.outbox_files[-1]}); deliver the filled file into {cfg.inbox}/"
    )
    _push_to_label_studio(context, store, cfg)
    yield dg.Output(
        prop.as_dict(),
        metadata=_proposal_metadata(prop, embeddings)
        | {"probe_id": prop.probe_id or "", "already_proposed": prop.already_proposed}
        | _pictures(store, cfg, ("proposed_images",)),
    )
