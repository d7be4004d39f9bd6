"""The embedded broker and Redis start for real, answer, and are gone afterwards; a child
that serves no port is up when its own check says so."""

from __future__ import annotations

import asyncio
import socket
import stat
import sys
from pathlib import Path

import pytest
import redis
from aiokafka.admin import AIOKafkaAdminClient

from l2loop.infra.embedded import (
    EMBEDDED_BUCKET,
    EmbeddedServiceError,
    ManagedProcess,
    embedded_services,
    free_port,
)
from l2loop.infra.services import embedded_store
from l2loop.settings import Settings
from l2loop.stores.shared import shared_storage
from tests.fixtures.exposure import accepts, is_loopback, listening_addresses, not_private

# Starts the embedded broker and Redis.
pytestmark = pytest.mark.integration


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _topics(broker: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


def test_embedded_services_answer_and_stop(tmp_path: Path) -> None:
    with embedded_services(tmp_path) as endpoints:
        broker_port = int(endpoints.kafka_broker.rsplit(":", 1)[1])
        redis_port = int(endpoints.redis_url.rsplit(":", 1)[1].split("/")[0])
        assert isinstance(asyncio.run(_topics(endpoints.kafka_broker)), list)
        client = redis.Redis.from_url(endpoints.redis_url)
        assert client.ping()
        client.close()
    assert not _listening(broker_port)
    assert not _listening(redis_port)


@pytest.mark.usefixtures("loose_umask")
def test_embedded_services_listen_on_loopback_only_and_keep_their_files_private(
    tmp_path: Path, outside_address: str
) -> None:
    data_dir = tmp_path / "var"
    with embedded_services(data_dir / "embedded") as endpoints:
        assert [p.name for p in endpoints.processes] == ["tansu", "redis"]
        for service in endpoints.processes:
            assert service.port is not None and service.process is not None
            assert accepts("127.0.0.1", service.port), service.name
            assert not accepts(outside_address, service.port), service.name
            listening = listening_addresses(service.process.pid)
            assert ("127.0.0.1", service.port) in listening, service.name
            assert all(is_loopback(address) for address, _ in listening), listening
        # Their logs may quote what clients sent.
        assert {p.name for p in (data_dir / "embedded").iterdir()} >= {"tansu.log", "redis.log"}
        assert not_private(data_dir) == []


def test_only_the_missing_service_is_started(tmp_path: Path) -> None:
    with embedded_services(tmp_path, kafka=False) as endpoints:
        assert endpoints.kafka_broker == ""
        assert endpoints.redis_url.startswith("redis://127.0.0.1:")


def test_a_process_without_a_port_is_up_when_its_check_says_so(tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    touch = f"import pathlib, time; pathlib.Path({str(marker)!r}).touch(); time.sleep(60)"
    child = ManagedProcess(
        "toucher",
        [sys.executable, "-c", touch],
        None,
        tmp_path / "toucher.log",
        ready=marker.exists,
    )
    child.start()
    try:
        child.wait_until_ready(30.0)
        assert marker.exists() and child.exit_code is None
    finally:
        child.stop()

    quitter = ManagedProcess(
        "quitter",
        [sys.executable, "-c", "raise SystemExit(3)"],
        None,
        tmp_path / "q.log",
        ready=lambda: False,
    )
    quitter.start()
    with pytest.raises(EmbeddedServiceError, match="exited with code 3"):
        quitter.wait_until_ready(30.0)
    with pytest.raises(ValueError):
        ManagedProcess("unknowable", ["true"], None, tmp_path / "u.log")


def test_a_port_is_never_handed_out_twice() -> None:
    # The API, the worker's web server and the embedded services each get one before any
    # of them binds it; the kernel would offer a closed probe's port again.
    ports = [free_port() for _ in range(2_000)]
    assert len(set(ports)) == len(ports)


@pytest.mark.usefixtures("loose_umask")
def test_the_embedded_s3_server_holds_the_shared_state_on_loopback(
    tmp_path: Path, outside_address: str
) -> None:
    """What `make up` runs: the registry, curated store and datasets in a bucket of an S3
    server that only this machine reaches, and that asks for no credentials."""
    data_dir = tmp_path / "var"
    settings = Settings(data_dir=data_dir, kafka_broker=None, redis_url=None, embedded_s3=True)
    with embedded_services(data_dir / "embedded", kafka=False, redis=False, s3=True) as ep:
        (server,) = ep.processes
        assert server.port is not None and server.process is not None
        assert not accepts(outside_address, server.port)
        assert all(is_loopback(a) for a, _ in listening_addresses(server.process.pid))
        live = settings.model_copy(update=embedded_store(ep.s3_endpoint))
        storage = shared_storage(live)
        storage.put("curated/2026-12-01/x.jsonl", b"{}\n")
        assert storage.location("") == f"s3://{EMBEDDED_BUCKET}"
        assert shared_storage(live).keys("curated/") == ["curated/2026-12-01/x.jsonl"]
        # SeaweedFS sets one file's mode itself (0644); its directory admits no one else.
        volumes = data_dir / "embedded" / "seaweedfs"
        assert stat.S_IMODE(volumes.stat().st_mode) == 0o700
        assert [f for f in not_private(data_dir) if not f.startswith(f"{volumes}/")] == []
    assert not _listening(server.port)
