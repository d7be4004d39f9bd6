"""``l2loop COMMAND`` as a child process: how ``up``, the loop replay and the benchmarks
start a worker or the API of their own."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from l2loop.infra.embedded import ManagedProcess
from l2loop.settings import Settings


def l2loop_process(
    settings: Settings,
    name: str,
    command: Sequence[str],
    port: int | None,
    log_path: Path,
    ready: Callable[[], bool] | None = None,
) -> ManagedProcess:
    """``l2loop COMMAND`` as a child process with ``settings`` in its environment; it is up
    when it listens on ``port`` or, serving none, when ``ready`` says so."""
    return ManagedProcess(
        name,
        [sys.executable, "-m", "l2loop", *command],
        port,
        log_path,
        env={**os.environ, **settings.to_env()},
        ready=ready,
    )


@contextlib.contextmanager
def running(process: ManagedProcess) -> Iterator[subprocess.Popen[bytes]]:
    """``process`` started for the length of a with-block (benchmarks run workers so)."""
    process.start()
    assert process.process is not None
    try:
        yield process.process
    finally:
        process.stop()
