"""``l2loop tenants``: tenants and reporters, and the report API keys they are issued."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import click

from l2loop.cli.clients import T, pass_attached, with_redis
from l2loop.settings import Settings
from l2loop.stores.tenants import ReporterRecord, TenantError, TenantKeys, TenantRecord

_TENANT_ID = click.argument("tenant_id")
_REPORTER_ID = click.argument("reporter_id")


def _with_keys(settings: Settings, call: Callable[[TenantKeys], Awaitable[T]]) -> T:
    """Runs ``call`` on the tenants' keys; a refusal (an unknown or invalid id) is one line."""
    try:
        return with_redis(
            settings, lambda client: call(TenantKeys(client, key_prefix=settings.topic_prefix))
        )
    except TenantError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def tenants() -> None:
    """Tenants and their report API keys (only hashes are stored)."""


@tenants.command("add")
@_TENANT_ID
@pass_attached
def tenants_add(live: Settings, tenant_id: str) -> None:
    """Register TENANT_ID and print its key: shown once, never stored."""
    click.echo(_with_keys(live, lambda keys: keys.add(tenant_id)))


@tenants.command("rotate")
@_TENANT_ID
@pass_attached
def tenants_rotate(live: Settings, tenant_id: str) -> None:
    """Print a new key for TENANT_ID; the old one stops working at once."""
    click.echo(_with_keys(live, lambda keys: keys.rotate(tenant_id)))


@tenants.command("revoke")
@_TENANT_ID
@pass_attached
def tenants_revoke(live: Settings, tenant_id: str) -> None:
    """Revoke TENANT_ID's key: its HTTP and Kafka reports are refused until `rotate`."""
    record = _with_keys(live, lambda keys: keys.revoke(tenant_id))
    click.echo(f"revoked {record.tenant_id}")


@tenants.command("add-reporter")
@_TENANT_ID
@_REPORTER_ID
@pass_attached
def tenants_add_reporter(live: Settings, tenant_id: str, reporter_id: str) -> None:
    """Print a key of REPORTER_ID of TENANT_ID, shown once: its reports count as a voice of
    their own (a tenant key is one voice whatever reporter ids it sends). Again for the same
    reporter: a new key, and the old one stops working at once."""
    click.echo(_with_keys(live, lambda keys: keys.issue_reporter(tenant_id, reporter_id)))


@tenants.command("revoke-reporter")
@_TENANT_ID
@_REPORTER_ID
@pass_attached
def tenants_revoke_reporter(live: Settings, tenant_id: str, reporter_id: str) -> None:
    """Revoke the key of REPORTER_ID of TENANT_ID."""
    record = _with_keys(live, lambda keys: keys.revoke_reporter(tenant_id, reporter_id))
    click.echo(f"revoked {record.tenant_id}/{record.reporter_id}")


@tenants.command("list")
@pass_attached
def tenants_list(live: Settings) -> None:
    """Every tenant (id, state, created, key issued), then every reporter key
    (tenant/reporter, state, key issued)."""

    async def both(keys: TenantKeys) -> tuple[list[TenantRecord], list[ReporterRecord]]:
        return await keys.list(), await keys.reporters()

    tenants_, reporters = _with_keys(live, both)
    for record in tenants_:
        state = "active" if record.active else "revoked"
        click.echo(
            f"{record.tenant_id}\t{state}\t{record.created_at:%Y-%m-%d %H:%M}\t"
            f"{record.key_issued_at:%Y-%m-%d %H:%M}"
        )
    for reporter in reporters:
        state = "active" if reporter.active else "revoked"
        click.echo(
            f"{reporter.tenant_id}/{reporter.reporter_id}\t{state}\t"
            f"{reporter.key_issued_at:%Y-%m-%d %H:%M}"
        )
