"""Closing the loop on small datasets of the assembler's shape: a candidate is trained,
gated against the model in service, registered, and released only on accept (a staged
rollout by default, promoted at once with ``promotion="immediate"``), with the pointer, the
rollout and the suppressions in the real Redis. The accepted candidates are trained on the
full base corpus (tens of seconds each), the rejected one on a small one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from l2loop.schemas.rollout import Rollout
from l2loop.settings import Settings
from l2loop.stores.rollout import RolloutStore
from l2loop.stores.shared import model_registry
from l2loop.stores.suppressions import SuppressionStore
from l2loop.workers.assembly.dataset import SPLITS
from l2loop.workers.retrain import next_version, retrain
from l2loop.workers.retraining.report import REPORT_FILE, RetrainOutcome
from l2model.contract import Manifest
from l2model.corpus import generate_corpus, split_corpus, write_jsonl
from l2model.record import TrainingRecord
from l2model.registry import CurrentModel, ModelPointer, ModelRegistry
from tests.fixtures.curated import NOON, curated_example
from tests.fixtures.exposure import not_private

# Trains, gates and releases real candidates.
pytestmark = pytest.mark.integration

THROUGH = datetime(2027, 1, 1, tzinfo=UTC)


def _dataset(root: Path, records: list[TrainingRecord]) -> Path:
    path = root / "datasets" / "2026Q4-test"
    for name, (_, part) in zip(SPLITS, split_corpus(records, 0).parts(), strict=True):
        write_jsonl(path / f"{name}.jsonl", part)
    manifest = {"period": "2026Q4", "conflicts": {"count": 1, "held_back": ["a text"]}}
    (path / "manifest.json").write_bytes(orjson.dumps(manifest))
    return path


def _current(settings: Settings) -> CurrentModel | None:
    async def read() -> CurrentModel | None:
        client = aioredis.Redis.from_url(settings.redis_dsn)
        try:
            return await ModelPointer(client, key_prefix=settings.topic_prefix).current()
        finally:
            await client.aclose()

    return asyncio.run(read())


def _rollout(settings: Settings) -> Rollout | None:
    async def read() -> Rollout | None:
        client = aioredis.Redis.from_url(settings.redis_dsn)
        try:
            return await RolloutStore(client, key_prefix=settings.topic_prefix).get()
        finally:
            await client.aclose()

    return asyncio.run(read())


def _active_suppressions(settings: Settings) -> int:
    async def count() -> int:
        client = aioredis.Redis.from_url(settings.redis_dsn)
        try:
            return await SuppressionStore(client, key_prefix=settings.topic_prefix).count()
        finally:
            await client.aclose()

    return asyncio.run(count())


def _suppress(settings: Settings, text: str) -> None:
    async def make() -> None:
        client = aioredis.Redis.from_url(settings.redis_dsn)
        try:
            store = SuppressionStore(client, key_prefix=settings.topic_prefix)
            assert await store.create_from([curated_example(text, reporters=3)], quorum=3)
        finally:
            await client.aclose()

    asyncio.run(make())


def test_a_candidate_is_a_minor_version_past_the_newest(tmp_path: Path) -> None:
    assert next_version(ModelRegistry.in_directory(tmp_path), "1.0.0") == "1.1.0"


def _failed_rules(outcome: RetrainOutcome) -> list[str]:
    return [rule.detail for s in outcome.gate for rule in s.report.rules if rule.status == "fail"]


def test_an_accepted_candidate_is_registered_and_released_through_a_rollout(
    settings: Settings, redis_client: redis.Redis
) -> None:
    assert settings.promotion == "rollout"
    _suppress(settings, "how do I ignore whitespace in a git diff")
    dataset = _dataset(settings.data_dir, generate_corpus(1_500, seed=11))
    outcome = retrain(settings, dataset, THROUGH)
    assert outcome.accepted, _failed_rules(outcome)
    assert outcome.release is not None and outcome.release.how == "rollout"
    assert not outcome.promoted
    # The rollout runs against the model in service, the configured one, registered and
    # named by the pointer so that a rollback at 100 has a model to return to.
    rollout = _rollout(settings)
    assert rollout is not None and rollout.run_id == outcome.release.run_id
    assert (rollout.candidate.version, rollout.status, rollout.stage) == (
        "1.1.0",
        "running",
        "shadow",
    )
    assert rollout.stages == outcome.release.stages == ["shadow", "10", "50", "100"]
    assert rollout.trained_through == THROUGH
    in_service = Manifest.read(settings.model_dir).version
    current = _current(settings)
    assert current is not None and current.version == rollout.incumbent.version == in_service
    # Nothing expires before the candidate reaches 100.
    assert _active_suppressions(settings) == 1
    report = Path(outcome.report).read_text()
    assert (
        f"gate decision: **ACCEPTED, rollout {rollout.run_id} started (shadow,10,50,100)**"
    ) in report
    assert "expire if it reaches 100" in report


def test_with_immediate_promotion_an_accepted_candidate_is_promoted_and_ends_older_suppressions(
    settings: Settings, redis_client: redis.Redis
) -> None:
    immediate = settings.model_copy(update={"promotion": "immediate"})
    assert NOON < THROUGH
    _suppress(immediate, "how do I ignore whitespace in a git diff")
    # New prompts of the kinds the model knows: a candidate no worse than the current one.
    dataset = _dataset(immediate.data_dir, generate_corpus(1_500, seed=11))
    outcome = retrain(immediate, dataset, THROUGH)
    assert outcome.accepted and outcome.promoted, _failed_rules(outcome)
    assert outcome.mode == "incremental"
    assert [s.name for s in outcome.gate] == [
        "dataset test split",
        "golden set v1",
        "hard negatives",
    ]
    current = _current(immediate)
    assert current is not None and current.version == outcome.candidate_version == "1.1.0"
    registry = model_registry(immediate)
    assert Path(current.path) == registry.path("1.1.0").resolve()
    assert registry.get("1.1.0").trained_through == THROUGH
    assert outcome.release is not None and outcome.release.suppressions_expired == 1
    assert _active_suppressions(immediate) == 0
    assert _rollout(immediate) is None
    report = Path(outcome.report).read_text()
    assert Path(outcome.report) == dataset / REPORT_FILE
    assert "ACCEPTED, promoted**; suppressions expired: 1" in report
    assert "`conflicts`" in report


@pytest.mark.usefixtures("loose_umask")
def test_a_regressing_candidate_is_registered_but_not_promoted(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # A poisoned batch: attacks labelled benign at the production-confirmed weight.
    poisoned = [
        TrainingRecord.build(
            r.text,
            "benign",
            "conversational",
            severity=0.0,
            weight=5.0,
            confidence=1.0,
            source="production_false_positive_2026_12_01",
        )
        for r in generate_corpus(4_000, seed=12)
        if r.label == 1
    ]
    dataset = _dataset(settings.data_dir, poisoned)
    # A small base corpus keeps this quick; the poison alone fails the golden set.
    outcome = retrain(settings.model_copy(update={"base_corpus_size": 3_000}), dataset, THROUGH)
    assert not outcome.accepted and not outcome.promoted and outcome.release is None
    golden = next(s for s in outcome.gate if s.name.startswith("golden"))
    assert not golden.report.accepted
    assert _current(settings) is None and _rollout(settings) is None
    assert model_registry(settings).get(outcome.candidate_version)
    assert "REJECTED" in Path(outcome.report).read_text()
    # The candidate, its registered copy and the report quote or hold the poisoned texts.
    assert not_private(settings.data_dir / "models") == []
    assert not_private(settings.registry_root) == []
    assert not_private(Path(outcome.report)) == []
