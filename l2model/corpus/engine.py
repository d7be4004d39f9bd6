"""Template specs and their expansion into distinct training records.

A ``Spec`` is a family of prompts: templates with ``{slot}`` fields and the fillers each slot
draws from (a list, or a function of the spec's random stream). Every spec draws from its own
``random.Random`` seeded by the corpus seed and the spec's name, so adding or resizing one spec
leaves every other spec's output unchanged.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from l2model.record import BENIGN, TrainingRecord, normalise_text

Filler = Sequence[str] | Callable[[random.Random], str]

SOURCE = "synthetic_template"
# Consecutive draws that only produce texts already in the corpus before a spec counts as spent.
MAX_FAILED_DRAWS = 400


@dataclass(frozen=True)
class Decor:
    """Openers and closers people wrap any request in; drawn for every class alike so that
    politeness or greetings never tell benign from malicious."""

    openers: tuple[str, ...]
    closers: tuple[str, ...]
    opener_rate: float = 0.2
    closer_rate: float = 0.15

    def apply(self, text: str, rng: random.Random) -> str:
        if self.openers and rng.random() < self.opener_rate:
            text = rng.choice(self.openers) + text
        if self.closers and rng.random() < self.closer_rate:
            text = text.rstrip() + rng.choice(self.closers)
        return text


NO_DECOR = Decor((), ())


@dataclass(frozen=True)
class Spec:
    name: str
    family: str
    sub_category: str
    context: str
    templates: tuple[str, ...]
    slots: Mapping[str, Filler] = field(default_factory=dict)
    share: float = 1.0
    severity: tuple[float, float] = (0.0, 0.0)
    # A second context some of the spec's records are labelled with, and how often.
    alt_context: tuple[str, float] | None = None
    decor: Decor = NO_DECOR
    weight: float = 1.0
    confidence: float = 0.9
    lang: str = "en"

    def __post_init__(self) -> None:
        for template in self.templates:
            missing = _fields(template) - set(self.slots)
            if missing:
                raise ValueError(f"spec {self.name}: template lacks fillers for {missing}")

    @property
    def label(self) -> int:
        return 0 if self.family == BENIGN else 1


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _fill(filler: Filler, rng: random.Random) -> str:
    return filler(rng) if callable(filler) else rng.choice(filler)


class SpecStream:
    """Draws distinct records from one spec until asked for no more or the spec is spent."""

    def __init__(self, spec: Spec, seed: int) -> None:
        self.spec = spec
        self.rng = random.Random(f"{seed}:{spec.name}")
        self.spent = False

    def _draw(self) -> TrainingRecord:
        spec, rng = self.spec, self.rng
        index = rng.randrange(len(spec.templates))
        template = spec.templates[index]
        values = {name: _fill(spec.slots[name], rng) for name in sorted(_fields(template))}
        text = spec.decor.apply(template.format_map(values), rng)
        context = spec.context
        if spec.alt_context is not None and rng.random() < spec.alt_context[1]:
            context = spec.alt_context[0]
        low, high = spec.severity
        return TrainingRecord.build(
            text,
            spec.family,
            context,
            severity=round(rng.uniform(low, high), 2) if spec.label else 0.0,
            weight=spec.weight,
            confidence=spec.confidence,
            source=SOURCE,
            sub_category=spec.sub_category,
            notes=f"template {spec.name}#{index} lang={spec.lang}",
        )

    def take(self, count: int, seen: set[str]) -> Iterator[TrainingRecord]:
        """Up to ``count`` records whose normalised text is not in ``seen`` (which grows)."""
        failures = 0
        while count > 0 and not self.spent:
            record = self._draw()
            key = normalise_text(record.text)
            if key in seen:
                failures += 1
                self.spent = failures >= MAX_FAILED_DRAWS
                continue
            failures = 0
            seen.add(key)
            count -= 1
            yield record


def expand(specs: Sequence[Spec], target: int, seed: int, seen: set[str]) -> list[TrainingRecord]:
    """``target`` distinct records split over ``specs`` by share; what a spent spec cannot
    give is drawn round-robin from the others."""
    quotas = _apportion([spec.share for spec in specs], target)
    streams = [SpecStream(spec, seed) for spec in specs]
    records: list[TrainingRecord] = []
    for stream, quota in zip(streams, quotas, strict=True):
        records.extend(stream.take(quota, seen))
    while len(records) < target:
        live = [stream for stream in streams if not stream.spent]
        if not live:
            break
        for stream in live:
            records.extend(stream.take(1, seen))
            if len(records) == target:
                break
    return records


def _apportion(shares: Sequence[float], total: int) -> list[int]:
    """Integer quotas proportional to ``shares`` summing to ``total`` (largest remainder)."""
    whole = sum(shares)
    exact = [share / whole * total for share in shares]
    quotas = [int(x) for x in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: (quotas[i] - exact[i], i))
    for i in by_remainder[: total - sum(quotas)]:
        quotas[i] += 1
    return quotas
