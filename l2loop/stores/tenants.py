"""Tenant API keys: issued once, kept only as hashes in Redis, rotated and revoked.

A key is 32 random bytes, so a plain sha256 is enough to store it: there is nothing to
guess that a slow hash would protect. A rotated or revoked key's hash stays behind, marked,
so that a client using it is told why it no longer works instead of "unknown key".
"""

from __future__ import annotations

import builtins
import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from l2loop.schemas.codec import to_bytes
from l2loop.schemas.common import EventTime, Identifier, utc_now

KEY_PREFIX = "l2k_"
_TENANT_ID: TypeAdapter[str] = TypeAdapter(Identifier)

KeyState = Literal["active", "rotated", "revoked"]


class TenantError(Exception):
    """A tenant command that cannot be done as asked; the message says why."""


class TenantRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: Identifier
    key_hash: str
    created_at: EventTime
    key_issued_at: EventTime
    revoked_at: EventTime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class KeyEntry(BaseModel):
    """What a key's hash points at: a tenant, or one reporter of a tenant."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: Identifier
    state: KeyState
    reporter_id: Identifier | None = None


class ReporterRecord(BaseModel):
    """An operator-issued reporter key: the reporter is a voice of its own (decision 0018)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: Identifier
    reporter_id: Identifier
    key_hash: str
    key_issued_at: EventTime
    revoked_at: EventTime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class TenantKeys:
    def __init__(self, client: aioredis.Redis, *, key_prefix: str) -> None:
        self._client = client
        self._tenants = f"{key_prefix}tenants"
        self._keys = f"{key_prefix}tenant-keys"
        self._reporters = f"{key_prefix}tenant-reporters"

    async def get(self, tenant_id: str) -> TenantRecord | None:
        raw = await self._client.hget(self._tenants, tenant_id)
        return None if raw is None else TenantRecord.model_validate_json(raw)

    async def get_many(self, tenant_ids: Sequence[str]) -> dict[str, TenantRecord]:
        if not tenant_ids:
            return {}
        wanted = sorted(set(tenant_ids))
        raws = await self._client.hmget(self._tenants, wanted)
        return {
            tenant: TenantRecord.model_validate_json(raw)
            for tenant, raw in zip(wanted, raws, strict=True)
            if raw is not None
        }

    async def list(self) -> list[TenantRecord]:
        raws = await self._client.hvals(self._tenants)
        records = [TenantRecord.model_validate_json(raw) for raw in raws]
        return sorted(records, key=lambda record: record.tenant_id)

    async def lookup(self, key: str) -> KeyEntry | None:
        """The tenant a presented key belongs to and the key's state; None if never issued."""
        raw = await self._client.hget(self._keys, hash_key(key))
        return None if raw is None else KeyEntry.model_validate_json(raw)

    async def _issue(self, tenant_id: str, *, created_at: datetime, old_hash: str | None) -> str:
        key = new_key()
        now = utc_now()
        record = TenantRecord(
            tenant_id=tenant_id, key_hash=hash_key(key), created_at=created_at, key_issued_at=now
        )
        async with self._client.pipeline(transaction=True) as pipe:
            if old_hash is not None:
                pipe.hset(
                    self._keys, old_hash, to_bytes(KeyEntry(tenant_id=tenant_id, state="rotated"))
                )
            pipe.hset(
                self._keys, record.key_hash, to_bytes(KeyEntry(tenant_id=tenant_id, state="active"))
            )
            pipe.hset(self._tenants, tenant_id, to_bytes(record))
            await pipe.execute()
        return key

    async def add(self, tenant_id: str) -> str:
        """Registers ``tenant_id`` and returns its key; the key is not stored anywhere."""
        try:
            _TENANT_ID.validate_python(tenant_id)
        except ValidationError as exc:
            message = exc.errors(include_url=False)[0]["msg"]
            raise TenantError(f"tenant id {tenant_id!r}: {message}") from None
        if await self.get(tenant_id) is not None:
            raise TenantError(f"tenant {tenant_id!r} exists; use rotate for a new key")
        return await self._issue(tenant_id, created_at=utc_now(), old_hash=None)

    async def rotate(self, tenant_id: str) -> str:
        """A new key for ``tenant_id``; the old one stops working at once. Re-activates a
        revoked tenant."""
        record = await self.get(tenant_id)
        if record is None:
            raise TenantError(f"no tenant {tenant_id!r}")
        return await self._issue(tenant_id, created_at=record.created_at, old_hash=record.key_hash)

    async def revoke(self, tenant_id: str) -> TenantRecord:
        record = await self.get(tenant_id)
        if record is None:
            raise TenantError(f"no tenant {tenant_id!r}")
        revoked = record.model_copy(update={"revoked_at": utc_now()})
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._keys,
                record.key_hash,
                to_bytes(KeyEntry(tenant_id=tenant_id, state="revoked")),
            )
            pipe.hset(self._tenants, tenant_id, to_bytes(revoked))
            await pipe.execute()
        return revoked

    @staticmethod
    def _reporter_field(tenant_id: str, reporter_id: str) -> str:
        return f"{len(tenant_id)}:{tenant_id}:{reporter_id}"

    async def reporter(self, tenant_id: str, reporter_id: str) -> ReporterRecord | None:
        raw = await self._client.hget(self._reporters, self._reporter_field(tenant_id, reporter_id))
        return None if raw is None else ReporterRecord.model_validate_json(raw)

    async def reporters(self, tenant_id: str | None = None) -> builtins.list[ReporterRecord]:
        raws = await self._client.hvals(self._reporters)
        records = [ReporterRecord.model_validate_json(raw) for raw in raws]
        return sorted(
            (r for r in records if tenant_id is None or r.tenant_id == tenant_id),
            key=lambda r: (r.tenant_id, r.reporter_id),
        )

    async def issue_reporter(self, tenant_id: str, reporter_id: str) -> str:
        """A key of ``reporter_id`` of ``tenant_id`` (a new one, or one replacing the
        reporter's current key, which stops working at once); the key is not stored."""
        tenant = await self.get(tenant_id)
        if tenant is None or not tenant.active:
            raise TenantError(f"no active tenant {tenant_id!r}")
        old = await self.reporter(tenant_id, reporter_id)
        key = new_key()
        record = ReporterRecord(
            tenant_id=tenant_id,
            reporter_id=reporter_id,
            key_hash=hash_key(key),
            key_issued_at=utc_now(),
        )
        entry = KeyEntry(tenant_id=tenant_id, state="active", reporter_id=reporter_id)
        async with self._client.pipeline(transaction=True) as pipe:
            if old is not None:
                retired = entry.model_copy(update={"state": "rotated"})
                pipe.hset(self._keys, old.key_hash, to_bytes(retired))
            pipe.hset(self._keys, record.key_hash, to_bytes(entry))
            pipe.hset(
                self._reporters, self._reporter_field(tenant_id, reporter_id), to_bytes(record)
            )
            await pipe.execute()
        return key

    async def revoke_reporter(self, tenant_id: str, reporter_id: str) -> ReporterRecord:
        record = await self.reporter(tenant_id, reporter_id)
        if record is None:
            raise TenantError(f"no reporter {reporter_id!r} of {tenant_id!r}")
        revoked = record.model_copy(update={"revoked_at": utc_now()})
        entry = KeyEntry(tenant_id=tenant_id, state="revoked", reporter_id=reporter_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys, record.key_hash, to_bytes(entry))
            pipe.hset(
                self._reporters, self._reporter_field(tenant_id, reporter_id), to_bytes(revoked)
            )
            await pipe.execute()
        return revoked
