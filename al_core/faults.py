"""Named fault-injection points for the reliability suite (tests/test_reliability.py).

The code calls ``fault_point(NAME)`` at the places where a crash hurts most; the
process kills itself there with SIGKILL (no cleanup, no ``finally``, exactly
what an OOM kill or a power cut does) when the environment asks for it:

- ``AL_FAULT=NAME``: die the first time this process reaches point NAME;
- ``AL_FAULT=NAME@N``: die the N-th time (1-based), e.g. after N-1 committed flushes;
- ``AL_FAULT_ONCE=PATH``: die only if PATH does not exist yet (it is created just
  before dying), so a retried run of the same job passes the point.

Unset (always, outside tests) a point costs one environment look-up. Points:
FAULT_POINTS below; docs/reliability.md says what each test proves.
"""

import os
import signal

FAULT_POINTS = (
    "scan.in_transaction",  # al_core.ingest.scan.scan: rows inserted, transaction not committed
    "embeddings.before_commit",  # al_core.catalogue.store.Store.write_embeddings: part files written, not committed
    "labels.mid_insert",  # al_core.loop.ingest_labels.ingest_label_files: half the label rows inserted, not committed
    "labels.after_commit",  # al_core.loop.ingest_labels.ingest_label_files: committed, files not yet moved
    "probe.after_fit",  # al_core.loop.train.train_probe: probe fitted, nothing saved or recorded
    "query_set.after_insert",  # al_core.loop.proposal.propose: rounds + queries rows inserted, not committed
    "outbox.before_csv",  # al_core.loop.outbox.write_outbox: batch committed, JSON written, CSV not yet
)

_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Kill this process here (SIGKILL) if $AL_FAULT names this point; see the module docstring."""
    spec = os.environ.get("AL_FAULT")
    if not spec:
        return
    want, _, nth = spec.partition("@")
    if want != name:
        return
    n = _hits[name] = _hits.get(name, 0) + 1
    if n != int(nth or 1):
        return
    once = os.environ.get("AL_FAULT_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)
