"""The golden set: frozen, versioned labelled prompts that are never trained on.

Canary probes are drawn from it, and the production targets bind on it
(docs/architecture.md, "Rules of the loop"). Each version is a committed JSONL file beside a
manifest holding its sha256 and counts; loading verifies both, so an edited or truncated file
is refused rather than silently measuring something else. ``l2model.corpus.golden`` wrote the
files; nothing here regenerates them.

Nothing that trains may see a golden text: ``refuse_golden`` is called by every trainer, and
``is_golden_text`` lets the report agent and the dataset assembler keep golden texts out of
curated data. Membership is by ``text_key`` (the normalised text's sha256). Why the hard
negatives appear as held-out variants: docs/decisions/0010-golden-set.md.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from l2model.contract import FAMILIES
from l2model.record import BENIGN, HARD_NEGATIVE_PREFIX, text_key

__all__ = [
    "CURRENT_VERSION",
    "GoldenManifest",
    "GoldenProbe",
    "GoldenSet",
    "GoldenSetCorrupt",
    "GoldenSetLeak",
    "golden_dir",
    "golden_text_keys",
    "is_golden_text",
    "load_golden",
    "refuse_golden",
]

CURRENT_VERSION = "v1"

ProbeKind = Literal["hard_negative", "programming", "benign", "attack"]


class GoldenProbe(BaseModel):
    """One golden prompt. The field names match ``l2model.evaluation.LabeledPrompt``, so a
    golden file is also an evaluation file (``l2loop model eval MODEL l2model/golden/v1.jsonl``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    probe_id: str = Field(pattern=r"^[a-z0-9]+-\d{5}$")
    text: str = Field(min_length=1)
    label: Literal[0, 1]
    family: str
    kind: ProbeKind
    sub_category: str = ""
    notes: str = ""
    source: str
    # text_key of the hand-written hard negative this probe is a held-out variant of.
    variant_of: str | None = None

    @property
    def is_hard_negative(self) -> bool:
        return self.label == 0 and self.notes.startswith(HARD_NEGATIVE_PREFIX)


class GoldenManifest(BaseModel):
    """``<version>.manifest.json``: what the file must hash to and hold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    records: int
    counts: dict[str, int]
    families: dict[str, int]
    generator: dict[str, object]


class GoldenSetCorrupt(RuntimeError):
    """The golden file does not match its manifest (edited, truncated or missing)."""


class GoldenSetLeak(ValueError):
    """A training set holds golden texts."""


class GoldenSet(BaseModel):
    model_config = ConfigDict(frozen=True)

    manifest: GoldenManifest
    probes: tuple[GoldenProbe, ...]

    @property
    def version(self) -> str:
        return self.manifest.version


def golden_dir() -> Path:
    return Path(__file__).resolve().parent


def manifest_path(version: str, directory: Path | None = None) -> Path:
    return (directory or golden_dir()) / f"{version}.manifest.json"


def count_probes(probes: Iterable[GoldenProbe]) -> tuple[dict[str, int], dict[str, int]]:
    """The manifest's ``counts`` (by label and kind) and ``families``."""
    counts = {"benign": 0, "malicious": 0, "hard_negative": 0, "programming": 0}
    families = dict.fromkeys(FAMILIES, 0)
    for probe in probes:
        counts["benign" if probe.label == 0 else "malicious"] += 1
        if probe.kind in ("hard_negative", "programming"):
            counts[probe.kind] += 1
        families[probe.family] += 1
    return counts, families


@functools.cache
def load_golden(version: str = CURRENT_VERSION, directory: Path | None = None) -> GoldenSet:
    """The golden set ``version``, verified against its manifest's sha256 and counts."""
    path = manifest_path(version, directory)
    if not path.exists():
        raise GoldenSetCorrupt(f"no golden set {version}: {path} is missing")
    manifest = GoldenManifest.model_validate_json(path.read_bytes())
    data_path = path.parent / manifest.file
    if not data_path.exists():
        raise GoldenSetCorrupt(f"golden set {version}: {data_path} is missing")
    raw = data_path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != manifest.sha256:
        raise GoldenSetCorrupt(
            f"golden set {version}: {data_path} hashes to {digest}, its manifest says "
            f"{manifest.sha256}; the file was changed after it was frozen"
        )
    probes = tuple(
        GoldenProbe.model_validate(orjson.loads(line)) for line in raw.splitlines() if line
    )
    counts, families = count_probes(probes)
    if (len(probes), counts, families) != (manifest.records, manifest.counts, manifest.families):
        raise GoldenSetCorrupt(f"golden set {version}: counts do not match its manifest")
    for probe in probes:
        if (probe.label == 0) != (probe.family == BENIGN):
            raise GoldenSetCorrupt(f"golden probe {probe.probe_id}: label contradicts family")
    return GoldenSet(manifest=manifest, probes=probes)


@functools.cache
def golden_text_keys(version: str = CURRENT_VERSION) -> frozenset[str]:
    return frozenset(text_key(probe.text) for probe in load_golden(version).probes)


def is_golden_text(text: str, version: str = CURRENT_VERSION) -> bool:
    """True when ``text`` (normalised) is a golden prompt, which nothing may train on."""
    return text_key(text) in golden_text_keys(version)


def refuse_golden(texts: Iterable[str], *, what: str, version: str = CURRENT_VERSION) -> None:
    """Raises GoldenSetLeak when any of ``texts`` is a golden prompt; ``what`` names the set."""
    keys = golden_text_keys(version)
    leaked = [text for text in texts if text_key(text) in keys]
    if leaked:
        examples = "; ".join(repr(text[:60]) for text in leaked[:3])
        raise GoldenSetLeak(
            f"{what} holds {len(leaked)} prompt(s) of golden set {version}, which is never "
            f"trained on (docs/decisions/0010-golden-set.md); remove them first. e.g. {examples}"
        )
