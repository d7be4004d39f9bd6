"""Demo traffic: a steady stream of scan events and malformed records of every kind the
scorer must dead-letter; canary probes come from the canary job (``workers/canary.py``).
``l2loop up`` runs it; the tests reuse its pieces."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaProducer

from l2loop.logs import get_logger
from l2loop.schemas.dead_letters import DeadLetterReason
from l2loop.schemas.events import MAX_TEXT_BYTES

log = get_logger(__name__)

TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")


@dataclass(frozen=True)
class Prompt:
    text: str
    label: int
    family: str


def scan_event(rng: random.Random, event_id: str, prompt: Prompt, canary_share: float) -> bytes:
    event: dict[str, object] = {
        "schema_version": 1,
        "event_id": event_id,
        "ts": int(time.time() * 1000),
        "tenant_id": rng.choice(TENANTS),
        "text": prompt.text,
        "metadata": {"app": "demo"},
    }
    if rng.random() < canary_share:
        event["ground_truth"] = {"label": prompt.label, "family": prompt.family, "source": "canary"}
    return orjson.dumps(event)


def _valid(event_id: str) -> dict[str, object]:
    return {"event_id": event_id, "ts": "2026-11-23T10:00:00Z", "tenant_id": "acme", "text": "hi"}


def _with(eid: str, /, **changes: object) -> bytes:
    return orjson.dumps({**_valid(eid), **changes})


def _without(event_id: str, field: str) -> bytes:
    event = _valid(event_id)
    del event[field]
    return orjson.dumps(event)


# Each kind of bad input the scorer must dead-letter, with the reason it must give.
MALFORMED: tuple[tuple[DeadLetterReason, Callable[[str], bytes]], ...] = (
    (DeadLetterReason.EMPTY_MESSAGE, lambda eid: b""),
    (DeadLetterReason.INVALID_UTF8, lambda eid: b"\xff\xfe\x00garbage " + eid.encode()),
    (
        DeadLetterReason.INVALID_UTF8,
        lambda eid: b'{"event_id":"' + eid.encode() + b'","text":"caf\xe9"}',
    ),
    (DeadLetterReason.INVALID_JSON, lambda eid: b'{"event_id": "' + eid.encode() + b'", "text": '),
    (DeadLetterReason.NOT_AN_OBJECT, lambda eid: orjson.dumps([eid, "text"])),
    (DeadLetterReason.MISSING_FIELD, lambda eid: _without(eid, "text")),
    (DeadLetterReason.MISSING_FIELD, lambda eid: _without(eid, "tenant_id")),
    (DeadLetterReason.EMPTY_TEXT, lambda eid: _with(eid, text="   \n\t ")),
    (DeadLetterReason.TEXT_TOO_LARGE, lambda eid: _with(eid, text="a" * (MAX_TEXT_BYTES + 1))),
    (DeadLetterReason.WRONG_TYPE, lambda eid: _with(eid, text=12345)),
    (DeadLetterReason.WRONG_TYPE, lambda eid: _with(eid, tenant_id=["acme"])),
    (DeadLetterReason.INVALID_VALUE, lambda eid: _with(eid, ts="yesterday at noon")),
    (DeadLetterReason.INVALID_VALUE, lambda eid: _with(eid, event_id="has spaces " + eid)),
    (DeadLetterReason.UNKNOWN_FIELD, lambda eid: _with(eid, colour="blue")),
    (DeadLetterReason.UNSUPPORTED_SCHEMA_VERSION, lambda eid: _with(eid, schema_version=2)),
    # Valid JSON that Python cannot represent: a timestamp past year 9999 once escaped
    # validation as an OSError and stopped the agent; a number beyond a double.
    (DeadLetterReason.INVALID_VALUE, lambda eid: _with(eid, ts=10**19)),
    (
        DeadLetterReason.INVALID_VALUE,
        lambda eid: _with(eid, ts=0).replace(b'"ts":0', b'"ts":1e400'),
    ),
)


def malformed_event(index: int, event_id: str) -> tuple[DeadLetterReason, bytes]:
    reason, build = MALFORMED[index % len(MALFORMED)]
    return reason, build(event_id)


async def run_demo_traffic(
    bootstrap_servers: Sequence[str],
    topic: str,
    prompts: Sequence[Prompt],
    *,
    rate_per_s: float,
    malformed_share: float = 0.02,
    # Off by default: demo prompts are not golden prompts, and the window agent would count
    # them as canaries. Tests of ground-truth pass-through set it.
    canary_share: float = 0.0,
    seed: int = 7,
    stop: asyncio.Event,
    # Told the prompt of each valid event sent (the demo's users know what they typed).
    on_sent: Callable[[str, Prompt], None] | None = None,
) -> int:
    """Sends events at about ``rate_per_s`` until ``stop`` is set; returns how many."""
    rng = random.Random(seed)
    producer = AIOKafkaProducer(bootstrap_servers=list(bootstrap_servers), linger_ms=5)
    await producer.start()
    sent = 0
    began = time.monotonic()
    try:
        while not stop.is_set():
            # Catch up with the schedule, so the rate holds whatever each send costs.
            due = int((time.monotonic() - began) * rate_per_s) + 1
            for _ in range(due - sent):
                event_id = f"demo-{seed}-{sent:09d}"
                if rng.random() < malformed_share:
                    _, value = malformed_event(sent, event_id)
                else:
                    prompt = rng.choice(prompts)
                    value = scan_event(rng, event_id, prompt, canary_share)
                    if on_sent is not None:
                        on_sent(event_id, prompt)
                await producer.send(topic, value, key=event_id.encode())
                sent += 1
            await asyncio.sleep(0.02)
    finally:
        await producer.stop()
        log.info("demo_traffic_stopped", sent=sent)
    return sent


def demo_prompts(count: int = 2_000, seed: int = 42) -> list[Prompt]:
    """Prompts of every family and language from the corpus generator, under a seed other
    than the committed model's. The templates are the model's own: this is traffic to show
    the loop working, not a measure of how well the model generalises."""
    # Imported on use: the corpus templates take a tenth of a second to load, and of all
    # that imports this module only the demo traffic itself draws from them.
    from l2model.corpus import generate_corpus

    return [Prompt(r.text, r.label, r.family) for r in generate_corpus(size=count, seed=seed)]
