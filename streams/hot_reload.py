"""Follows the registry's ``current`` pointer: running scorers switch models without a restart.

The switch happens between batches: a batch is scored by the model that was current when it
started, and carries that model's version, so no event is dropped or scored twice by a swap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from l2loop.logs import get_logger
from l2loop.resilience import TRANSIENT_ERRORS
from l2model.registry import ModelPointer
from l2model.runtime import L2Model

log = get_logger(__name__)


class ModelHolder:
    def __init__(
        self,
        model: L2Model,
        pointer: ModelPointer,
        *,
        threads: int,
        local_dir: Callable[[str], Path] = Path,
    ) -> None:
        self.current = model
        # Where the running model came from, as the pointer names it (a path or a URL).
        self._where = str(model.model_dir)
        self._pointer = pointer
        self._threads = threads
        # A pointer's path as a local directory: a registry in a bucket fetches it (blocking).
        self._local_dir = local_dir
        self._lock = asyncio.Lock()
        self._pointer_unreadable = False

    async def refresh(self) -> bool:
        """Loads the pointed-at model if it is not the one running; True when it switched."""
        async with self._lock:
            try:
                wanted = await self._pointer.current()
            except TRANSIENT_ERRORS as exc:
                # Polled every second: one line when the pointer becomes unreadable and one
                # when it is back, not one a second for the whole outage.
                if not self._pointer_unreadable:
                    self._pointer_unreadable = True
                    log.warning(
                        "model_pointer_unreadable", keeping=self.current.version, error=str(exc)
                    )
                return False
            except Exception:
                # A pointer no version can be read from is a person's mistake to fix; the
                # running model keeps scoring meanwhile.
                log.exception("model_pointer_invalid", keeping=self.current.version)
                return False
            if self._pointer_unreadable:
                self._pointer_unreadable = False
                log.info("model_pointer_readable", current=self.current.version)
            if wanted is None or wanted.path == self._where:
                return False
            loop = asyncio.get_running_loop()
            try:
                # Fetching and loading (parsing and optimising a graph: seconds of CPU) are
                # kept off the loop.
                model = await loop.run_in_executor(None, self._load, wanted.path)
            except Exception:
                log.exception(
                    "model_load_failed",
                    wanted=wanted.version,
                    path=wanted.path,
                    keeping=self.current.version,
                )
                return False
            previous, self.current, self._where = self.current, model, wanted.path
            log.info(
                "model_switched", previous=previous.version, current=model.version, path=wanted.path
            )
            return True

    def _load(self, where: str) -> L2Model:
        return L2Model.load(self._local_dir(where), self._threads)
