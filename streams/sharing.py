"""Agents that share a worker's event loop: scoring goes first.

A worker of all roles runs the score agent beside the window agent (and the others) on one
event loop. After a backlog the window agent has thousands of verdicts to count, and while
it counted them at full speed the scoring of new events waited behind its batches (at 500
events/s after a backlog of 20,000: p50 60 ms against 26 ms for the score role alone). So
the score agent's consumer says how many of its batches are in flight, and the window agent
yields to them between its own batches (decision 0033):

- while no score batch is in flight, it takes batch after batch, as fast as it can;
- while one is, it waits for scoring to go idle, but never longer than ``share`` times what
  its own last batch took: under a backlog of scoring that never lets up, the windows still
  get one part of the loop in ``share + 1`` and catch up, later, rather than never.
"""

from __future__ import annotations

import asyncio
from typing import Final

# How many times its own batch's time a yielding agent waits, at most, for scoring to go
# idle: a window batch of 256 verdicts takes about 10 ms, so the windows get at least a
# third of a busy loop.
DEFAULT_SHARE: Final = 2.0


class Pressure:
    """How many batches the agent that goes first has in flight, and a way for the others
    to wait until it has none. Bound to no event loop: a worker's agents share one, tests
    start many."""

    def __init__(self) -> None:
        self._in_flight = 0
        self._idle: list[asyncio.Future[None]] = []

    @property
    def busy(self) -> bool:
        return self._in_flight > 0

    def enter(self) -> None:
        self._in_flight += 1

    def leave(self) -> None:
        self._in_flight = max(0, self._in_flight - 1)
        if not self._in_flight:
            waiters, self._idle = self._idle, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def idle(self, within_s: float) -> None:
        """Returns once nothing is in flight, or after ``within_s`` seconds."""
        if not self._in_flight or within_s <= 0:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._idle.append(waiter)
        try:
            await asyncio.wait({waiter}, timeout=within_s)
        finally:
            if waiter in self._idle:
                self._idle.remove(waiter)
            waiter.cancel()

    async def make_way(self, spent_s: float, *, share: float = DEFAULT_SHARE) -> None:
        """What a yielding agent awaits after a batch that took it ``spent_s`` seconds."""
        await self.idle(spent_s * share)


# The worker's score agent: its consumer enters and leaves this for each batch.
SCORING = Pressure()
