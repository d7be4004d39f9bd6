"""Two curated sinks writing one bucket at once, on the real broker, Redis and a real S3
server, one of them SIGKILLed mid-stream: every revision is stored, and read back once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from l2loop.infra.embedded import free_port
from l2loop.settings import Settings
from l2loop.stores.curated import CuratedStore
from l2loop.stores.shared import shared_storage
from l2model.storage import S3Config
from tests.fixtures.curated import NOON, programming_questions, revisions_of, send_curated
from tests.fixtures.objects import on_s3
from tests.fixtures.pipeline import WorkerProcess, wait_for


def test_two_sinks_at_once_lose_and_duplicate_nothing(
    topics: Settings, s3_server: S3Config
) -> None:
    shared = on_s3(topics.model_copy(update={"worker_roles": "windows,alerts,curated"}), s3_server)
    store = CuratedStore(shared_storage(shared))
    questions = programming_questions()
    emitted = [revision for i, text in enumerate(questions) for revision in revisions_of(i, text)]
    day = NOON.date()

    def stored() -> list[tuple[str, int, bool]]:
        return sorted(
            (r.example_id, r.reporter_count, r.released_in_review)
            for r in store.read(day, day + timedelta(days=1))
        )

    workers = [
        WorkerProcess(
            shared.model_copy(
                update={"data_dir": shared.data_dir / f"w{n}", "web_port": free_port()}
            ),
            shared.data_dir / f"worker-{n}.log",
        )
        for n in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        # Half, then a sink killed mid-stream (its partitions go to the other, which replays
        # what the dead one stored and had not committed), then the rest and the first half
        # again, as the report agent's own replays would.
        asyncio.run(send_curated(shared, emitted[: len(emitted) // 2]))
        wait_for("the first stores", lambda: len(stored()) > 0, workers[0], 120)
        workers[1].kill()
        asyncio.run(send_curated(shared, emitted[len(emitted) // 2 :] + emitted[:40]))
        expected = sorted((e.example_id, e.reporter_count, e.released_in_review) for e in emitted)
        wait_for("storing everything", lambda: len(stored()) >= len(expected), workers[0], 180)
        assert stored() == expected
    finally:
        for worker in workers:
            worker.stop()
