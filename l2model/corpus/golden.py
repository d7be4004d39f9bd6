"""Writes a golden set version from the corpus generator: ``python -m l2model.corpus.golden``.

Run once per version; the output is committed and never rewritten (a new version gets a new
name). The draw is deterministic: templates expanded under ``GOLDEN_SEED``, keeping only
texts that the default corpus (``DEFAULT_SIZE``, seed 0: the committed model's) does not
hold, and one held-out variant of every hand-written hard negative.
"""

from __future__ import annotations

import argparse
import hashlib
import random
from collections.abc import Sequence
from pathlib import Path

import orjson

from l2model.contract import FAMILIES
from l2model.corpus import DEFAULT_SIZE, generate_corpus
from l2model.corpus.hard_negatives import hard_negatives
from l2model.golden import (
    CURRENT_VERSION,
    GoldenManifest,
    GoldenProbe,
    ProbeKind,
    count_probes,
    golden_dir,
    manifest_path,
)
from l2model.record import BENIGN, TrainingRecord, normalise_text, seeded_rank, text_key

# Distinct from every seed a model is built with (0) and from the demo traffic's (42).
GOLDEN_SEED = 20_261_124
# The templated pool the probes are cut from, before dropping what the default corpus holds.
POOL_SIZE = 12_000
PROGRAMMING_PROBES = 300
OTHER_BENIGN_PROBES = 300
PROBES_PER_FAMILY = 100
PROGRAMMING_PREFIX = "programming_"

# Neutral frames that make a hard negative a new prompt with the same benign request: the
# words that make it hard stay, the exact text the models trained on does not.
HARD_NEGATIVE_FRAMES = (
    "Quick question: {text}",
    "{text} Thanks in advance.",
    "Hi! {text}",
    "Sorry if this is a basic one. {text}",
    "{text} A short answer is fine.",
    "For a project at work: {text}",
    "{text} (asking for my team)",
    "A colleague asked me this and I was not sure: {text}",
    "{text} Please keep it brief.",
    "Hello. {text}",
)


def _pick(records: Sequence[TrainingRecord], count: int, seed: int) -> list[TrainingRecord]:
    ordered = sorted(records, key=lambda r: seeded_rank(seed, normalise_text(r.text)))
    if len(ordered) < count:
        raise ValueError(f"only {len(ordered)} held-out candidates for a quota of {count}")
    return ordered[:count]


def hard_negative_variants(seed: int, taken: set[str]) -> list[tuple[TrainingRecord, str]]:
    """One framed variant of every hard negative, none of whose texts is in ``taken``."""
    variants = []
    for record in hard_negatives():
        rng = random.Random(f"{seed}:{text_key(record.text)}")
        frames = rng.sample(HARD_NEGATIVE_FRAMES, len(HARD_NEGATIVE_FRAMES))
        for frame in frames:
            text = frame.format(text=record.text)
            if normalise_text(text) not in taken:
                break
        else:
            raise ValueError(f"every frame of hard negative {record.text!r} is taken")
        taken.add(normalise_text(text))
        variants.append((record, text))
    return variants


def build_probes(version: str, seed: int = GOLDEN_SEED) -> list[GoldenProbe]:
    taken = {normalise_text(r.text) for r in generate_corpus(DEFAULT_SIZE, 0, exclude_golden=False)}
    pool = [
        r
        for r in generate_corpus(POOL_SIZE, seed, exclude_golden=False)
        if not r.is_hard_negative and normalise_text(r.text) not in taken
    ]
    prefix = version.replace("v", "g")
    probes: list[GoldenProbe] = []

    def add(
        kind: ProbeKind, record: TrainingRecord, text: str, variant_of: str | None = None
    ) -> None:
        probes.append(
            GoldenProbe(
                probe_id=f"{prefix}-{len(probes):05d}",
                text=text,
                label=record.label,
                family=record.family,
                kind=kind,
                sub_category=record.sub_category,
                notes=record.notes,
                source=f"golden_{version}",
                variant_of=variant_of,
            )
        )

    for record, text in hard_negative_variants(seed, taken):
        add("hard_negative", record, text, text_key(record.text))
    benign = [r for r in pool if r.family == BENIGN]
    programming = [r for r in benign if r.sub_category.startswith(PROGRAMMING_PREFIX)]
    other = [r for r in benign if not r.sub_category.startswith(PROGRAMMING_PREFIX)]
    for record in _pick(programming, PROGRAMMING_PROBES, seed):
        add("programming", record, record.text)
    for record in _pick(other, OTHER_BENIGN_PROBES, seed):
        add("benign", record, record.text)
    for family in FAMILIES:
        if family == BENIGN:
            continue
        for record in _pick([r for r in pool if r.family == family], PROBES_PER_FAMILY, seed):
            add("attack", record, record.text)
    if len({normalise_text(p.text) for p in probes}) != len(probes):
        raise ValueError("two golden probes share a normalised text")
    return probes


def write_golden(version: str, out_dir: Path, seed: int = GOLDEN_SEED) -> GoldenManifest:
    if manifest_path(version, out_dir).exists():
        raise FileExistsError(f"golden set {version} exists in {out_dir}: freeze a new version")
    probes = build_probes(version, seed)
    data = b"".join(orjson.dumps(p.model_dump()) + b"\n" for p in probes)
    counts, families = count_probes(probes)
    manifest = GoldenManifest(
        version=version,
        file=f"{version}.jsonl",
        sha256=hashlib.sha256(data).hexdigest(),
        records=len(probes),
        counts=counts,
        families=families,
        generator={
            "module": "l2model.corpus.golden",
            "seed": seed,
            "pool_size": POOL_SIZE,
            "held_out_from": {
                "generator": "l2model.corpus.generate_corpus",
                "size": DEFAULT_SIZE,
                "seed": 0,
            },
            "hard_negatives": "one framed variant of each (docs/decisions/0010-golden-set.md)",
        },
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / manifest.file).write_bytes(data)
    manifest_path(version, out_dir).write_bytes(
        orjson.dumps(manifest.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"
    )
    return manifest


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m l2model.corpus.golden", description=__doc__)
    parser.add_argument("--version", default=CURRENT_VERSION)
    parser.add_argument("--out", type=Path, default=golden_dir())
    parser.add_argument("--seed", type=int, default=GOLDEN_SEED)
    args = parser.parse_args(argv)
    manifest = write_golden(args.version, args.out, args.seed)
    print(manifest.model_dump_json(indent=2))


if __name__ == "__main__":
    main()
