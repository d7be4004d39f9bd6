"""Retries, degraded state and crash-only exits: the one place every agent and job uses.

The contract (docs/decisions/0007-resilience.md):

- A dependency that goes away (Redis, the broker, an alert receiver) is *waited for*, never
  given up on while work is held: ``retry_until_done`` repeats the operation with capped
  exponential backoff, one log line per attempt with the outage's duration so far, and marks
  the dependency degraded in ``HEALTH`` (served on ``/health`` and as Prometheus metrics) until
  it answers again. The caller holds its batch meanwhile and commits no offsets, so an outage
  delays work and loses none.
- A dependency that is not there at start-up is waited for up to a bound
  (``wait_until_reachable``); past it the process ends with one line naming the address.
- Anything else is a bug or a poison the code did not foresee: ``crash_only`` turns an agent's
  unexpected exception into one clear log line and a non-zero exit, so that a supervisor
  restarts the process. A live worker that does nothing is never an outcome. A record that
  crashes its agent again and again is dead-lettered by the next start (streams.poison); while
  that happens ``HEALTH`` says ``failing`` (a crash loop), not ``ok``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, NoReturn, ParamSpec, TypeVar

from aiokafka import errors as kafka_errors
from prometheus_client import Counter, Gauge
from pydantic import BaseModel
from redis import exceptions as redis_errors

from l2loop.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

# Exit status of a process that crashed on purpose (EX_SOFTWARE): restart me.
EXIT_CRASHED = 70
# Exit status of a process that could not reach a dependency at start-up (EX_UNAVAILABLE).
EXIT_UNAVAILABLE = 69

# Errors that mean "the other side is not answering right now", as opposed to "what we sent
# is wrong". Only these are retried; anything else reaches crash_only.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.TryAgainError,
    kafka_errors.KafkaConnectionError,
    kafka_errors.KafkaTimeoutError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.RequestTimedOutError,
    kafka_errors.NotLeaderForPartitionError,
    kafka_errors.LeaderNotAvailableError,
    kafka_errors.UnknownTopicOrPartitionError,
    ConnectionError,  # OSError's connection family, e.g. an HTTP receiver refusing
    TimeoutError,
)

DEPENDENCY_UP = Gauge(
    "l2loop_dependency_up", "1 while the dependency answers, 0 during an outage", ["dependency"]
)
DEPENDENCY_RETRIES = Counter(
    "l2loop_dependency_retries_total",
    "operations retried because a dependency did not answer",
    ["dependency", "operation"],
)
DEPENDENCY_OUTAGE_SECONDS = Gauge(
    "l2loop_dependency_outage_seconds",
    "how long the current outage has lasted (0 when up)",
    ["dependency"],
)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter: ``initial_s * factor**n``, at most ``cap_s``."""

    initial_s: float = 0.1
    cap_s: float = 5.0
    factor: float = 2.0
    # Spread of the random part, so that many workers do not retry in lockstep.
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        base = min(self.cap_s, self.initial_s * self.factor ** max(0, attempt - 1))
        spread = (rng or random).uniform(-self.jitter, self.jitter) if self.jitter else 0.0
        return max(0.0, min(self.cap_s, base * (1.0 + spread)))


class DependencyState(BaseModel):
    dependency: str
    up: bool
    since: float  # epoch seconds of the last change of state
    outage_s: float
    attempts: int
    last_error: str | None = None


class CrashLoopState(BaseModel):
    """A record that crashed an agent: being retried alone, or dead-lettered as a poison pill."""

    agent: str
    state: Literal["replaying_suspect", "poison_pill"]
    topic: str
    partition: int
    offset: int
    attempts: int  # unfinished attempts at this offset before this one
    since: float  # epoch seconds


class HealthReport(BaseModel):
    """The ``/health`` answer: ``failing`` during a crash loop (an agent retrying, one by one,
    records that crashed it, or a poison pill dead-lettered lately), else ``degraded`` while a
    dependency is in an outage, else ``ok``."""

    status: Literal["ok", "degraded", "failing"]
    dependencies: list[DependencyState]
    crash_loops: list[CrashLoopState] = []


@dataclass
class _Outage:
    started: float  # monotonic
    started_wall: float
    attempts: int
    last_error: str


# Poison pills /health lists at most: a crash loop that is not the record's fault (every
# record crashes) could otherwise grow the answer without bound.
_PILLS_SHOWN = 20


class Health:
    """Which dependencies are in an outage and which agents are in a crash loop, for health
    endpoints, metrics and ``l2loop up``."""

    def __init__(self) -> None:
        self._outages: dict[str, _Outage] = {}
        self._known: dict[str, float] = {}  # dependency -> wall time of the last recovery
        self._replaying: dict[str, CrashLoopState] = {}  # agent -> the suspect it retries
        self._pills: deque[tuple[float, CrashLoopState]] = deque(maxlen=_PILLS_SHOWN)
        self._lock = threading.Lock()

    def replaying(self, state: CrashLoopState) -> None:
        """``state.agent`` retries alone a record that was in flight when it crashed."""
        with self._lock:
            self._replaying[state.agent] = state

    def replayed(self, agent: str) -> None:
        """``agent`` has no suspect left in flight."""
        with self._lock:
            self._replaying.pop(agent, None)

    def poison_pill(self, state: CrashLoopState, shown_s: float) -> None:
        """``state.agent`` dead-lettered a poison pill: failing for ``shown_s`` seconds."""
        with self._lock:
            self._pills.append((time.monotonic() + shown_s, state))

    def failed(self, dependency: str, error: BaseException) -> _Outage:
        with self._lock:
            outage = self._outages.get(dependency)
            if outage is None:
                outage = _Outage(time.monotonic(), time.time(), 0, "")
                self._outages[dependency] = outage
            outage.attempts += 1
            outage.last_error = _describe(error)
        DEPENDENCY_UP.labels(dependency).set(0)
        DEPENDENCY_OUTAGE_SECONDS.labels(dependency).set(time.monotonic() - outage.started)
        return outage

    def succeeded(self, dependency: str) -> _Outage | None:
        """Marks ``dependency`` up; returns the outage that just ended, if there was one."""
        with self._lock:
            outage = self._outages.pop(dependency, None)
            if outage is not None or dependency not in self._known:
                self._known[dependency] = time.time()
        if outage is not None or dependency not in self._known:
            DEPENDENCY_UP.labels(dependency).set(1)
            DEPENDENCY_OUTAGE_SECONDS.labels(dependency).set(0)
        return outage

    def report(self) -> HealthReport:
        now = time.monotonic()
        with self._lock:
            states = [
                DependencyState(
                    dependency=name,
                    up=False,
                    since=outage.started_wall,
                    outage_s=round(now - outage.started, 3),
                    attempts=outage.attempts,
                    last_error=outage.last_error,
                )
                for name, outage in sorted(self._outages.items())
            ]
            states += [
                DependencyState(dependency=name, up=True, since=since, outage_s=0.0, attempts=0)
                for name, since in sorted(self._known.items())
                if name not in self._outages
            ]
            loops = [*self._replaying.values()]
            loops += [state for until, state in self._pills if until > now]
            degraded = bool(self._outages)
        status: Literal["ok", "degraded", "failing"] = (
            "failing" if loops else "degraded" if degraded else "ok"
        )
        return HealthReport(status=status, dependencies=states, crash_loops=loops)


# One per process: every agent and job of a worker reports into the same health state.
HEALTH = Health()


class ReadinessReport(BaseModel):
    """The ``/ready`` answer: ready once nothing the worker waits for at start is missing."""

    ready: bool
    waiting_for: list[str]


class Readiness:
    """What a worker waits for before it serves (a readiness probe), as opposed to HEALTH,
    which says how it serves.

    Each part is expected when the worker is built and arrives once, for good: a consumer's
    first group join, say. An assignment received counts even when empty (more replicas than
    partitions). A later rebalance or an outage does not make a worker unready again: every
    member of a group rebalances when one joins, so a rolling update would make them all
    unready at once, and an outage is waited out in place (HEALTH says so)."""

    def __init__(self) -> None:
        self._waiting: set[str] = set()
        self._lock = threading.Lock()

    def expect(self, part: str) -> None:
        with self._lock:
            self._waiting.add(part)

    def arrived(self, part: str) -> None:
        with self._lock:
            self._waiting.discard(part)

    def report(self) -> ReadinessReport:
        with self._lock:
            waiting = sorted(self._waiting)
        return ReadinessReport(ready=not waiting, waiting_for=waiting)


# One per process, like HEALTH.
READINESS = Readiness()
DEFAULT_BACKOFF = Backoff()


_MAX_ERROR_CHARS = 300


def _describe(error: BaseException) -> str:
    name, text = type(error).__name__, " ".join(str(error).split())
    if len(text) > _MAX_ERROR_CHARS:
        # Some errors quote the whole request (a pipeline of a batch's values); one log
        # line must stay one readable line.
        half = _MAX_ERROR_CHARS // 2
        text = f"{text[:half]} ... {text[-half:]}"
    if not text or text == name:
        return name
    return text if text.startswith(name) else f"{name}: {text}"


async def retry_until_done(
    operation: Callable[[], Awaitable[T]],
    *,
    dependency: str,
    what: str,
    backoff: Backoff = DEFAULT_BACKOFF,
    transient: tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
    health: Health = HEALTH,
) -> T:
    """Runs ``operation`` until it succeeds, waiting out transient failures of ``dependency``.

    It never gives up: the caller's work (a batch whose offsets are not yet committed) is
    held, not dropped. Cancellation (a stopping worker) ends the wait at once. A
    non-transient error propagates on the first attempt.
    """
    attempt = 0
    while True:
        try:
            result = await operation()
        except transient as exc:
            attempt += 1
            outage = health.failed(dependency, exc)
            DEPENDENCY_RETRIES.labels(dependency, what).inc()
            pause = backoff.delay(attempt)
            log.warning(
                "dependency_unavailable",
                dependency=dependency,
                operation=what,
                attempt=attempt,
                outage_s=round(time.monotonic() - outage.started, 1),
                retry_in_s=round(pause, 2),
                error=_describe(exc),
            )
            await asyncio.sleep(pause)
            continue
        ended = health.succeeded(dependency)
        if ended is not None:
            log.info(
                "dependency_recovered",
                dependency=dependency,
                operation=what,
                outage_s=round(time.monotonic() - ended.started, 1),
                attempts=ended.attempts,
            )
        return result


class DependencyUnreachable(RuntimeError):
    """A dependency did not answer within the start-up bound; the message names it."""


async def wait_until_reachable(
    probe: Callable[[], Awaitable[object]],
    *,
    dependency: str,
    address: str,
    timeout_s: float,
    backoff: Backoff = DEFAULT_BACKOFF,
    health: Health = HEALTH,
) -> None:
    """Start-up: waits for ``probe`` to succeed, one log line per failed attempt.

    Raises DependencyUnreachable, naming the address and the last error, after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while True:
        try:
            await probe()
        except Exception as exc:
            attempt += 1
            health.failed(dependency, exc)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DependencyUnreachable(
                    f"{dependency} at {address} did not answer within {timeout_s:g}s "
                    f"({attempt} attempts; last error: {_describe(exc)})"
                ) from exc
            pause = min(backoff.delay(attempt), remaining)
            log.warning(
                "dependency_waiting",
                dependency=dependency,
                address=address,
                attempt=attempt,
                waited_s=round(timeout_s - remaining, 1),
                give_up_in_s=round(remaining, 1),
                error=_describe(exc),
            )
            await asyncio.sleep(pause)
            continue
        health.succeeded(dependency)
        if attempt:
            log.info("dependency_reachable", dependency=dependency, address=address)
        return


async def kafka_answers(bootstrap_servers: list[str]) -> None:
    """A probe: the broker answers a metadata request (an open port is not enough)."""
    # Imported on use, like the Redis client below: settings import this module, and
    # everything imports settings, most of it never probing a broker.
    from aiokafka.admin import AIOKafkaAdminClient

    # aiokafka logs every refused connection at error level; the caller logs one line per
    # attempt itself, so its own lines would only repeat that.
    kafka_log = logging.getLogger("aiokafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=3000)
    try:
        await admin.start()
        await admin.list_topics()
    finally:
        await admin.close()
        kafka_log.setLevel(level)


async def redis_answers(dsn: str) -> None:
    """A probe: Redis answers PING."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(dsn, socket_connect_timeout=2.0, socket_timeout=2.0)
    try:
        await client.ping()
    finally:
        await client.aclose()


def crash(event: str, **fields: object) -> NoReturn:
    """Ends the process now with EXIT_CRASHED after one error line saying why.

    Nothing is flushed on purpose: offsets of unfinished work are not committed, so the
    restarted process replays it (at-least-once), which is the only recovery path there is.
    """
    log.error(event, exit_code=EXIT_CRASHED, **fields)
    logging.shutdown()
    os._exit(EXIT_CRASHED)


def crash_only(name: str) -> Callable[[Callable[P, Awaitable[None]]], Callable[P, Awaitable[None]]]:
    """Decorates an agent (or job) body: an unexpected exception crashes the process.

    Without it, Faust restarts the agent in a live process that may then never consume again.
    Cancellation is how a stopping worker ends its agents, so it passes through.
    """

    def decorate(body: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
        @functools.wraps(body)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
            try:
                await body(*args, **kwargs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                crash("agent_crashed", agent=name, error=_describe(exc))

        return guarded

    return decorate


def exit_after(seconds: float, reason: str) -> threading.Timer:
    """Arms a watchdog that ends the process if a graceful stop takes over ``seconds``."""

    def expire() -> None:
        log.error("stop_timed_out", reason=reason, after_s=seconds, exit_code=EXIT_CRASHED)
        logging.shutdown()
        os._exit(EXIT_CRASHED)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer
