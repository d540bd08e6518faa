"""The class list over a project's life: a class added is used from the next round; a class removed or renamed
while labels use it is refused until its labels are mapped (``relabel``: `al labels relabel OLD NEW`).

Every probe records the class list it was trained with (``probes.classes``, al_core.loop.train.probe_classes),
so adding a class changes nothing already trained: the next round's probe has one more output, and a class
without evaluation images shows "n/a" (al_core.loop.evaluation). Removing or renaming a class is different: the
labels that name it would silently stop training the probe and stop counting in the metrics, so the loop's
steps that read labels against the list (``validation_inputs``: the sensor, the round run, `al labels check`;
the probe's pool) refuse with ``ClassListChanged``, whose one line says how to map them. The mapping is recorded
in the label history (al_core.catalogue.relabels), never by rewriting a delivered label.
"""

from collections.abc import Sequence

from al_core.catalogue import now
from al_core.catalogue import relabels as relabels_q
from al_core.catalogue import rounds as rounds_q
from al_core.loop.errors import LoopError, ValidationUnavailable


class ClassListChanged(ValidationUnavailable):
    """Labels use a class the project file's ``classes`` no longer lists (removed or renamed): nothing is judged,
    trained or evaluated against the list until the class is put back or its labels are mapped."""


def _counts(n_images: int, n_eval: int) -> str:
    parts = [f"{n_images} labelled image(s)"] if n_images else []
    return ", ".join(parts + ([f"{n_eval} evaluation label(s)"] if n_eval else []))


def check_labelled_classes(store, classes: Sequence[str]) -> None:
    """Raise ClassListChanged when a class that labels use is not in ``classes``; the message names the class,
    its labels, and the command that maps them (with NEW filled in when exactly one listed class has no label:
    a rename)."""
    with store.connect(read_only=True, view=False) as con:
        if relabels_q.delivered_classes(con) <= set(classes):
            return  # the usual case, from one scan of the base tables
        used = relabels_q.labelled_classes(con)
    missing = sorted(c for c in used if c not in classes)
    if not missing:
        return
    unused = [c for c in classes if c not in used]
    new = unused[0] if len(missing) == 1 and len(unused) == 1 else "NEW"
    old = missing[0]
    more = f" (and {', '.join(repr(c) for c in missing[1:])})" if len(missing) > 1 else ""
    raise ClassListChanged(
        f"class {old!r}{more} has labels ({_counts(*used[old])}) but is no longer in the project file's `classes` "
        f"({', '.join(classes)}): put it back, or map its labels with `al labels relabel {old} {new}`"
    )


def relabel(store, cfg, old: str, new: str) -> dict:
    """Map every label of class ``old`` to ``new`` in one transaction (al_core.catalogue.relabels.relabel_class);
    the ``class_relabels`` row as a dict. Raises LoopError for a ``new`` not in the class list, an ``old`` no
    label uses, or ``old`` == ``new``."""
    from al_core.config import ConfigError

    try:
        classes = tuple(cfg.class_names(store))
    except ConfigError as e:
        raise LoopError(str(e)) from e
    if new not in classes:
        raise LoopError(
            f"{new!r} is not in the project file's `classes` ({', '.join(classes)}): add it there "
            "first, or map to one of them"
        )
    if old == new:
        raise LoopError(f"{old!r} -> {new!r} maps a class to itself: nothing to do")
    with store.transaction() as con:
        used = relabels_q.labelled_classes(con)
        if old not in used:
            raise LoopError(
                f"no label uses class {old!r} (classes with labels: {', '.join(sorted(used)) or 'none'}): "
                "nothing to map"
            )
        last_round, _ = rounds_q.last_round_and_spent(con)
        return relabels_q.relabel_class(con, old, new, last_round if last_round is not None else 0, now())
