"""The demo's users: honest ones report flagged benign events as false positives, hostile
ones report real attacks as false positives, all over the HTTP API with their tenant's key.

``l2loop up`` runs this job beside the demo traffic. The traffic tells it which prompt each
event carried (``SentPrompts``; the demo knows which prompts are benign), the verdicts on
``scan-verdicts`` tell it which events the model flagged, and a moment later (the verdict
store holds them by then) it posts reports as a client would. Some honest events are
reported by a quorum of distinct users, so that curated examples become production-confirmed
and suppressions appear; hostile users report only attacks the model is confident about,
which the report agent must quarantine, never curate.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from l2loop.demo.traffic import TENANTS, Prompt
from l2loop.infra.clients import topic_reader
from l2loop.infra.topics import SCAN_VERDICTS
from l2loop.logs import get_logger
from l2loop.resilience import retry_until_done
from l2loop.schemas.dead_letters import DeadLetter
from l2loop.schemas.decoding import RawRecord, decode_record
from l2loop.schemas.verdicts import Verdict
from l2loop.settings import Settings
from l2loop.stores.tenants import TenantError, TenantKeys
from l2loop.stores.verdicts import connect
from l2loop.streams.alert_sinks import RECEIVER_ERRORS, ReceiverUnavailable

log = get_logger(__name__)


class SentPrompts:
    """The prompt of each recent demo event, by event id; the oldest are forgotten first."""

    def __init__(self, keep: int = 200_000) -> None:
        self._keep = keep
        self._prompts: OrderedDict[str, Prompt] = OrderedDict()

    def remember(self, event_id: str, prompt: Prompt) -> None:
        self._prompts[event_id] = prompt
        if len(self._prompts) > self._keep:
            self._prompts.popitem(last=False)

    def get(self, event_id: str) -> Prompt | None:
        return self._prompts.get(event_id)


@dataclass(frozen=True, slots=True)
class Reporting:
    """How the simulated users behave. Per tick (a second) at most ``honest_per_tick``
    flagged benign events are reported, each by a quorum of users with ``quorum_share``
    (else by one), and a hostile report goes out with ``hostile_chance``. With the default
    quotas (50 reports per reporter an hour) the caps keep honest users within them through
    a spike of several minutes; past that, the quota refusals show as rejected reports."""

    honest_per_tick: int = 4
    quorum_share: float = 0.5
    hostile_chance: float = 0.2
    users_per_tenant: int = 40
    hostile_users_per_tenant: int = 3
    delay_s: float = 1.0


@dataclass(frozen=True, slots=True)
class Candidate:
    verdict: Verdict
    prompt: Prompt


def candidate(verdict: Verdict, sent: SentPrompts, tenants: Sequence[str]) -> Candidate | None:
    """A flagged, unsuppressed demo event of a tenant that has a key, with its prompt."""
    prompt = sent.get(verdict.event_id)
    if prompt is None or not verdict.is_threat or verdict.suppressed:
        return None
    return Candidate(verdict, prompt) if verdict.tenant_id in tenants else None


def _report(verdict: Verdict, reporter: str, reason: str) -> dict[str, Any]:
    return {
        "report_id": f"demo-{uuid.uuid4().hex}",
        "event_id": verdict.event_id,
        "reporter_id": reporter,
        "kind": "false_positive",
        "reason": reason,
    }


def choose_reports(
    candidates: Sequence[Candidate],
    rng: random.Random,
    reporting: Reporting,
    *,
    quorum: int,
    high_confidence_score: float,
) -> dict[str, list[dict[str, Any]]]:
    """This tick's reports, by tenant. Honest users report benign prompts the model flagged;
    hostile users report attacks it scored at or above ``high_confidence_score``."""
    honest = [c for c in candidates if c.prompt.label == 0]
    hostile = [
        c for c in candidates if c.prompt.label == 1 and c.verdict.score >= high_confidence_score
    ]
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for candidate in rng.sample(honest, min(len(honest), reporting.honest_per_tick)):
        verdict = candidate.verdict
        count = quorum if rng.random() < reporting.quorum_share else 1
        users = rng.sample(range(reporting.users_per_tenant), count)
        by_tenant.setdefault(verdict.tenant_id, []).extend(
            _report(verdict, f"user-{user:03d}", "blocked a harmless prompt") for user in users
        )
    if hostile and rng.random() < reporting.hostile_chance:
        verdict = rng.choice(hostile).verdict
        user = rng.randrange(reporting.hostile_users_per_tenant)
        by_tenant.setdefault(verdict.tenant_id, []).append(
            _report(verdict, f"mallory-{user}", "this is fine, let it through")
        )
    return by_tenant


async def issue_keys(settings: Settings, tenants: Sequence[str]) -> dict[str, str]:
    """A fresh key for every demo tenant (added, or rotated when it exists already)."""
    client = connect(settings.redis_dsn)
    keys = TenantKeys(client, key_prefix=settings.topic_prefix)

    async def issue(tenant: str) -> str:
        try:
            return await keys.add(tenant)
        except TenantError:
            return await keys.rotate(tenant)

    try:
        issued = {}
        for tenant in tenants:
            issued[tenant] = await retry_until_done(
                functools.partial(issue, tenant),
                dependency="redis",
                what="issue_demo_tenant_key",
                backoff=settings.backoff,
            )
        return issued
    finally:
        await client.aclose()


async def post_reports(
    http: httpx.AsyncClient, key: str, reports: list[dict[str, Any]]
) -> httpx.Response:
    """Posts one tenant's batch; returns the answer. A 4xx is the API's final word on the
    batch (it counts each refusal itself); a 5xx or no answer is tried again."""
    response = await http.post(
        "/v1/reports", json=reports, headers={"authorization": f"Bearer {key}"}
    )
    if response.status_code >= 500:
        raise ReceiverUnavailable(f"reports API answered {response.status_code}")
    return response


async def run_demo_reporters(
    settings: Settings,
    stop: asyncio.Event,
    *,
    api_url: str,
    sent: SentPrompts,
    reporting: Reporting = Reporting(),
    seed: int = 11,
) -> int:
    """Reports on demo events until ``stop`` is set; returns how many reports it posted."""
    keys = await issue_keys(settings, TENANTS)
    rng = random.Random(seed)
    topic = settings.topic(SCAN_VERDICTS)
    consumer = topic_reader(settings, topic, from_beginning=False)
    await consumer.start()
    http = httpx.AsyncClient(base_url=api_url, timeout=settings.alert_receiver_timeout_s)
    pending: list[tuple[float, Candidate]] = []
    posted = 0
    next_tick = time.monotonic() + 1.0
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.monotonic()
            for tp, records in batches.items():
                for record in records:
                    raw = RawRecord(tp.topic, tp.partition, record.offset, record.key, record.value)
                    verdict = decode_record(raw, Verdict)
                    if isinstance(verdict, DeadLetter):
                        continue
                    found = candidate(verdict, sent, TENANTS)
                    if found is not None:
                        pending.append((now, found))
            if now < next_tick:
                continue
            next_tick = now + 1.0
            due = [c for seen, c in pending if seen <= now - reporting.delay_s]
            pending = [(seen, c) for seen, c in pending if seen > now - reporting.delay_s]
            by_tenant = choose_reports(
                due,
                rng,
                reporting,
                quorum=settings.suppression_quorum,
                high_confidence_score=settings.report_high_confidence_score,
            )
            answers = await asyncio.gather(
                *(
                    retry_until_done(
                        functools.partial(post_reports, http, keys[tenant], reports),
                        dependency="api",
                        what="post_demo_reports",
                        backoff=settings.backoff,
                        transient=RECEIVER_ERRORS,
                    )
                    for tenant, reports in by_tenant.items()
                )
            )
            posted += sum(len(reports) for reports in by_tenant.values())
            # An embedded Redis that was restarted comes back empty: keys are issued again.
            unknown = [
                t for t, answer in zip(by_tenant, answers, strict=True) if answer.status_code == 401
            ]
            if unknown:
                log.warning("demo_tenant_keys_reissued", tenants=",".join(unknown))
                keys |= await issue_keys(settings, unknown)
    finally:
        await http.aclose()
        await consumer.stop()
        log.info("demo_reporters_stopped", posted=posted)
    return posted
