"""Label Studio: the writers of its labelling config and of a batch's import tasks (the readers: ls_tasks, ls_rows).

``label_studio_config`` is the labelling interface: the image and one required single choice among the classes
and the skip label. ``label_studio_tasks`` are the import tasks of one proposed batch. Each task's ``data`` holds:

- ``image``: the image's URL, ``labels.image_url_template`` filled with ``{path}`` (absolute), ``{image_id}``,
  ``{name}`` (the file name), ``{relpath}`` (the path relative to the document root) and ``{url_path}`` (relpath
  percent-encoded with ``/`` kept). The default,
  ``/data/local-files/?d={url_path}``, is Label Studio's local-files URL with ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``
  = the document root (the image root's parent unless ``label_studio.document_root`` says otherwise), so ``+``,
  ``&``, ``#``, spaces and non-ASCII names load; images in object storage use their own URL template;
- ``image_id`` (what every reader reads back), ``path`` (relpath), ``round``, ``rank``, ``score`` (the strategy's;
  null for NaN), ``strategy`` (``adjudication`` for an image proposed again because its annotators disagreed), and
  ``task_key`` (``task_key(round, image_id)``: the same image in the same batch always has the same key, so pushing
  a batch again can find the tasks already imported).

With pre-labels, a task also carries ``predictions``: the probe's predicted class as a ``choices`` result with
``model_version`` = the probe id and ``score`` = its probability, which Label Studio shows as a pre-annotation and
can sort by. Task data avoids the names Label Studio's flat exports use for their own columns (``id``, the
``<Choices>`` name ``label``, ``annotator``, ``annotation_id``, ``created_at``, ``updated_at``, ``lead_time``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

CHOICES_NAME = "label"  # the <Choices name>: JSON_MIN, CSV and TSV name their choice column after it
IMAGE_NAME = "image"  # the <Image name>, and the task data key of its URL


def label_studio_config(classes: Sequence[str], skip_label: str) -> str:
    """The labelling config (XML): the image and one required single choice among ``classes`` and ``skip_label``.

    ``required="true"`` makes Label Studio's editor refuse a Submit without a choice (its API does not check it:
    the readers ignore such an empty annotation with a warning)."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in [*classes, skip_label])
    return (
        f'<View>\n  <Image name="{IMAGE_NAME}" value="${IMAGE_NAME}"/>\n'
        f'  <Choices name="{CHOICES_NAME}" toName="{IMAGE_NAME}" choice="single" showInline="true" '
        f'required="true">\n{choices}\n  </Choices>\n</View>\n'
    )


def task_key(round_: int, image_id: str) -> str:
    """The stable key of a batch's task: one image in one batch."""
    return f"round-{round_:04d}/{image_id}"


def under_root(path: str, document_root: str | os.PathLike) -> bool:
    """Whether ``path`` lies strictly under ``document_root`` (so Label Studio can serve it from there)."""
    root = Path(document_root).absolute()
    p = Path(path).absolute()
    return p != root and root in p.parents


def url_fields(path: str, image_id: str, document_root: str | os.PathLike | None) -> dict[str, str]:
    """The fields of ``labels.image_url_template`` for one image (the module docstring).

    relpath is relative to ``document_root``; with no document root, or for a path outside it, relative to the
    filesystem root (the absolute path without its leading ``/``: what a Label Studio whose document root is
    ``/`` serves). The proposal notes the images outside the document root. url_path is relpath percent-encoded
    with ``/`` kept, as Label Studio's own storage sync writes it (al_core.labelstudio.urls builds the same
    local-files URL; tests/test_labels.py checks they agree).
    """
    p = Path(path).absolute()
    root = (
        Path(document_root).absolute()
        if document_root is not None and under_root(path, document_root)
        else Path(p.anchor or "/")
    )
    rel = p.relative_to(root).as_posix()
    return {
        "path": path,
        "image_id": image_id,
        "name": os.path.basename(path),
        "relpath": rel,
        "url_path": quote(rel, safe="/"),
    }


def prediction(label: str, score: float | None, model_version: str) -> dict:
    """A Label Studio prediction: ``label`` as the choice, ``score`` its probability, made by ``model_version``."""
    return {
        "model_version": model_version,
        "score": score,
        "result": [
            {"from_name": CHOICES_NAME, "to_name": IMAGE_NAME, "type": "choices", "value": {"choices": [label]}}
        ],
    }


def label_studio_tasks(
    round_: int,
    strategy: str,
    ids: Sequence[str],
    scores: Sequence[float],
    paths: Mapping[str, str],
    url_template: str,
    *,
    document_root: str | os.PathLike | None = None,
    strategies: Sequence[str] | None = None,
    predictions: Mapping[str, tuple[str, float | None]] | None = None,
    model_version: str | None = None,
) -> list[dict]:
    """The import tasks of batch ``round_``, in rank order (rank 1 first); the module docstring says what each holds.

    ``strategies`` names each row's strategy (default ``strategy``); ``predictions`` maps an image id to the
    probe's (class, probability): a task gets its prediction when ``model_version`` is given too.
    """
    if strategies is not None and len(strategies) != len(ids):
        raise ValueError("one strategy per image is needed")
    tasks = []
    for rank, (iid, sc) in enumerate(zip(ids, scores, strict=True), 1):
        fields = url_fields(paths[iid], iid, document_root)
        data = {
            IMAGE_NAME: url_template.format(**fields),
            "image_id": iid,
            "path": fields["relpath"],
            "round": round_,
            "rank": rank,
            "score": None if sc is None or math.isnan(sc) else float(sc),
            "strategy": strategies[rank - 1] if strategies is not None else strategy,
            "task_key": task_key(round_, iid),
        }
        task: dict = {"data": data}
        pred = (predictions or {}).get(iid)
        if pred is not None and model_version:
            label, p = pred
            task["predictions"] = [prediction(label, None if p is None or math.isnan(p) else float(p), model_version)]
        tasks.append(task)
    return tasks
