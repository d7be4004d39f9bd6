"""Counterparts: for each reported example, records of the opposite label written in the same
style, so that what the reports share by accident does not become the signal.

When most reported misses are non-English attacks, a refit on them learns "non-English means
attack" (docs/decisions/0019-memory-of-confirmed-examples.md). The seeds' remedy is to add,
for each new malicious pattern, two or three benign variations, and the reverse; here they
are drawn from records already labelled (the base corpus, the hand-written hard negatives)
that match the example on script, length and markup, and together weigh what the example
weighs: on those style features the reports then push as much one way as the other.

Pure: no I/O, no randomness but a seeded hash.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Final

import numpy as np
from pydantic import BaseModel, ConfigDict

from l2model.record import TrainingRecord, text_key
from l2model.script import dominant_script

Style = tuple[str, int, bool]

# Characters of code, markup and templates. In the base corpus 62 % of the records holding
# one are attacks against 36 % of the others (injected tags, fake system blocks, shell), and
# both labels hold thousands of them: a style a report can share by accident, and one that
# counterparts can still be found for. Line count and capitals measured weaker (57 %, 54 %).
_MARKUP: Final = re.compile(r"[{}\[\]<>=;`|$\\]")


def style_key(text: str) -> Style:
    """What a counterpart must share with its example: the dominant Unicode script (the
    feature behind the known failure), the length bucket ``floor(log2(len))`` (short and long
    prompts read differently to the n-gram features) and whether the text holds a code or
    markup character (``{ } [ ] < > = ; ` | $ \\``). Cheap on purpose: it runs on every
    record of a full retraining, and a finer key leaves more examples without a match."""
    return dominant_script(text), int(math.log2(max(len(text), 1))), bool(_MARKUP.search(text))


class MatchCounts(BaseModel):
    """How the examples of one script were matched: with ``per_example`` counterparts
    (``full``), fewer (``partly``) or none (``unmatched``); ``nearest`` of the matched ones
    had none of their exact style and took the nearest length bucket and markup."""

    model_config = ConfigDict(frozen=True)

    full: int
    partly: int
    unmatched: int
    nearest: int


class CounterpartSummary(BaseModel):
    """What ``matched_counterparts`` found, for a manifest."""

    model_config = ConfigDict(frozen=True)

    per_example: int
    examples: int
    counterparts: int
    by_script: dict[str, MatchCounts]


def _seeded(seed: int, text: str) -> int:
    digest = hashlib.blake2b(
        text_key(text).encode("ascii"), digest_size=8, key=str(seed).encode("ascii")
    )
    return int.from_bytes(digest.digest(), "big")


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that scatters nearby inputs."""
    z: np.ndarray = values ^ (values >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    mixed: np.ndarray = z ^ (z >> np.uint64(31))
    return mixed


def _distance(a: Style, b: Style) -> tuple[int, bool]:
    return abs(a[1] - b[1]), a[2] != b[2]


class _Pool:
    """The pool grouped by label, script and style, each candidate with its seeded hash."""

    def __init__(self, pool: Sequence[TrainingRecord], excluded: set[str], seed: int) -> None:
        # One record per text and label whatever the pool's order: of duplicates, the one
        # whose JSON sorts first.
        unique: dict[tuple[int, str], TrainingRecord] = {}
        for record in pool:
            key = text_key(record.text)
            if key in excluded:
                continue
            held = unique.get((record.label, key))
            if held is None or record.model_dump_json() < held.model_dump_json():
                unique[(record.label, key)] = record
        self._groups: dict[tuple[int, str], dict[Style, list[TrainingRecord]]] = {}
        for record in unique.values():
            style = style_key(record.text)
            scripts = self._groups.setdefault((record.label, style[0]), {})
            scripts.setdefault(style, []).append(record)
        self._seed = seed
        self._found: dict[tuple[int, Style], tuple[list[TrainingRecord], np.ndarray, bool]] = {}

    def candidates(self, label: int, style: Style) -> tuple[list[TrainingRecord], np.ndarray, bool]:
        """The records of ``label`` in ``style`` or, when there are none, in the same script
        at the nearest length bucket and markup (both neighbours on a tie); their hashes; and
        whether the style matched exactly."""
        if (label, style) not in self._found:
            styles = self._groups.get((label, style[0]), {})
            nearest = min((_distance(style, other) for other in styles), default=None)
            records = [
                record
                for other in sorted(styles)
                if _distance(style, other) == nearest
                for record in styles[other]
            ]
            hashes = np.array([_seeded(self._seed, r.text) for r in records], dtype=np.uint64)
            self._found[(label, style)] = records, hashes, style in styles
        return self._found[(label, style)]


def matched_counterparts(
    examples: Sequence[TrainingRecord],
    pool: Sequence[TrainingRecord],
    per_example: int,
    seed: int,
) -> tuple[list[TrainingRecord], CounterpartSummary]:
    """For each example, up to ``per_example`` records of ``pool`` of the opposite label and
    the same ``style_key`` (else the same script's nearest style; none when the pool holds
    no record of the opposite label in that script), and a summary by script.

    Which records is decided by a hash of ``seed``, the example's text and the candidate's,
    never by the pool's order: two examples of one style get different counterparts. Each
    counterpart weighs the example's ``weight_multiplier`` divided by how many it got, so
    that an example's counterparts together weigh what it weighs, and its notes name the
    example (``counterpart of`` and the first 12 hex digits of its ``text_key``). No record
    whose text is among the examples is returned."""
    if per_example < 1:
        raise ValueError(f"per_example must be at least 1, not {per_example}")
    keys = [text_key(example.text) for example in examples]
    candidates = _Pool(pool, set(keys), seed)
    counterparts: list[TrainingRecord] = []
    counts: dict[str, Counter[str]] = {}
    for example, key in zip(examples, keys, strict=True):
        style = style_key(example.text)
        records, hashes, exact = candidates.candidates(1 - example.label, style)
        taken = min(per_example, len(records))
        tally = counts.setdefault(style[0], Counter())
        if not taken:
            tally["unmatched"] += 1
            continue
        tally["full" if taken == per_example else "partly"] += 1
        tally["nearest"] += not exact
        ranks = _mix(hashes ^ np.uint64(_seeded(seed, example.text)))
        # The lowest ranks, in rank order: argpartition keeps this linear in the candidates.
        lowest = np.argpartition(ranks, taken - 1)[:taken]
        chosen = lowest[np.argsort(ranks[lowest])]
        weight = example.weight_multiplier / taken
        counterparts += [
            records[at].model_copy(
                update={"weight_multiplier": weight, "notes": f"counterpart of {key[:12]}"}
            )
            for at in chosen
        ]
    summary = CounterpartSummary(
        per_example=per_example,
        examples=len(examples),
        counterparts=len(counterparts),
        by_script={
            script: MatchCounts(
                full=tally["full"],
                partly=tally["partly"],
                unmatched=tally["unmatched"],
                nearest=tally["nearest"],
            )
            for script, tally in sorted(counts.items())
        },
    )
    return counterparts, summary
