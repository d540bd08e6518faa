"""Atomic file writes: the one implementation every writer of the project uses.

A reader sees either the old file or the complete new one, never a part, and a
crash leaves at most a temporary file that no reader picks up:

1. the bytes go to a temporary file **in the target's folder** (so the final
   ``os.replace`` is a rename within one file system), created exclusively
   (``O_CREAT | O_EXCL``, through ``tempfile``) under an unpredictable name that
   starts with ``.`` and ends in ``.tmp`` (the inbox and every reader skip such
   names), so nobody can plant a symlink under that name beforehand;
2. the file is flushed and ``fsync``-ed;
3. ``os.replace`` puts it in place (a symlink planted at the final name is
   replaced, never followed), and the folder is ``fsync``-ed so the rename
   survives a power loss;
4. on any failure the temporary file is removed and the error propagates.

``atomic_path`` serves writers that insist on opening a file name themselves
(pyarrow, DuckDB's COPY and ATTACH, safetensors): it yields a fresh name inside
a private temporary folder (mode 0700, unpredictable name) in the target's
folder, and does steps 2-4 once the writer is done.
"""

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".tmp"
NAME_CHARS_IN_TMP = 40  # characters of the final name kept in the temporary name (NAME_MAX is 255 bytes)
DEFAULT_MODE = 0o644  # final permissions (mkstemp creates 0600); readers such as annotators need to read outbox files


def _tmp_prefix(path: Path) -> str:
    return f".{path.name[:NAME_CHARS_IN_TMP]}."


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename inside ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_path(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mode: int = DEFAULT_MODE) -> Path:
    """Write ``data`` to ``path`` atomically (steps 1-4 of the module docstring); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8", mode: int = DEFAULT_MODE) -> Path:
    """``atomic_write_bytes`` of ``text`` encoded (no newline translation: what is given is written)."""
    return atomic_write_bytes(path, text.encode(encoding), mode=mode)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, mode: int = DEFAULT_MODE) -> Iterator[Path]:
    """Yield a name that does not exist yet for a writer that opens files by name; publish it atomically.

    The name lies in a private temporary folder beside ``path``; when the block
    ends without an error the file is fsync-ed and renamed onto ``path``. The
    temporary folder is removed in every case.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=TMP_SUFFIX, dir=path.parent))
    tmp = private / path.name[:NAME_CHARS_IN_TMP]
    try:
        yield tmp
        if not tmp.is_file() or tmp.is_symlink():
            raise FileNotFoundError(f"the writer did not create {tmp}")
        os.chmod(tmp, mode)  # inside our private 0700 folder: nobody else can have planted a link there
        _fsync_path(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        shutil.rmtree(private, ignore_errors=True)
