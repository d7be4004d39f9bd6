"""Alert state in Redis: one record of truth for every evaluator, receiver and reader.

Keys (all under the topic prefix):

- ``alerts:state`` HASH alert id -> ``firing`` | ``resolved``: an id that ever fired never
  fires again, so each window and rule alerts at most once however many evaluators run;
- ``alerts:open`` HASH alert id -> the firing Alert;
- ``alerts:history`` ZSET of every state change (Alert JSON), scored by time, trimmed;
- ``alerts:outbox:<receiver>`` LIST of state changes a receiver has not acknowledged yet.

One Lua script makes a change: it checks the state, records it and queues it for every
receiver in one step, so two evaluators that see the same window cannot both fire it, and a
change recorded is a change delivered even if the worker dies right after.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
from pydantic import ValidationError

from l2loop.logs import get_logger
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.windows import Alert, WindowStats, window_field
from l2loop.settings import Settings

log = get_logger(__name__)

# KEYS: state, open, history, outbox...   ARGV: id, status, alert JSON, score, history max,
# outbox max. Returns 1 when the change was made, 0 when the state forbids it.
_CHANGE_SCRIPT = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == 'firing' then
  if current then return 0 end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
else
  if current ~= 'firing' then return 0 end
  redis.call('HDEL', KEYS[2], ARGV[1])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[5]) + 1))
for i = 4, #KEYS do
  redis.call('RPUSH', KEYS[i], ARGV[3])
  redis.call('LTRIM', KEYS[i], -tonumber(ARGV[6]), -1)
end
return 1
"""

_DROP_HEAD_SCRIPT = """
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then redis.call('LPOP', KEYS[1]) end
return 1
"""


@dataclass(frozen=True, slots=True)
class Change:
    """A state change to record: ``alert`` in its new state, under ``alert_id``."""

    alert_id: str
    alert: Alert


# The receivers' names: each has its outbox (``alerts:outbox:<name>``). The alerts topic
# always receives; Alertmanager and the webhook when the settings name them.
TOPIC_RECEIVER, ALERTMANAGER_RECEIVER, WEBHOOK_RECEIVER = "topic", "alertmanager", "webhook"


def receiver_names(settings: Settings) -> list[str]:
    names = [TOPIC_RECEIVER]
    if settings.alertmanager_url:
        names.append(ALERTMANAGER_RECEIVER)
    if settings.alert_webhook_url:
        names.append(WEBHOOK_RECEIVER)
    return names


def fingerprint(labels: Mapping[str, str]) -> str:
    """An alert's identity in every receiver: a hash of its labels, as Alertmanager's."""
    text = "\x00".join(f"{key}\x01{labels[key]}" for key in sorted(labels))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _alerts(raw: Sequence[bytes]) -> list[Alert]:
    alerts = []
    for item in raw:
        try:
            alerts.append(Alert.model_validate_json(item))
        except ValidationError as exc:
            # Written by this module; a foreign value is skipped, never allowed to wedge a reader.
            log.error("alert_unreadable", error=str(exc).splitlines()[0], raw=item[:200])
    return alerts


def _open_by_id(raw: Mapping[bytes, bytes]) -> dict[str, Alert]:
    found = {}
    for key, value in raw.items():
        for alert in _alerts([value]):
            found[key.decode()] = alert
    return found


def _windows(raw: Sequence[bytes | None]) -> list[WindowStats]:
    windows = []
    for item in raw:
        if item is None:
            continue
        try:
            windows.append(WindowStats.model_validate_json(item))
        except ValidationError as exc:
            log.error("window_unreadable", error=str(exc).splitlines()[0], raw=item[:200])
    return windows


class AlertStore:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        key_prefix: str,
        receivers: Sequence[str] = (),
        history: int = 1000,
        outbox_max: int = 10_000,
    ) -> None:
        self._client = client
        self._prefix = key_prefix
        self._state = f"{key_prefix}alerts:state"
        self._open = f"{key_prefix}alerts:open"
        self._history_key = f"{key_prefix}alerts:history"
        self._windows = f"{key_prefix}windows:latest"
        self._outboxes = [self.outbox_key(name) for name in receivers]
        self._history = history
        self._outbox_max = outbox_max
        self._change = client.register_script(_CHANGE_SCRIPT)
        self._drop_head = client.register_script(_DROP_HEAD_SCRIPT)

    def outbox_key(self, receiver: str) -> str:
        return f"{self._prefix}alerts:outbox:{receiver}"

    async def open_alerts(self) -> dict[str, Alert]:
        raw = cast(dict[bytes, bytes], await self._client.hgetall(self._open))
        return _open_by_id(raw)

    async def apply(self, changes: Sequence[Change]) -> list[Alert]:
        """Records ``changes`` in one round trip; returns those the state allowed."""
        if not changes:
            return []
        keys = [self._state, self._open, self._history_key, *self._outboxes]
        async with self._client.pipeline(transaction=False) as pipe:
            for change in changes:
                alert = change.alert
                await self._change(
                    keys=keys,
                    args=[
                        change.alert_id,
                        alert.status,
                        to_bytes(alert),
                        alert.changed_at.timestamp(),
                        self._history,
                        self._outbox_max,
                    ],
                    client=pipe,
                )
            made = await pipe.execute()
        return [change.alert for change, ok in zip(changes, made, strict=True) if ok]

    async def history(self, limit: int) -> list[Alert]:
        """The latest ``limit`` state changes, newest first."""
        raw = cast(list[bytes], await self._client.zrevrange(self._history_key, 0, limit - 1))
        return _alerts(raw)

    async def peek_outbox(self, receiver: str, count: int) -> list[bytes]:
        items = cast(
            list[bytes], await self._client.lrange(self.outbox_key(receiver), 0, count - 1)
        )
        return items

    async def drop_delivered(self, receiver: str, item: bytes) -> None:
        """Removes the outbox's head if it is still ``item`` (another worker may have)."""
        await self._drop_head(keys=[self.outbox_key(receiver)], args=[item])

    async def windows(self, fields: Sequence[str]) -> list[WindowStats]:
        if not fields:
            return []
        raw = cast(list[bytes | None], await self._client.hmget(self._windows, list(fields)))
        return _windows(raw)

    async def open_and_windows(
        self, fields: Sequence[str]
    ) -> tuple[dict[str, Alert], dict[str, WindowStats]]:
        """The open alerts and the named windows, in one round trip."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._open)
            if fields:
                pipe.hmget(self._windows, list(fields))
            results = await pipe.execute()
        open_alerts = _open_by_id(results[0])
        windows = {
            window_field(w.window_start, w.model_version): w
            for w in (_windows(results[1]) if fields else [])
        }
        return open_alerts, windows

    async def recent_windows(self, hours: int) -> list[WindowStats]:
        """Every model version's windows of the ``hours`` hours up to the newest, oldest first.

        Counted back from the newest window rather than from the clock, so that a replayed
        or stalled loop still shows its last data.
        """
        fields = cast(list[bytes], await self._client.hkeys(self._windows))
        if not fields:
            return []
        starts = [int(field.split(b"|", 1)[0]) for field in fields]
        cutoff = max(starts) - (hours - 1) * 3600
        wanted = [f.decode() for f, start in zip(fields, starts, strict=True) if start >= cutoff]
        windows = await self.windows(wanted)
        return sorted(windows, key=lambda w: (w.window_start, w.model_version))
