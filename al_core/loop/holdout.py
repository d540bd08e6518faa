"""The evaluation set: the hold-out rule, and holding the images out once."""

import math
from collections.abc import Sequence

import numpy as np

from al_core.catalogue import images, now
from al_core.catalogue import labels as labels_q
from al_core.catalogue import rounds as rounds_q
from al_core.config import ProjectConfig
from al_core.loop import outbox


def stratified_holdout(rows: Sequence[tuple[str, str | None]], n: int, seed: int) -> list[tuple[str, str | None]]:
    """The hold-out rule, as a pure function (the loop's eval set and `al simulate` both use it).

    ``rows``: (image_id, ground-truth class or None) of every candidate image,
    sorted by image_id. Takes ``min(n, len(rows) // 2)`` images, split over the
    classes by largest remainder of the proportional quotas, drawn per class
    (classes in name order, None last) with ``numpy.random.default_rng(seed)``.
    Returns (image_id, class) in class order, then image order.
    """
    n = min(int(n), len(rows) // 2)
    if n <= 0:
        return []
    rng = np.random.default_rng(seed)
    groups: dict = {}
    for iid, gt in rows:
        groups.setdefault(gt, []).append(iid)
    keys = sorted(groups, key=lambda k: (k is None, str(k)))
    quotas = {k: n * len(groups[k]) / len(rows) for k in keys}
    take = {k: int(np.floor(q)) for k, q in quotas.items()}
    for k in sorted(keys, key=lambda k: (-(quotas[k] - take[k]), str(k)))[: n - sum(take.values())]:
        take[k] += 1
    chosen = []
    for k in keys:
        ids = groups[k]
        pick = rng.choice(len(ids), size=take[k], replace=False) if take[k] else []
        chosen += [(ids[i], k) for i in sorted(pick)]
    return chosen


AUTO_HOLDOUT_MAX = 500  # `evaluation.holdout: auto` never holds out more (a Wilson interval of +-4 points at 0.8)
AUTO_HOLDOUT_SHARE = 0.10  # ... nor more than this share of the images
AUTO_HOLDOUT_MIN_PER_CLASS = 5  # ... but at least this many per class on average (when the pool allows)


def auto_holdout_size(n_images: int, n_classes: int) -> int:
    """The hold-out size of `evaluation.holdout: auto`: min(AUTO_HOLDOUT_MAX, 10 % of the images), raised to
    AUTO_HOLDOUT_MIN_PER_CLASS x classes, and never more than half the images (stratified_holdout's cap)."""
    n = min(AUTO_HOLDOUT_MAX, math.ceil(AUTO_HOLDOUT_SHARE * n_images))
    n = max(n, AUTO_HOLDOUT_MIN_PER_CLASS * n_classes)
    return min(n, n_images // 2)


def holdout_size(cfg: ProjectConfig, n_images: int, n_classes: int) -> int:
    """The number of images to hold out: the setting, or auto_holdout_size for `auto`."""
    h = cfg.evaluation.holdout
    return auto_holdout_size(n_images, n_classes) if h == "auto" else int(h)


def ensure_eval_set(store, cfg: ProjectConfig, classes: Sequence[str]) -> dict:
    """Hold out ``evaluation.holdout`` images (holdout_size; stratified by ground truth, fixed by the seed), once.

    Candidates are the known images never proposed. With
    ``evaluation.labels_from_ground_truth`` the held-out images are labelled from
    the ground truth (a class of ``classes``); otherwise they wait for labels and
    ``outbox/eval-holdout.csv`` lists them. Returns {"holdout": images held out,
    "created": images held out by this call}.
    """
    with store.connect(read_only=True, view=False) as con:
        n_existing = labels_q.n_holdout(con)
        if n_existing or cfg.evaluation.holdout == 0:
            return {"holdout": n_existing, "created": 0}
        rows = images.known_images_with_ground_truth(con)
        proposed = rounds_q.proposed_image_ids(con)
    candidates = [r for r in rows if r[0] not in proposed]
    chosen = stratified_holdout(candidates, holdout_size(cfg, len(candidates), len(classes)), cfg.selection.seed)
    from_truth = cfg.evaluation.labels_from_ground_truth
    with store.transaction() as con:
        labels_q.add_holdout(con, [(iid, gt if (from_truth and gt in classes) else None) for iid, gt in chosen], now())
    if not from_truth:
        with store.connect(read_only=True, view=False) as con:
            paths = images.ok_path_of(con, [iid for iid, _ in chosen])
        outbox.write_eval_holdout(cfg, [iid for iid, _ in chosen], paths)
    return {"holdout": len(chosen), "created": len(chosen)}


def eval_set_state(store, cfg: ProjectConfig) -> dict:
    """Where the evaluation set stands: ``size`` (held out), ``labelled``, the list and gallery to label
    (``csv``, ``page``: paths in the outbox, None when not written), the folder to deliver into (``deliver_to``),
    and ``todo``: one sentence saying what to do (None once every held-out image has a label)."""
    from al_core.loop.inbox import EVAL_FOLDER

    with store.connect(read_only=True, view=False) as con:
        size = labels_q.n_holdout(con)
        labelled = len(labels_q.labelled_eval_set(con))
    csv_path, page = cfg.outbox / outbox.EVAL_HOLDOUT_CSV, outbox.eval_page(cfg.outbox)
    deliver_to = cfg.inbox / EVAL_FOLDER
    todo = None
    if not size and not labelled:
        todo = (
            "no evaluation set yet: it is held out with the seed batch"
            if cfg.evaluation.holdout != 0
            else f"no evaluation set (evaluation.holdout: 0): deliver labelled images into {deliver_to}/ to score "
            "the rounds"
        )
    elif labelled < size:
        todo = (
            f"label the evaluation set ({labelled}/{size} labelled): fill the label column of {csv_path}"
            + (f" (gallery {page})" if page.exists() else "")
            + f" and deliver it into {deliver_to}/; until then the rounds are not evaluated"
        )
    return {
        "size": size,
        "labelled": labelled,
        "csv": str(csv_path) if csv_path.exists() else None,
        "page": str(page) if page.exists() else None,
        "deliver_to": str(deliver_to),
        "todo": todo,
    }
