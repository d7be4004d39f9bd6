"""The supervisor of ``l2loop up``: a process that keeps dying is a crash loop, never
"recovered"; a restarted one is recovered once it has stayed up."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest

from l2loop.infra.embedded import ManagedProcess
from l2loop.infra.supervision import CrashLoopRule, ExitHistory, Supervised, Supervisor
from l2loop.resilience import Backoff

# Supervises real child processes.
pytestmark = pytest.mark.integration

RULE = CrashLoopRule(exits=3, window_s=60.0, stable_s=30.0)


def test_exits_within_the_window_are_counted_and_older_ones_forgotten() -> None:
    history = ExitHistory()
    assert [history.exited(t, RULE) for t in (0.0, 10.0, 20.0)] == [1, 2, 3]
    # 70 s in, the exit at 0 s is out of the 60 s window, the one at 10 s too.
    assert history.exited(70.0, RULE) == 2


def test_a_restart_holds_only_after_staying_up() -> None:
    history = ExitHistory()
    history.exited(0.0, RULE)
    history.restarted_at = 1.0
    assert not history.held(30.0, RULE)
    assert history.held(31.0, RULE)
    # Said once: the restart has been accounted for.
    assert not history.held(40.0, RULE)


def test_an_exit_before_the_restart_held_cancels_it() -> None:
    history = ExitHistory()
    history.exited(0.0, RULE)
    history.restarted_at = 1.0
    history.exited(5.0, RULE)
    assert not history.held(100.0, RULE)


def _child(tmp_path: Path, code: str) -> Supervised:
    return Supervised(
        ManagedProcess(
            "worker",
            [sys.executable, "-c", code],
            None,
            tmp_path / "worker.log",
            ready=lambda: True,
        )
    )


async def _watch_until(supervisor: Supervisor, done: str) -> None:
    stop = asyncio.Event()
    watching = asyncio.create_task(supervisor.watch(stop, poll_s=0.01))
    # The notice is a plain attribute the live line reads; nothing signals its changes.
    while done not in (supervisor.notice or ""):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    stop.set()
    await watching


def _events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


@pytest.mark.timeout(60)
def test_a_process_that_keeps_dying_is_a_crash_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    child = _child(tmp_path, "raise SystemExit(70)")
    child.process.start()
    supervisor = Supervisor([child], RULE, backoff=Backoff(initial_s=0.01, cap_s=0.01))
    with caplog.at_level(logging.INFO, logger="l2loop.infra.supervision"):
        asyncio.run(_watch_until(supervisor, "crash loop"))
    child.process.stop()
    assert supervisor.notice == (
        "crash loop: worker exited 3 times in the last 60 s (last exit code 70)"
    )
    events = _events(caplog)
    assert events.count("process_exited") == 3
    assert events.count("process_crash_loop") == 1
    assert "process_recovered" not in events
    (loop,) = [r for r in caplog.records if r.getMessage() == "process_crash_loop"]
    assert loop.kv == {"process": "worker", "exits": 3, "window_s": 60.0, "exit_code": 70}  # type: ignore[attr-defined]


@pytest.mark.timeout(60)
def test_a_restart_that_stays_up_is_recovered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Dies the first time, stays up the second.
    marker = tmp_path / "started-once"
    code = (
        "import pathlib, sys, time\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "if not marker.exists():\n"
        "    marker.touch()\n"
        "    sys.exit(70)\n"
        "time.sleep(60)\n"
    )
    child = _child(tmp_path, code)
    child.process.start()
    rule = CrashLoopRule(exits=3, window_s=60.0, stable_s=0.0)
    supervisor = Supervisor([child], rule, backoff=Backoff(initial_s=0.01, cap_s=0.01))
    try:
        with caplog.at_level(logging.INFO, logger="l2loop.infra.supervision"):
            asyncio.run(_watch_until(supervisor, "recovered"))
    finally:
        child.process.stop()
    assert supervisor.notice is not None
    assert supervisor.notice.startswith("worker restarted at ")
    assert supervisor.notice.endswith("(exit 70), recovered: up 0 s")
    assert _events(caplog).count("process_recovered") == 1
    assert "process_crash_loop" not in _events(caplog)
