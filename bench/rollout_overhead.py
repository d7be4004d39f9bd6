"""What a staged rollout costs the score agent: the Scorer's events/s in a shadow stage (two
models per event: the incumbent acts, the candidate scores beside it) and at a 10 % stage,
beside no rollout (one model), same run, same batches.

    python bench/rollout_overhead.py [--events 5120] [--rounds 10] [--tenants 50]
        [--canary-share 0.05] [--seed 0]

The events are the generated corpus's test split (prompts the committed model never trained
on), cycled to ``--events`` a round, from ``--tenants`` tenants, ``--canary-share`` of them
canary probes carrying their label, in batches of ``L2LOOP_BATCH_SIZE`` (256) as raw records,
as the score agent hands them to ``Scorer.score``. The scorer is built as the agent builds
it, with one inference thread and the model at ``L2LOOP_INFERENCE_THREADS``; its rollout
router holds a plan set here instead of one read from Redis, and no suppression lookup is
made, so the figures are the scoring's alone: the Redis round trips around a batch
(suppressions, flagged verdicts, the stage's counters) and the broker are not in them.

The incumbent is the committed ``lite`` model; the candidate is a copy of it registered
under another version in a scratch registry, so the two cost the same per event and the
ratios measure the rollout's work, not a different model. Rounds interleave the modes, each
round starting with the next mode, after one unmeasured warm-up pass of each; a mode's ratio
to one model is the median over rounds of its events/s over that round's one-model events/s.

``rollout_counts`` (what a batch adds to its stage's counters) is timed inside the measured
runs, as the scorer calls it; its share is of the same batches' scoring time.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from model_latency import busy_cpu_s, own_cpu_s

from l2loop.logs import configure
from l2loop.schemas.common import utc_now
from l2loop.schemas.decoding import RawRecord
from l2loop.schemas.rollout import ModelRef, Rollout, parse_stages
from l2loop.settings import Settings
from l2loop.stats import percentile
from l2loop.stores.rollout import RolloutStore
from l2loop.streams import scoring
from l2loop.streams.rollout_router import Plan, RolloutRouter
from l2loop.streams.scoring import Scorer
from l2model.artifacts import default_model_dir
from l2model.corpus import DEFAULT_SIZE, generate_corpus, split_corpus
from l2model.registry import ModelRegistry
from l2model.runtime import L2Model

CANDIDATE_VERSION = "1.0.1"
STAGES = "shadow,10,50,100"
# The modes, by the stage each applies (None: no rollout).
MODES: tuple[tuple[str, str | None], ...] = (
    ("no rollout (one model)", None),
    ("shadow (two models)", "shadow"),
    ("10 %", "10"),
)


@dataclass
class Fixed:
    """A model source that never changes (the agent's ModelHolder follows the registry)."""

    current: L2Model


@dataclass
class Timed:
    """``rollout_counts`` as the scorer calls it, timed: seconds, calls and counter fields
    (each field is one HINCRBY of the batch's ``add_counts`` pipeline)."""

    inner: Callable[..., dict[str, int]]
    seconds: float = 0.0
    calls: int = 0
    fields: int = 0

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, int]:
        started = time.perf_counter()
        counts = self.inner(*args, **kwargs)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        self.fields += len(counts)
        return counts


@dataclass
class Run:
    rates: list[float] = field(default_factory=list)
    batch_ms: list[float] = field(default_factory=list)
    counts_s: float = 0.0
    counts_calls: int = 0
    counts_fields: int = 0
    # Model time per prompt of each batch's group, by model version: what the stage's
    # latency_p95 check compares (a group at 10 % is a tenth of the batch).
    model_ms: dict[str, list[float]] = field(default_factory=dict)
    # Acting verdicts by model version: at 10 % by tenant the candidate's share is that of
    # the tenants the run's hash gives it, plus half the canary probes.
    acting: Counter[str] = field(default_factory=Counter)


def batches(
    count: int, size: int, tenants: int, canary_share: float, canary_tenant: str, seed: int
) -> list[list[RawRecord]]:
    """``count`` scan events as raw records, in batches of ``size``."""
    test = split_corpus(generate_corpus(DEFAULT_SIZE, seed)).test
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    records = []
    for i in range(count):
        example = test[i % len(test)]
        event: dict[str, Any] = {"event_id": f"r{seed}-{i}", "ts": now_ms, "text": example.text}
        if rng.random() < canary_share:
            event["tenant_id"] = canary_tenant
            event["ground_truth"] = {"label": example.label, "source": "canary"}
        else:
            event["tenant_id"] = f"tenant-{rng.randrange(tenants)}"
        records.append(RawRecord("scan-events", 0, i, None, orjson.dumps(event)))
    return [records[start : start + size] for start in range(0, count, size)]


def plan(stage: str, incumbent: L2Model, candidate: L2Model) -> Plan:
    now = utc_now()
    stages = parse_stages(STAGES)
    rollout = Rollout(
        run_id="bench-rollout",
        candidate=ModelRef(version=candidate.version, path=str(candidate.model_dir)),
        incumbent=ModelRef(version=incumbent.version, path=str(incumbent.model_dir)),
        stages=stages,
        stage_index=stages.index(stage),
        status="running",
        hash_by="tenant",
        started_at=now,
        stage_started_at=now,
    )
    return Plan(rollout, candidate)


async def score_all(scorer: Scorer, work: Sequence[list[RawRecord]], run: Run) -> None:
    """Scores every batch, adding each one's scoring time and its groups' model time to
    ``run``."""
    for batch in work:
        started = time.perf_counter()
        scored = await scorer.score(batch)
        run.batch_ms.append((time.perf_counter() - started) * 1000.0)
        # Every verdict of a group carries its group's model time: one value per group (the
        # two models have different versions).
        groups = {v.model_version: v.model_ms for v in scored.verdicts + scored.shadow}
        for version, model_ms in groups.items():
            run.model_ms.setdefault(version, []).append(model_ms)
        run.acting.update(verdict.model_version for verdict in scored.verdicts)


async def measure(
    settings: Settings,
    incumbent: L2Model,
    candidate: L2Model,
    work: Sequence[list[RawRecord]],
    rounds: int,
) -> dict[str, Run]:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="l2-inference")
    # The router reads Redis only in refresh(), never called here: the plan is set directly.
    store = RolloutStore(aioredis.Redis(), key_prefix="bench.")
    scorers = {}
    for name, stage in MODES:
        router = RolloutRouter(store, threads=settings.inference_threads)
        router.plan = None if stage is None else plan(stage, incumbent, candidate)
        scorers[name] = Scorer(
            Fixed(incumbent),
            executor,
            model_max_chars=settings.model_max_chars,
            block_score=settings.block_score,
            canary_tenant_id=settings.canary_tenant_id,
            router=router,
            keep_seen=settings.seen_event_ttl_s > 0,
            raw_max_bytes=settings.dead_letter_raw_max_bytes,
        )
    events = sum(len(batch) for batch in work)
    runs = {name: Run() for name, _ in MODES}
    # The scorer calls the module's rollout_counts: replaced by a timed wrapper of itself.
    timed = Timed(scoring.rollout_counts)
    scoring.rollout_counts = timed
    try:
        for scorer in scorers.values():
            await score_all(scorer, work[:4], Run())
        names = [name for name, _ in MODES]
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                before = (timed.seconds, timed.calls, timed.fields)
                started = time.perf_counter()
                await score_all(scorers[name], work, runs[name])
                runs[name].rates.append(events / (time.perf_counter() - started))
                runs[name].counts_s += timed.seconds - before[0]
                runs[name].counts_calls += timed.calls - before[1]
                runs[name].counts_fields += timed.fields - before[2]
    finally:
        scoring.rollout_counts = timed.inner
        executor.shutdown()
    return runs


def report(runs: dict[str, Run], rounds: int) -> None:
    base = runs[MODES[0][0]].rates
    rounds_header = "".join(f"| round {r + 1} " for r in range(rounds))
    print(
        f"| mode {rounds_header}| median events/s | ratio to one model (median of rounds) "
        "| batch p50 ms | batch p95 ms |"
    )
    print("|---" + "|---:" * (rounds + 4) + "|")
    for name, _ in MODES:
        run = runs[name]
        # Paired by round: the load of other work drifts less within a round than across.
        ratio = statistics.median(rate / one for rate, one in zip(run.rates, base, strict=True))
        cells = "".join(f"| {rate:,.0f} " for rate in run.rates)
        print(
            f"| {name} {cells}| {statistics.median(run.rates):,.0f} | {ratio:.2f} "
            f"| {percentile(run.batch_ms, 0.50):.1f} | {percentile(run.batch_ms, 0.95):.1f} |"
        )
    print()
    for name, _ in MODES:
        arms = ", ".join(
            f"{version} p50 {percentile(values, 0.50):.3f} / p95 {percentile(values, 0.95):.3f}"
            for version, values in sorted(runs[name].model_ms.items())
        )
        acting = sum(runs[name].acting.values())
        shares = ", ".join(
            f"{version} {100 * count / acting:.1f} %"
            for version, count in sorted(runs[name].acting.items())
        )
        print(f"model ms per prompt, {name}: {arms}; acting verdicts: {shares}")
    print()
    for name, stage in MODES:
        run = runs[name]
        if stage is None:
            continue
        per_batch_us = run.counts_s / run.counts_calls * 1e6
        share = run.counts_s * 1000.0 / sum(run.batch_ms)
        print(
            f"rollout_counts, {name}: {per_batch_us:,.0f} µs a batch, "
            f"{100 * share:.2f} % of the batches' scoring time; "
            f"{run.counts_fields / run.counts_calls:.0f} counter fields a batch (HINCRBYs)"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5_120, help="events a round, each mode")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--canary-share", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    configure("warn")
    settings = Settings()
    work = batches(
        args.events,
        settings.batch_size,
        args.tenants,
        args.canary_share,
        settings.canary_tenant_id,
        args.seed,
    )
    incumbent = L2Model.load(default_model_dir(), threads=settings.inference_threads)
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as scratch:
        registry = ModelRegistry.in_directory(Path(scratch))
        registry.add(
            default_model_dir(),
            version=CANDIDATE_VERSION,
            changes=["bench: the committed model under another version"],
        )
        candidate = L2Model.load(
            registry.path(CANDIDATE_VERSION), threads=settings.inference_threads
        )
        load_before, machine, own, started = (
            os.getloadavg()[0],
            busy_cpu_s(),
            own_cpu_s(),
            time.perf_counter(),
        )
        runs = asyncio.run(measure(settings, incumbent, candidate, work, args.rounds))
        others = (busy_cpu_s() - machine) - (own_cpu_s() - own)
        others_cpu = max(0.0, others) / (time.perf_counter() - started)
    print(
        f"{incumbent.manifest.name} {incumbent.version} (incumbent) and {candidate.version} "
        f"(candidate, a registered copy); {args.events:,} events a round in batches of "
        f"{settings.batch_size}, {args.rounds} rounds, {args.tenants} tenants, "
        f"{100 * args.canary_share:g} % canary probes; {multiprocessing.cpu_count()} CPUs, "
        f"{settings.inference_threads} inference threads; load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after; others' CPU "
        f"{others_cpu:.2f} cores\n"
    )
    report(runs, args.rounds)


if __name__ == "__main__":
    main()
