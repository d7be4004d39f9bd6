"""A staged rollout: starting one, steering it, and the controller that decides its stages.

``start`` records a run of a registered candidate against the model in service; the score
workers apply its stage (streams.rollout_router) and count what each model did. Every score
worker runs ``RolloutController.tick`` on a timer: it compares the two models at the current
stage (``analysis.compare``), rolls the candidate back when a comparison fails or one of the
loop's alerts fires for its version, advances the stage when it has held and every check
passes, promotes the candidate when the stage reaches 100 (``promotion.promote_version``:
the pointer moves and the suppressions it learnt expire) and completes the run once 100 has
held too. Each decision is a compare-and-set on the state (l2loop.stores.rollout), so the
workers make one decision between them, and a worker killed mid-rollout finds it where it
was. A finished run's side effects (the pointer back after a rollback at 100, the
``rollout_rolled_back`` alert) are finished by whichever worker finds them undone.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime

import redis.asyncio as aioredis

from l2loop.logs import get_logger
from l2loop.release.analysis import (
    Reported,
    RolloutPolicy,
    candidate_share,
    compare,
    sum_counts,
)
from l2loop.release.promotion import promote_version, roll_back
from l2loop.resilience import TRANSIENT_ERRORS
from l2loop.schemas.common import utc_now
from l2loop.schemas.rollout import (
    Comparison,
    HashBy,
    ModelRef,
    Rollout,
    StageRecord,
    parse_stages,
)
from l2loop.schemas.windows import Alert, window_field
from l2loop.settings import Settings
from l2loop.stores.alerts import AlertStore, Change, fingerprint, receiver_names
from l2loop.stores.rollout import RolloutConflict, RolloutStore
from l2model.contract import Manifest
from l2model.registry import ModelPointer, ModelRegistry, RegistryError

log = get_logger(__name__)

ROLLED_BACK_RULE = "rollout_rolled_back"
# A tick takes milliseconds. Redis hung rather than down can hold a call past its socket
# timeout (a reconnect waits on the handshake), so a tick is bounded as a whole: past this it
# is held like any other outage, and the next tick starts afresh.
TICK_TIMEOUT_S = 5.0


class RolloutError(RuntimeError):
    """A rollout command that cannot be carried out, with the reason."""


def _rollback_alert_id(run_id: str) -> str:
    return f"{ROLLED_BACK_RULE}|{run_id}"


class Rollouts:
    """The rollout commands and the controller's decisions, over one Redis client."""

    def __init__(
        self,
        client: aioredis.Redis,
        settings: Settings,
        registry: ModelRegistry,
        *,
        policy: RolloutPolicy | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._registry = registry
        self.store = RolloutStore(client, key_prefix=settings.topic_prefix)
        self._pointer = ModelPointer(client, key_prefix=settings.topic_prefix)
        self._alerts = AlertStore(
            client,
            key_prefix=settings.topic_prefix,
            receivers=receiver_names(settings),
            history=settings.alert_history,
            outbox_max=settings.alert_outbox_max,
        )
        self.policy = policy or RolloutPolicy.from_settings(settings)

    # -- commands ---------------------------------------------------------------------------

    async def start(
        self,
        version: str,
        *,
        stages: str | None = None,
        hash_by: HashBy | None = None,
    ) -> Rollout:
        """Starts a rollout of the registered ``version`` against the model in service."""
        try:
            meta = self._registry.get(version)
        except RegistryError as exc:
            raise RolloutError(str(exc)) from None
        incumbent = await self._incumbent()
        if incumbent.version == version:
            raise RolloutError(f"{version} is already the model in service")
        now = utc_now()
        rollout = Rollout(
            run_id=f"{now:%Y%m%dT%H%M%S}-{version}-{secrets.token_hex(3)}",
            candidate=ModelRef(version=version, path=self._registry.where(version)),
            incumbent=incumbent,
            stages=parse_stages(stages or self._settings.rollout_stages),
            stage_index=0,
            status="running",
            hash_by=hash_by or self._settings.rollout_hash_by,
            started_at=now,
            stage_started_at=now,
            trained_through=meta.trained_through,
        )
        try:
            started = await self.store.create(rollout)
        except RolloutConflict as exc:
            raise RolloutError(str(exc)) from None
        await self._resolve_rollback_alerts()
        log.info(
            "rollout_started",
            run=started.run_id,
            candidate=version,
            incumbent=incumbent.version,
            stages=",".join(started.stages),
            hash_by=started.hash_by,
        )
        if started.stage == "100":
            await self._promote(started)
        return started

    async def advance(self) -> Rollout:
        """Moves a running or paused rollout to its next stage now (the operator's word)."""
        return await self._command(
            lambda r: self._next_stage(r, by="operator", comparison=r.last), "advance"
        )

    async def pause(self) -> Rollout:
        """Keeps the stage as it is: no automatic advance; a failed check still rolls back."""
        return await self._command(
            lambda r: _async(r.model_copy(update={"status": "paused"})), "pause", running=True
        )

    async def resume(self) -> Rollout:
        return await self._command(
            lambda r: _async(r.model_copy(update={"status": "running"})), "resume", paused=True
        )

    async def abort(self, reason: str = "aborted by an operator") -> Rollout:
        """Ends the run: the incumbent serves every event again."""
        return await self._command(
            lambda r: self._ended(r, "aborted", reason, by="operator", comparison=r.last),
            "abort",
        )

    async def status(self) -> Rollout | None:
        return await self.store.get()

    # -- the controller -------------------------------------------------------------------

    async def tick(self) -> Rollout | None:
        """One look at the rollout: roll back, advance, complete, or record the comparison.
        A Redis outage holds it where it is (nothing is decided on what cannot be read)."""
        try:
            async with asyncio.timeout(TICK_TIMEOUT_S):
                return await self._tick()
        except TRANSIENT_ERRORS as exc:
            log.warning("rollout_tick_held", reason="redis unavailable", error=str(exc))
        except TimeoutError:
            log.warning("rollout_tick_held", reason="redis did not answer", after_s=TICK_TIMEOUT_S)
        except RolloutConflict:
            # Another worker decided first; the next tick starts from its decision.
            pass
        except Exception:
            # A rollout the analysis cannot judge holds where it is; the scorer goes on.
            log.exception("rollout_tick_failed")
        return None

    async def _tick(self) -> Rollout | None:
        rollout = await self.store.get()
        if rollout is None:
            return None
        if not rollout.active:
            if not rollout.settled:
                return await self._settle(rollout)
            return rollout
        if rollout.promoted:
            await self._promote(rollout)  # repairs a crash between the decision and the pointer
        comparison = await self.comparison(rollout)
        failed = comparison.failed
        if failed:
            reason = "; ".join(f"{check.name}: {check.detail}" for check in failed)
            ended = self._ended(
                rollout, "rolled_back", reason, by="analysis", comparison=comparison
            )
            return await self._settle(await self.store.replace(rollout, await ended))
        passing = all(check.outcome == "pass" for check in comparison.checks)
        if rollout.status == "running" and comparison.ready and passing:
            advanced = await self._next_stage(rollout, by="analysis", comparison=comparison)
            return await self._after_write(rollout, advanced)
        return await self.store.replace(rollout, rollout.model_copy(update={"last": comparison}))

    async def comparison(self, rollout: Rollout) -> Comparison:
        stages = [
            await self.store.counts(rollout.run_id, index)
            for index in range(rollout.stage_index + 1)
        ]
        return compare(
            rollout,
            stages[-1],
            sum_counts(stages),
            reported=await self._reported(rollout),
            firing=await self._firing(rollout),
            policy=self.policy,
            now=utc_now(),
        )

    async def _reported(self, rollout: Rollout) -> dict[str, Reported]:
        """Accepted FP reports and flags of both versions over the windows since the start."""
        size = self._settings.window_size_s
        first = int(rollout.started_at.timestamp()) // size * size
        last = int(utc_now().timestamp()) // size * size
        starts = range(first, last + 1, size)
        versions = (rollout.candidate.version, rollout.incumbent.version)
        fields = [
            window_field(datetime.fromtimestamp(start, tz=rollout.started_at.tzinfo), version)
            for start in starts
            for version in versions
        ]
        found: dict[str, Reported] = {}
        for window in await self._alerts.windows(fields):
            seen = found.get(window.model_version, Reported())
            found[window.model_version] = Reported(
                reported_fp=seen.reported_fp + window.reported_fp_rate.hits,
                flagged=seen.flagged + window.flagged,
            )
        return found

    async def _firing(self, rollout: Rollout) -> list[str]:
        """The loop's alerts firing for the candidate's version. Its latency alert counts
        only on windows that began at 100: before, a split batch gave the candidate smaller
        calls, whose fixed cost weighs more per prompt (the analysis judges latency where
        batches are whole), and such a window's alert may still be open at 100."""

        def counts(alert: Alert) -> bool:
            if alert.model_version != rollout.candidate.version or alert.rule == ROLLED_BACK_RULE:
                return False
            if alert.rule != "latency_p95":
                return True
            return rollout.percent == 100 and alert.window_start >= rollout.stage_started_at

        return sorted(
            f"{alert.rule} ({alert.annotations.get('description', '')})"
            for alert in (await self._alerts.open_alerts()).values()
            if counts(alert)
        )

    # -- transitions ----------------------------------------------------------------------

    async def _next_stage(
        self, rollout: Rollout, *, by: str, comparison: Comparison | None
    ) -> Rollout:
        now = utc_now()
        last = rollout.stage_index == len(rollout.stages) - 1
        record = StageRecord(
            stage=rollout.stage,
            started_at=rollout.stage_started_at,
            ended_at=now,
            outcome="completed" if last else "advanced",
            by="operator" if by == "operator" else "analysis",
            comparison=comparison,
        )
        if last:
            return rollout.model_copy(
                update={
                    "status": "completed",
                    "settled": True,
                    "history": [*rollout.history, record],
                    "last": comparison,
                    "candidate_share": await self._share(rollout),
                }
            )
        return rollout.model_copy(
            update={
                "stage_index": rollout.stage_index + 1,
                "stage_started_at": now,
                "history": [*rollout.history, record],
                "last": None,
            }
        )

    async def _ended(
        self,
        rollout: Rollout,
        status: str,
        reason: str,
        *,
        by: str,
        comparison: Comparison | None,
    ) -> Rollout:
        record = StageRecord(
            stage=rollout.stage,
            started_at=rollout.stage_started_at,
            ended_at=utc_now(),
            outcome="rolled_back" if status == "rolled_back" else "aborted",
            by="operator" if by == "operator" else "analysis",
            comparison=comparison,
        )
        return rollout.model_copy(
            update={
                "status": status,
                "reason": reason,
                "settled": False,
                "history": [*rollout.history, record],
                "last": comparison,
                "candidate_share": await self._share(rollout),
            }
        )

    async def _share(self, rollout: Rollout) -> float:
        return candidate_share(
            [
                await self.store.counts(rollout.run_id, index)
                for index in range(rollout.stage_index + 1)
            ]
        )

    async def _after_write(self, before: Rollout, after: Rollout) -> Rollout:
        stored = await self.store.replace(before, after)
        if stored.status == "completed":
            log.info("rollout_completed", run=stored.run_id, candidate=stored.candidate.version)
        elif stored.stage_index != before.stage_index:
            log.info(
                "rollout_advanced",
                run=stored.run_id,
                candidate=stored.candidate.version,
                stage=stored.stage,
                previous=before.stage,
            )
            if stored.percent == 100:
                await self._promote(stored)
        return stored

    async def _promote(self, rollout: Rollout) -> None:
        current = await self._pointer.current()
        if current is not None and current.version == rollout.candidate.version:
            return
        # Two workers promoting at once would put the incumbent twice in the pointer's
        # history, and a rollback would then leave the candidate in service.
        if not await self.store.claim(rollout.run_id, "promote"):
            return
        # The state this worker read may be stale: a run rolled back meanwhile must not see
        # its candidate promoted again.
        now = await self.store.get()
        if now is None or now.run_id != rollout.run_id or not (now.active and now.promoted):
            return
        await promote_version(
            self._client,
            self._registry,
            rollout.candidate.version,
            key_prefix=self._settings.topic_prefix,
            backoff=self._settings.backoff,
        )

    async def _settle(self, rollout: Rollout) -> Rollout:
        """A finished run's side effects, each safe to do twice: the incumbent back in the
        pointer if the candidate had reached it, the alert, then ``settled``."""
        if not await self.store.claim(rollout.run_id, "settle"):
            # Another worker is settling it (a rollback twice would pop two models).
            return rollout
        current = await self._pointer.current()
        if current is not None and current.version == rollout.candidate.version:
            await roll_back(self._client, self._registry, key_prefix=self._settings.topic_prefix)
        if rollout.status == "rolled_back":
            await self._alerts.apply(
                [Change(_rollback_alert_id(rollout.run_id), self._alert(rollout))]
            )
            log.warning(
                "rollout_rolled_back",
                run=rollout.run_id,
                candidate=rollout.candidate.version,
                stage=rollout.stage,
                candidate_share=rollout.candidate_share,
                reason=rollout.reason,
            )
        else:
            log.info("rollout_aborted", run=rollout.run_id, stage=rollout.stage)
        return await self.store.replace(rollout, rollout.model_copy(update={"settled": True}))

    def _alert(self, rollout: Rollout) -> Alert:
        labels = {
            "alertname": ROLLED_BACK_RULE,
            "service": "l2loop",
            "severity": "critical",
            "model_version": rollout.candidate.version,
            "rollout": rollout.run_id,
        }
        now = utc_now()
        share = rollout.candidate_share or 0.0
        last = rollout.last
        return Alert(
            rule=ROLLED_BACK_RULE,
            status="firing",
            fingerprint=fingerprint(labels),
            window_start=rollout.stage_started_at,
            window_end=now,
            model_version=rollout.candidate.version,
            value=share,
            threshold=0.0,
            samples=0 if last is None else last.candidate.events,
            labels=labels,
            annotations={
                "summary": f"rollout of {rollout.candidate.version} rolled back at stage "
                f"{rollout.stage}; {rollout.incumbent.version} serves every event again",
                "description": (rollout.reason or "")[:1000],
                "measure": f"share of users' events the candidate decided: {100 * share:.2f} %",
            },
            starts_at=now,
            changed_at=now,
        )

    async def _resolve_rollback_alerts(self) -> None:
        now = utc_now()
        changes = [
            Change(
                key,
                alert.model_copy(
                    update={
                        "status": "resolved",
                        "ends_at": now,
                        "changed_at": now,
                        "annotations": {
                            **alert.annotations,
                            "resolved_by": "a new rollout was started",
                        },
                    }
                ),
            )
            for key, alert in (await self._alerts.open_alerts()).items()
            if alert.rule == ROLLED_BACK_RULE
        ]
        await self._alerts.apply(changes)

    async def _incumbent(self) -> ModelRef:
        """The model in service, registered and named by the pointer, so that a rollback at
        100 has a model to return to."""
        current = await self._pointer.current()
        if current is None:
            version = Manifest.read(self._settings.model_dir).version
            if not self._registry.has(version):
                self._registry.add(self._settings.model_dir, changes=["model in service"])
            current = await self._pointer.promote(self._registry, version)
        return ModelRef(version=current.version, path=current.path)

    async def _command(
        self,
        change: Callable[[Rollout], Awaitable[Rollout]],
        what: str,
        *,
        running: bool = False,
        paused: bool = False,
    ) -> Rollout:
        for _ in range(20):
            rollout = await self.store.get()
            if rollout is None or not rollout.active:
                raise RolloutError(f"no rollout is running to {what}")
            if running and rollout.status != "running":
                raise RolloutError(f"the rollout is {rollout.status}, not running")
            if paused and rollout.status != "paused":
                raise RolloutError(f"the rollout is {rollout.status}, not paused")
            try:
                after = await change(rollout)
                # A completed run is settled as it completes: settling it would roll back
                # the candidate it has just made the model in service.
                if not after.active and not after.settled:
                    return await self._settle(await self.store.replace(rollout, after))
                return await self._after_write(rollout, after)
            except RolloutConflict:
                continue
        raise RolloutError(f"the rollout kept changing; {what} again")


async def _async(value: Rollout) -> Rollout:
    return value
