"""Sharded embedding: plan (a reader), embed one shard (any worker), commit (the single writer).

The unit of scale-out work is a *shard*: the images whose id (sha256) starts
with the same ``SHARD_HEX_DIGITS`` hex digits (``al_core.catalogue.store.shard_of``). An
image's shard never changes when images are added, so a shard is a stable
Dagster partition (al_assets/shards.py) and any worker can run or re-run it.

    plan = plan_shards(store, config_id)                 # read-only DuckDB: todo per shard
    files = write_plans(store.vectors_loc, config_id, plan)   # so workers need no DuckDB
    summary = embed_shard(loc, backbone, "a", read_plan(loc, files["files"]["a"]))   # any worker
    result = commit_pending(store, config_id)           # the single DuckDB writer

A worker never touches DuckDB. It writes part files (through fsspec when the
vectors folder is a URL) and, after each part, a *manifest*
``part-<id>.manifest.json`` beside it: the part's catalogue record (ids, rows,
dim, sha256, bytes) plus the embedding config. The manifest is written last and
all-or-nothing (rename, or one object PUT), so it is the "written completely"
mark. The writer's ``commit_pending`` records every manifest whose part is not
in ``embedding_parts`` yet, in one transaction, deduplicating image ids (an
image already committed, or in an earlier manifest, is dropped: a part that
would add nothing is deleted, a part that overlaps is rewritten without the
duplicates). Commit is keyed by ``part_id`` and by ``(config_id, image_id)``
(both primary keys), so nothing is committed twice, whatever crashed where.

Idempotent re-runs: a shard skips every image already in a manifest of its
shard (committed or not), so re-running it after a crash writes only what is
missing. Manifests of committed parts are kept (they are what makes a re-run
with an old plan cheap); the garbage collector leaves manifested parts alone.
"""

import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence

import numpy as np

from al_core.catalogue.store import SHARD_HEX_DIGITS, Store, now, shard_of
from al_core.catalogue.vectors import MANIFEST_SUFFIX, VectorsLocation, write_part

FLUSH_ROWS = 8192  # vectors buffered per part file (as al_core.ingest.pipeline.FLUSH_ROWS): 42 MB at D = 1280
PLANS_DIR = "_plans"


def all_shards(digits: int = SHARD_HEX_DIGITS) -> list[str]:
    """Every shard key: '0'..'f' for one hex digit, '00'..'ff' for two."""
    return [format(i, f"0{digits}x") for i in range(16**digits)]


def _part_id(rel: str) -> str:
    return rel.rsplit("/", 1)[-1].split(".", 1)[0][len("part-"):]


def manifest_rel(part_rel: str) -> str:
    return part_rel[: -len(".parquet")] + MANIFEST_SUFFIX


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
def plan_shards(store: Store, config_id: str, *, source: str | None = None,
                shards: Sequence[str] | None = None) -> dict[str, list[tuple[str, str]]]:
    """(image_id, path) of every ok image without a vector for ``config_id``, per shard.

    Reads DuckDB read-only (and the manifests: written-but-uncommitted images
    are not planned again). ``source``: only that scanned root / manifest.
    """
    from al_core.ingest.scan import ok_images

    wanted = list(shards) if shards is not None else all_shards()
    done = store.embedded_ids(config_id)
    loc = store.vectors_loc
    # written but not committed: only the manifests of parts the catalogue does not know are read
    committed_parts = {r[0] for r in store.fetch("SELECT part_id FROM embedding_parts WHERE config_id = ?",
                                                 [config_id])}
    pending: set[str] = set()
    for h in wanted if len(wanted) < 16**SHARD_HEX_DIGITS else [None]:
        names = [n for n in manifest_names(loc, config_id, h) if _part_id(n) not in committed_parts]
        for m in read_manifests(loc, names):
            pending.update(m["image_ids"])
    out: dict[str, list[tuple[str, str]]] = {h: [] for h in wanted}
    for iid, path in ok_images(store, source):
        if iid in done or iid in pending:
            continue
        lst = out.get(shard_of(iid))
        if lst is not None:
            lst.append((iid, path))
    return out


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


def read_plan(loc: VectorsLocation, rel: str | None) -> list[tuple[str, str]]:
    if not rel:
        return []
    return [tuple(x) for x in loc.read_json(rel)["items"]]


def remove_plan(loc: VectorsLocation, config_id: str, plan_id: str) -> None:
    for rel in loc.glob(f"{config_id}/{PLANS_DIR}/{plan_id}/*.json"):
        loc.remove(rel)


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
    config_id = backbone.config_id
    config = dict(backbone.config)
    config["dim"] = int(backbone.feature_dim)
    stray = [iid for iid, _ in items if shard_of(iid) != shard]
    if stray:
        raise ValueError(f"shard {shard}: {len(stray)} planned image(s) belong to other shards, e.g. {stray[0]}")
    already = written_ids(loc, config_id, shard)
    todo = [(iid, path) for iid, path in items if iid not in already]
    if progress:
        progress(f"shard {shard}: embedding {len(todo)} images ({len(items) - len(todo)} already written) "
                 f"with {backbone.name} [{config_id}]")
    parts: list[dict] = []
    buf_ids: list[str] = []
    buf_vecs: list[np.ndarray] = []

    def flush():
        nonlocal buf_ids, buf_vecs
        if buf_ids:
            vecs = np.concatenate(buf_vecs)
            if not np.all(np.isfinite(vecs)):
                raise ValueError(f"shard {shard}: the backbone returned non-finite vectors")
            rec = write_part(loc, config_id, shard, buf_ids, vecs)
            write_manifest(loc, rec, config)
            parts.append({k: rec[k] for k in ("part_id", "rel_path", "n_rows", "bytes")})
        buf_ids, buf_vecs = [], []

    stream = embed_images(todo, backbone, batch_size=batch_size, num_workers=num_workers)
    for keys, vectors in stream:
        buf_ids.extend(keys)
        buf_vecs.append(vectors)
        if len(buf_ids) >= flush_rows:
            flush()
    flush()
    stats = stream.stats
    return {
        "shard": shard,
        "config_id": config_id,
        "backbone": backbone.name,
        "dim": int(backbone.feature_dim),
        "n_planned": len(items),
        "n_already_written": len(items) - len(todo),
        "n_embedded": int(stats.images),
        "n_failed": int(stats.failures),
        "failures": [{"image_id": f.key, "error": f.error} for f in stream.failures],
        "parts": parts,
        "seconds": time.perf_counter() - t0,
        "embed_seconds": stats.seconds,
        "images_per_s": float(stats.images_per_s),
        "worker": worker_identity(),
        "config": config,
    }


# ---------------------------------------------------------------------------- commit (single writer)
def commit_pending(store: Store, config_id: str | None = None, *, run_id: str | None = None,
                   verify_sha256: bool = False) -> dict:
    """Commit every written-but-uncommitted part (of ``config_id``, or of every config) in one transaction.

    Deduplicates image ids against the catalogue and across manifests (the
    earliest written wins). Returns counts: parts committed, rewritten,
    dropped (duplicates), missing (manifest without its part), rows committed.
    """
    loc = store.vectors_loc
    out = {"parts_committed": 0, "parts_rewritten": 0, "parts_dropped": 0, "parts_missing": 0,
           "rows_committed": 0, "rows_duplicate": 0}
    names = manifest_names(loc, config_id) if config_id else loc.glob(f"*/shard=*/part-*{MANIFEST_SUFFIX}")
    if not names:
        return out
    known = {r[0] for r in store.fetch("SELECT part_id FROM embedding_parts")} if store.db_path.exists() else set()
    pending = [m for m in read_manifests(loc, [n for n in names if _part_id(n) not in known])]
    if not pending:
        return out
    pending.sort(key=lambda m: (m.get("written_at", ""), m["part_id"]))

    for cid, cfg in {m["config_id"]: m.get("config") for m in pending}.items():
        if cfg:
            store.register_embedding_config(cid, cfg)

    # image ids already in the catalogue (anti-join in DuckDB: the catalogue may hold millions)
    import pyarrow as pa

    cand = pa.table({"config_id": [m["config_id"] for m in pending for _ in m["image_ids"]],
                     "image_id": [i for m in pending for i in m["image_ids"]]})
    with store.connect(read_only=True, view=False) as con:
        con.register("_cand", cand)
        dup_rows = con.execute(
            "SELECT c.config_id, c.image_id FROM _cand c JOIN embedding_index e "
            "ON e.config_id = c.config_id AND e.image_id = c.image_id").fetchall()
        con.unregister("_cand")
    taken = {(c, i) for c, i in dup_rows}

    records, drop = [], []
    for m in pending:
        if not loc.exists(m["rel_path"]) or loc.size(m["rel_path"]) != m["bytes"]:
            out["parts_missing"] += 1
            drop.append(m)
            continue
        if verify_sha256:
            from al_core.catalogue.vectors import sha256_of

            if sha256_of(loc, m["rel_path"]) != m["sha256"]:
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
        elif n_keep == 0:
            out["parts_dropped"] += 1
            drop.append(m)
        else:  # overlap: rewrite the part without the duplicates (the writer writes it)
            tbl = loc.read_table(m["rel_path"])
            mask = np.asarray(keep)
            ids = [i for i, k in zip(m["image_ids"], keep) if k]
            col = tbl.column("vector").combine_chunks()
            d = m["dim"]
            vecs = np.frombuffer(col.buffers()[1], dtype="<f4", count=len(col) * d,
                                 offset=col.offset * d * 4).reshape(len(col), d)[mask]
            got = tbl.column("image_id").to_pylist()
            if got != m["image_ids"]:
                raise RuntimeError(f"part {m['rel_path']} does not hold the ids its manifest lists")
            rec = write_part(loc, cid, m["shard"], ids, vecs)
            write_manifest(loc, rec, m.get("config") or {})
            records.append(rec)
            out["parts_rewritten"] += 1
            drop.append(m)
    store.commit_parts(records, run_id=run_id)
    out["parts_committed"] = len(records)
    out["rows_committed"] = int(sum(r["n_rows"] for r in records))
    for m in drop:  # after the commit: never delete what a failed commit might still need
        loc.remove(m["rel_path"])
        loc.remove(manifest_rel(m["rel_path"]))
    return out


def record_sharded_run(store: Store, *, run_id: str, config_id: str, config: dict, summaries: Sequence[dict],
                       started_at, path_of: dict | None = None) -> dict:
    """The embedding_runs row and embedding_failures of a sharded run (the writer, one transaction)."""
    n_images = sum(s["n_embedded"] for s in summaries)
    n_failed = sum(s["n_failed"] for s in summaries)
    busy = sum(s.get("embed_seconds", 0.0) for s in summaries)
    wall = (now() - started_at).total_seconds()
    with store.transaction() as con:
        for s in summaries:
            for f in s.get("failures", []):
                con.execute("INSERT INTO embedding_failures VALUES (?, ?, ?, ?, ?)",
                            [config_id, f["image_id"], (path_of or {}).get(f["image_id"]), f["error"], now()])
        con.execute(
            "INSERT INTO embedding_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, config_id, started_at, now(), n_images, n_failed, n_images / wall if wall > 0 else 0.0,
             f"sharded ({len({json.dumps(s.get('worker'), sort_keys=True) for s in summaries})} workers) "
             f"{config.get('device')}",
             json.dumps(config.get("library_versions", {}), sort_keys=True)])
        n_total = con.execute("SELECT count(*) FROM embedding_index WHERE config_id = ?", [config_id]).fetchone()[0]
    return {"n_embedded": n_images, "n_failed": n_failed, "n_total": int(n_total), "wall_seconds": wall,
            "worker_seconds": busy}
