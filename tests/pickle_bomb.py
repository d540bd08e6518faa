"""A planted pickle whose unpickling runs a command (``touch MARKER``): what a loader must refuse unread."""

import os
import pickle
from pathlib import Path


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant_pickle(path: Path, key: str, marker: Path, fmt: str) -> Path:
    """Write ``{key: <object that touches marker when unpickled>}`` to ``path`` as torch's zip format
    (``torch_zip``) or a plain pickle (any other ``fmt``); returns ``path``."""
    payload = {key: _Evil(marker)}
    if fmt == "torch_zip":
        import torch

        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    return path
