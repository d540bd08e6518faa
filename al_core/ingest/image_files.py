"""How the files of an image root are listed and opened: links followed only inside the root, one read per file.

The image root is a folder other people may write into. ``walk_images`` lists
it without leaving it (a symbolic link is followed only where it leads inside
the root's real path); ``read_image_bytes`` reads a file from one descriptor
checked to be a regular file, opened from the root down without following any
link (``al_core.files.safe.open_regular``), so a file swapped for a link to
somewhere else between the listing and the read is refused, never read. The
scan hashes and decodes the bytes it read; embedding reads them again the same
way and checks them against the recorded hash (al_core.ingest.embed.ScannedFile).
"""

import os
import stat
from collections.abc import Iterator

from al_core.files.safe import UnsafeEntry, kind_of, open_regular, printable_name

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MAX_IMAGE_BYTES = 512 << 20  # a file is read whole to hash and decode the same bytes: 512 MiB per reading thread
LINK_OUTSIDE = "a symbolic link that leads outside the image root (not followed)"


def inside(path: str, root_real: str) -> bool:
    """Whether ``path`` (already resolved) is ``root_real`` or below it."""
    return path == root_real or path.startswith(root_real.rstrip(os.sep) + os.sep)


def walk_images(
    root: str | os.PathLike, skipped: list[str] | None = None
) -> Iterator[tuple[str, os.stat_result | None, str | None]]:
    """Yield (absolute path, stat of what it leads to or None, problem or None) of every image file below root.

    Symbolic links are followed only where they lead inside the root (its real
    path): a link to a file outside is yielded with its problem (recorded
    corrupt, never read), a link to a folder outside is not entered (named in
    ``skipped``). No folder is entered twice (a link loop ends); hidden entries
    are skipped. Names that are not UTF-8 come as ``os.fsdecode`` gives them.
    """
    root = os.path.abspath(root)
    root_real = os.path.realpath(root)
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            st = os.stat(d)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            if skipped is not None:
                skipped.append(f"{printable_name(d)}: folder not listed ({e.strerror or e})")
            continue
        subdirs = []
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                is_link = e.is_symlink()
                if is_link and not inside(os.path.realpath(e.path), root_real):
                    if e.is_dir(follow_symlinks=True):
                        if skipped is not None:
                            skipped.append(
                                f"{printable_name(e.path)}: a symbolic link to a folder outside the "
                                "image root (not followed)"
                            )
                    elif os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS:
                        yield e.path, None, LINK_OUTSIDE
                    continue
                if e.is_dir(follow_symlinks=True):
                    subdirs.append(e.path)
                    continue
                if os.path.splitext(e.name)[1].lower() not in IMAGE_EXTENSIONS:
                    continue
                yield e.path, e.stat(follow_symlinks=True), None
            except OSError:
                # a dangling link or a file gone while listing: report it as corrupt
                yield e.path, None, "cannot stat (dangling link or vanished)"
        stack.extend(reversed(subdirs))


def read_image_bytes(path: str, root: str | None = None, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of an image file, read from one descriptor that is checked to be a regular file.

    With ``root`` (an image root): the path is resolved and must lead inside
    the root's real path, and it is opened with ``al_core.files.safe.open_regular``
    from the root down (no link followed on the way, a FIFO or device never
    opened), so a file swapped for a link to somewhere else is never read.
    Without (a manifest's file, listed by the project's owner): opened
    following links, without blocking, and checked to be a regular file.
    Raises UnsafeEntry / OSError; ValueError for a file over ``max_bytes``.
    """
    if root is not None:
        root_real = os.path.realpath(root)
        real = os.path.realpath(path)
        if not inside(real, root_real):
            raise UnsafeEntry(path, LINK_OUTSIDE)
        f = open_regular(real, root=root_real)
    else:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise UnsafeEntry(path, f"not a regular file (a {kind_of(mode)})")
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    with f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise ValueError(f"{size} bytes, over MAX_IMAGE_BYTES={max_bytes}: not read")
        return f.read(max_bytes + 1)
