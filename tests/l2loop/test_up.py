"""``l2loop up`` supervises what it started: a worker or embedded server that dies is
restarted, and the live line says what happened and when it recovered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from l2loop.services import RunningUp


class UpProcess:
    def __init__(self, data_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("L2LOOP_")}
        env |= {"L2LOOP_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
        self.data_dir = data_dir
        self.lines: list[str] = []
        # wait_for looks only at lines after the last one it matched: the line must be new.
        self.cursor = 0
        self.process = subprocess.Popen(
            [sys.executable, "-m", "l2loop", "up", "--rate", "100", "--duration", "150"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, found: Callable[[str], bool], timeout_s: float = 90.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for index in range(self.cursor, len(self.lines)):
                if found(self.lines[index]):
                    self.cursor = index + 1
                    return self.lines[index]
            assert self.process.poll() is None, "\n".join(self.lines[-30:])
            time.sleep(0.2)
        raise AssertionError("not seen in time:\n" + "\n".join(self.lines[-30:]))

    def running(self) -> RunningUp:
        return RunningUp.model_validate(orjson.loads((self.data_dir / "up.json").read_bytes()))


def _verdicts(line: str) -> int:
    return int(line.split("verdicts=")[1].split()[0]) if "verdicts=" in line else -1


@pytest.fixture
def up(tmp_path: Path) -> Iterator[UpProcess]:
    process = UpProcess(tmp_path / "var")
    try:
        yield process
    finally:
        if process.process.poll() is None:
            process.process.send_signal(signal.SIGINT)
            process.process.wait(timeout=60)


def _flowing(up: UpProcess) -> int:
    """Waits for the verdict count to grow on new live lines; returns the count reached."""
    start = _verdicts(up.wait_for(lambda line: "verdicts=" in line))
    return _verdicts(up.wait_for(lambda line: _verdicts(line) > start))


@pytest.mark.timeout(300)
def test_up_restarts_a_killed_worker_and_a_killed_redis(up: UpProcess) -> None:
    _flowing(up)
    worker_pid = up.running().processes["worker"]
    os.kill(worker_pid, signal.SIGKILL)
    up.wait_for(lambda line: "worker exited (code -9)" in line)
    up.wait_for(lambda line: "worker restarted at" in line and "recovered" in line)
    assert up.running().processes["worker"] != worker_pid
    before = _flowing(up)

    os.kill(up.running().processes["redis"], signal.SIGKILL)
    up.wait_for(lambda line: "redis restarted at" in line and "recovered" in line)
    # Scoring goes on once Redis is back: the verdict count keeps growing.
    assert _flowing(up) > before

    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(timeout=60) == 0
    assert not (up.data_dir / "up.json").exists()
