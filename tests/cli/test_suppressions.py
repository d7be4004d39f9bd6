"""``l2loop suppressions list|revoke`` and the expiry that ``l2loop model promote`` causes,
against the real Redis."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import redis
from click.testing import CliRunner

from l2loop.cli import main
from l2loop.settings import Settings
from l2loop.stores.shared import model_registry
from l2loop.stores.suppressions import SuppressionStore
from l2loop.stores.verdicts import connect
from l2model.record import text_key
from tests.fixtures.curated import NOON, curated_example
from tests.fixtures.models import MakeModel

OLD = "How do I ignore whitespace in git diff?"
NEW = "How do I ignore a folder in rsync?"


def seed(settings: Settings) -> None:
    async def run() -> None:
        client = connect(settings.redis_dsn)
        store = SuppressionStore(client, key_prefix=settings.topic_prefix)
        await store.create_from(
            [
                curated_example(OLD, reporters=3),
                curated_example(NEW, reporters=4, curated_at=NOON + timedelta(days=30)),
                curated_example("one reporter only", reporters=1),
            ],
            quorum=3,
        )
        await client.aclose()

    asyncio.run(run())


def test_list_and_revoke(settings: Settings, redis_client: redis.Redis) -> None:
    seed(settings)
    runner, env = CliRunner(), settings.to_env()
    listed = runner.invoke(main, ["suppressions", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    rows = [line.split("\t") for line in listed.stdout.strip().splitlines()]
    assert sorted(row[1] for row in rows) == sorted([text_key(OLD), text_key(NEW)])
    assert {row[0] for row in rows} == {"acme"}

    revoked = runner.invoke(
        main,
        ["suppressions", "revoke", "acme", text_key(OLD), "--reason", "pen test", "--by", "ana"],
        env=env,
    )
    assert revoked.exit_code == 0, revoked.output
    again = runner.invoke(
        main, ["suppressions", "revoke", "acme", text_key(OLD), "--reason", "twice"], env=env
    )
    assert again.exit_code != 0 and "no active suppression" in again.output

    active = runner.invoke(main, ["suppressions", "list", "--tenant", "acme"], env=env)
    assert [line.split("\t")[1] for line in active.stdout.strip().splitlines()] == [text_key(NEW)]
    ended = runner.invoke(main, ["suppressions", "list", "--ended"], env=env)
    (line,) = ended.stdout.strip().splitlines()
    assert text_key(OLD) in line and "revoked" in line and "by ana: pen test" in line


def test_promoting_a_model_trained_through_a_time_expires_older_suppressions(
    settings: Settings, redis_client: redis.Redis, make_model_dir: MakeModel
) -> None:
    seed(settings)
    runner, env = CliRunner(), settings.to_env()

    def active_keys() -> list[str]:
        listed = runner.invoke(main, ["suppressions", "list"], env=env)
        return sorted(line.split("\t")[1] for line in listed.stdout.strip().splitlines())

    # a model without a known cut-off expires nothing
    plain = runner.invoke(main, ["model", "promote", str(make_model_dir("1.0.0"))], env=env)
    assert plain.exit_code == 0 and "suppressions expired" not in plain.output

    cutoff = (NOON + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S+0000")
    promoted = runner.invoke(
        main,
        ["model", "promote", str(make_model_dir("1.1.0")), "--trained-through", cutoff],
        env=env,
    )
    assert promoted.exit_code == 0, promoted.output
    assert "suppressions expired: 1" in promoted.output
    trained_through = model_registry(settings).get("1.1.0").trained_through
    assert trained_through == NOON + timedelta(days=1)
    assert active_keys() == [text_key(NEW)]
    ended = runner.invoke(main, ["suppressions", "list", "--ended"], env=env)
    assert "expired" in ended.stdout and "1.1.0" in ended.stdout

    # rolled back to a model that never learnt it: the suppression applies again
    rolled = runner.invoke(main, ["model", "rollback"], env=env)
    assert rolled.exit_code == 0, rolled.output
    assert "suppressions restored: 1" in rolled.output
    assert active_keys() == sorted([text_key(OLD), text_key(NEW)])
