"""Atomic file writes: the one way flowmo replaces a file.

:func:`atomic_write` writes to a temporary file in the destination's folder, fsyncs it, renames
it over the destination (``os.replace``, atomic on POSIX and Windows within one file system)
and fsyncs the folder, so a reader sees either the old file or the complete new one, also after
a crash or power loss. A failed write leaves the destination untouched and no temporary file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Union

__all__ = ["atomic_write", "atomic_write_text", "fsync_file", "fsync_dir"]

PathLike = Union[str, "os.PathLike[str]"]


def fsync_file(path: PathLike) -> None:
    """Flush ``path``'s contents to the storage device (``os.fsync``)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: PathLike) -> None:
    """Flush the folder ``path``'s entries (a rename into it) to the storage device; a no-op
    where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the process umask (read from
    /proc/self/status where it exists, so the umask is never changed, even briefly)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return 0o666 & ~old


def atomic_write(path: PathLike, write: Callable[[Path], object], *, suffix: str = ".tmp") -> Path:
    """Replace ``path`` atomically with what ``write(tmp)`` writes into the file ``tmp``.

    ``tmp`` is a new empty file in ``path``'s folder (named ``.<name>.<random><suffix>``; give the
    destination's suffix where the writer picks a format by it). Parent folders are created.
    After ``write`` returns, the file gets the mode a plain ``open()`` would give it (0o666 less
    the umask; the temporary file is created 0o600), is fsync'ed, renamed over ``path`` and the
    folder fsync'ed.
    Any exception from ``write`` (or the rename) removes ``tmp``, leaves ``path`` as it was and
    propagates. Returns ``path`` as a Path. Raises ValueError if ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path {str(path)!r} is a folder; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, _new_file_mode())
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """:func:`atomic_write` of ``text`` (UTF-8)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
