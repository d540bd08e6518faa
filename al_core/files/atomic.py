"""Atomic file writes: the one implementation every writer of the project uses.

A reader sees either the old file or the complete new one, never a part, and a
crash leaves at most a temporary file that no reader picks up:

1. the bytes go to a temporary file **in the target's folder** (so the final
   ``os.replace`` is a rename within one file system), created exclusively
   (``O_CREAT | O_EXCL | O_NOFOLLOW``) under an unpredictable name (TMP_RANDOM_BYTES
   of ``secrets``) that starts with ``.`` and ends in ``.tmp`` (the inbox and
   every reader skip such names), so nobody can plant a symlink under that name
   beforehand; every step works on a descriptor of the folder, opened once, so a
   folder swapped for a link meanwhile changes nothing. With ``within=ROOT`` the
   folder is opened from ROOT without following a link at any component
   (``al_core.files.safe.open_dir``): a folder that others can write into, such
   as ``inbox/rejected/``, is refused when it has been replaced by a link;
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
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".tmp"
NAME_CHARS_IN_TMP = 40  # characters of the final name kept in the temporary name (NAME_MAX is 255 bytes)
DEFAULT_MODE = 0o644  # final permissions (mkstemp creates 0600); readers such as annotators need to read outbox files
UNIQUE_MAX_TRIES = 1000  # atomic_write_unique: names tried (name, name-1, ..., name-999) before giving up
TMP_RANDOM_BYTES = 8  # random bytes in a temporary name (64 bits: never guessed, never met twice)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


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


def _exists_at(dfd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _publish_at(sfd: int, tmp: str, dfd: int, name: str, *, replace: bool) -> None:
    """Step 3: rename ``tmp`` (in folder ``sfd``) onto ``name`` (in folder ``dfd``), or with ``replace=False``
    link it there.

    A hard link is created only if ``name`` does not exist (atomically), else
    FileExistsError. Where the file system has no hard links, the name is
    checked and then renamed onto (a short race instead of a guarantee).
    """
    if replace:
        os.replace(tmp, name, src_dir_fd=sfd, dst_dir_fd=dfd)
        return
    try:
        os.link(tmp, name, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network and FUSE file systems)
        if _exists_at(dfd, name):
            raise FileExistsError(errno.EEXIST, "file exists", name) from None
        os.replace(tmp, name, src_dir_fd=sfd, dst_dir_fd=dfd)
        return
    os.unlink(tmp, dir_fd=sfd)


def _publish(tmp: str | os.PathLike, path: Path, *, replace: bool) -> None:
    """``_publish_at`` for a temporary file and a target given by path."""
    from al_core.files.safe import opened_dir

    tmp = Path(tmp)
    with opened_dir(tmp.parent) as sfd, opened_dir(path.parent) as dfd:
        _publish_at(sfd, tmp.name, dfd, path.name, replace=replace)


def _tmp_name(path: Path) -> str:
    return f"{_tmp_prefix(path)}{secrets.token_hex(TMP_RANDOM_BYTES)}{TMP_SUFFIX}"


def atomic_write_bytes(
    path: str | os.PathLike,
    data: bytes,
    *,
    mode: int = DEFAULT_MODE,
    replace: bool = True,
    within: str | os.PathLike | None = None,
) -> Path:
    """Write ``data`` to ``path`` atomically (steps 1-4 of the module docstring); returns ``path``.

    ``replace=False``: raise FileExistsError instead of replacing an existing file.
    ``within``: the folder of ``path`` lies in ``within`` and no component below
    it may be a link (UnsafeEntry); it is not created.
    """
    from al_core.files.safe import opened_dir

    path = Path(path)
    if within is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    with opened_dir(path.parent, root=within) as dfd:
        tmp = _tmp_name(path)
        fd = os.open(tmp, _CREATE_FLAGS, 0o600, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            _publish_at(dfd, tmp, dfd, path.name, replace=replace)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        with contextlib.suppress(OSError):
            os.fsync(dfd)
    return path


def atomic_write_text(
    path: str | os.PathLike,
    text: str,
    *,
    encoding: str = "utf-8",
    mode: int = DEFAULT_MODE,
    replace: bool = True,
    within: str | os.PathLike | None = None,
) -> Path:
    """``atomic_write_bytes`` of ``text`` encoded (no newline translation: what is given is written)."""
    return atomic_write_bytes(path, text.encode(encoding), mode=mode, replace=replace, within=within)


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
