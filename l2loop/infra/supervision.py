"""What ``l2loop up`` does for the processes it started: restart one that dies.

Workers are crash-only (l2loop.resilience): a worker that meets an error it cannot handle
exits, and recovery is a restart. Under systemd or Kubernetes that is their job; under
``l2loop up`` it is this supervisor's, which also says on the live line what happened and
when the process was back. A process that keeps dying is a crash loop, said as such
(``process_crash_loop``); a restarted process is "recovered" only once it has stayed up for
a while, never merely because it started again.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from l2loop.infra.embedded import EmbeddedServiceError, ManagedProcess
from l2loop.logs import get_logger
from l2loop.resilience import Backoff
from l2loop.settings import Settings

log = get_logger(__name__)

# Called after a process is back, before it counts as recovered (e.g. recreate the topics
# of a broker that keeps them in memory).
AfterRestart = Callable[[], Awaitable[object]]


def _now() -> str:
    return time.strftime("%H:%M:%S")


RESTART_BACKOFF = Backoff(initial_s=0.5, cap_s=10.0)


@dataclass(frozen=True)
class CrashLoopRule:
    """``exits`` exits of one process within ``window_s`` make a crash loop; a restarted
    process counts as recovered once it has stayed up for ``stable_s``."""

    exits: int
    window_s: float
    stable_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> CrashLoopRule:
        return cls(
            exits=settings.crash_loop_exits,
            window_s=settings.crash_loop_window_s,
            stable_s=settings.restart_stable_s,
        )


@dataclass
class ExitHistory:
    """When one process exited lately, and when it was last restarted (monotonic seconds,
    given by the caller)."""

    times: deque[float] = field(default_factory=deque)
    restarted_at: float | None = None

    def exited(self, now: float, rule: CrashLoopRule) -> int:
        """Records an exit; returns how many exits fell within the window, this one too."""
        self.times.append(now)
        while self.times and self.times[0] <= now - rule.window_s:
            self.times.popleft()
        self.restarted_at = None
        return len(self.times)

    def held(self, now: float, rule: CrashLoopRule) -> bool:
        """True once the last restart has stayed up for ``rule.stable_s`` (then it resets)."""
        if self.restarted_at is None or now - self.restarted_at < rule.stable_s:
            return False
        self.restarted_at = None
        return True


@dataclass
class Supervised:
    process: ManagedProcess
    after_restart: AfterRestart | None = None
    restarts: int = 0
    history: ExitHistory = field(default_factory=ExitHistory)
    last_exit: str = ""  # "at HH:MM:SS (exit N)", for the notice once it is back for good


@dataclass
class Supervisor:
    children: Sequence[Supervised]
    rule: CrashLoopRule
    backoff: Backoff = RESTART_BACKOFF
    # Told the name -> pid map after every restart (``up`` rewrites up.json with it).
    on_change: Callable[[dict[str, int]], None] | None = None
    notice: str | None = None
    clock: Callable[[], float] = time.monotonic

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
        recent = child.history.exited(self.clock(), self.rule)
        looping = recent >= self.rule.exits
        log.warning("process_exited", process=name, exit_code=code, restarts=child.restarts)
        if looping:
            self.notice = (
                f"crash loop: {name} exited {recent} times in the last "
                f"{self.rule.window_s:g} s (last exit code {code})"
            )
            log.error(
                "process_crash_loop",
                process=name,
                exits=recent,
                window_s=self.rule.window_s,
                exit_code=code,
            )
        else:
            self.notice = f"{name} exited (code {code}) at {_now()}, restarting"
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
        child.history.restarted_at = self.clock()
        child.last_exit = f"at {_now()} (exit {code})"
        if not looping:
            self.notice = f"{name} restarted {child.last_exit}, up again"
        log.info("process_restarted", process=name, restarts=child.restarts)
        if self.on_change is not None:
            self.on_change(self.pids)

    def _check_held(self, child: Supervised) -> None:
        if child.history.held(self.clock(), self.rule):
            name = child.process.name
            self.notice = (
                f"{name} restarted {child.last_exit}, recovered: up {self.rule.stable_s:g} s"
            )
            log.info("process_recovered", process=name, restarts=child.restarts)

    async def watch(self, stop: asyncio.Event, poll_s: float = 0.5) -> None:
        """Until ``stop``: restarts each child that has exited, one at a time, and says when
        a restarted one has stayed up long enough to count as recovered."""
        while not stop.is_set():
            for child in self.children:
                code = child.process.exit_code
                if code is not None and not stop.is_set():
                    await self._restart(child, code)
                elif code is None:
                    self._check_held(child)
            await asyncio.sleep(poll_s)
