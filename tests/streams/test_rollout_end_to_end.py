"""A staged rollout end to end: two score workers on the real broker and Redis, real traffic of
many tenants and canary probes, the controller in the workers deciding every stage.

One worker runs every role (so the alert agent delivers ``rollout_rolled_back`` to a real
webhook), the other scores only; both score ``scan-events`` in one consumer group. The
stages are short here (a hold of two seconds, a few hundred events) so that a whole rollout
takes seconds; the logic is the production one.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from l2loop.demo.spike import register_spike_model
from l2loop.infra.embedded import free_port
from l2loop.infra.topics import SCAN_VERDICTS, SCAN_VERDICTS_SHADOW, ensure_topics
from l2loop.release.rollout import ROLLED_BACK_RULE, Rollouts
from l2loop.schemas.rollout import Rollout
from l2loop.settings import Settings
from l2loop.stores.alerts import AlertStore
from l2loop.stores.rollout import CANDIDATE, EVENTS, RolloutStore, arm_field
from l2loop.stores.shared import model_registry
from l2loop.stores.verdicts import connected
from l2loop.streams.rollout_router import in_share
from l2model.artifacts import default_model_dir
from l2model.contract import Manifest
from l2model.registry import ModelPointer, ModelRegistry
from tests.fixtures.models import model_missing_family
from tests.fixtures.pipeline import WorkerProcess, drain
from tests.fixtures.receivers import WebhookReceiver
from tests.fixtures.scenario import wait_for_log
from tests.fixtures.services import isolated_settings
from tests.fixtures.traffic import TENANTS, MixedTraffic

pytestmark = pytest.mark.timeout(420)

INCUMBENT = Manifest.read(default_model_dir()).version


@dataclass
class Cluster:
    settings: Settings
    workers: list[WorkerProcess]
    webhook: WebhookReceiver
    registry: ModelRegistry
    versions: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def next_version(self) -> str:
        return f"2.0.{next(self.versions)}"

    def run(self, command: Callable[[Rollouts], object]) -> object:
        async def go() -> object:
            async with connected(self.settings.redis_dsn) as client:
                result = command(Rollouts(client, self.settings, self.registry))
                return await result if asyncio.iscoroutine(result) else result

        return asyncio.run(go())

    def rollout(self) -> Rollout | None:
        async def get() -> Rollout | None:
            async with connected(self.settings.redis_dsn) as client:
                return await RolloutStore(client, key_prefix=self.settings.topic_prefix).get()

        return asyncio.run(get())

    def wait_until(
        self, what: str, done: Callable[[Rollout], bool], timeout_s: float = 180.0
    ) -> Rollout:
        deadline = time.monotonic() + timeout_s
        while True:
            for worker in self.workers:
                assert worker.process is not None and worker.process.poll() is None, worker.log()[
                    -3000:
                ]
            rollout = self.rollout()
            if rollout is not None and done(rollout):
                return rollout
            assert time.monotonic() < deadline, f"{what} did not happen: {rollout}"
            time.sleep(0.5)

    def incumbent(self) -> tuple[str, Path]:
        """The model in service: the pointer's, or the committed model before any release."""
        version = self.current_version()
        if version is None:
            return INCUMBENT, default_model_dir()
        return version, self.registry.path(version)

    def current_version(self) -> str | None:
        async def get() -> str | None:
            async with connected(self.settings.redis_dsn) as client:
                pointer = ModelPointer(client, key_prefix=self.settings.topic_prefix)
                current = await pointer.current()
                return None if current is None else current.version

        return asyncio.run(get())

    def stage_counts(self, run_id: str, stage_index: int) -> dict[str, int]:
        async def get() -> dict[str, int]:
            async with connected(self.settings.redis_dsn) as client:
                store = RolloutStore(client, key_prefix=self.settings.topic_prefix)
                return await store.counts(run_id, stage_index)

        return asyncio.run(get())


@pytest.fixture(scope="module")
def cluster(
    service_endpoints: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    data_dir = tmp_path_factory.mktemp("rollout") / "var"
    webhook = WebhookReceiver()
    webhook.start()
    settings = isolated_settings(service_endpoints, data_dir).model_copy(
        update={
            "rollout_hold_s": 2.0,
            "rollout_min_events": 300,
            "rollout_min_canary": 60,
            "rollout_tick_s": 0.5,
            "model_poll_s": 0.5,
            "alert_webhook_url": webhook.url,
            # The loop's latency alert would judge this machine's load (two workers and the
            # traffic on two cores), not a candidate: these tests are about the rest.
            "alert_latency_p95_ms": 1000.0,
            "alert_latency_p95_clear_ms": 800.0,
            "alert_outbox_poll_s": 0.2,
        }
    )
    asyncio.run(ensure_topics(settings))
    workers = [
        WorkerProcess(settings, data_dir / "worker-all.log"),
        WorkerProcess(
            settings.model_copy(update={"worker_roles": "score", "web_port": free_port()}),
            data_dir / "worker-score.log",
        ),
    ]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            wait_for_log(worker, "event=score_agent_started", timeout_s=120)
        yield Cluster(settings, workers, webhook, model_registry(settings))
    finally:
        for worker in workers:
            worker.stop()
        webhook.stop()


def _stages_walked(rollout: Rollout) -> list[tuple[str, str, str]]:
    return [(record.stage, record.outcome, record.by) for record in rollout.history]


def _acting_and_shadow(settings: Settings, sent: list[str]) -> tuple[list[dict], list[dict]]:
    wanted = set(sent)

    def enough(drained: object) -> bool:
        values = drained.values(settings.topic(SCAN_VERDICTS))  # type: ignore[attr-defined]
        return wanted <= {value["event_id"] for value in values}

    drained = drain(
        settings, [settings.topic(SCAN_VERDICTS), settings.topic(SCAN_VERDICTS_SHADOW)], enough
    )
    acting = [v for v in drained.values(settings.topic(SCAN_VERDICTS)) if v["event_id"] in wanted]
    shadow = [
        v for v in drained.values(settings.topic(SCAN_VERDICTS_SHADOW)) if v["event_id"] in wanted
    ]
    return acting, shadow


def test_a_good_candidate_walks_every_stage_by_itself(cluster: Cluster) -> None:
    version = cluster.next_version()
    cluster.registry.add(default_model_dir(), version=version, changes=["a good candidate"])
    with MixedTraffic(cluster.settings) as traffic:
        started = cluster.run(lambda rollouts: rollouts.start(version))
        assert isinstance(started, Rollout)
        assert started.stages == ["shadow", "10", "50", "100"]
        done = cluster.wait_until("the rollout to complete", lambda r: r.status == "completed")
    assert _stages_walked(done) == [
        ("shadow", "advanced", "analysis"),
        ("10", "advanced", "analysis"),
        ("50", "advanced", "analysis"),
        ("100", "completed", "analysis"),
    ]
    assert cluster.current_version() == version
    for record in done.history:
        assert record.comparison is not None
        assert all(check.outcome == "pass" for check in record.comparison.checks), record

    acting, shadow = _acting_and_shadow(cluster.settings, traffic.sent)
    # Across both workers, every event has exactly one acting verdict.
    per_event = Counter(verdict["event_id"] for verdict in acting)
    assert set(per_event) == set(traffic.sent)
    assert [e for e, n in per_event.items() if n > 1] == []
    assert not any(verdict["shadow"] for verdict in acting)
    versions = Counter(verdict["model_version"] for verdict in acting)
    assert versions[version] > 0 and versions[started.incumbent.version] > 0
    # Shadow verdicts are counted apart: only the candidate's, only in shadow, on their own
    # topic, each beside an acting verdict of the incumbent, as many as the stage counted.
    assert shadow and all(v["shadow"] and v["model_version"] == version for v in shadow)
    incumbent_of = {v["event_id"]: v["model_version"] for v in acting}
    assert {incumbent_of[v["event_id"]] for v in shadow} == {started.incumbent.version}
    shadow_counted = cluster.stage_counts(done.run_id, 0)[arm_field(CANDIDATE, EVENTS)]
    assert len({v["event_id"] for v in shadow}) == shadow_counted
    # Both workers applied every stage.
    for worker in cluster.workers:
        for stage in ("shadow", "10", "50", "100"):
            needle = f"event=rollout_stage_applied run={done.run_id} candidate={version}"
            assert f"{needle} stage={stage}" in worker.log()


def _rolled_back_alerts(cluster: Cluster, run_id: str) -> list[dict[str, object]]:
    return [
        alert
        for payload in cluster.webhook.payloads()
        for alert in payload["alerts"]
        if alert["labels"].get("alertname") == ROLLED_BACK_RULE
        and alert["labels"].get("rollout") == run_id
    ]


@pytest.mark.parametrize(
    ("stages", "exposed_at"), [("10,50,100", "10"), ("shadow,10,50,100", "shadow")]
)
def test_an_over_sensitive_candidate_is_rolled_back_before_it_spreads(
    cluster: Cluster, stages: str, exposed_at: str
) -> None:
    version = cluster.next_version()
    incumbent, incumbent_dir = cluster.incumbent()
    register_spike_model(cluster.registry, incumbent_dir, version=version, threshold=0.01)
    with MixedTraffic(cluster.settings) as traffic:
        started = cluster.run(lambda rollouts: rollouts.start(version, stages=stages))
        assert isinstance(started, Rollout)
        ended = cluster.wait_until(
            "the rollback", lambda r: r.run_id == started.run_id and not r.active
        )
        assert ended.status == "rolled_back"
        assert ended.stage == exposed_at
        # Caught by the comparison: benign canaries flagged, users' prompts newly flagged.
        assert {"canary_fp_rate", "flag_rate"} & {
            part.split(":")[0] for part in (ended.reason or "").split("; ")
        }
        assert ended.candidate_share is not None
        if exposed_at == "shadow":
            assert ended.candidate_share == 0.0
        else:
            # A stage hashes users by tenant under the run's salt: the candidate decided the
            # events of the tenants that fell in its share, never more than half of all; with
            # 40 tenants, about one run in 70 puts none in a tenth, and then it decided none.
            routed = [t for t in TENANTS if in_share(started.run_id, t, int(exposed_at))]
            assert cluster.settings.rollout_hash_by == "tenant"
            if routed:
                assert 0.0 < ended.candidate_share < 0.5
            else:
                assert ended.candidate_share == 0.0
        assert cluster.current_version() == incumbent
        # The incumbent serves every event again: the newest verdicts are all its own.
        rolled_back_at = len(traffic.sent)
        cluster.wait_until(
            "traffic after the rollback", lambda r: len(traffic.sent) > rolled_back_at + 800
        )
    settle_s = 3.0  # the scorers follow the state on their next poll (0.5 s here)
    time.sleep(settle_s)
    acting, _ = _acting_and_shadow(cluster.settings, traffic.sent)
    by_event = {v["event_id"]: v["model_version"] for v in acting}
    tail = traffic.sent[rolled_back_at + 400 :]
    assert {by_event[event_id] for event_id in tail} == {incumbent}
    # The alert reached the receiver, saying how far the candidate got.
    deadline = time.monotonic() + 60
    while not _rolled_back_alerts(cluster, ended.run_id):
        assert time.monotonic() < deadline, cluster.webhook.payloads()
        time.sleep(0.5)
    (alert,) = _rolled_back_alerts(cluster, ended.run_id)[:1]
    assert alert["labels"]["model_version"] == version
    assert "share of users' events the candidate decided" in alert["annotations"]["measure"]


def test_a_candidate_missing_an_attack_family_is_rolled_back_by_canary_recall(
    cluster: Cluster, tmp_path: Path
) -> None:
    version = cluster.next_version()
    incumbent, incumbent_dir = cluster.incumbent()
    forgetful = model_missing_family(
        incumbent_dir, tmp_path / "forgetful", family="PI", version=version
    )
    cluster.registry.add(forgetful, changes=["forgot prompt injection"])
    with MixedTraffic(cluster.settings, canary_share=0.6):
        started = cluster.run(lambda rollouts: rollouts.start(version))
        assert isinstance(started, Rollout)
        ended = cluster.wait_until(
            "the rollback", lambda r: r.run_id == started.run_id and not r.active
        )
    assert ended.status == "rolled_back"
    assert "canary_recall" in (ended.reason or ""), ended.reason
    assert cluster.current_version() == incumbent
    # The rollback alert stays open until someone releases again.
    assert ROLLED_BACK_RULE in _open_alert_rules(cluster)
    good = cluster.next_version()
    cluster.registry.add(default_model_dir(), version=good, changes=["a good candidate"])
    cluster.run(lambda rollouts: rollouts.start(good))
    try:
        assert ROLLED_BACK_RULE not in _open_alert_rules(cluster)
    finally:
        cluster.run(lambda rollouts: rollouts.abort("test over"))


def _open_alert_rules(cluster: Cluster) -> list[str]:
    async def rules() -> list[str]:
        async with connected(cluster.settings.redis_dsn) as client:
            store = AlertStore(client, key_prefix=cluster.settings.topic_prefix)
            return sorted(alert.rule for alert in (await store.open_alerts()).values())

    return asyncio.run(rules())


def test_a_worker_killed_mid_rollout_comes_back_at_the_same_stage(cluster: Cluster) -> None:
    version = cluster.next_version()
    cluster.registry.add(default_model_dir(), version=version, changes=["a good candidate"])
    started = cluster.run(lambda rollouts: rollouts.start(version))
    assert isinstance(started, Rollout)
    cluster.run(lambda rollouts: rollouts.pause())
    at_ten = cluster.run(lambda rollouts: rollouts.advance())
    assert isinstance(at_ten, Rollout) and (at_ten.stage, at_ten.status) == ("10", "paused")
    scorer = cluster.workers[1]
    wait_for_log(
        scorer, f"event=rollout_stage_applied run={started.run_id} candidate={version} stage=10"
    )
    scorer.kill()
    before = len(scorer.log())
    scorer.start()
    try:
        wait_for_log(scorer, "event=score_agent_started", timeout_s=120)
        deadline = time.monotonic() + 60
        needle = f"event=rollout_stage_applied run={started.run_id} candidate={version} stage=10"
        while needle not in scorer.log()[before:]:
            assert time.monotonic() < deadline, scorer.log()[before:][-3000:]
            time.sleep(0.2)
        now = cluster.rollout()
        assert now is not None and (now.run_id, now.stage, now.status) == (
            started.run_id,
            "10",
            "paused",
        )
    finally:
        cluster.run(lambda rollouts: rollouts.abort("test over"))
