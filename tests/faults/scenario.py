"""Pieces every fault scenario shares: a worker on the test's own services, traffic, waiting
for a line in the worker's log."""

from __future__ import annotations

import time
from pathlib import Path

from l2loop.settings import Settings
from tests.fixtures.pipeline import WorkerProcess


def start_worker(settings: Settings, tmp_path: Path) -> WorkerProcess:
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    return worker


def wait_for_log(worker: WorkerProcess, needle: str, timeout_s: float = 90.0) -> None:
    """Until the worker has logged ``needle`` (it must still be running meanwhile)."""
    deadline = time.monotonic() + timeout_s
    while needle not in worker.log():
        assert worker.process is not None and worker.process.poll() is None, worker.log()[-3000:]
        assert time.monotonic() < deadline, (
            f"no {needle!r} in the worker log:\n{worker.log()[-3000:]}"
        )
        time.sleep(0.2)


def assert_never_restarted(worker: WorkerProcess) -> None:
    assert worker.process is not None and worker.process.poll() is None, worker.log()[-3000:]
    assert worker.starts == 1
    assert "agent_crashed" not in worker.log()
