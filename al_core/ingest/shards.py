"""Sharded embedding: plan (a reader) and embed one shard (any worker); the commit is
al_core.ingest.commit (the single writer).

The unit of scale-out work is a *shard*: the images whose id (sha256) starts
with the same ``SHARD_HEX_DIGITS`` hex digits (``al_core.catalogue.parts.shard_of``). An
image's shard never changes when images are added, so a shard is a stable
Dagster partition (al_assets/shards.py) and any worker can run or re-run it.

    plan = plan_run(store, backbone)                          # read-only DuckDB; work lists as files
    summary = embed_planned_shard(loc, plan, "a", lambda: backbone)   # any worker, no DuckDB
    value = commit_planned_run(store, plan, run_id)           # the single DuckDB writer (ingest.commit)

A worker never touches DuckDB. It writes part files (through fsspec when the
vectors folder is a URL) and, after each part, a *manifest*
``part-<id>.manifest.json`` beside it: the part's catalogue record (ids, rows,
dim, sha256, bytes) plus the embedding config. The manifest is written last and
all-or-nothing (``al_core.files.atomic`` locally, one object PUT otherwise), so
it is the "written completely" mark. The writer's ``commit_pending``
(al_core.ingest.commit) records every manifest whose part is not in
``embedding_parts`` yet.

Idempotent re-runs: a shard skips every image already in a manifest of its
shard (committed or not), so re-running it after a crash writes only what is
missing. Manifests of committed parts are kept (they are what makes a re-run
with an old plan cheap); the garbage collector leaves manifested parts alone.
"""

import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence

from al_core.catalogue import embeddings as E
from al_core.catalogue import images
from al_core.catalogue.parts import (
    MANIFEST_SUFFIX,
    SHARD_HEX_DIGITS,
    all_shards,
    manifest_rel,
    part_id_of,
    shard_of,
    write_part,
)
from al_core.catalogue.store import Store, now
from al_core.catalogue.vectors import VectorsLocation
from al_core.ingest.pipeline import FLUSH_ROWS, NON_FINITE, backbone_config, finite_rows, flushes

__all__ = [
    "PLANS_DIR",
    "ShardError",
    "all_shards",
    "embed_planned_shard",
    "embed_shard",
    "embed_shard_of_catalogue",
    "manifest_names",
    "plan_run",
    "plan_shards",
    "read_manifests",
    "read_plan",
    "remove_plan",
    "shard_summary_rel",
    "worker_identity",
    "write_manifest",
    "write_plans",
    "written_ids",
]

PLANS_DIR = "_plans"


class ShardError(RuntimeError):
    """A sharded run cannot go on (the message says why and what to do)."""


# ---------------------------------------------------------------------------- manifests
def manifest_names(loc: VectorsLocation, config_id: str, shard: str | None = None) -> list[str]:
    """Relative paths of the manifests of a config (one shard, or all), sorted."""
    return loc.glob(f"{config_id}/shard={shard or '*'}/part-*{MANIFEST_SUFFIX}")


def read_manifests(loc: VectorsLocation, names: Sequence[str]) -> list[dict]:
    out = []
    for n in names:
        try:
            out.append(loc.read_json(n))
        except FileNotFoundError:  # deleted by a concurrent commit's dedup
            continue
    return out


def written_ids(loc: VectorsLocation, config_id: str, shard: str | None = None) -> set[str]:
    """Image ids in any manifest (committed or not) of a config / shard."""
    ids: set[str] = set()
    for m in read_manifests(loc, manifest_names(loc, config_id, shard)):
        ids.update(m["image_ids"])
    return ids


def write_manifest(loc: VectorsLocation, record: dict, config: dict) -> str:
    """The manifest of a written part: its record, the embedding config, when and by whom."""
    m = dict(record)
    m["config"] = config
    m["written_at"] = now().isoformat()
    m["writer"] = worker_identity()
    rel = manifest_rel(record["rel_path"])
    loc.put_json(rel, m)
    return rel


def worker_identity() -> dict:
    """Who ran this: host, pid, and the Dask worker's address when inside one."""
    ident = {"host": socket.gethostname(), "pid": os.getpid()}
    if "distributed" in sys.modules:
        try:
            from distributed import get_worker

            ident["dask_worker"] = get_worker().address
        except Exception:  # not inside a Dask worker
            pass
    return ident


# ---------------------------------------------------------------------------- plan (reader)
def plan_shards(
    store: Store, config_id: str, *, source: str | None = None, shards: Sequence[str] | None = None
) -> dict[str, list[tuple[str, str]]]:
    """(image_id, path) of every ok image without a vector for ``config_id``, per shard.

    Reads DuckDB read-only (and the manifests: written-but-uncommitted images
    are not planned again). ``source``: only that scanned root / manifest.
    """
    wanted = list(shards) if shards is not None else all_shards()
    with store.connect(read_only=True, view=False) as con:
        done = E.embedded_ids(con, config_id)
        committed_parts = E.committed_part_ids(con, config_id)
        items = [(iid, opener) for iid, _, opener, _ in images.ok_image_files(con, source)]
    pending = _pending_ids(store.vectors_loc, config_id, wanted, committed_parts)
    out: dict[str, list[tuple[str, str]]] = {h: [] for h in wanted}
    for iid, path in items:
        if iid in done or iid in pending:
            continue
        lst = out.get(shard_of(iid))
        if lst is not None:
            lst.append((iid, path))
    return out


def _pending_ids(loc: VectorsLocation, config_id: str, shards: list[str], committed_parts: set[str]) -> set[str]:
    """Image ids written but not committed: only the manifests of parts the catalogue does not know are read."""
    pending: set[str] = set()
    for h in shards if len(shards) < 16**SHARD_HEX_DIGITS else [None]:
        names = [n for n in manifest_names(loc, config_id, h) if part_id_of(n) not in committed_parts]
        for m in read_manifests(loc, names):
            pending.update(m["image_ids"])
    return pending


def write_plans(loc: VectorsLocation, config_id: str, plans: dict[str, list[tuple[str, str]]]) -> dict:
    """One JSON work list per non-empty shard under ``<config_id>/_plans/<plan_id>/``."""
    plan_id = uuid.uuid4().hex[:12]
    files, counts = {}, {}
    for h, items in sorted(plans.items()):
        counts[h] = len(items)
        if items:
            rel = f"{config_id}/{PLANS_DIR}/{plan_id}/shard={h}.json"
            loc.put_json(rel, {"config_id": config_id, "shard": h, "items": [list(x) for x in items]})
            files[h] = rel
    return {"plan_id": plan_id, "config_id": config_id, "files": files, "counts": counts}


def plan_run(store: Store, backbone, *, source: str | None = None) -> dict:
    """Plan a sharded run: the work lists (write_plans) plus what the commit step needs (the embedding
    config, the source, who planned and when). JSON-able: it travels between the run's steps."""
    started = now()
    plans = plan_shards(store, backbone.config_id, source=source)
    files = write_plans(store.vectors_loc, backbone.config_id, plans)
    return files | {
        "config": backbone_config(backbone),
        "source": source,
        "worker": worker_identity(),
        "started_at": started.isoformat(),
    }


def read_plan(loc: VectorsLocation, rel: str | None) -> list[tuple[str, str]]:
    if not rel:
        return []
    return [tuple(x) for x in loc.read_json(rel)["items"]]


def remove_plan(loc: VectorsLocation, config_id: str, plan_id: str) -> None:
    for rel in loc.glob(f"{config_id}/{PLANS_DIR}/{plan_id}/*.json"):
        loc.remove(rel)


def shard_summary_rel(plan: dict, shard: str) -> str:
    """Where a shard step leaves its summary for the commit step (beside the plan)."""
    return f"{plan['config_id']}/{PLANS_DIR}/{plan['plan_id']}/summary-{shard}.json"


# ---------------------------------------------------------------------------- one shard (any worker)
def embed_shard(
    loc: VectorsLocation,
    backbone,
    shard: str,
    items: Sequence[tuple[str, str]],
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    flush_rows: int = FLUSH_ROWS,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Embed the planned images of one shard that no manifest holds yet; write parts + manifests.

    Touches no database. Returns a JSON-able summary (who ran it included).
    """
    from al_core.ingest.embed import embed_images

    t0 = time.perf_counter()
    config_id, config = backbone.config_id, backbone_config(backbone)
    stray = [iid for iid, _ in items if shard_of(iid) != shard]
    if stray:
        raise ValueError(f"shard {shard}: {len(stray)} planned image(s) belong to other shards, e.g. {stray[0]}")
    already = written_ids(loc, config_id, shard)
    todo = [(iid, path) for iid, path in items if iid not in already]
    if progress:
        progress(
            f"shard {shard}: embedding {len(todo)} images ({len(items) - len(todo)} already written) "
            f"with {backbone.name} [{config_id}]"
        )
    from al_core.ingest.embed import ScannedFile

    parts: list[dict] = []
    non_finite: list[str] = []
    stream = embed_images(
        [(iid, ScannedFile(path, iid)) for iid, path in todo], backbone, batch_size=batch_size, num_workers=num_workers
    )
    for ids_all, vectors_all in flushes(stream, flush_rows):
        ids, vectors, bad = finite_rows(ids_all, vectors_all)  # a NaN or inf vector is a failure, never written
        non_finite += bad
        if not ids:
            continue
        rec = write_part(loc, config_id, shard, ids, vectors)
        write_manifest(loc, rec, config)
        parts.append({k: rec[k] for k in ("part_id", "rel_path", "n_rows", "bytes")})
    stats = stream.stats
    path_of = dict(todo)
    failures = [{"image_id": f.key, "error": f.error} for f in stream.failures]
    failures += [{"image_id": i, "error": f"{path_of.get(i)}: {NON_FINITE}"} for i in non_finite]
    return {
        "shard": shard,
        "config_id": config_id,
        "backbone": backbone.name,
        "dim": int(backbone.feature_dim),
        "n_planned": len(items),
        "n_already_written": len(items) - len(todo),
        "n_embedded": int(stats.images) - len(non_finite),
        "n_failed": len(failures),
        "failures": failures,
        "parts": parts,
        "seconds": time.perf_counter() - t0,
        "embed_seconds": stats.seconds,
        "images_per_s": float(stats.images_per_s),
        "worker": worker_identity(),
        "config": config,
    }


def embed_shard_of_catalogue(
    store: Store,
    backbone,
    shard: str,
    *,
    source: str | None = None,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """One shard on its own (a Dagster partition): plan it (DuckDB read-only), then embed_shard."""
    items = plan_shards(store, backbone.config_id, source=source, shards=[shard])[shard]
    return embed_shard(store.vectors_loc, backbone, shard, items, batch_size=batch_size, progress=progress)


def _empty_shard_summary(plan: dict, shard: str, seconds: float) -> dict:
    return {
        "shard": shard,
        "config_id": plan["config_id"],
        "n_planned": 0,
        "n_already_written": 0,
        "n_embedded": 0,
        "n_failed": 0,
        "failures": [],
        "parts": [],
        "embed_seconds": 0.0,
        "seconds": seconds,
        "images_per_s": 0.0,
        "worker": worker_identity(),
    }


def embed_planned_shard(
    loc: VectorsLocation,
    plan: dict,
    shard: str,
    load_backbone: Callable[[], object],
    *,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """One shard step of a planned run (any worker, no DuckDB): embed the shard's work list and leave
    the step's summary beside the plan (shard_summary_rel) for the commit step; returns the summary.

    ``load_backbone`` is called only when the shard has work; its config must be the plan's
    (ShardError otherwise: every worker must run the same project file).
    """
    t0 = time.perf_counter()
    items = read_plan(loc, plan["files"].get(shard))
    if items:
        backbone = load_backbone()
        if backbone.config_id != plan["config_id"]:
            raise ShardError(
                f"this worker's backbone config {backbone.config_id} is not the plan's "
                f"{plan['config_id']}: the workers must run the same project file"
            )
        summary = embed_shard(loc, backbone, shard, items, batch_size=batch_size, progress=progress)
        summary.pop("config", None)
    else:
        summary = _empty_shard_summary(plan, shard, time.perf_counter() - t0)
    loc.put_json(shard_summary_rel(plan, shard), summary)
    return summary
