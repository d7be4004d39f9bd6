"""The replayed traffic: the prompts a scanner could send, sent as scan events, and their
verdicts read back from the replay's own topics."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from pydantic import ValidationError

from l2loop.infra.clients import produce_lines, topic_reader
from l2loop.infra.embedded import ManagedProcess
from l2loop.infra.topics import SCAN_EVENTS, SCAN_VERDICTS
from l2loop.replay.record import ReplayError
from l2loop.schemas.codec import to_bytes
from l2loop.schemas.events import ScanEvent
from l2loop.schemas.verdicts import Verdict
from l2loop.settings import Settings
from l2model.evaluation import LabeledPrompt

# The replayed traffic's tenant, and the one of the probes that ask which model serves.
REPLAY_TENANT = "l2loop-replay"
PROBE_TENANT = "l2loop-replay-probe"
POLL_MS = 500


def replayable(prompts: Sequence[LabeledPrompt]) -> list[LabeledPrompt]:
    """The prompts a scanner could send: a ScanEvent holds at most 32 KiB of non-blank text
    (anything else is dead-lettered, never scored)."""
    kept = []
    for prompt in prompts:
        try:
            ScanEvent(event_id="x", ts=datetime.now(tz=UTC), tenant_id="x", text=prompt.text)
        except ValidationError:
            continue
        kept.append(prompt)
    return kept


def still_running(process: ManagedProcess) -> None:
    """Raises ReplayError, naming the child's log, when ``process`` has exited."""
    if process.exit_code is not None:
        raise ReplayError(
            f"the {process.name} exited with code {process.exit_code}; see {process.log_path}"
        )


class VerdictReader:
    """Reads scan-verdicts from the start, keeping every verdict by event id; gives up when
    the worker that should write them has died."""

    def __init__(self, settings: Settings, worker: ManagedProcess) -> None:
        self._settings = settings
        self._worker = worker
        self._consumer = topic_reader(settings, settings.topic(SCAN_VERDICTS), from_beginning=True)
        self.seen: dict[str, Verdict] = {}

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def poll(self) -> None:
        still_running(self._worker)
        batches = await self._consumer.getmany(timeout_ms=POLL_MS, max_records=5000)
        for records in batches.values():
            for record in records:
                verdict = Verdict.model_validate_json(record.value)
                self.seen[verdict.event_id] = verdict

    async def collect(self, event_ids: Sequence[str]) -> list[Verdict]:
        """The verdicts of ``event_ids``, in order, once all have come."""
        while any(event_id not in self.seen for event_id in event_ids):
            await self.poll()
        return [self.seen[event_id] for event_id in event_ids]

    async def await_version(self, version: str) -> None:
        """Sends a probe now and then until one is scored by ``version``: the worker serves
        it (it follows the pointer between batches) and has joined its group."""
        number = 0
        while True:
            probe = f"probe-{version}-{number}"
            await produce_lines(
                self._settings,
                self._settings.topic(SCAN_EVENTS),
                [scan_event(probe, PROBE_TENANT, "replay probe: which model serves now?")],
            )
            for _ in range(4):
                await self.poll()
                verdict = self.seen.get(probe)
                if verdict is not None:
                    if verdict.model_version == version:
                        return
                    break
            number += 1


def scan_event(event_id: str, tenant: str, text: str) -> bytes:
    return to_bytes(
        ScanEvent(event_id=event_id, ts=datetime.now(tz=UTC), tenant_id=tenant, text=text)
    )
