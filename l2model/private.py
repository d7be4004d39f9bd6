"""Files only their owner may read: everything l2loop writes that holds prompt texts, models
trained on them, or secrets is 0600, in directories it creates 0700 (decision 0017).

Modes are explicit where files are created, so that library use is as safe as the command
line (which also narrows its umask). It lives in l2model, the package every other one
imports, so that the model registry uses it too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Literal

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Creates ``path`` and every missing parent 0700; returns it. A directory that exists is
    left as it is: it may be a mount point or a place its owner chose to share."""
    if not path.is_dir():
        if path.parent != path:
            private_dir(path.parent)
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:
            # Another process made it meanwhile (or it is a file, which the caller finds out).
            return path
        # mkdir's mode passes through the umask; the mode is what it says.
        path.chmod(DIR_MODE)
    return path


def _opener(path: str, flags: int) -> int:
    fd = os.open(path, flags, FILE_MODE)
    try:
        # os.open's mode applies to a new file only: one written before is narrowed too.
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private(path: Path, mode: Literal["wb", "ab", "ab+"]) -> BinaryIO:
    """``path.open(mode)``, the file 0600, whether it is new or was not before."""
    return open(path, mode, opener=_opener)


def write_private(path: Path, data: bytes | str) -> None:
    """``Path.write_bytes`` / ``write_text`` (UTF-8), 0600."""
    with open_private(path, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)


def make_private(root: Path) -> None:
    """Every directory under ``root`` (itself included) 0700, every file 0600: for trees
    copied in from elsewhere, whose modes come from their source."""
    root.chmod(DIR_MODE)
    for parent, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(parent, name), DIR_MODE)
        for name in files:
            os.chmod(os.path.join(parent, name), FILE_MODE)


def fsync_path(path: Path) -> None:
    """Flushes a file, or a directory's entries (a file created or renamed in it), to disk:
    what a crash must not lose is fsynced before anything depends on it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
