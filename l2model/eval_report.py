"""What ``l2loop model eval`` reports: one model on one labelled file, its metrics,
calibration and latency (single prompts and batched)."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from l2model.evaluation import (
    SCORE_BATCH,
    Calibration,
    ClassifierMetrics,
    LabeledPrompt,
    calibration,
    classifier_metrics,
    score_texts,
)
from l2model.runtime import L2Model

LATENCY_SAMPLE = 200


class LatencyStats(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompts: int
    p50_ms: float
    p95_ms: float


def single_prompt_latency(model: L2Model, texts: Sequence[str]) -> LatencyStats:
    """Wall time of ``score_batch([text])`` for each text, one at a time, as a scorer with no
    queue sees it; one untimed call first, so that the session's first-run allocation is
    not counted."""
    limit = model.manifest.input.max_chars
    clipped = [text[:limit] for text in texts]
    model.score_batch(clipped[:1])
    timings = []
    for text in clipped:
        start = time.perf_counter()
        model.score_batch([text])
        timings.append((time.perf_counter() - start) * 1000)
    return LatencyStats(
        prompts=len(timings),
        p50_ms=round(float(np.percentile(timings, 50)), 4),
        p95_ms=round(float(np.percentile(timings, 95)), 4),
    )


def batched_throughput(
    model: L2Model, texts: Sequence[str], batch_size: int, *, min_seconds: float = 1.0
) -> float:
    """Prompts per second scoring ``texts`` in batches of ``batch_size``, after one untimed
    batch: the median of passes over ``texts`` repeated for at least ``min_seconds`` (and
    three times). One pass of a fast model is a few milliseconds, which a single tick of
    another process on the same cores moves by half."""
    score_texts(model, texts[:batch_size], batch_size)
    rates: list[float] = []
    spent = 0.0
    while spent < min_seconds or len(rates) < 3:
        start = time.perf_counter()
        score_texts(model, texts, batch_size)
        elapsed = time.perf_counter() - start
        spent += elapsed
        rates.append(len(texts) / elapsed)
    return round(float(np.median(rates)), 1)


class ModelInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    name: str
    version: str
    kind: str
    threshold: float
    max_chars: int

    @classmethod
    def of(cls, model: L2Model) -> ModelInfo:
        manifest = model.manifest
        return cls(
            path=str(model.model_dir),
            name=manifest.name,
            version=manifest.version,
            kind=manifest.kind,
            threshold=manifest.threshold,
            max_chars=manifest.input.max_chars,
        )

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.kind}, threshold {self.threshold:g})"


class LatencyReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    threads: int
    single: LatencyStats
    batch_size: int
    batched_prompts_per_s: float


class EvalReport(BaseModel):
    """``l2loop model eval``: one model on one labeled file."""

    model_config = ConfigDict(frozen=True)

    data: str
    model: ModelInfo
    truncated: int
    metrics: ClassifierMetrics
    calibration: Calibration
    latency: LatencyReport


def evaluate(
    model: L2Model,
    prompts: Sequence[LabeledPrompt],
    *,
    data: str,
    threads: int,
    latency_sample: int = LATENCY_SAMPLE,
    seed: int = 0,
) -> EvalReport:
    """Scores every prompt with ``model`` (loaded with ``threads`` intra-op threads), then
    times single prompts on a seeded sample of ``latency_sample`` of them. ``data`` names
    where the prompts came from."""
    texts = [p.text for p in prompts]
    # The timed sample runs first: it also warms the session up for the timed full pass.
    sample = random.Random(seed).sample(texts, min(latency_sample, len(texts)))
    single = single_prompt_latency(model, sample)
    start = time.perf_counter()
    scores = score_texts(model, texts)
    elapsed = time.perf_counter() - start
    labels = np.array([p.label for p in prompts])
    return EvalReport(
        data=data,
        model=ModelInfo.of(model),
        truncated=sum(len(text) > model.manifest.input.max_chars for text in texts),
        metrics=classifier_metrics(prompts, scores >= model.threshold),
        calibration=calibration(labels, scores),
        latency=LatencyReport(
            threads=threads,
            single=single,
            batch_size=SCORE_BATCH,
            batched_prompts_per_s=round(len(texts) / elapsed, 1),
        ),
    )
