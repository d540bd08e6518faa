"""Training the round's probe on every current training label, storing it (safetensors) and loading it back."""

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

from al_core.catalogue import now
from al_core.catalogue import probes as probes_q
from al_core.config import ProjectConfig
from al_core.faults import fault_point  # named SIGKILL points (tests/test_reliability.py)
from al_core.files.hashing import sha256_file
from al_core.loop.errors import LoopError
from al_core.loop.pool import Pool, load_project_pool
from al_core.loop.requests import close_round

MIN_TRAINING_LABELS = 2  # a probe needs at least two labelled images
CLASSES_METADATA_KEY = "al_classes"  # the probe file's metadata: the class list it was trained with (JSON)
PROBE_ID_RANDOM_CHARS = 8  # random hex in a probe id (32 bits): two runs training one version never share an id


@dataclass
class ProbeRecord:
    probe_id: str
    round: int
    version: int
    trigger: str
    path: str
    sha256: str
    n_labels: int
    train_seconds: float
    n_epochs: int
    n_classes: int = 0
    config_id: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def train_probe(
    store, cfg: ProjectConfig, round_: int, pool: Pool, *, trigger: str = "round", run_id: str | None = None
):
    """Train the probe on every current training label; save it (safetensors) and record it.

    Returns (probe, ProbeRecord). ``trigger``: 'round' | 'schedule' | 'manual'.
    """
    from al_core.learn.probe import Probe

    if len(pool.labeled) < MIN_TRAINING_LABELS:
        raise LoopError(
            f"round {round_}: {len(pool.labeled)} training label(s); the probe needs at least {MIN_TRAINING_LABELS}"
        )
    t = time.perf_counter()
    probe = Probe(n_classes=len(pool.classes), seed=cfg.selection.seed + round_)
    probe.fit(pool.features[pool.labeled], pool.labels)
    train_s = time.perf_counter() - t
    fault_point("probe.after_fit")
    with store.connect(read_only=True, view=False) as con:
        version = probes_q.n_probes_of_round(con, round_) + 1
    probe_id = f"r{round_:04d}-v{version}-{uuid.uuid4().hex[:PROBE_ID_RANDOM_CHARS]}"
    cfg.probes_dir.mkdir(parents=True, exist_ok=True)
    path = cfg.probes_dir / f"probe-{probe_id}.safetensors"
    sha = probe.save(path, {CLASSES_METADATA_KEY: json.dumps(list(pool.classes))})
    with store.transaction() as con:
        probes_q.insert_probe(
            con,
            probe_id=probe_id,
            round_=round_,
            version=version,
            trigger=trigger,
            path=str(path),
            sha256=sha,
            config_id=pool.config_id,
            n_labels=len(pool.labeled),
            n_classes=len(pool.classes),
            seed=cfg.selection.seed + round_,
            train_seconds=train_s,
            trained_at=now(),
            run_id=run_id,
            classes=pool.classes,
        )
        probes_q.insert_probe_labels(con, probe_id, pool.label_ids)
    rec = ProbeRecord(
        probe_id,
        round_,
        version,
        trigger,
        str(path),
        sha,
        len(pool.labeled),
        train_s,
        int(getattr(probe, "n_epochs_", 0)),
        len(pool.classes),
        pool.config_id,
    )
    return probe, rec


def load_probe(store, probe_id: str):
    """Load a recorded probe, refusing a file whose sha256 differs from the catalogue's."""
    from al_core.learn.probe import Probe

    with store.connect(read_only=True, view=False) as con:
        row = probes_q.probe_file(con, probe_id)
    if row is None:
        raise LoopError(f"unknown probe {probe_id}")
    path, sha = row
    actual = sha256_file(path)
    if actual != sha:
        raise LoopError(f"probe file {path} has sha256 {actual}, the catalogue recorded {sha}: refused")
    return Probe.load(path)


def probe_classes(store, cfg: ProjectConfig, probe_id: str) -> tuple[str, ...]:
    """The class list probe ``probe_id`` was trained with (its output k names classes[k]): recorded in the
    catalogue (and the probe file's metadata); for a probe recorded before the list was kept, the project's."""
    with store.connect(read_only=True, view=False) as con:
        recorded = probes_q.probe_classes(con, probe_id)
    return recorded if recorded is not None else tuple(cfg.class_names(store))


def train_round_probe(
    store,
    cfg: ProjectConfig,
    round_: int,
    config_id: str,
    *,
    batch: Mapping | None = None,
    trigger: str = "round",
    run_id: str | None = None,
    log: Callable[[str], None] | None = None,
) -> ProbeRecord | None:
    """The ``probe`` step: train probe ``round_`` on every label so far; None when the batch is not answered yet.

    On a round run (``trigger`` 'round'), ``batch`` is the ``round_labels`` value
    (``RoundLabels.as_dict``): the probe is trained only when the open batch is
    answered (``ready``) or closed by hand (``force_close``), and that batch is
    closed first. A retraining run (another trigger) trains whatever the batch.
    """
    if trigger == "round":
        batch = batch or {}
        if not (batch.get("ready") or batch.get("force_close")):
            (log or (lambda m: None))(
                f"batch {batch.get('open_round')} answered {batch.get('answered')}/{batch.get('proposed')}: below "
                f"selection.answered_fraction={cfg.selection.answered_fraction}; waiting for more labels"
            )
            return None
        if batch.get("open_round") is not None:
            close_round(store, batch["open_round"], "manual" if batch.get("force_close") else "answered")
    _, rec = train_probe(store, cfg, round_, load_project_pool(store, cfg, config_id), trigger=trigger, run_id=run_id)
    return rec
