"""Task image URLs for Label Studio's local-files serving.

Label Studio serves ``/data/local-files/?d=<path>`` from ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``: ``<path>`` is
relative to that document root, and the file must lie under the path of a Local Files import storage of the project.
Its documentation (and its own storage sync) sets the document root to the image folder's PARENT and the storage to
the image folder; the relative path is percent-encoded with ``/`` kept, so ``+``, ``&``, ``#``, spaces and non-ASCII
names survive the query string (a bare ``+`` would read as a space, a bare ``&`` or ``#`` would cut the path).
"""

from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, quote, urlsplit

LOCAL_FILES_PREFIX = "/data/local-files/?d="


class LocalFilesPathError(ValueError):
    """An image path that Label Studio cannot serve under the given document root."""


def document_root_for(image_root: str | Path) -> Path:
    """The document root Label Studio's docs ask for: the image folder's parent (absolute)."""
    root = Path(image_root).absolute()
    if root.parent == root:
        raise LocalFilesPathError(f"image root {root} has no parent folder: move the images into a sub-folder")
    return root.parent


def local_files_url(path: str | Path, document_root: str | Path, *, host: str = "") -> str:
    """``/data/local-files/?d=<path relative to document_root, percent-encoded>`` (prefixed by ``host`` if given).

    ``path`` is absolute or relative to ``document_root``; it must lie strictly under the document root.
    """
    doc_root = Path(document_root).absolute()
    p = Path(path)
    p = p if p.is_absolute() else doc_root / p
    try:
        rel = p.absolute().relative_to(doc_root)
    except ValueError:
        raise LocalFilesPathError(f"{p} is not under the Label Studio document root {doc_root}") from None
    if not rel.parts or ".." in rel.parts:
        raise LocalFilesPathError(f"{p} is not a file under the Label Studio document root {doc_root}")
    return host.rstrip("/") + LOCAL_FILES_PREFIX + quote(rel.as_posix(), safe="/")


def path_from_local_files_url(url: str) -> PurePosixPath:
    """The document-root-relative path a ``/data/local-files/?d=...`` URL names (the inverse of local_files_url)."""
    parts = urlsplit(url)
    if not parts.path.endswith("/data/local-files/"):
        raise LocalFilesPathError(f"not a Label Studio local-files URL: {url!r}")
    values = parse_qs(parts.query, keep_blank_values=True).get("d")
    if not values or not values[0]:
        raise LocalFilesPathError(f"local-files URL without a d= path: {url!r}")
    return PurePosixPath(values[0])
