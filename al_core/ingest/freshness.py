"""Does a round need an ingest run first? The inbox sensor's cheap check before it requests a round.

``ingest_decision(store, cfg)`` lists the project's image source now
(``al_core.ingest.listing.source_fingerprint``: the scanner's own listing, no
file opened), and reads the fingerprint its last finished scan recorded and
whether every ok image of that source has a vector of the embedding config the
loop reads (or a recorded embedding failure). An ingest run is needed when:

- no finished scan of the source is recorded, or it recorded no fingerprint
  (a scan made before schema version 9);
- the fingerprint differs: a file added, removed, renamed, rewritten or made
  (un)readable, so new images are scanned and embedded before the next proposal;
- an ok image of the source has neither a vector nor a recorded failure (an
  ingest stopped between its scan and its embedding);
- the check itself fails (the database busy, the root unreadable, no source
  set): then an ingest run is queued, as before the check existed.

Not part of the check: a backbone changed in the project file while the images
stay the same (run `al ingest` or ``ingest_job`` to embed with it).
"""

import time
from dataclasses import dataclass

from al_core.catalogue import asset_outputs, images
from al_core.catalogue import embeddings as embeddings_q
from al_core.ingest.listing import source_fingerprint

EMBEDDINGS_ASSET = "embeddings"  # the asset whose value names the embedding config the loop reads
QUEUED = "ingest run queued"
NOT_QUEUED = "no ingest run"


@dataclass(frozen=True)
class IngestDecision:
    """Whether an ingest run goes before the round, and the one line that says why (the log line and run tag)."""

    needed: bool
    reason: str
    scan_id: int | None = None  # the last scan compared against
    n_files: int | None = None  # candidate files listed now
    seconds: float = 0.0  # what the check cost

    def as_tags(self) -> dict[str, str]:
        """Run tags that record the decision: al/ingest_before ('queued' or 'skipped'), al/ingest_check (why) and
        al/ingest_check_s (what the check cost, seconds)."""
        return {
            "al/ingest_before": "queued" if self.needed else "skipped",
            "al/ingest_check": self.reason,
            "al/ingest_check_s": f"{self.seconds:.3f}",
        }


def _at(ts) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S UTC") if hasattr(ts, "strftime") else str(ts)


def ingest_decision(store, cfg) -> IngestDecision:
    """Whether the project's image source changed since its last scan (see the module docstring); never raises."""
    t0 = time.perf_counter()
    what = "manifest" if cfg.manifest is not None else "image root"
    try:
        decision = _decide(store, cfg, what)
    except Exception as e:  # any failure of the check: ingest, as if there were no check
        decision = IngestDecision(True, f"{what} check failed ({type(e).__name__}: {e}): {QUEUED}")
    return IngestDecision(
        decision.needed, decision.reason, decision.scan_id, decision.n_files, time.perf_counter() - t0
    )


def _decide(store, cfg, what: str) -> IngestDecision:
    if cfg.manifest is None and cfg.image_root is None:
        return IngestDecision(True, f"no images.root or images.manifest set: {QUEUED}")
    source, now = (
        source_fingerprint(manifest=cfg.manifest)
        if cfg.manifest is not None
        else source_fingerprint(root=cfg.image_root)
    )
    with store.connect(read_only=True, view=False) as con:
        last = images.last_scan(con, source)
        if last is None:
            return IngestDecision(True, f"no scan of the {what} recorded: {QUEUED}", None, now.n_files)
        if last.fingerprint is None:
            return IngestDecision(
                True,
                f"scan {last.scan_id} recorded no fingerprint (made before schema version 9): {QUEUED}",
                last.scan_id,
                now.n_files,
            )
        if last.fingerprint != now.digest:
            return IngestDecision(
                True,
                f"{what} changed: {now.n_files} files now, {last.n_files} at scan {last.scan_id} "
                f"({_at(last.finished_at)}): {QUEUED}",
                last.scan_id,
                now.n_files,
            )
        try:
            config_id = asset_outputs.get(con, EMBEDDINGS_ASSET, "")["config_id"]
        except KeyError:
            return IngestDecision(True, f"{what} unchanged, but nothing is embedded yet: {QUEUED}", last.scan_id)
        missing, _ = embeddings_q.coverage_gaps(con, source, config_id)
    since = f"{what} unchanged since scan {last.scan_id} at {_at(last.finished_at)}"
    if missing:
        return IngestDecision(
            True, f"{since}, but {missing} of its images have no vector yet: {QUEUED}", last.scan_id, now.n_files
        )
    return IngestDecision(False, f"{since}: {NOT_QUEUED}", last.scan_id, now.n_files)
