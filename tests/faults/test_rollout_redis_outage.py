"""Redis hung mid-rollout (SIGSTOP: every call times out, no data lost) for longer than the
stage's hold: the rollout holds where it is and never advances while its state cannot be
read; once Redis answers again it goes on from the same stage, stage by stage."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from l2loop.infra.topics import ensure_topics
from l2loop.release.rollout import Rollouts
from l2loop.schemas.rollout import Rollout
from l2loop.stores.rollout import RolloutStore
from l2loop.stores.shared import model_registry
from l2loop.stores.verdicts import connected
from l2model.artifacts import default_model_dir
from tests.fixtures.faults import MakeService, fault_settings
from tests.fixtures.scenario import assert_never_restarted, start_worker, wait_for_log
from tests.fixtures.traffic import MixedTraffic

OUTAGE_S = 15.0


@pytest.mark.timeout(300)
def test_redis_down_holds_the_rollout_at_its_stage(
    own_redis: MakeService, service_endpoints: tuple[str, str], tmp_path: Path
) -> None:
    redis = own_redis()
    redis.start()
    settings = fault_settings(
        service_endpoints[0], f"redis://127.0.0.1:{redis.port}/0", tmp_path / "var"
    ).model_copy(
        update={
            "worker_roles": "score",
            "rollout_hold_s": 5.0,
            "rollout_min_events": 100,
            "rollout_min_canary": 20,
            "rollout_tick_s": 0.5,
            "model_poll_s": 0.5,
        }
    )
    asyncio.run(ensure_topics(settings))
    registry = model_registry(settings)
    registry.add(default_model_dir(), version="3.0.0", changes=["a good candidate"])

    async def start() -> Rollout:
        async with connected(settings.redis_dsn) as client:
            return await Rollouts(client, settings, registry).start("3.0.0")

    async def read() -> Rollout | None:
        async with connected(settings.redis_dsn) as client:
            return await RolloutStore(client, key_prefix=settings.topic_prefix).get()

    worker = start_worker(settings, tmp_path)
    try:
        wait_for_log(worker, "event=score_agent_started")
        with MixedTraffic(settings):
            started = asyncio.run(start())
            wait_for_log(worker, f"event=rollout_stage_applied run={started.run_id}")
            child = redis.process.process
            assert child is not None
            child.send_signal(signal.SIGSTOP)
            time.sleep(OUTAGE_S)
            child.send_signal(signal.SIGCONT)
            back_at = datetime.now(tz=UTC)
            deadline = time.monotonic() + 120
            while (rollout := asyncio.run(read())) is None or rollout.stage_index < 2:
                assert time.monotonic() < deadline, rollout
                time.sleep(0.5)
        log = worker.log()
        assert_never_restarted(worker)
        # The outage was met by the controller, and it decided nothing meanwhile: the first
        # stage ended after Redis answered again, though its hold had passed long before.
        assert "event=rollout_tick_held" in log
        assert rollout.status in ("running", "completed")
        assert [record.stage for record in rollout.history][:2] == ["shadow", "10"]
        assert rollout.history[0].ended_at >= back_at
        assert rollout.history[0].outcome == "advanced"
    finally:
        worker.stop()
