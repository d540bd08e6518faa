"""Checking the stored vectors against the catalogue (``al verify``), and dropping what is damaged.

``verify_parts(store)`` checks every committed part file (``embedding_parts``)
against its record: present, the recorded size and sha256, and readable as the
recorded rows and dimension (``al_core.catalogue.parts.check_part``); it also
lists orphan part files (on disk, not in the catalogue). ``repair(store,
report)`` drops the damaged and missing parts from the catalogue in one
transaction (their ``embedding_index`` rows go, so the next embedding run,
``al ingest`` or the ``embeddings`` asset, embeds those images again), moves a
damaged file aside as ``.damaged-part-<id>.parquet`` (kept for inspection,
invisible to every reader) and collects orphans with the garbage collector's
age and pending-commit rules (``Store.gc_orphan_parts``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from al_core.catalogue import embeddings as E
from al_core.catalogue.parts import PART_SUFFIX, check_part, pending_commit

DAMAGED_PREFIX = ".damaged-"  # a damaged part moved aside: hidden, so no reader or collector takes it for a part


@dataclass(frozen=True)
class PartProblem:
    rel_path: str
    kind: str  # 'damaged' | 'missing' | 'orphan'
    reason: str
    part_id: str = ""
    config_id: str = ""
    n_rows: int = 0


@dataclass
class VerifyReport:
    n_parts: int = 0
    n_vectors: int = 0
    problems: list[PartProblem] = field(default_factory=list)

    def of_kind(self, *kinds: str) -> list[PartProblem]:
        return [p for p in self.problems if p.kind in kinds]


def verify_parts(store) -> VerifyReport:
    """Every committed part checked against its record, and every orphan part file (module docstring)."""
    with store.connect(read_only=True, view=False) as con:
        parts = E.all_parts(con)
    loc = store.vectors_loc
    report = VerifyReport(n_parts=len(parts), n_vectors=sum(p.n_rows for p in parts))
    for p in parts:
        problem = check_part(loc, p.rel_path, sha256=p.sha256, n_bytes=p.n_bytes, n_rows=p.n_rows, dim=p.dim)
        if problem:
            kind = "missing" if problem == "the file is missing" else "damaged"
            report.problems.append(PartProblem(p.rel_path, kind, problem, p.part_id, p.config_id, p.n_rows))
    known = {p.rel_path for p in parts}
    if loc.is_local and store.vectors_dir.exists():
        for f in sorted(store.vectors_dir.rglob(f"part-*{PART_SUFFIX}")):
            rel = f.relative_to(store.vectors_dir).as_posix()
            if rel in known or rel.startswith(".") or "/." in rel:
                continue
            why = (
                "waiting for the writer's commit (it has a manifest)"
                if pending_commit(f)
                else "not in the catalogue (a writer stopped before its commit)"
            )
            report.problems.append(PartProblem(rel, "orphan", why))
    return report


def repair(store, report: VerifyReport, *, orphan_min_age_s: float) -> dict:
    """Drop the damaged and missing parts (one transaction), move damaged files aside, collect old orphans.

    Returns counts: parts dropped, vectors dropped (images to embed again), files moved aside, orphans removed.
    """
    bad = report.of_kind("damaged", "missing")
    with store.transaction() as con:
        n_vectors = E.drop_parts(con, [p.part_id for p in bad])
        store._create_embeddings_view(con)
    moved = 0
    loc = store.vectors_loc
    for p in report.of_kind("damaged"):
        if loc.is_local:
            src = loc.local_path(p.rel_path)
            try:
                os.replace(src, src.with_name(DAMAGED_PREFIX + src.name))
                moved += 1
            except FileNotFoundError:
                pass
        else:
            loc.remove(p.rel_path)
    removed = store.gc_orphan_parts(orphan_min_age_s)
    return {
        "parts_dropped": len(bad),
        "vectors_dropped": n_vectors,
        "moved_aside": moved,
        "orphans_removed": len(removed),
    }
