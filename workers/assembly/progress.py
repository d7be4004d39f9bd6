"""Progress of an assembly: a callback and an ``assembly_progress`` log line every
``assembly_progress_every`` items of a phase."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from l2loop.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class AssemblyProgress:
    """``phase`` is scan, resolve, split or write; ``total`` is None while unknown."""

    phase: str
    done: int
    total: int | None


ProgressCallback = Callable[[AssemblyProgress], None]


class Ticker:
    """Calls the progress callback and logs a line every ``every`` items of a phase."""

    def __init__(self, callback: ProgressCallback | None, every: int) -> None:
        self._callback = callback
        self._every = every

    def tick(self, phase: str, done: int, total: int | None = None) -> None:
        if done % self._every == 0:
            self._report(phase, done, total)

    def done(self, phase: str, total: int) -> None:
        self._report(phase, total, total)

    def _report(self, phase: str, done: int, total: int | None) -> None:
        log.info("assembly_progress", phase=phase, done=done, total=total)
        if self._callback is not None:
            self._callback(AssemblyProgress(phase, done, total))
