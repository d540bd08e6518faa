"""Scoring a probe on the labelled evaluation set, and recording the metrics."""

import json

import numpy as np

from al_core.catalogue import labels as labels_q
from al_core.catalogue import now
from al_core.catalogue import probes as probes_q
from al_core.config import ProjectConfig
from al_core.loop.pool import Pool, load_pool
from al_core.value.record import prepare as prepare_value  # the manager's page: predictions, intervals, kappa

METRIC_NAMES = ("accuracy", "balanced_accuracy", "macro_f1")  # each in [0, 1], None without a labelled eval image
NOT_EVALUATED = "not evaluated: the evaluation set has no label yet"  # the metrics' status without a labelled image


def recall_text(recall: float | None, n_eval: int | None) -> str:
    """A class's recall as the report and the ``eval_metrics`` metadata show it: "n/a" for a class with no
    evaluation image (a class added since, or none of its images held out), else three digits."""
    return "n/a (no evaluation image)" if recall is None or n_eval == 0 else f"{recall:.3f}"


def per_class_summary(m: dict) -> dict[str, str]:
    """class -> "0.812 on 16 evaluation images" | "n/a (no evaluation image)" for an ``evaluate`` result."""
    counts = m.get("per_class_n_eval") or {}
    return {
        c: (recall_text(r, counts.get(c)) + (f" on {counts[c]} evaluation images" if counts.get(c) else ""))
        for c, r in (m.get("per_class_recall") or {}).items()
    }


def evaluate(store, cfg: ProjectConfig, round_: int, pool: Pool, probe, probe_id: str) -> dict:
    """Accuracy, balanced accuracy, macro F1, per-class recall and confusion matrix on the labelled eval set.

    Eval images without a vector in the pool or labelled with a class outside it are left out (``n_eval``
    counts the rest). ``per_class_n_eval`` gives each class's evaluation images; a class with none (a class
    added to the list since) has recall None ("n/a"), and counts neither in balanced accuracy nor, unless the
    probe predicts it, in macro F1. The metrics are recorded for ``probe_id`` (replacing earlier ones) and returned, in
    the same transaction as what al_core.value.record stores for the manager's page.
    """
    from al_core.learn.metrics import classification_metrics

    with store.connect(read_only=True, view=False) as con:
        rows = labels_q.labelled_eval_set(con)
    cls_index = {c: k for k, c in enumerate(pool.classes)}
    rows = [(iid, lab) for iid, lab in rows if iid in pool.index and lab in cls_index]
    out = {"round": round_, "probe_id": probe_id, "n_labels": int(len(pool.labeled)), "n_eval": len(rows)}
    out["status"] = f"evaluated on {len(rows)} image(s)" if rows else NOT_EVALUATED
    per_class_n = {c: 0 for c in pool.classes}
    for _, lab in rows:
        per_class_n[lab] += 1
    out["per_class_n_eval"] = per_class_n
    if not rows:
        out.update(dict.fromkeys(METRIC_NAMES), per_class_recall={}, confusion=[])
    else:
        x = pool.features[[pool.index[iid] for iid, _ in rows]]
        y = np.array([cls_index[lab] for _, lab in rows])
        pred = probe.predict(x)
        m = classification_metrics(y, pred, len(pool.classes))
        out.update(
            accuracy=m.accuracy,
            balanced_accuracy=m.balanced_accuracy,
            macro_f1=m.macro_f1,
            per_class_recall={
                c: float(r) if per_class_n[c] else None for c, r in zip(pool.classes, m.per_class_recall, strict=True)
            },
            confusion=m.confusion.tolist(),
        )
    value = prepare_value(store, cfg, round_, pool, probe, probe_id, rows, pred if rows else [])
    with store.transaction() as con:
        value.write(con)
        probes_q.put_metrics(
            con,
            probe_id=probe_id,
            round_=round_,
            accuracy=out["accuracy"],
            balanced_accuracy=out["balanced_accuracy"],
            macro_f1=out["macro_f1"],
            per_class_recall=json.dumps(out["per_class_recall"]),
            confusion=json.dumps(out["confusion"]),
            n_labels=out["n_labels"],
            n_eval=out["n_eval"],
            evaluated_at=now(),
            per_class_n_eval=json.dumps(per_class_n),
        )
    return out


def evaluate_round(store, cfg: ProjectConfig, round_: int, config_id: str, probe_id: str) -> dict:
    """The ``eval_metrics`` step: load the pool with the class list probe ``probe_id`` was trained with
    (``train.probe_classes``) and the probe (its sha256 checked), then ``evaluate``."""
    from al_core.loop.train import load_probe, probe_classes

    pool = load_pool(store, cfg, config_id, probe_classes(store, cfg, probe_id))
    return evaluate(store, cfg, round_, pool, load_probe(store, probe_id), probe_id)
