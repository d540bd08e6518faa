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
   survives a power loss; with ``replace=False`` a hard link puts it in place
   instead, which fails with ``FileExistsError`` when the name exists (even one
   created a moment ago by another process): a file is never replaced;
4. on any failure the temporary file is removed and the error propagates.

``atomic_path`` serves writers that insist on opening a file name themselves
(pyarrow, DuckDB's COPY and ATTACH, safetensors): it yields a fresh name inside
a private temporary folder (mode 0700, unpredictable name) in the target's
folder, and does steps 2-4 once the writer is done. ``atomic_write_unique``
publishes under the first free name of ``name``, ``name-1``, ``name-2``, ...
"""

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".tmp"
NAME_CHARS_IN_TMP = 40  # characters of the final name kept in the temporary name (NAME_MAX is 255 bytes)
DEFAULT_MODE = 0o644  # final permissions (mkstemp creates 0600); readers such as annotators need to read outbox files
UNIQUE_MAX_TRIES = 1000  # atomic_write_unique: names tried (name, name-1, ..., name-999) before giving up


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


def _publish(tmp: str | os.PathLike, path: Path, *, replace: bool) -> None:
    """Step 3: rename the finished temporary file onto ``path``, or with ``replace=False`` link it there.

    A hard link is created only if ``path`` does not exist (atomically), else
    FileExistsError. Where the file system has no hard links, the name is
    checked and then renamed onto (a short race instead of a guarantee).
    """
    if replace:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network and FUSE file systems)
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "file exists", str(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mode: int = DEFAULT_MODE,
                       replace: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (steps 1-4 of the module docstring); returns ``path``.

    ``replace=False``: raise FileExistsError instead of replacing an existing file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        _publish(tmp, path, replace=replace)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8", mode: int = DEFAULT_MODE,
                      replace: bool = True) -> Path:
    """``atomic_write_bytes`` of ``text`` encoded (no newline translation: what is given is written)."""
    return atomic_write_bytes(path, text.encode(encoding), mode=mode, replace=replace)


def atomic_write_unique(path: str | os.PathLike, data: bytes, *, mode: int = DEFAULT_MODE) -> Path:
    """``atomic_write_bytes`` under the first name not taken: ``path``, else ``<stem>-1<suffix>``, ``-2``, ...

    Never replaces a file, even one another process creates meanwhile (each
    name is published with ``replace=False``). Returns the name written;
    FileExistsError after UNIQUE_MAX_TRIES taken names.
    """
    path = Path(path)
    for i in range(UNIQUE_MAX_TRIES):
        candidate = path if i == 0 else path.with_name(f"{path.stem}-{i}{path.suffix}")
        if os.path.lexists(candidate):
            continue
        try:
            return atomic_write_bytes(candidate, data, mode=mode, replace=False)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"{UNIQUE_MAX_TRIES} names taken", str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, mode: int = DEFAULT_MODE, replace: bool = True) -> Iterator[Path]:
    """Yield a name that does not exist yet for a writer that opens files by name; publish it atomically.

    The name lies in a private temporary folder beside ``path``; when the block
    ends without an error the file is fsync-ed and renamed onto ``path``
    (``replace=False``: FileExistsError instead of replacing an existing file).
    The temporary folder, and whatever else the writer left in it, is removed in
    every case.
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
        _publish(tmp, path, replace=replace)
        fsync_dir(path.parent)
    finally:
        shutil.rmtree(private, ignore_errors=True)
