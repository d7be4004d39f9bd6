"""Durable writes: one assembler per dataset root, and files and directories fsynced before
the dataset is renamed into place, so a crash leaves no partial dataset."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from l2model.private import open_private


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """One assembler per dataset root; the kernel releases the lock when its holder dies."""
    with open_private(path, "ab") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_durably(path: Path, content: bytes) -> None:
    with open_private(path, "wb") as out:
        out.write(content)
        out.flush()
        os.fsync(out.fileno())
