"""The support behind each curated example, in Redis: the distinct reporters, tenants,
reports and principals that claimed a text under a label (``rules.Support``), from which
``rules.example_strength`` weighs the example. The report agent claims support for what it
curates; a review that releases a report claims it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import redis.asyncio as aioredis

from l2loop.schemas.reports import LabelReport
from l2loop.streams.defences.rules import Support, claimed_label, principal

# KEYS: reporters, tenants, report ids, principals of the example under this label;
# reporters of the example under the other label.
# ARGV: reporter, tenant, report id, check conflict, keep s, principal.
_SUPPORT: Final = """
if ARGV[4] == '1' and redis.call('SCARD', KEYS[5]) > 0 then
  return {0, redis.call('SCARD', KEYS[5]), 0, {}, 0}
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[6])
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return {1, redis.call('SCARD', KEYS[1]), redis.call('SCARD', KEYS[2]),
        redis.call('SMEMBERS', KEYS[3]), redis.call('SCARD', KEYS[4])}
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """Support the example gained from one report, or the count that contradicts it."""

    agreed: bool
    support: Support


class ExampleSupport:
    """Distinct reporters, tenants and reports behind each curated text and label, in Redis."""

    def __init__(self, client: aioredis.Redis, *, key_prefix: str, keep_s: int) -> None:
        self._prefix = key_prefix
        self._keep_s = keep_s
        self._script = client.register_script(_SUPPORT)
        self._client = client

    def _keys(self, example_id: str, label: int) -> list[str]:
        base = f"{self._prefix}example:{example_id}"
        return [
            f"{base}:{label}:reporters",
            f"{base}:{label}:tenants",
            f"{base}:{label}:reports",
            f"{base}:{label}:principals",
            f"{base}:{1 - label}:reporters",
        ]

    async def claim(
        self, items: Sequence[tuple[LabelReport, str]], *, check_conflict: bool = True
    ) -> list[Claim]:
        """Adds each (report, example_id) to its example's support, in order, one round trip;
        with ``check_conflict``, a text already curated under the other label gains nothing."""
        if not items:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for report, example_id in items:
                await self._script(
                    keys=self._keys(example_id, claimed_label(report)),
                    args=[
                        f"{report.tenant_id}/{report.reporter_id}",
                        report.tenant_id,
                        report.report_id,
                        "1" if check_conflict else "0",
                        self._keep_s,
                        principal(report),
                    ],
                    client=pipe,
                )
            replies = await pipe.execute()
        claims = []
        for agreed, reporters, tenants, report_ids, principals in replies:
            ids = sorted(
                item.decode() if isinstance(item, bytes) else str(item) for item in report_ids
            )
            support = Support(ids, int(reporters), int(tenants), int(principals))
            claims.append(Claim(bool(agreed), support))
        return claims
