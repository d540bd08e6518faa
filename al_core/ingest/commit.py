"""The single DuckDB writer of embeddings: committing what shard workers wrote (docs/scale-out.md).

``commit_pending`` records every written-but-uncommitted part (al_core.ingest.shards
wrote it and its manifest) in one transaction, deduplicating image ids against
the catalogue and across manifests (the earliest written wins): a part that
would add nothing is deleted, a part that overlaps is rewritten without the
duplicates. Commit is keyed by ``part_id`` and by ``(config_id, image_id)`` (both
primary keys), so nothing is committed twice, whatever crashed where.

The two callers, each one call of its Dagster step:

- ``embed_into_catalogue``: the ``embeddings`` asset (commit, then embed what is
  still missing in this process);
- ``commit_planned_run``: the commit step of a sharded run (commit, record the
  run, remove the plan).

Both return an ``al_core.ingest.pipeline.EmbeddingsSummary``.
"""

import dataclasses
import datetime as _dt
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from al_core.catalogue import embeddings as E
from al_core.catalogue.parts import MANIFEST_SUFFIX, manifest_rel, part_id_of, read_part, write_part
from al_core.catalogue.store import Store, now
from al_core.catalogue.vectors import VectorsLocation, sha256_of
from al_core.ingest.pipeline import (
    ORPHAN_MIN_AGE_S,
    PROGRESS_EVERY_S,
    EmbeddingRun,
    EmbeddingsSummary,
    embed_missing,
    record_run,
)
from al_core.ingest.shards import (
    ShardError,
    all_shards,
    manifest_names,
    read_manifests,
    remove_plan,
    shard_summary_rel,
    worker_identity,
    write_manifest,
)

if TYPE_CHECKING:
    from al_core.ingest.embed import Progress

COMMIT_COUNTS = (
    "parts_committed",
    "parts_rewritten",
    "parts_dropped",
    "parts_missing",
    "rows_committed",
    "rows_duplicate",
)


# ---------------------------------------------------------------------------- commit_pending, in steps
def commit_pending(
    store: Store, config_id: str | None = None, *, run_id: str | None = None, verify_sha256: bool = True
) -> dict:
    """Commit every written-but-uncommitted part (of ``config_id``, or of every config) in one transaction.

    Returns counts (COMMIT_COUNTS): parts committed, rewritten, dropped
    (duplicates), missing (manifest without its part, or a part whose bytes or
    sha256 differ from its manifest), rows committed and rows dropped as duplicates.
    """
    out = dict.fromkeys(COMMIT_COUNTS, 0)
    pending = _pending_manifests(store, config_id)
    if not pending:
        return out
    taken = _already_committed(store, pending)
    records, drop = _sort_out(store.vectors_loc, pending, taken, out, verify_sha256)
    configs = {m["config_id"]: m["config"] for m in pending if m.get("config")}
    store.commit_parts(records, run_id=run_id, configs=configs, verify=not verify_sha256)  # checked in _sort_out
    out["parts_committed"] = len(records)
    out["rows_committed"] = int(sum(r["n_rows"] for r in records))
    for m in drop:  # after the commit: never delete what a failed commit might still need
        store.vectors_loc.remove(m["rel_path"])
        store.vectors_loc.remove(manifest_rel(m["rel_path"]))
    if store.vectors_loc.is_local:
        store.gc_orphan_parts(ORPHAN_MIN_AGE_S)  # after the commit; pending manifests and young parts are kept
    return out


def _pending_manifests(store: Store, config_id: str | None) -> list[dict]:
    """Manifests whose part the catalogue does not know, oldest first."""
    loc = store.vectors_loc
    names = manifest_names(loc, config_id) if config_id else loc.glob(f"*/shard=*/part-*{MANIFEST_SUFFIX}")
    if not names:
        return []
    known: set[str] = set()
    if store.db_path.exists():
        with store.connect(read_only=True, view=False) as con:
            known = E.committed_part_ids(con)
    pending = read_manifests(loc, [n for n in names if part_id_of(n) not in known])
    return sorted(pending, key=lambda m: (m.get("written_at", ""), m["part_id"]))


def _already_committed(store: Store, pending: list[dict]) -> set[tuple[str, str]]:
    """(config_id, image_id) pairs of the manifests that the catalogue holds already."""
    if not store.db_path.exists():
        return set()
    with store.connect(read_only=True, view=False) as con:
        return E.indexed_pairs(
            con, [m["config_id"] for m in pending for _ in m["image_ids"]], [i for m in pending for i in m["image_ids"]]
        )


def _intact(loc: VectorsLocation, m: dict, verify_sha256: bool) -> bool:
    """The manifest's part is there with the bytes (and, if asked, the sha256) the manifest records."""
    if not loc.exists(m["rel_path"]) or loc.size(m["rel_path"]) != m["bytes"]:
        return False
    return not verify_sha256 or sha256_of(loc, m["rel_path"]) == m["sha256"]


def _sort_out(
    loc: VectorsLocation, pending: list[dict], taken: set[tuple[str, str]], out: dict, verify_sha256: bool
) -> tuple[list[dict], list[dict]]:
    """(records to commit, manifests whose part goes): each part whole, rewritten, dropped or missing."""
    records, drop = [], []
    for m in pending:
        if not _intact(loc, m, verify_sha256):
            out["parts_missing"] += 1
            drop.append(m)
            continue
        cid = m["config_id"]
        keep = [(cid, i) not in taken for i in m["image_ids"]]
        taken.update((cid, i) for i in m["image_ids"])
        n_keep = sum(keep)
        out["rows_duplicate"] += len(keep) - n_keep
        if n_keep == len(keep):
            records.append(m)
            continue
        if n_keep:  # overlap: rewrite the part without the duplicates (the writer writes it)
            records.append(_rewrite_without_duplicates(loc, m, keep))
            out["parts_rewritten"] += 1
        else:
            out["parts_dropped"] += 1
        drop.append(m)
    return records, drop


def _rewrite_without_duplicates(loc: VectorsLocation, m: dict, keep: list[bool]) -> dict:
    ids, vectors = read_part(loc, m["rel_path"])
    if list(ids) != m["image_ids"]:
        raise RuntimeError(f"part {m['rel_path']} does not hold the ids its manifest lists")
    mask = np.asarray(keep)
    rec = write_part(loc, m["config_id"], m["shard"], list(ids[mask]), vectors[mask])
    write_manifest(loc, rec, m.get("config") or {})
    return rec


# ---------------------------------------------------------------------------- the two callers
def embed_into_catalogue(
    store: Store,
    backbone,
    *,
    source: str | None,
    run_id: str | None,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
    on_progress: "Callable[[Progress], Any] | None" = None,
    progress_interval_s: float = PROGRESS_EVERY_S,
) -> EmbeddingsSummary:
    """What the ``embeddings`` asset does: commit the part files shard workers wrote (one transaction),
    then embed what is still missing in this process (``progress``, ``on_progress``, ``progress_interval_s``:
    as ``embed_missing``'s)."""
    committed = commit_pending(store, backbone.config_id, run_id=run_id)
    if committed["parts_committed"] and progress:
        progress(f"committed {committed['parts_committed']} shard parts ({committed['rows_committed']} vectors)")
    summary = embed_missing(
        store,
        backbone,
        source=source,
        batch_size=batch_size,
        progress=progress,
        on_progress=on_progress,
        progress_interval_s=progress_interval_s,
    )
    return dataclasses.replace(summary, committed_from_shards=committed["rows_committed"])


def read_shard_summaries(loc: VectorsLocation, plan: dict) -> list[dict]:
    """Every shard step's summary of a planned run (ShardError naming the steps that left none)."""
    missing = [h for h in all_shards() if not loc.exists(shard_summary_rel(plan, h))]
    if missing:
        raise ShardError(f"shard steps {missing} left no summary for plan {plan['plan_id']}")
    return [loc.read_json(shard_summary_rel(plan, h)) for h in all_shards()]


def commit_planned_run(store: Store, plan: dict, run_id: str) -> EmbeddingsSummary:
    """The commit step of a sharded run: every written part of the plan's config into the catalogue
    (one transaction), the run's embedding_runs row and failures, the plan's files removed."""
    run = EmbeddingRun(run_id, plan["config_id"], plan["config"], _dt.datetime.fromisoformat(plan["started_at"]))
    summaries = read_shard_summaries(store.vectors_loc, plan)
    committed = commit_pending(store, run.config_id, run_id=run_id)
    failures = [(f["image_id"], None, f["error"]) for s in summaries for f in s["failures"]]
    workers = sorted({json.dumps(s["worker"], sort_keys=True) for s in summaries if s["n_embedded"]})
    n_images = sum(s["n_embedded"] for s in summaries)
    wall = (now() - run.started_at).total_seconds()
    n_total = record_run(
        store,
        run,
        n_images=n_images,
        images_per_s=n_images / wall if wall > 0 else 0.0,
        failures=failures,
        device=f"sharded ({len({json.dumps(s.get('worker'), sort_keys=True) for s in summaries})} "
        f"workers) {run.config.get('device')}",
    )
    remove_plan(store.vectors_loc, run.config_id, plan["plan_id"])
    return EmbeddingsSummary.of_run(
        run,
        source=plan.get("source"),
        n_embedded=n_images,
        n_skipped=n_total - committed["rows_committed"],
        n_failed=len(failures),
        failures=[{"image_id": i, "error": e} for i, _, e in failures],
        n_total=n_total,
        images_per_s=n_images / wall if wall > 0 else 0.0,
        seconds=wall,
        sharded=_sharded_details(plan, summaries, committed, workers),
    )


def _sharded_details(plan: dict, summaries: Sequence[dict], committed: dict, workers: list[str]) -> dict:
    return {
        "plan_id": plan["plan_id"],
        "planned_by": plan.get("worker"),
        "committed_by": worker_identity(),
        "commit": committed,
        "worker_seconds": sum(s.get("embed_seconds", 0.0) for s in summaries),
        "workers": [json.loads(w) for w in workers],
        "shards": {
            s["shard"]: {"n_embedded": s["n_embedded"], "worker": s["worker"]} for s in summaries if s["n_planned"]
        },
    }
