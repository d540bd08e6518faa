"""User-facing problems met inside an asset as one-line Dagster failures (no library traceback in the run's log).

A damaged vector part (``PartDamaged``: names the file and `al verify --repair`)
and an image root that is missing, not a folder or empty (``ImageRootError``:
names ``images.root`` and the fix) and a class list that dropped a labelled class (``ClassListChanged``: names
`al labels relabel OLD NEW`) are not bugs: the step fails with that one
line as its description, and is not retried by a step retry policy (the same
data would fail the same way until someone acts).
"""

import contextlib

import dagster as dg


@contextlib.contextmanager
def one_line_failures():
    from al_core.catalogue.errors import PartDamaged
    from al_core.ingest.scan import ImageRootError
    from al_core.loop.class_changes import ClassListChanged

    try:
        yield
    except (PartDamaged, ImageRootError, ClassListChanged) as e:
        raise dg.Failure(description=str(e), allow_retries=False) from None
