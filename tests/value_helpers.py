"""A small project whose labelling loop runs in process (no Dagster): real sample images, class-dependent random
vectors, the simulated annotator, and every loop step of al_core.loop in the order a round run takes them."""

import shutil

import numpy as np
import yaml

from al_core.catalogue import open_store
from al_core.config import load_config
from tests.conftest import SAMPLE_ROOT

CLASSES = ("airplane", "automobile", "bird", "cat")
CONFIG_ID = "cfg-value"


def make_project(tmp, *, per_class=40, holdout=40, dim=16, budget=4, total=100, spread=0.5, extra=None):
    """(cfg, store): ``per_class`` sample images of CLASSES, scanned, with ``dim``-d vectors around one centre
    per class (``spread`` apart); ``extra`` adds or overrides sections of the project file."""
    from al_core.ingest.scan import scan

    root = tmp / "images"
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for f in sorted((SAMPLE_ROOT / c).glob("*.jpg"))[:per_class]:
            shutil.copy(f, root / c / f.name)
    conf = {
        "images": {"root": "images"},
        "classes": list(CLASSES),
        "paths": {"data_dir": "data", "inbox": "data/inbox", "outbox": "data/outbox"},
        "evaluation": {"holdout": holdout, "labels_from_ground_truth": True},
        "selection": {"budget_per_round": budget, "total_budget": total, "seed": 0, "query_strategy": "margin"},
        "cost": {"per_label": 0.5, "per_hour": 20.0},
        "target": {"value": 0.8},
    }
    for section, values in (extra or {}).items():
        conf.setdefault(section, {}).update(values)
    (tmp / "al.yaml").write_text(yaml.safe_dump(conf))
    cfg = load_config(tmp / "al.yaml")
    store = open_store(cfg)
    scan(store, root=root)
    rows = store.fetch("SELECT image_id, any_value(class_name) FROM ground_truth GROUP BY 1 ORDER BY 1")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((len(CLASSES), dim)) * spread
    vecs = np.stack([centres[CLASSES.index(c)] + rng.standard_normal(dim) for _, c in rows]).astype(np.float32)
    store.register_embedding_config(CONFIG_ID, {"backbone": "random", "dim": dim, "preprocessing": {"size": 32}})
    store.write_embeddings(CONFIG_ID, [r[0] for r in rows], vecs)
    return cfg, store


def run_loop(cfg, store, rounds: int, *, skip: float = 0.1) -> list[dict]:
    """Seed pool, then ``rounds`` rounds (answer, ingest, train, evaluate, propose); stops early when nothing
    is proposed. Returns each round's metrics (with ``proposed``: the Proposal or None)."""
    from al_core.loop import evaluate_round, ingest_round_labels, propose_round, propose_seed, train_round_probe
    from al_core.loop.annotator import answer_round

    propose_seed(store, cfg, CONFIG_ID)
    out = []
    for r in range(1, rounds + 1):
        delivery = answer_round(cfg, r - 1, skip=skip)
        res = ingest_round_labels(store, cfg, r, [delivery])
        rec = train_round_probe(store, cfg, r, CONFIG_ID, batch=res.as_dict())
        m = evaluate_round(store, cfg, r, CONFIG_ID, rec.probe_id)
        m["proposed"] = propose_round(store, cfg, r, CONFIG_ID, rec.probe_id)
        out.append(m)
        if m["proposed"] is None:
            break
    return out
