"""sha256 of a file, streamed (one implementation for weights, vector parts, label files)."""

import hashlib
import os

HASH_CHUNK = 1 << 22  # 4 MiB read buffer


def sha256_file(path: str | os.PathLike, chunk: int = HASH_CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()
