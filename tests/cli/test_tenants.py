"""`l2loop tenants` against the real Redis."""

from __future__ import annotations

import asyncio

import redis
from click.testing import CliRunner

from l2loop.cli import main
from l2loop.settings import Settings
from l2loop.stores.tenants import hash_key
from l2loop.streams.reports import report_services


def test_tenant_keys_are_shown_once_stored_as_hashes_rotated_and_revoked(
    settings: Settings, redis_client: redis.Redis
) -> None:
    runner = CliRunner()
    env = settings.to_env()
    added = runner.invoke(main, ["tenants", "add", "acme"], env=env)
    assert added.exit_code == 0, added.output
    key = added.stdout.strip()
    assert key.startswith("l2k_") and len(key) > 40
    again = runner.invoke(main, ["tenants", "add", "acme"], env=env)
    assert again.exit_code == 1 and "exists" in again.output

    # Only the hash is in Redis, never the key.
    stored = [
        value
        for name in redis_client.scan_iter(match=f"{settings.topic_prefix}*")
        for value in redis_client.hgetall(name).values()
    ]
    assert stored and not any(key.encode() in value for value in stored)
    assert any(hash_key(key).encode() in value for value in stored)

    rotated = runner.invoke(main, ["tenants", "rotate", "acme"], env=env)
    assert rotated.exit_code == 0 and rotated.stdout.strip() not in ("", key)
    revoked = runner.invoke(main, ["tenants", "revoke", "acme"], env=env)
    assert revoked.exit_code == 0, revoked.output
    listed = runner.invoke(main, ["tenants", "list"], env=env)
    assert listed.stdout.split("\t")[:2] == ["acme", "revoked"]
    assert runner.invoke(main, ["tenants", "revoke", "nobody"], env=env).exit_code == 1

    async def states() -> tuple[str | None, str | None]:
        services = report_services(settings)
        try:
            old = await services.tenants.lookup(key)
            new = await services.tenants.lookup(rotated.stdout.strip())
            return (old.state if old else None, new.state if new else None)
        finally:
            await services.close()

    assert asyncio.run(states()) == ("rotated", "revoked")


def test_a_tenant_id_with_invisible_characters_is_refused(
    settings: Settings, redis_client: redis.Redis
) -> None:
    runner = CliRunner()
    env = settings.to_env()
    for tenant, named in (
        ("acme\u200b", "U+200B ZERO WIDTH SPACE"),
        ("\u202eacme", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("ac\x00me", "U+0000"),
        ("\ufeffacme", "U+FEFF"),
    ):
        refused = runner.invoke(main, ["tenants", "add", tenant], env=env)
        assert refused.exit_code == 1, refused.output
        assert "identifiers may not contain invisible characters" in refused.output
        assert named in refused.output
    # Nothing was registered for any of them.
    assert not redis_client.hgetall(f"{settings.topic_prefix}tenants")
    assert runner.invoke(main, ["tenants", "add", "acme"], env=env).exit_code == 0


def test_reporter_keys_are_issued_per_reporter_and_revoked_alone(topics: Settings) -> None:
    runner, env = CliRunner(), topics.to_env()
    assert runner.invoke(main, ["tenants", "add", "acme"], env=env).exit_code == 0
    first = runner.invoke(main, ["tenants", "add-reporter", "acme", "ana"], env=env)
    assert first.exit_code == 0, first.output
    second = runner.invoke(main, ["tenants", "add-reporter", "acme", "ana"], env=env)
    other = runner.invoke(main, ["tenants", "add-reporter", "acme", "ben"], env=env)
    nobody = runner.invoke(main, ["tenants", "add-reporter", "nobody", "ana"], env=env)
    assert nobody.exit_code == 1 and "no active tenant" in nobody.output
    revoked = runner.invoke(main, ["tenants", "revoke-reporter", "acme", "ben"], env=env)
    assert revoked.exit_code == 0 and "acme/ben" in revoked.output
    listed = runner.invoke(main, ["tenants", "list"], env=env).stdout.splitlines()
    assert [line.split("\t")[:2] for line in listed[1:]] == [
        ["acme/ana", "active"],
        ["acme/ben", "revoked"],
    ]

    async def states() -> list[tuple[str | None, str | None] | None]:
        services = report_services(topics)
        try:
            entries = [
                await services.tenants.lookup(key.stdout.strip()) for key in (first, second, other)
            ]
            return [None if e is None else (e.state, e.reporter_id) for e in entries]
        finally:
            await services.close()

    assert asyncio.run(states()) == [("rotated", "ana"), ("active", "ana"), ("revoked", "ben")]
