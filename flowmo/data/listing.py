"""The one way flowmo lists the images of a folder: what ``flowmo reconstruct``/``tokenize``
decode, what ``flowmo eval``, the trainer and token sets read, in the same order, so that image
``i`` of a folder is the same file everywhere (and decodes from the same noise for a seed).

Rules: searched recursively, following symbolic links to folders (a folder reached twice, by
two paths or a link loop, is searched once: by the path that sorts first); hidden files and
folders (name starting with ".") skipped; extensions compared case-insensitively; sorted by
relative name (POSIX separators); a file reached by several names (a symbolic link to a file
listed already) listed once, under the name that sorts first. Entries with an image extension
that are not regular files (broken links, fifos, devices) are returned apart, each with the
reason, for the caller to report.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Sequence, Union

from .images import IMAGE_EXTENSIONS, _file_kind

__all__ = ["list_folder_images"]


def list_folder_images(root: Union[str, os.PathLike], extensions: Sequence[str] = IMAGE_EXTENSIONS
                       ) -> tuple[list[tuple[str, Path]], list[tuple[str, Path, str]]]:
    """The image files under folder ``root`` (rules in the module docstring).

    Args:
        root: a folder.
        extensions: file extensions without the dot (compared lower-case).
    Returns:
        (files, not_regular): ``(relative name, path)`` of each regular image file, sorted by
        relative name, one entry per file; ``(relative name, path, reason)`` of each entry with
        an image extension that is not a readable regular file, sorted likewise.
    Raises:
        NotADirectoryError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{str(root)!r} is not a folder")
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    found: list[tuple[str, Path]] = []
    not_regular: list[tuple[str, Path, str]] = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # reached before by a path that sorts first, or a symlink loop
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        # sorted walk: the first path to reach a folder is the same on every machine
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in exts:
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            try:
                mode = os.stat(path).st_mode
            except OSError as exc:
                not_regular.append((rel, path, "a broken symbolic link" if isinstance(exc, FileNotFoundError)
                                    else f"cannot be read: {type(exc).__name__}: {exc}"))
                continue
            if not stat.S_ISREG(mode):
                not_regular.append((rel, path, f"{_file_kind(mode)}, not a regular file"))
                continue
            found.append((rel, path))
    found.sort(key=lambda item: item[0])
    files: list[tuple[str, Path]] = []
    seen_files: set[str] = set()
    for rel, path in found:  # one name per file: the first relative name in sorted order
        real = os.path.realpath(path)
        if real not in seen_files:
            seen_files.add(real)
            files.append((rel, path))
    not_regular.sort(key=lambda item: item[0])
    return files, not_regular
