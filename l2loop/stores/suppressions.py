"""Suppressions: fast relief for a confirmed false positive, before the next model learns it.

A suppression is made only from a curated false-positive example that the defences accepted
with enough confidence: ``reporter_count`` (distinct reporters) at least the quorum, or
released by a person in review (``released_in_review``). It is per
tenant and keyed by the hash of the normalised text (``l2model.record.text_key``); the
scorer asks about a whole batch in one Redis command and answers ``allow`` with
``suppressed: true``, keeping the model's score.

Redis keys (prefix = the topic prefix):

- ``suppressions:active``: hash ``{tenant}|{text_key}`` -> Suppression (JSON); the scorer's
  HMGET reads it.
- ``suppressions:ended``: the same fields -> EndedSuppression: revoked by a person, or expired
  because a model trained on it was promoted. Kept for audit.
- ``suppressions:cutoff``: the training-data cut-off of the last promoted model that had one;
  a revision curated before it is already in that model's training data and makes none.

Rolling a promotion back (``restore_expired_by``) makes what it expired apply again.

A suppression's ``created_at`` is the ``curated_at`` of the revision that confirmed it, so a
replayed record recreates nothing and changes nothing (HSETNX).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Sequence
from datetime import datetime
from typing import cast

import redis.asyncio as aioredis

from l2loop.resilience import DEFAULT_BACKOFF, Backoff, retry_until_done
from l2loop.schemas.reports import CuratedExample
from l2loop.schemas.suppressions import PREVIEW_CHARS, EndedSuppression, Suppression
from l2model.record import BENIGN, text_key


def member(tenant_id: str, key: str) -> str:
    # text_key is always 64 hex characters at the end, so whatever characters a tenant id
    # holds, one field names exactly one (tenant, text).
    return f"{tenant_id}|{key}"


def member_of(item: Suppression) -> str:
    return member(item.tenant_id, item.text_key)


def confirms_suppression(example: CuratedExample, quorum: int) -> bool:
    """Whether an accepted example is a false positive confirmed well enough to suppress."""
    return (
        example.report_kind == "false_positive"
        and example.family == BENIGN
        and (example.reporter_count >= quorum or example.released_in_review)
    )


def suppression_of(example: CuratedExample, *, preview: bool = True) -> Suppression:
    return Suppression(
        tenant_id=example.tenant_id,
        text_key=text_key(example.text),
        created_at=example.curated_at,
        source=example.source,
        reporter_count=example.reporter_count,
        confidence=example.confidence,
        event_id=example.event_id,
        model_version=example.model_version,
        model_score=example.model_score,
        preview=example.text[:PREVIEW_CHARS] if preview else "",
    )


def _still_ended(example: CuratedExample, ended: EndedSuppression) -> bool:
    """A revocation by a person stands against quorums; only a later review release lifts it."""
    if ended.ended != "revoked":
        return False
    return not (example.released_in_review and example.curated_at > ended.ended_at)


class SuppressionStore:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        key_prefix: str,
        backoff: Backoff = DEFAULT_BACKOFF,
        previews: bool = True,
    ) -> None:
        """``previews``: keep the text's first characters for ``l2loop suppressions list``
        (off when texts may be kept only for a while: suppressions last until a promotion)."""
        self._client = client
        self._previews = previews
        self._active = f"{key_prefix}suppressions:active"
        self._ended = f"{key_prefix}suppressions:ended"
        self._cutoff = f"{key_prefix}suppressions:cutoff"
        self._backoff = backoff

    async def suppressed_among(self, candidates: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """The (tenant, text_key) pairs that are suppressed: one HMGET, however many asked."""
        pairs = list(dict.fromkeys(candidates))
        if not pairs:
            return set()
        fields = [member(tenant, key) for tenant, key in pairs]
        found = await retry_until_done(
            lambda: cast(Awaitable[list[bytes | None]], self._client.hmget(self._active, fields)),
            dependency="redis",
            what="suppressions_lookup",
            backoff=self._backoff,
        )
        return {pair for pair, value in zip(pairs, found, strict=True) if value is not None}

    async def create_from(
        self, examples: Sequence[CuratedExample], quorum: int
    ) -> list[Suppression]:
        """Makes a suppression of each confirmed FP that has none; returns the new ones."""
        wanted: dict[str, tuple[CuratedExample, Suppression]] = {}
        for example in examples:
            if confirms_suppression(example, quorum):
                made = suppression_of(example, preview=self._previews)
                # The earliest confirming revision of a batch is when the suppression was made.
                wanted.setdefault(member_of(made), (example, made))
        if not wanted:
            return []
        fields = list(wanted)

        async def read_state() -> list[object]:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(self._cutoff)
                pipe.hmget(self._ended, fields)
                return cast(list[object], await pipe.execute())

        cutoff_raw, ended_raw = await retry_until_done(
            read_state, dependency="redis", what="suppressions_state", backoff=self._backoff
        )
        cutoff = datetime.fromisoformat(cast(bytes, cutoff_raw).decode()) if cutoff_raw else None
        creating: list[Suppression] = []
        for name, raw in zip(fields, cast(list[bytes | None], ended_raw), strict=True):
            example, made = wanted[name]
            if cutoff is not None and example.curated_at < cutoff:
                continue
            if raw is not None and _still_ended(example, EndedSuppression.model_validate_json(raw)):
                continue
            creating.append(made)
        if not creating:
            return []

        async def write() -> list[object]:
            async with self._client.pipeline(transaction=False) as pipe:
                for item in creating:
                    pipe.hsetnx(self._active, member_of(item), item.model_dump_json())
                return cast(list[object], await pipe.execute())

        created = await retry_until_done(
            write, dependency="redis", what="suppressions_create", backoff=self._backoff
        )
        return [item for item, new in zip(creating, created, strict=True) if new]

    async def count(self) -> int:
        """How many suppressions are active, over every tenant."""
        return int(await self._client.hlen(self._active))

    async def active(self, tenant_id: str | None = None) -> list[Suppression]:
        raw = cast(dict[bytes, bytes], await self._client.hgetall(self._active))
        found = [Suppression.model_validate_json(value) for value in raw.values()]
        return sorted(
            (item for item in found if tenant_id is None or item.tenant_id == tenant_id),
            key=lambda item: (item.tenant_id, item.created_at),
        )

    async def ended(self, tenant_id: str | None = None) -> list[EndedSuppression]:
        raw = cast(dict[bytes, bytes], await self._client.hgetall(self._ended))
        found = [EndedSuppression.model_validate_json(value) for value in raw.values()]
        return sorted(
            (
                item
                for item in found
                if tenant_id is None or item.suppression.tenant_id == tenant_id
            ),
            key=lambda item: (item.suppression.tenant_id, item.ended_at),
        )

    async def revoke(self, tenant_id: str, key: str, *, by: str, reason: str) -> Suppression | None:
        """Ends one suppression now; None when it is not active."""
        name = member(tenant_id, key)
        raw = cast(bytes | None, await self._client.hget(self._active, name))
        if raw is None:
            return None
        item = Suppression.model_validate_json(raw)
        ended = EndedSuppression(suppression=item, ended="revoked", by=by, reason=reason)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hdel(self._active, name)
            pipe.hset(self._ended, name, ended.model_dump_json())
            await pipe.execute()
        return item

    async def restore_expired_by(
        self, version: str, *, trained_through: datetime | None
    ) -> list[Suppression]:
        """``version`` was rolled back: what its promotion expired applies again, and the
        cut-off becomes the restored model's (``trained_through``, None when it has none)."""
        returning = [
            item.suppression
            for item in await self.ended()
            if item.ended == "expired"
            and item.by == version
            and (trained_through is None or item.suppression.created_at >= trained_through)
        ]
        async with self._client.pipeline(transaction=True) as pipe:
            for item in returning:
                pipe.hdel(self._ended, member_of(item))
                # One made anew after the expiry, if any, stays as it is.
                pipe.hsetnx(self._active, member_of(item), item.model_dump_json())
            if trained_through is None:
                pipe.delete(self._cutoff)
            else:
                pipe.set(self._cutoff, trained_through.isoformat())
            await pipe.execute()
        return returning

    async def expire_before(self, trained_through: datetime, *, version: str) -> list[Suppression]:
        """A model whose training data reaches ``trained_through`` was promoted: the
        suppressions made before then are in its training data and end."""
        expiring = [item for item in await self.active() if item.created_at < trained_through]
        async with self._client.pipeline(transaction=True) as pipe:
            for item in expiring:
                ended = EndedSuppression(
                    suppression=item,
                    ended="expired",
                    by=version,
                    reason=f"model {version} is trained through {trained_through.isoformat()}",
                )
                pipe.hdel(self._active, member_of(item))
                pipe.hset(self._ended, member_of(item), ended.model_dump_json())
            pipe.set(self._cutoff, trained_through.isoformat())
            await pipe.execute()
        return expiring
