"""Reading, listing and moving entries of folders that other people write into (the inbox, the outbox).

Anyone who can write into the inbox may plant a symbolic link, a FIFO, a
folder with a label-file name or a name that is not UTF-8, or swap a file for
a link between one look and the next. The functions here never follow a link
they did not expect and never open anything but a regular file:

- ``open_dir(path, root=)``: a descriptor of a folder; every component below
  ``root`` (a folder the project names, trusted) is opened with
  ``O_NOFOLLOW | O_DIRECTORY``, so a folder replaced by a link is refused
  (``UnsafeEntry``), whatever it points at;
- ``open_regular(path, root=)``: an existing regular file for reading: the
  entry is looked at (``lstat``) first, so a FIFO or a device is never opened;
  it is opened with ``O_NOFOLLOW | O_NONBLOCK``, and the opened descriptor is
  checked (``fstat``: a regular file, the same ``st_dev``/``st_ino`` as the
  look). Everything is then read from that descriptor only;
- ``ensure_dir(root, name)``: ``root/name`` as a real folder; an entry of that
  name that is not one (a planted link) is renamed aside first (``set_aside``),
  never followed;
- ``move_no_replace(src, dest, root=)``: moves an entry (a link is moved as a
  link) and never replaces one: a taken name becomes ``name-1``, ``name-2``...;
- ``printable_name``: a name as text that can be stored and shown (bytes that
  are not UTF-8 and control characters escaped); ``fit_name``: a name
  shortened to fit NAME_MAX bytes with room for what is added to it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import os
import stat
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

NAME_MAX_BYTES = 255  # longest file name (bytes) on Linux and macOS file systems
MOVE_MAX_TRIES = 1000  # move_no_replace: names tried (name, name-1, ..., name-999) before giving up
DIR_MODE = 0o755  # folders ensure_dir creates (annotators read the inbox's accepted/ and rejected/)
HASH_CHUNK = 1 << 22  # 4 MiB read buffer for sha256_of

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class UnsafeEntry(OSError):
    """An entry that is not what it must be (a symbolic link, a FIFO, a folder where a file belongs, ...).

    ``reason`` says what it is, in words; nothing was followed or read.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(errno.EPERM, reason, os.fspath(path))
        self.reason = reason

    def __str__(self) -> str:
        return f"{printable_name(os.fspath(self.filename))}: {self.reason}"


def kind_of(mode: int) -> str:
    """What an ``st_mode`` is, in words: 'regular file', 'symbolic link', 'folder', 'FIFO', 'socket', 'device'."""
    if stat.S_ISREG(mode):
        return "regular file"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


# ----------------------------------------------------------------------------- names
_BIDI_AND_FORMAT = {"Cc", "Cf", "Zl", "Zp"}  # control, format (bidi overrides, zero-width), line/paragraph separators


def printable_name(name: str | bytes) -> str:
    """``name`` as UTF-8 text safe to store and print: undecodable bytes as ``\\xNN``, control and bidi/format
    characters as ``\\xNN`` / ``\\uNNNN``; any other name is returned unchanged."""
    if isinstance(name, bytes):
        name = name.decode("utf-8", "surrogateescape")
    if name.isprintable() and name.isascii():
        return name
    out = []
    for ch in name:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif 0xD800 <= o <= 0xDFFF or unicodedata.category(ch) in _BIDI_AND_FORMAT:
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def is_utf8_name(name: str) -> bool:
    """Whether a name from the file system decodes as UTF-8 (no surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def fit_name(name: str, max_bytes: int) -> str:
    """``name`` shortened to at most ``max_bytes`` bytes of UTF-8, keeping its suffix (``.csv``) when it can."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= max_bytes:
        return name
    stem, dot, suffix = name.rpartition(".")
    keep = ("." + suffix).encode("utf-8", "surrogateescape") if dot and len(suffix) <= 16 else b""
    head = (stem if keep else name).encode("utf-8", "surrogateescape")[: max(max_bytes - len(keep), 1)]
    return (head.decode("utf-8", "ignore") or "_") + keep.decode("utf-8", "surrogateescape")


def numbered(name: str, i: int) -> str:
    """``name`` for i = 0, else ``stem-i.suffix`` (``name-i`` without a suffix)."""
    if i == 0:
        return name
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}-{i}.{suffix}" if dot and stem else f"{name}-{i}"


# ----------------------------------------------------------------------------- folders
def _walk_from(root: Path, parts: tuple[str, ...]) -> int:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the project's own folder: trusted
    for i, part in enumerate(parts):
        try:
            nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError as e:
            os.close(fd)
            where = root.joinpath(*parts[: i + 1])
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                try:
                    what = kind_of(os.lstat(where).st_mode)
                except OSError:
                    what = "not a folder"
                raise UnsafeEntry(where, f"a {what} where a folder belongs: never followed") from None
            raise
        os.close(fd)
        fd = nfd
    return fd


def open_dir(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> int:
    """A descriptor of the folder ``path`` (close it). With ``root``, ``path`` must lie in ``root`` and every
    component below ``root`` is opened without following a link: UnsafeEntry when one is a link or no folder."""
    path = Path(os.path.abspath(path))
    if root is None:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    root = Path(os.path.abspath(root))
    try:
        rel = path.relative_to(root)
    except ValueError:
        raise UnsafeEntry(path, f"outside {root}: refused") from None
    return _walk_from(root, rel.parts)


@contextlib.contextmanager
def opened_dir(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> Iterator[int]:
    fd = open_dir(path, root=root)
    try:
        yield fd
    finally:
        os.close(fd)


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """The entry ``name`` of the folder ``dir_fd``, never followed; None when there is none."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _aside_name(name: str, kind: str, hidden: bool) -> str:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
    return ("." if hidden else "") + fit_name(name, NAME_MAX_BYTES - 48) + f".refused-{kind.replace(' ', '-')}-{stamp}"


def set_aside(
    path: str | os.PathLike, *, keep: Callable[[int], bool] = stat.S_ISREG, hidden: bool = False
) -> str | None:
    """Rename the entry at ``path`` unless ``keep(st_mode)`` (default: a regular file) to
    ``[.]NAME.refused-KIND-STAMP`` in the same folder (kept, never followed, never replacing anything); returns
    the new name, or None when there was nothing to set aside."""
    path = Path(path)
    try:
        fd = open_dir(path.parent)
    except FileNotFoundError:
        return None  # no folder: nothing in it
    try:
        st = lstat_at(fd, path.name)
        if st is None or keep(st.st_mode):
            return None
        aside = _aside_name(path.name, kind_of(st.st_mode), hidden)
        _rename_no_replace(fd, path.name, fd, aside)
    finally:
        os.close(fd)
    return aside


def ensure_dir(root: str | os.PathLike, name: str, *, create: bool = True) -> tuple[Path, str | None]:
    """``root/name`` as a real folder: (its path, the name an entry found there was set aside under, or None).

    An entry named ``name`` that is not a folder (a symbolic link planted there,
    a file) is renamed to ``NAME.refused-KIND-STAMP`` in ``root`` (kept, never
    followed), and a new folder is created (mode DIR_MODE). ``create=False``:
    nothing is created (a missing folder stays missing).
    """
    root = Path(root)
    aside = set_aside(root / name, keep=stat.S_ISDIR)
    with opened_dir(root) as rfd:
        st = lstat_at(rfd, name)
        if st is None and create:
            with contextlib.suppress(FileExistsError):  # created meanwhile by another run: checked below
                os.mkdir(name, DIR_MODE, dir_fd=rfd)
            st = lstat_at(rfd, name)
            if st is None or not stat.S_ISDIR(st.st_mode):
                raise UnsafeEntry(root / name, "was replaced while being created: refused")
    return root / name, aside


# ----------------------------------------------------------------------------- reading
def open_regular(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> BinaryIO:
    """Open an existing regular file for reading, never following a link (module docstring).

    Raises UnsafeEntry for a link, FIFO, socket, device or folder (not opened,
    or closed at once), and for a file swapped between the look and the open;
    other OSErrors (missing, permission) as they come.
    """
    path = Path(os.path.abspath(path))
    with opened_dir(path.parent, root=root) as dfd:
        before = os.stat(path.name, dir_fd=dfd, follow_symlinks=False)
        if not stat.S_ISREG(before.st_mode):
            raise UnsafeEntry(path, f"a {kind_of(before.st_mode)}: not opened")
        try:
            fd = os.open(path.name, _READ_FLAGS, dir_fd=dfd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UnsafeEntry(path, "a symbolic link (swapped in before the open): not followed") from None
            raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)
        raise UnsafeEntry(path, "replaced by another entry while being opened: not read")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def sha256_of(f: BinaryIO, chunk: int = HASH_CHUNK) -> str:
    """sha256 of what is left of the open file ``f``."""
    h = hashlib.sha256()
    while b := f.read(chunk):
        h.update(b)
    return h.hexdigest()


def read_regular(path: str | os.PathLike, *, root: str | os.PathLike | None = None, max_bytes: int) -> bytes:
    """The bytes of a regular file opened with ``open_regular``; OSError (EFBIG) above ``max_bytes``."""
    with open_regular(path, root=root) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes", os.fspath(path))
    return data


def is_regular_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a regular file itself (a link to one is not)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


# ----------------------------------------------------------------------------- moving
def _rename_no_replace(sfd: int, sname: str, dfd: int, dname: str) -> None:
    """Give entry ``sname`` the name ``dname`` (FileExistsError when taken): a hard link, then the old name
    removed; where hard links are refused (folders, some file systems) a checked rename."""
    try:
        os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EACCES):
            raise
        if lstat_at(dfd, dname) is not None:
            raise FileExistsError(errno.EEXIST, "file exists", dname) from None
        os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
        return
    os.unlink(sname, dir_fd=sfd)


def move_no_replace(src: str | os.PathLike, dest: str | os.PathLike, *, root: str | os.PathLike) -> Path:
    """Move the entry ``src`` to ``dest`` (both in folders at or below ``root``), never replacing anything.

    A link is moved as a link (never followed). When ``dest`` is taken, the
    first free of ``name-1``, ``name-2``, ... is used; when ``dest`` already is
    this very file (a move interrupted between its two steps), the old name is
    removed. Returns the path the entry has now.
    """
    src, dest = Path(os.path.abspath(src)), Path(os.path.abspath(dest))
    with opened_dir(src.parent, root=root) as sfd, opened_dir(dest.parent, root=root) as dfd:
        st = lstat_at(sfd, src.name)
        if st is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", str(src))
        for i in range(MOVE_MAX_TRIES):
            name = numbered(dest.name, i)
            if len(os.fsencode(name)) > NAME_MAX_BYTES:
                name = numbered(fit_name(dest.name, NAME_MAX_BYTES - 8), i)
            there = lstat_at(dfd, name)
            if there is not None:
                if (there.st_dev, there.st_ino) == (st.st_dev, st.st_ino):
                    os.unlink(src.name, dir_fd=sfd)  # linked there before a crash: finish the move
                    return dest.parent / name
                continue
            try:
                _rename_no_replace(sfd, src.name, dfd, name)
            except FileExistsError:
                continue
            with contextlib.suppress(OSError):
                os.fsync(dfd)
            return dest.parent / name
    raise FileExistsError(errno.EEXIST, f"{MOVE_MAX_TRIES} names taken", str(dest))
