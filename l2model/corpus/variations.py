"""Paraphrases of a reported prompt by slot substitution, and the near-duplicate key.

A production false positive such as "How do I handle authentication in Rust?" is one instance
of a pattern the model gets wrong; the retraining handoff asks for variations of it (other
programming languages, frameworks, databases, phrasings) so that the model learns the
pattern, not the sentence. ``Paraphraser.variations`` finds the slot values of the corpus's
own tables in the text (``slots.LANGUAGES``, ``FRAMEWORKS``, ``DATABASES``, ``APP_KINDS``),
the question frame it opens with ("How do I", "What's the best way to", ...) and the
greeting/closer decor of ``slots.EN_DECOR``, and re-draws them.

``near_duplicate_key`` removes exactly what a variation changes (slot values become their
slot's name, the frame and the decor are dropped, then case, whitespace and punctuation), so a
text and every variation of it share one key by construction; the variation maker checks it.
Texts that differ only in a language name or a greeting share the key too: the dataset
assembler keeps everything with one key in one split.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from l2model.corpus.slots import APP_KINDS, DATABASES, EN_DECOR, FRAMEWORKS, LANGUAGES
from l2model.record import normalise_text

# Names that are also ordinary words or people's names ("Go to settings", "Plan C", "Julia
# said"): substituting them would turn a sentence into nonsense.
_AMBIGUOUS = frozenset({"C", "R", "Go", "Julia", "Express", "Git"})

SLOT_TABLES: dict[str, tuple[str, ...]] = {
    "lang": tuple(v for v in LANGUAGES if v not in _AMBIGUOUS),
    "framework": tuple(v for v in FRAMEWORKS if v not in _AMBIGUOUS),
    "db": DATABASES,
    "app": APP_KINDS,
}

# Question frames that take the same verb phrase ("... handle authentication in Rust").
FRAMES = (
    "How do I",
    "How can I",
    "How would I",
    "How should I",
    "What's the best way to",
    "What is the best way to",
    "What is the right way to",
    "Is there a way to",
    "Can you show me how to",
    "Could you explain how to",
    "Explain how to",
    "Show me how to",
    "Help me",
    "I need to",
    "I want to",
)

_SLOT_OF = {value: slot for slot, values in SLOT_TABLES.items() for value in values}
# Longest first, so that "JavaScript" wins over "Java" and "ASP.NET Core" over nothing shorter.
_SLOT_RE = re.compile(
    r"(?<![\w+#.])("
    + "|".join(re.escape(v) for v in sorted(_SLOT_OF, key=lambda v: (-len(v), v)))
    + r")(?![\w+#]|\.\w)"
)
_FRAME_RE = re.compile(
    r"^(" + "|".join(re.escape(f) for f in sorted(FRAMES, key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)
_OPENERS = tuple(sorted(EN_DECOR.openers, key=len, reverse=True))
_CLOSERS = tuple(sorted(EN_DECOR.closers, key=len, reverse=True))
_MARK = "\x00"
_PUNCTUATION = re.compile(rf"[^\w\s{_MARK}]")


@dataclass(frozen=True)
class Parsed:
    """A text cut into decor, frame, literal pieces and slot values."""

    opener: str
    frame: str
    # Alternating: literal, (slot, value), literal, ... always starting and ending literal.
    literals: tuple[str, ...]
    values: tuple[tuple[str, str], ...]
    closer: str

    def render(self, opener: str, frame: str, values: tuple[str, ...], closer: str) -> str:
        parts = [opener, frame]
        for literal, value in zip(self.literals, (*values, ""), strict=True):
            parts += [literal, value]
        return "".join(parts).rstrip() + closer if closer else "".join(parts)


def parse(text: str) -> Parsed:
    # Most texts carry no decor: the tuple tests are one C call each.
    opener = next(o for o in _OPENERS if text.startswith(o)) if text.startswith(_OPENERS) else ""
    body = text[len(opener) :]
    closer = ""
    if body.endswith(_CLOSERS):
        closer = next((c for c in _CLOSERS if body.endswith(c) and len(body) > len(c)), "")
    body = body[: len(body) - len(closer)] if closer else body
    match = _FRAME_RE.match(body)
    frame = match.group(0) if match else ""
    body = body[len(frame) :]
    literals: list[str] = []
    values: list[tuple[str, str]] = []
    cursor = 0
    for found in _SLOT_RE.finditer(body):
        literals.append(body[cursor : found.start()])
        values.append((_SLOT_OF[found.group(1)], found.group(1)))
        cursor = found.end()
    literals.append(body[cursor:])
    return Parsed(opener, frame, tuple(literals), tuple(values), closer)


def near_duplicate_key(text: str) -> bytes:
    """16 bytes naming the text's pattern: slot values, question frame, decor, case,
    whitespace and punctuation removed."""
    parsed = parse(text)
    parts = ["frame " if parsed.frame else ""]
    for literal, slot in zip(parsed.literals, (*(s for s, _ in parsed.values), ""), strict=True):
        parts += [literal, f" {_MARK}{slot}{_MARK} " if slot else ""]
    skeleton = " ".join(_PUNCTUATION.sub(" ", normalise_text("".join(parts))).split())
    return hashlib.sha256(skeleton.encode("utf-8")).digest()[:16]


@dataclass(frozen=True)
class Variation:
    text: str
    # What was re-drawn: "slot", "frame" or "decor" (the strongest change made).
    method: str
    change: str


class Paraphraser:
    """Makes distinct variations of a text; ``is_taken`` says whether a text (by its
    normalised form) is already in the data set or may not be used at all."""

    def __init__(self, is_taken: Callable[[str], bool], attempts_per_variation: int = 12) -> None:
        self._is_taken = is_taken
        self._attempts = attempts_per_variation

    def variations(self, text: str, count: int, rng: random.Random) -> list[Variation]:
        """Up to ``count`` variations, each new to ``is_taken`` (the caller then records it),
        each sharing ``text``'s near-duplicate key. Fewer when the text offers no more."""
        parsed = parse(text)
        key = near_duplicate_key(text)
        made: list[Variation] = []
        seen = {normalise_text(text)}
        for _ in range(count * self._attempts):
            if len(made) == count:
                break
            candidate = self._draw(parsed, rng)
            if candidate is None:
                continue
            normalised = normalise_text(candidate.text)
            if normalised in seen or self._is_taken(candidate.text):
                continue
            if near_duplicate_key(candidate.text) != key:
                # A substituted value ran into its neighbours and parses differently: it is
                # not a variation of this pattern any more.
                continue
            seen.add(normalised)
            made.append(candidate)
        return made

    @staticmethod
    def _draw(parsed: Parsed, rng: random.Random) -> Variation | None:
        changes: list[str] = []
        method = "decor"
        values: list[str] = []
        for slot, value in parsed.values:
            if rng.random() < 0.8:
                new = rng.choice(SLOT_TABLES[slot])
                if new != value:
                    changes.append(f"{slot} {value} -> {new}")
                    method = "slot"
                    value = new
            values.append(value)
        frame = parsed.frame
        if frame and rng.random() < 0.6:
            new_frame = rng.choice(FRAMES)
            if new_frame.casefold() != frame.casefold():
                changes.append(f"frame {frame!r} -> {new_frame!r}")
                method = "frame" if method == "decor" else method
                frame = new_frame
        opener, closer = parsed.opener, parsed.closer
        if not changes or rng.random() < 0.3:
            opener = rng.choice(("", *EN_DECOR.openers))
        if not changes or rng.random() < 0.3:
            closer = rng.choice(("", *EN_DECOR.closers))
        if (opener, closer) != (parsed.opener, parsed.closer):
            changes.append("decor")
        if not changes:
            return None
        if frame and opener.endswith(", ") and not frame.startswith("I "):
            frame = frame[0].lower() + frame[1:]
        text = parsed.render(opener, frame, tuple(values), closer)
        return Variation(text=text, method=method, change="; ".join(changes))
