"""The S3 store of the shared state SIGKILLed while curated examples flow, and brought back
on the same port: the curated sink holds its batch, says so on /health and in its log,
retries, and goes on by itself; every revision is stored once, none lost."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from l2loop.infra.embedded import free_port, seaweedfs_process
from l2loop.infra.services import embedded_store
from l2loop.settings import Settings
from l2loop.stores.curated import CuratedStore
from l2loop.stores.shared import shared_storage
from tests.fixtures.curated import NOON, programming_questions, revisions_of, send_curated
from tests.fixtures.faults import RestartableService
from tests.fixtures.scenario import assert_never_restarted, start_worker, wait_for_log

OUTAGE_S = 10


def store_is_down(settings: Settings) -> bool:
    health = httpx.get(f"http://127.0.0.1:{settings.web_port}/health", timeout=5).json()
    return any(d["dependency"] == "store" and not d["up"] for d in health["dependencies"])


@pytest.mark.timeout(300)
def test_the_store_killed_mid_stream_and_restarted(topics: Settings, tmp_path: Path) -> None:
    port = free_port()
    store = RestartableService(seaweedfs_process(port, tmp_path / "s3", bucket="l2loop"))
    store.start()
    settings = topics.model_copy(
        update={
            "worker_roles": "windows,alerts,curated",
            **embedded_store(f"http://127.0.0.1:{port}"),
        }
    )
    curated = CuratedStore(shared_storage(settings))
    questions = programming_questions()
    emitted = [revision for i, text in enumerate(questions) for revision in revisions_of(i, text)]
    half = len(emitted) // 2
    day = NOON.date()

    def stored() -> list[tuple[str, int, bool]]:
        return sorted(
            (r.example_id, r.reporter_count, r.released_in_review)
            for r in curated.read(day, day + timedelta(days=1))
        )

    worker = start_worker(settings, tmp_path)
    try:
        asyncio.run(send_curated(settings, emitted[:half]))
        deadline = time.monotonic() + 120
        while len(stored()) < half:
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.2)
        store.kill()
        asyncio.run(send_curated(settings, emitted[half:]))
        wait_for_log(worker, "event=dependency_unavailable dependency=store")
        assert store_is_down(settings)
        time.sleep(OUTAGE_S)
        # Forked from this thread: the server dies with the thread that started it.
        store.start()
        wait_for_log(worker, "event=dependency_recovered dependency=store")
        expected = sorted((e.example_id, e.reporter_count, e.released_in_review) for e in emitted)
        deadline = time.monotonic() + 120
        while len(stored()) < len(expected):
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.2)
        assert stored() == expected
        assert not store_is_down(settings)
        assert_never_restarted(worker)
    finally:
        worker.stop()
        store.stop()
