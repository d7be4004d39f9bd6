"""Scoring goes first: an agent that yields waits for scoring to go idle, within a bound."""

from __future__ import annotations

import asyncio
import time

from l2loop.streams.sharing import Pressure


def waited(pressure: Pressure, within_s: float, *, leave_after_s: float | None = None) -> float:
    """How long ``idle(within_s)`` took, the batch in flight leaving after ``leave_after_s``."""

    async def run() -> float:
        if leave_after_s is not None:
            asyncio.get_running_loop().call_later(leave_after_s, pressure.leave)
        began = time.monotonic()
        await pressure.idle(within_s)
        return time.monotonic() - began

    return asyncio.run(run())


def test_nothing_in_flight_lets_the_other_agent_go_on_at_once() -> None:
    pressure = Pressure()
    assert not pressure.busy
    assert waited(pressure, 5.0) < 1.0


def test_the_other_agent_waits_until_the_last_batch_in_flight_leaves() -> None:
    pressure = Pressure()
    pressure.enter()
    pressure.enter()
    pressure.leave()
    assert pressure.busy
    took = waited(pressure, 5.0, leave_after_s=0.2)
    assert 0.2 <= took < 4.0
    assert not pressure.busy


def test_scoring_that_never_idles_delays_the_other_agent_only_so_long() -> None:
    pressure = Pressure()
    pressure.enter()
    took = waited(pressure, 0.2)
    assert 0.2 <= took < 4.0
    assert pressure.busy


def test_a_wait_in_another_event_loop_is_woken_too() -> None:
    """One pressure for the worker's lifetime, whichever loop its agents run in."""
    pressure = Pressure()
    for _ in range(2):
        pressure.enter()
        assert waited(pressure, 5.0, leave_after_s=0.05) < 4.0


def test_the_share_bounds_the_wait_by_the_batch_it_follows() -> None:
    pressure = Pressure()
    pressure.enter()

    async def make_way() -> float:
        began = time.monotonic()
        await pressure.make_way(0.1, share=2.0)
        return time.monotonic() - began

    assert 0.2 <= asyncio.run(make_way()) < 4.0
