"""Which of the loop's alerts roll a candidate back, on the session's real Redis: any alert for
its version, except a latency alert on a window from before 100 (split batches gave the
candidate small calls then, whose fixed cost inflates its per-prompt time)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import redis

from l2loop.release.rollout import Rollouts
from l2loop.schemas.common import utc_now
from l2loop.schemas.rollout import Rollout
from l2loop.schemas.windows import Alert
from l2loop.settings import Settings
from l2loop.stores.alerts import AlertStore, Change, fingerprint
from l2loop.stores.shared import model_registry
from l2loop.stores.verdicts import connected
from tests.fixtures.models import MakeModel


def _alert(rule: str, version: str, *, window_start_delta_s: float) -> Alert:
    start = utc_now() + timedelta(seconds=window_start_delta_s)
    labels = {"alertname": rule, "model_version": version, "window_start": start.isoformat()}
    return Alert(
        rule=rule,  # type: ignore[arg-type]
        status="firing",
        fingerprint=fingerprint(labels),
        window_start=start,
        window_end=start + timedelta(minutes=1),
        model_version=version,
        value=9.9,
        threshold=5.0,
        samples=100,
        labels=labels,
        annotations={"description": f"{rule} of {version}"},
        starts_at=start,
    )


@pytest.mark.parametrize(
    ("rule", "window_start_delta_s", "rolled_back"),
    [
        ("latency_p95", -60, False),  # a window of the 50 % stage, still open at 100
        ("latency_p95", 60, True),  # a window that began at 100: whole batches
        ("fp_rate_spike", -60, True),  # any other alert counts whenever its window was
    ],
)
def test_which_alerts_roll_back_a_candidate_at_100(
    settings: Settings,
    redis_client: redis.Redis,
    make_model_dir: MakeModel,
    rule: str,
    window_start_delta_s: float,
    rolled_back: bool,
) -> None:
    registry = model_registry(settings)
    registry.add(make_model_dir("1.0.0"))
    registry.add(make_model_dir("1.1.0"))

    async def scenario() -> Rollout | None:
        async with connected(settings.redis_dsn) as client:
            rollouts = Rollouts(client, settings, registry)
            await rollouts.start("1.1.0", stages="10,100")
            await rollouts.advance()
            alerts = AlertStore(client, key_prefix=settings.topic_prefix)
            alert = _alert(rule, "1.1.0", window_start_delta_s=window_start_delta_s)
            await alerts.apply([Change(f"{rule}|test|1.1.0", alert)])
            await rollouts.tick()
            return await rollouts.status()

    after = asyncio.run(scenario())
    assert after is not None
    assert (after.status == "rolled_back") is rolled_back, after.reason
    if rolled_back:
        assert rule in (after.reason or "")
