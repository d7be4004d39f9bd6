"""The demo's FP spike: an over-sensitive model released in a hurry, and caught.

``l2loop up --spike-at S --spike-for D`` runs ``run_spike``. Nothing is faked: the spike
model is the model in service with a much lower threshold, registered in the model registry
under its own version (``spike_model_version``), and released through a staged rollout
(``l2loop.release.rollout``) with the configured stages less the shadow stage: straight to
a canary stage that acts on a share of real events. Its verdicts name its version; benign
demo traffic and benign canaries get flagged, so the score workers' analysis finds its
canary FP rate (or a tenant's flag rate) worse than the incumbent's and rolls it back at
that first stage, having decided only that stage's share of events; the
``rollout_rolled_back`` alert fires. Should the analysis not have caught it after ``D``
seconds, the spike ends by aborting the rollout.

The spike never moves the model pointer itself: the rollout does, only if the candidate
reaches 100, and puts the incumbent back if it ends there.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from l2loop.logs import get_logger
from l2loop.release.rollout import RolloutError, Rollouts
from l2loop.resilience import retry_until_done
from l2loop.schemas.rollout import SHADOW, Rollout, parse_stages
from l2loop.settings import Settings
from l2loop.stores.shared import model_registry
from l2loop.stores.verdicts import connect
from l2model.contract import MANIFEST_FILE, Manifest
from l2model.registry import ModelPointer, ModelRegistry

log = get_logger(__name__)

SPIKE_SUFFIX = "-twitchy"


def register_spike_model(
    registry: ModelRegistry, base_dir: Path, *, version: str, threshold: float
) -> Path:
    """The model of ``base_dir`` with ``threshold``, registered as ``version`` (once: a later
    spike reuses it if it is the same model at the same threshold)."""
    base = Manifest.read(base_dir)
    name = base.name.removesuffix(SPIKE_SUFFIX) + SPIKE_SUFFIX
    if registry.has(version):
        target = registry.path(version)
        registered = Manifest.read(target)
        if (registered.name, registered.threshold) != (name, threshold):
            raise ValueError(
                f"version {version} is registered as {registered.name} at threshold "
                f"{registered.threshold}, not as the spike model; set L2LOOP_SPIKE_MODEL_VERSION "
                "to a free version"
            )
        return target
    fields = base.model_dump(mode="json")
    fields.update(
        name=name,
        threshold=threshold,
        # The base model's figures were measured at its own threshold; they do not hold here.
        metrics={},
        spike={"base": f"{base.name} {base.version}", "base_threshold": base.threshold},
    )
    with tempfile.TemporaryDirectory(prefix="l2loop-spike-") as scratch:
        staged = Path(scratch) / "model"
        shutil.copytree(base_dir, staged)
        (staged / MANIFEST_FILE).write_bytes(orjson.dumps(fields, option=orjson.OPT_INDENT_2))
        registry.add(
            staged,
            version=version,
            changes=[f"demo FP spike: {base.name} {base.version} at threshold {threshold}"],
        )
    return registry.path(version)


def hurried_stages(settings: Settings) -> str:
    """The configured stages without the shadow stage: the spike exposes users at once."""
    return ",".join(stage for stage in parse_stages(settings.rollout_stages) if stage != SHADOW)


async def _model_in_service(rollouts: Rollouts, client: aioredis.Redis, settings: Settings) -> str:
    """Where the model the spike model is made from is: the pointer's, else the configured
    one. A spike rollout that a stopped demo left running is aborted first."""
    left = await rollouts.status()
    if left is not None and left.active and left.candidate.version == settings.spike_model_version:
        log.warning("spike_left_over", run=left.run_id)
        with contextlib.suppress(RolloutError):
            await rollouts.abort("a spike left running by a stopped demo")
    current = await ModelPointer(client, key_prefix=settings.topic_prefix).current()
    return str(settings.model_dir) if current is None else current.path


async def _end_spike(rollouts: Rollouts, run_id: str) -> None:
    """Aborts the spike's rollout if it is still running; one the analysis ended stays so."""
    rollout = await rollouts.status()
    if rollout is None or rollout.run_id != run_id or not rollout.active:
        log.info("spike_ended", run=run_id, rollout=getattr(rollout, "status", None))
        return
    with contextlib.suppress(RolloutError):
        await rollouts.abort("the demo's spike ended before the analysis caught it")
    log.info("spike_ended", run=run_id, rollout="aborted")


async def _start(
    settings: Settings, client: aioredis.Redis, rollouts: Rollouts, say: Callable[[str], None]
) -> Rollout | None:
    """Registers the spike model and starts its rollout; None when a rollout is running."""
    registry = model_registry(settings)
    where = await retry_until_done(
        lambda: _model_in_service(rollouts, client, settings),
        dependency="redis",
        what="read_model_pointer",
        backoff=settings.backoff,
    )
    version = settings.spike_model_version

    def register() -> None:
        base = registry.local_dir(where)
        register_spike_model(registry, base, version=version, threshold=settings.spike_threshold)

    await asyncio.to_thread(register)
    try:
        return await retry_until_done(
            lambda: rollouts.start(version, stages=hurried_stages(settings)),
            dependency="redis",
            what="start_spike_rollout",
            backoff=settings.backoff,
        )
    except RolloutError as exc:
        log.warning("spike_not_started", spike=version, reason=str(exc))
        say(f"SPIKE not started: {exc}")
        return None


async def _spike(
    settings: Settings,
    client: aioredis.Redis,
    stop: asyncio.Event,
    for_s: float,
    say: Callable[[str], None],
) -> None:
    rollouts = Rollouts(client, settings, model_registry(settings))
    started = await _start(settings, client, rollouts, say)
    if started is None:
        return
    log.info("spike_started", run=started.run_id, stages=",".join(started.stages), for_s=for_s)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=for_s)
    finally:
        # Shielded: a demo stopped mid-spike still ends the spike's rollout.
        await asyncio.shield(
            retry_until_done(
                lambda: _end_spike(rollouts, started.run_id),
                dependency="redis",
                what="end_spike_rollout",
                backoff=settings.backoff,
            )
        )


async def run_spike(
    settings: Settings,
    stop: asyncio.Event,
    *,
    at_s: float,
    for_s: float,
    say: Callable[[str], None] = lambda line: None,
) -> None:
    """After ``at_s`` seconds, starts the spike model's hurried rollout; after ``for_s`` more
    aborts it if the analysis has not rolled it back. A rollout already running refuses it:
    ``say`` tells the user so. Returns at once when ``stop`` is set first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=at_s)
        return
    client = connect(settings.redis_dsn)
    try:
        await _spike(settings, client, stop, for_s, say)
    finally:
        await client.aclose()
