"""sha256 of a file, streamed (one implementation for weights, vector parts, label files), and the
one definition of how long a shortened hash is wherever one is shown or used in a name."""

import hashlib
import os

HASH_CHUNK = 1 << 22  # 4 MiB read buffer

# Shortened sha256 hex digests: one length per use, defined here only.
SHORT_ID_CHARS = (
    16  # an image / file / probe hash shown to people (tables, messages): 64 bits, no collisions in practice
)
FILE_PREFIX_CHARS = 12  # a label file's sha256 in its stored name in accepted/ or rejected/ (48 bits)
RUN_KEY_DIGEST_CHARS = 20  # digest of the pending files inside a sensor run key (80 bits)
DATABASE_ID_CHARS = 8  # the database id at the start of every run key (tells two projects' keys apart)
MIN_USER_PREFIX_CHARS = 8  # the shortest sha256 prefix a user may type (al labels retract/retry, al lineage)


def sha256_file(path: str | os.PathLike, chunk: int = HASH_CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def short(digest: str, chars: int = SHORT_ID_CHARS) -> str:
    """The first ``chars`` characters of a hex digest (SHORT_ID_CHARS by default)."""
    return digest[:chars]
