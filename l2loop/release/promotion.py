"""Promotion, the one place a model is made current: the registry's ``current`` pointer
moves to a registered version (``ModelPointer.promote``), then the suppressions its
training data covers expire, and the promotion is logged.

The retraining job and ``l2loop model promote`` both promote here (``promote`` opens its own
Redis connection, ``promote_version`` takes one the caller holds), so a model is never
current while the suppressions it learnt still hide its verdicts, nor the other way round,
whichever path promoted it. ``roll_back`` is the way back: the previous model is current
again and the suppressions the undone promotion expired apply again.
"""

from __future__ import annotations

from datetime import datetime

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict

from l2loop.logs import get_logger
from l2loop.resilience import Backoff, retry_until_done
from l2loop.schemas.suppressions import Suppression
from l2loop.settings import Settings
from l2loop.stores.suppressions import SuppressionStore
from l2loop.stores.verdicts import connected
from l2model.registry import CurrentModel, ModelPointer, ModelRegistry, RegistryError

log = get_logger(__name__)


class Promotion(BaseModel):
    model_config = ConfigDict(frozen=True)

    current: CurrentModel
    trained_through: datetime | None
    expired: list[Suppression]


async def promote_version(
    client: aioredis.Redis,
    registry: ModelRegistry,
    version: str,
    *,
    key_prefix: str,
    backoff: Backoff,
) -> Promotion:
    """Makes the registered ``version`` current; running scorers follow the pointer between
    batches. Raises ``RegistryError`` when the version is not registered."""
    meta = registry.get(version)
    pointer = ModelPointer(client, key_prefix=key_prefix)
    current = await retry_until_done(
        lambda: pointer.promote(registry, version),
        dependency="redis",
        what="model_promote",
        backoff=backoff,
    )
    expired: list[Suppression] = []
    through = meta.trained_through
    if through is not None:
        store = SuppressionStore(client, key_prefix=key_prefix, backoff=backoff)
        # After the pointer moved: a crash between the two is repaired by promoting again.
        expired = await retry_until_done(
            lambda: store.expire_before(through, version=version),
            dependency="redis",
            what="suppressions_expire",
            backoff=backoff,
        )
    log.info(
        "model_promoted",
        version=version,
        trained_through=None if through is None else through.isoformat(),
        suppressions_expired=len(expired),
    )
    return Promotion(current=current, trained_through=through, expired=expired)


async def promote(settings: Settings, registry: ModelRegistry, version: str) -> Promotion:
    """``promote_version`` on a Redis connection of its own, with the deployment's key prefix
    and backoff. Raises ``RegistryError`` when the version is not registered."""
    async with connected(settings.redis_dsn) as client:
        return await promote_version(
            client, registry, version, key_prefix=settings.topic_prefix, backoff=settings.backoff
        )


class Rollback(BaseModel):
    model_config = ConfigDict(frozen=True)

    current: CurrentModel
    left: CurrentModel | None
    restored: list[Suppression]


async def roll_back(
    client: aioredis.Redis, registry: ModelRegistry, *, key_prefix: str
) -> Rollback:
    """Points the scorers back at the model current before the last promotion; the
    suppressions that promotion expired apply again, since the restored model never learnt
    them. Raises ``RegistryError`` when there is nothing to roll back to."""
    pointer = ModelPointer(client, key_prefix=key_prefix)
    left = await pointer.current()
    current = await pointer.rollback()
    if left is None:
        return Rollback(current=current, left=None, restored=[])
    try:
        through = registry.get(current.version).trained_through
    except RegistryError:
        through = None
    store = SuppressionStore(client, key_prefix=key_prefix)
    restored = await store.restore_expired_by(left.version, trained_through=through)
    log.info(
        "model_rolled_back",
        version=current.version,
        left=left.version,
        suppressions_restored=len(restored),
    )
    return Rollback(current=current, left=left, restored=restored)
