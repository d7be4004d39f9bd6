"""``l2loop suppressions``: list the tenants' suppressions of confirmed false positives, revoke
one."""

from __future__ import annotations

import click
import redis.asyncio as aioredis

from l2loop.cli.clients import pass_attached, with_redis
from l2loop.schemas.suppressions import EndedSuppression, Suppression
from l2loop.settings import Settings
from l2loop.stores.suppressions import SuppressionStore


@click.group()
def suppressions() -> None:
    """Confirmed false positives allowed per tenant until a model trained on them is promoted."""


@suppressions.command("list")
@click.option("--tenant", help="only this tenant's")
@click.option("--ended", is_flag=True, help="the revoked and expired ones instead")
@pass_attached
def suppressions_list(live: Settings, tenant: str | None, ended: bool) -> None:
    """One line each: tenant, text key, when it was made, reporters, source, text preview."""

    async def read(client: aioredis.Redis) -> list[Suppression] | list[EndedSuppression]:
        store = SuppressionStore(client, key_prefix=live.topic_prefix)
        return await (store.ended(tenant) if ended else store.active(tenant))

    for item in with_redis(live, read):
        if isinstance(item, EndedSuppression):
            made, why = item.suppression, f"\t{item.ended} {item.ended_at:%Y-%m-%dT%H:%M:%SZ}"
            why += f" by {item.by}: {item.reason}"
        else:
            made, why = item, ""
        click.echo(
            f"{made.tenant_id}\t{made.text_key}\t{made.created_at:%Y-%m-%dT%H:%M:%SZ}\t"
            f"{made.reporter_count}\t{made.source}\t{made.preview[:60]!r}{why}"
        )


@suppressions.command("revoke")
@click.argument("tenant")
@click.argument("text_key")
@click.option("--reason", required=True, help="why, kept with the revocation")
@click.option("--by", "by", default="operator", show_default=True, help="who revokes it")
@pass_attached
def suppressions_revoke(live: Settings, tenant: str, text_key: str, reason: str, by: str) -> None:
    """End TENANT's suppression of TEXT_KEY now; a later quorum does not bring it back (a
    later release in review does)."""
    revoked = with_redis(
        live,
        lambda client: SuppressionStore(client, key_prefix=live.topic_prefix).revoke(
            tenant, text_key, by=by, reason=reason
        ),
    )
    if revoked is None:
        raise click.ClickException(f"{tenant} has no active suppression of {text_key}")
    click.echo(f"revoked: {tenant}\t{text_key}")
