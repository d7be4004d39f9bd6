"""The demo's FP spike: an over-sensitive model promoted for a while, then rolled back.

``l2loop up --spike-at S --spike-for D`` runs ``run_spike``. Nothing is faked: the spike
model is the model in service with a much lower threshold, registered in the model registry
under its own version (``spike_model_version``) and promoted through the ``current`` pointer
that every scorer follows. Verdicts name its version while it runs; benign demo traffic and
benign canaries get flagged, so the canary FP rate rises and ``fp_rate_spike`` fires; the
rollback puts the previous model back, and the alert resolves.

It moves the pointer itself rather than through ``l2loop.release.promotion``: the spike model
learnt nothing, so no suppression may expire when it comes or be restored when it goes, and
its rollback must leave alone a model someone else promoted meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from l2loop.logs import get_logger
from l2loop.resilience import retry_until_done
from l2loop.settings import Settings
from l2loop.stores.verdicts import connect
from l2model.contract import MANIFEST_FILE, Manifest
from l2model.registry import CurrentModel, ModelPointer, ModelRegistry, RegistryError

log = get_logger(__name__)

SPIKE_SUFFIX = "-twitchy"


def register_spike_model(
    registry: ModelRegistry, base_dir: Path, *, version: str, threshold: float
) -> Path:
    """The model of ``base_dir`` with ``threshold``, registered as ``version`` (once: a later
    spike reuses it if it is the same model at the same threshold)."""
    base = Manifest.read(base_dir)
    name = base.name.removesuffix(SPIKE_SUFFIX) + SPIKE_SUFFIX
    target = registry.path(version)
    if target.exists():
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
    return target


async def _ensure_pointer(
    pointer: ModelPointer, registry: ModelRegistry, settings: Settings
) -> CurrentModel:
    """The current pointer, set first to the configured model when nothing was promoted yet,
    so that the spike's rollback has a model to return to."""
    current = await pointer.current()
    if current is not None and current.version == settings.spike_model_version:
        # A spike whose process died before its rollback: undo it before starting another.
        log.warning("spike_left_over", spike=current.version)
        with contextlib.suppress(RegistryError):
            current = await pointer.rollback()
        if current.version == settings.spike_model_version:
            current = None
    if current is not None:
        return current
    version = Manifest.read(settings.model_dir).version
    if not registry.path(version).exists():
        await asyncio.to_thread(registry.add, settings.model_dir, changes=["model in service"])
    return await pointer.promote(registry, version)


async def _end_spike(pointer: ModelPointer, version: str) -> None:
    current = await pointer.current()
    if current is None or current.version != version:
        # Someone promoted another model meanwhile: theirs stays.
        log.warning(
            "spike_not_rolled_back", spike=version, current=getattr(current, "version", None)
        )
        return
    restored = await pointer.rollback()
    log.info("spike_ended", spike=version, current=restored.version)


async def _spike(
    settings: Settings, client: aioredis.Redis, stop: asyncio.Event, for_s: float
) -> None:
    registry = ModelRegistry(settings.registry_root)
    pointer = ModelPointer(client, key_prefix=settings.topic_prefix)
    base = await retry_until_done(
        lambda: _ensure_pointer(pointer, registry, settings),
        dependency="redis",
        what="read_model_pointer",
        backoff=settings.backoff,
    )
    version = settings.spike_model_version
    await asyncio.to_thread(
        register_spike_model,
        registry,
        Path(base.path),
        version=version,
        threshold=settings.spike_threshold,
    )
    await retry_until_done(
        lambda: pointer.promote(registry, version),
        dependency="redis",
        what="promote_spike_model",
        backoff=settings.backoff,
    )
    log.info("spike_started", spike=version, base=base.version, for_s=for_s)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=for_s)
    finally:
        # Shielded: a demo stopped mid-spike still leaves the model it found in service.
        await asyncio.shield(
            retry_until_done(
                lambda: _end_spike(pointer, version),
                dependency="redis",
                what="roll_back_spike_model",
                backoff=settings.backoff,
            )
        )


async def run_spike(settings: Settings, stop: asyncio.Event, *, at_s: float, for_s: float) -> None:
    """After ``at_s`` seconds, promotes the spike model for ``for_s`` seconds, then rolls back.
    Returns at once when ``stop`` is set first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=at_s)
        return
    client = connect(settings.redis_dsn)
    try:
        await _spike(settings, client, stop, for_s)
    finally:
        await client.aclose()
