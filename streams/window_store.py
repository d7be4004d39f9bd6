"""Window state in Redis, applied effectively once (docs/decisions/0008-window-state.md).

Keys, all under ``{topic_prefix}windows:``:

- ``mark:{topic}:{partition}`` (hash ``offset``, ``watermark``): the last applied offset of a
  source partition and its event-time watermark;
- ``win:{start}|{version}`` (hash): a window's counters, latency histogram buckets
  (``m:{i}`` model time, ``e:{i}`` event to verdict) and ``revision``; ``win:{start}|*`` the
  hour's counters that no model version owns (dead letters, model failures, verdicts);
- ``versions:{start}`` (set): the model versions that have a window in that hour;
- ``seen:{hour}`` (set, short TTL): records already counted, against scorer duplicates;
  ``reported_fp:{start}|{version}`` / ``reported_fn:...``: events already reported;
- ``totals`` (hash): ``too_late:{kind}`` and ``rejected:{reason}``, counted once;
- ``latest`` (hash, the contract the API and the alert evaluator read): field
  ``"{start}|{version}"`` -> the newest WindowStats JSON; ``latest_rev`` its revision.

One Lua script applies a whole batch: per partition, the deltas and the new mark together,
and only past the mark. Redis runs a script atomically, so no worker ever sees, or leaves, a
delta applied without its mark. (The script derives its keys from a prefix argument, which
a single Redis or Valkey accepts; a Redis Cluster would need the keys declared and in one
hash slot.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

from l2loop.schemas.codec import to_bytes
from l2loop.schemas.windows import WindowStats, window_field
from l2loop.streams.window_state import (
    HOUR,
    NO_MODEL,
    ApplyOutcome,
    PartitionDelta,
    PartitionMark,
    SourcePartition,
    WindowCounts,
)

# ARGV[1] key prefix, ARGV[2] window TTL (s), ARGV[3] dedupe TTL (s), ARGV[4] deltas (JSON,
# as PartitionDelta.to_json: the distinct shapes of contribution, and per dedupe set its
# members with the index of each one's shape), ARGV[5] the hour pseudo-version, ARGV[6] the
# placeholder version of an hour without one.
# Returns {conflicts, windows}; a window is {start, version, revision, fields, hour_fields}.
#
# Redis runs nothing else while a script runs, and each redis.call costs a few µs: so the
# script asks which members are new with one SMISMEMBER and adds them with one SADD per set,
# sums what the new ones add in Lua tables, and increments each counter once. (One SADD and
# a few HINCRBY a record held the server for about 5 ms a batch of 256, and with it the
# score agent's round trips.)
_APPLY = """
local p = ARGV[1]
local window_ttl = tonumber(ARGV[2])
local dedupe_ttl = tonumber(ARGV[3])
local deltas = cjson.decode(ARGV[4])
local HOUR, NO_MODEL = ARGV[5], ARGV[6]
local conflicts = {}
local changed = {}       -- "start|version" -> {start, version}
local hours = {}         -- start -> true: hour counters changed
local reread = {}        -- windows of skipped deltas: rendered again, unchanged
local expiring = {}      -- key -> ttl
local adds = {}          -- key -> {field -> n}: the increments, summed

local function window_key(s, v) return p .. 'win:' .. s .. '|' .. v end
-- Lua's unpack is bounded by its C stack: large sets of members go in slices.
local SLICE = 1000

local function add(key, counts, times)
  local fields = adds[key]
  if not fields then fields = {}; adds[key] = fields end
  for name, n in pairs(counts) do fields[name] = (fields[name] or 0) + n * times end
end

for _, d in ipairs(deltas) do
  local mark = p .. 'mark:' .. d.src
  local stored = tonumber(redis.call('HGET', mark, 'offset') or '-1')
  if stored >= d.last then
    for _, o in ipairs(d.shapes) do
      if o.v then reread[o.s .. '|' .. o.v] = {o.s, o.v} else hours[o.s] = hours[o.s] or false end
    end
  elseif stored >= d.first then
    table.insert(conflicts, d.src)
  else
    local times = {}     -- shape index -> members new in their set
    for _, g in ipairs(d.sets) do
      local set = p .. g.d
      local new = 0
      for i = 1, #g.m, SLICE do
        local last = math.min(i + SLICE - 1, #g.m)
        local present = redis.call('SMISMEMBER', set, unpack(g.m, i, last))
        local fresh = 0
        for j, here in ipairs(present) do
          if here == 0 then
            local k = g.k[i + j - 1] + 1
            times[k] = (times[k] or 0) + 1
            fresh = fresh + 1
          end
        end
        if fresh > 0 then redis.call('SADD', set, unpack(g.m, i, last)) end
        new = new + fresh
      end
      if new > 0 then expiring[set] = (g.x == 1) and dedupe_ttl or window_ttl end
    end
    for k, n in pairs(times) do
      local o = d.shapes[k]
      if o.v then
        add(window_key(o.s, o.v), o.c, n)
        if not changed[o.s .. '|' .. o.v] then
          changed[o.s .. '|' .. o.v] = {o.s, o.v}
          redis.call('SADD', p .. 'versions:' .. o.s, o.v)
          expiring[p .. 'versions:' .. o.s] = window_ttl
        end
      end
      if o.h then
        local key = window_key(o.s, HOUR)
        add(key, o.h, n)
        hours[o.s] = true
        expiring[key] = window_ttl
      end
    end
    add(p .. 'totals', d.tot, 1)
    if d.wm == cjson.null then
      redis.call('HSET', mark, 'offset', d.last)
    else
      redis.call('HSET', mark, 'offset', d.last, 'watermark', d.wm)
    end
  end
end
for key, fields in pairs(adds) do
  for name, n in pairs(fields) do redis.call('HINCRBY', key, name, n) end
end

-- A changed hour changes every version's window of that hour (dead letters, error rate).
for s, moved in pairs(hours) do
  local versions = redis.call('SMEMBERS', p .. 'versions:' .. s)
  if #versions == 0 then versions = {NO_MODEL} end
  for _, v in ipairs(versions) do
    if moved then changed[s .. '|' .. v] = {s, v} else reread[s .. '|' .. v] = {s, v} end
  end
end

local windows = {}
local function emit(w, bump)
  local key = window_key(w[1], w[2])
  if bump then
    redis.call('HINCRBY', key, 'revision', 1)
    expiring[key] = window_ttl
  end
  table.insert(windows, {tostring(w[1]), w[2], redis.call('HGETALL', key),
                         redis.call('HGETALL', window_key(w[1], HOUR))})
end
for name, w in pairs(changed) do emit(w, true) end
for name, w in pairs(reread) do if not changed[name] then emit(w, false) end end
for key, ttl in pairs(expiring) do redis.call('EXPIRE', key, ttl) end
return {conflicts, windows}
"""

# ARGV[1] the latest hash, ARGV[2] its revisions, ARGV[3] NO_MODEL, then (field, revision,
# json) triples. A window's JSON is replaced only by one of an equal or higher revision, so
# a slow worker never overwrites a newer one; an hour's NO_MODEL placeholder goes once a
# model version has a window there.
_SAVE_LATEST = """
local latest, revisions, NO_MODEL = ARGV[1], ARGV[2], ARGV[3]
for i = 4, #ARGV, 3 do
  local field, revision = ARGV[i], tonumber(ARGV[i + 1])
  local stored = tonumber(redis.call('HGET', revisions, field) or '0')
  if revision >= stored then
    redis.call('HSET', revisions, field, revision)
    redis.call('HSET', latest, field, ARGV[i + 2])
  end
  local start, version = string.match(field, '^([^|]*)|(.*)$')
  if version ~= NO_MODEL then
    redis.call('HDEL', latest, start .. '|' .. NO_MODEL)
    redis.call('HDEL', revisions, start .. '|' .. NO_MODEL)
  end
end
return 0
"""


def latest_key(topic_prefix: str) -> str:
    """The Redis hash of each window's newest WindowStats JSON (read by the API and alerts)."""
    return f"{topic_prefix}windows:latest"


def _pairs(flat: Sequence[bytes]) -> dict[str, int]:
    return {
        flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2) if flat[i] != b"revision"
    }


def _revision(flat: Sequence[bytes]) -> int:
    for i in range(0, len(flat), 2):
        if flat[i] == b"revision":
            return int(flat[i + 1])
    return 0


class RedisWindowState:
    """``streams.window_state.WindowState`` in Redis."""

    def __init__(
        self, client: aioredis.Redis, *, key_prefix: str, window_ttl_s: int, dedupe_ttl_s: int
    ) -> None:
        self._client = client
        self._prefix = f"{key_prefix}windows:"
        self._topic_prefix = key_prefix
        self._window_ttl_s = window_ttl_s
        self._dedupe_ttl_s = dedupe_ttl_s
        self._apply = client.register_script(_APPLY)
        self._save_latest = client.register_script(_SAVE_LATEST)

    async def marks(
        self, sources: Sequence[SourcePartition]
    ) -> dict[SourcePartition, PartitionMark]:
        async with self._client.pipeline(transaction=False) as pipe:
            for source in sources:
                pipe.hmget(f"{self._prefix}mark:{source.name}", "offset", "watermark")
            answers = await pipe.execute()
        return {
            source: PartitionMark(
                offset=-1 if offset is None else int(offset),
                watermark_ms=None if watermark is None else int(watermark),
            )
            for source, (offset, watermark) in zip(sources, answers, strict=True)
        }

    async def apply(self, deltas: Sequence[PartitionDelta]) -> ApplyOutcome:
        payload = orjson.dumps([delta.to_json() for delta in deltas])
        conflicts, windows = await self._apply(
            args=[self._prefix, self._window_ttl_s, self._dedupe_ttl_s, payload, HOUR, NO_MODEL]
        )
        by_name = {delta.source.name: delta.source for delta in deltas}
        return ApplyOutcome(
            windows=[
                WindowCounts(
                    start_ms=int(start) * 1000,
                    version=version.decode(),
                    revision=_revision(fields),
                    counts=_pairs(fields),
                    hour_counts=_pairs(hour),
                )
                for start, version, fields, hour in windows
            ],
            conflicts=[by_name[name.decode()] for name in conflicts],
        )

    async def save_latest(self, stats: Sequence[WindowStats]) -> None:
        latest = latest_key(self._topic_prefix)
        args: list[Any] = [latest, f"{latest}_rev", NO_MODEL]
        for window in stats:
            field = window_field(window.window_start, window.model_version)
            args += [field, window.revision, to_bytes(window)]
        await self._save_latest(args=args)

    async def close(self) -> None:
        await self._client.aclose()
