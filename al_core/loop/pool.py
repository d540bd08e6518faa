"""The pool a round selects from and trains on: every vector of the embedding config, with the training labels."""

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from al_core.catalogue import embeddings as embeddings_q
from al_core.catalogue import images
from al_core.catalogue import labels as labels_q
from al_core.catalogue import rounds as rounds_q
from al_core.config import ProjectConfig
from al_core.loop.errors import LoopError


@dataclass
class Pool:
    config_id: str
    image_ids: np.ndarray
    features: np.ndarray
    index: dict
    classes: tuple[str, ...]
    labeled: np.ndarray  # row indices with a training label
    labels: np.ndarray  # class index per labeled row
    label_ids: list[int]  # labels.label_id per labeled row
    candidates: np.ndarray  # rows that may be proposed
    n_excluded: dict = field(default_factory=dict)


# One round run loads the pool in three steps (probe, metrics, query set); the vectors are kept for the next
# step of the same process as long as the catalogue's part list for the config is unchanged.
EMBEDDINGS_CACHE_ENTRIES = 1  # one N x D float32 matrix each: 100,000 x 1280 x 4 B = 512 MB
_emb_cache: OrderedDict = OrderedDict()  # (database, config_id, parts signature) -> Embeddings, oldest first


def _embeddings(store, config_id: str):
    with store.connect(read_only=True, view=False) as con:
        key = (str(store.db_path), config_id, embeddings_q.parts_signature(con, config_id))
    if key in _emb_cache:
        _emb_cache.move_to_end(key)
        return _emb_cache[key]
    while len(_emb_cache) >= EMBEDDINGS_CACHE_ENTRIES:  # evict before loading: the peak stays ENTRIES matrices
        _emb_cache.popitem(last=False)
    emb = store.load_embeddings(config_id)
    emb.features.setflags(write=False)  # shared between steps: nobody may modify it
    if EMBEDDINGS_CACHE_ENTRIES > 0:
        _emb_cache[key] = emb
    return emb


def load_pool(store, cfg: ProjectConfig, config_id: str, classes: Sequence[str]) -> Pool:
    """The vectors of ``config_id``, the training labels (``image_labels`` under ``labels.policy``: not skipped,
    not disputed, not in the eval set, of a class) and the candidates: known images with no answer (a skipped one
    too with ``labels.propose_skipped_again``), not held out, not in an open batch. An image of a closed batch that
    was never answered is a candidate again; a disputed one is proposed by the adjudication queue instead."""
    from al_core.loop.label_history import sync_policy

    emb = _embeddings(store, config_id)
    if len(emb) == 0:
        raise LoopError(f"no embeddings for config {config_id}: materialise `embeddings` (make demo / al ingest) first")
    sync_policy(store, cfg)
    index = {iid: i for i, iid in enumerate(emb.image_ids)}
    cls_index = {c: k for k, c in enumerate(classes)}
    with store.connect(read_only=True, view=False) as con:
        training = labels_q.training_labels(con)
        statuses = labels_q.image_statuses(con)
        eval_ids = labels_q.eval_image_ids(con)
        ok_ids = images.known_image_ids(con)
        pending = rounds_q.open_batch_image_ids(con)
    lab_rows, lab_cls, lab_ids = [], [], []
    for iid, label, label_id in training:
        if iid in eval_ids or iid not in index or label not in cls_index:
            continue
        lab_rows.append(index[iid])
        lab_cls.append(cls_index[label])
        lab_ids.append(int(label_id))
    order = np.argsort(lab_rows, kind="stable")
    labeled = np.asarray(lab_rows, dtype=np.int64)[order]
    labels = np.asarray(lab_cls, dtype=np.int64)[order]
    label_ids = [lab_ids[i] for i in order]
    may_return = "skipped" if cfg.labels.propose_skipped_again else None
    answered = {iid for iid, status in statuses.items() if status != may_return}
    pending -= answered
    excluded = answered | eval_ids | pending
    cand = np.fromiter(
        (i for i, iid in enumerate(emb.image_ids) if iid not in excluded and iid in ok_ids), dtype=np.int64
    )
    by_status = {s: sum(1 for v in statuses.values() if v == s) for s in ("labelled", "skipped", "disputed")}
    return Pool(
        config_id,
        emb.image_ids,
        emb.features,
        index,
        tuple(classes),
        labeled,
        labels,
        label_ids,
        cand,
        {
            "labelled_or_skipped": len(answered),
            **by_status,
            "eval_set": len(eval_ids),
            "pending": len(pending),
            "not_ok": int(sum(1 for iid in emb.image_ids if iid not in ok_ids)),
        },
    )


def load_project_pool(store, cfg: ProjectConfig, config_id: str) -> Pool:
    """``load_pool`` with the project's classes; ClassListChanged when labels use a class the list no longer has
    (a probe trained on the list would silently drop them)."""
    from al_core.loop.class_changes import check_labelled_classes

    classes = cfg.class_names(store)
    check_labelled_classes(store, classes)
    return load_pool(store, cfg, config_id, classes)
