"""What ``l2loop up`` does for the processes it started: restart one that dies.

Workers are crash-only (l2loop.resilience): a worker that meets an error it cannot handle
exits, and recovery is a restart. Under systemd or Kubernetes that is their job; under
``l2loop up`` it is this supervisor's, which also says on the live line what happened and
when the process was back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from l2loop.embedded import EmbeddedServiceError, ManagedProcess
from l2loop.logs import get_logger
from l2loop.resilience import Backoff

log = get_logger(__name__)

# Called after a process is back, before it counts as recovered (e.g. recreate the topics
# of a broker that keeps them in memory).
AfterRestart = Callable[[], Awaitable[object]]


def _now() -> str:
    return time.strftime("%H:%M:%S")


RESTART_BACKOFF = Backoff(initial_s=0.5, cap_s=10.0)


@dataclass
class Supervised:
    process: ManagedProcess
    after_restart: AfterRestart | None = None
    restarts: int = 0


@dataclass
class Supervisor:
    children: Sequence[Supervised]
    backoff: Backoff = RESTART_BACKOFF
    # Told the name -> pid map after every restart (``up`` rewrites up.json with it).
    on_change: Callable[[dict[str, int]], None] | None = None
    notice: str | None = None

    @property
    def pids(self) -> dict[str, int]:
        return {
            child.process.name: child.process.process.pid
            for child in self.children
            if child.process.process is not None
        }

    async def _restart(self, child: Supervised, code: int) -> None:
        name = child.process.name
        child.restarts += 1
        self.notice = f"{name} exited (code {code}) at {_now()}, restarting"
        log.warning("process_exited", process=name, exit_code=code, restarts=child.restarts)
        # A process that dies again at once is restarted less and less eagerly.
        await asyncio.sleep(self.backoff.delay(child.restarts))
        try:
            # Started from this thread, not a pool thread: a child asks to die with its
            # parent, and for Linux the parent is the thread that forked it.
            child.process.start()
            await asyncio.to_thread(child.process.wait_until_ready, 60.0)
            if child.after_restart is not None:
                await child.after_restart()
        except EmbeddedServiceError as exc:
            self.notice = f"{name} failed to restart at {_now()}: {exc}"
            log.error("process_restart_failed", process=name, error=str(exc))
            return
        self.notice = f"{name} restarted at {_now()} (exit {code}), recovered"
        log.info("process_recovered", process=name, restarts=child.restarts)
        if self.on_change is not None:
            self.on_change(self.pids)

    async def watch(self, stop: asyncio.Event, poll_s: float = 0.5) -> None:
        """Until ``stop``: restarts each child that has exited, one at a time."""
        while not stop.is_set():
            for child in self.children:
                code = child.process.exit_code
                if code is not None and not stop.is_set():
                    await self._restart(child, code)
            await asyncio.sleep(poll_s)
