"""`al init [PATH] [--images DIR] [--classes a,b,c]`: write a commented project file for your images.

With ``--images`` the file's ``images.root`` is that folder (relative to the
project file's folder when it lies inside it); the folder must exist and hold
images. Class names come from ``--classes``, else from the folder's
sub-folders (one per class); a flat folder needs ``--classes``. The file is
written atomically and checked by loading it; Exit.FAILED when it exists
(without --force), Exit.USAGE for a wrong argument.
"""

import argparse
import os
import re
from pathlib import Path

from al_core.cli.common import fail, print_safe
from al_core.cli.exit_codes import Exit
from al_core.config import DEFAULT_CONFIG_NAME, DEFAULT_YAML, ConfigError, load_config
from al_core.files.atomic import atomic_write_text
from al_core.ingest.scan import IMAGE_EXTENSIONS

PROG = "al init"
COUNT_AT_MOST = 100_000  # files looked at to say how many images a folder holds (a walk, no hashing)


def _count_images(root: Path) -> int:
    n = 0
    for _, _, files in os.walk(root):
        n += sum(1 for f in files if Path(f).suffix.lower() in IMAGE_EXTENSIONS and not f.startswith("."))
        if n >= COUNT_AT_MOST:
            break
    return n


def _class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _yaml_str(s: str) -> str:
    """``s`` as a YAML scalar: plain when it is a simple word, else double-quoted (JSON's quoting is valid YAML)."""
    import json

    return s if re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", s) else json.dumps(s, ensure_ascii=False)


def render(project: Path, images: Path | None, classes: list[str] | None) -> str:
    """DEFAULT_YAML with the project's name, image root and classes filled in."""
    text = DEFAULT_YAML.replace("name: my-project ", f"name: {_yaml_str(project.parent.absolute().name)} ", 1)
    if images is not None:
        try:
            rel = images.absolute().relative_to(project.parent.absolute())
            root = str(rel) if str(rel) != "." else "."
        except ValueError:
            root = str(images.absolute())
        text = re.sub(
            r"^  root: images( +)#", lambda m: f"  root: {_yaml_str(root)}{m.group(1)}#", text, count=1, flags=re.M
        )
    if classes:
        text = text.replace("\nclasses: null\n", "\nclasses: [" + ", ".join(_yaml_str(c) for c in classes) + "]\n", 1)
    return text


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", default=DEFAULT_CONFIG_NAME, help="project file to write")
    ap.add_argument("--images", metavar="DIR", help="the folder of images to label")
    ap.add_argument("--classes", metavar="A,B,C", help="class names, comma-separated, in order")
    ap.add_argument("--force", action="store_true", help="overwrite an existing file")
    args = ap.parse_args(argv)
    p = Path(args.path)
    if p.exists() and not args.force:
        return fail(PROG, f"{p} exists; use --force to overwrite it")
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    if classes is not None and not all(classes):
        return fail(PROG, f"--classes {args.classes!r} has an empty name: give names separated by commas", Exit.USAGE)
    images = Path(args.images) if args.images else None
    if images is not None:
        if not images.is_dir():
            return fail(PROG, f"--images {images}: no such folder", Exit.USAGE)
        n = _count_images(images)
        if n == 0:
            return fail(
                PROG, f"--images {images}: no image files in it ({', '.join(sorted(IMAGE_EXTENSIONS))})", Exit.USAGE
            )
        if classes is None and not _class_folders(images):
            return fail(
                PROG, f"--images {images} holds {n} images in no class folders: give --classes a,b,c", Exit.USAGE
            )
    text = render(p, images, classes)
    atomic_write_text(p, text)
    try:
        cfg = load_config(p)  # the file must load as written
    except ConfigError as e:
        p.unlink()
        return fail(PROG, f"the file would not load ({e}); nothing written", Exit.USAGE)
    where = f"{cfg.image_root}" if images is not None else "images.root (edit it)"
    print_safe(f"wrote {p}: project {cfg.name!r}, images in {where}; next: `AL_CONFIG={p} al ingest`, then `make ui`")
    return Exit.OK
