from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import orjson
import pytest

from l2model.contract import FAMILIES
from l2model.corpus import CorpusSplit, generate_corpus
from l2model.corpus.golden import build_probes
from l2model.corpus.hard_negatives import hard_negatives
from l2model.golden import (
    CURRENT_VERSION,
    GoldenSetCorrupt,
    GoldenSetLeak,
    golden_dir,
    is_golden_text,
    load_golden,
    manifest_path,
    refuse_golden,
)
from l2model.lite import train_lite
from l2model.record import BENIGN, TrainingRecord, normalise_text, text_key
from l2model.training import validation_threshold


def _copy(tmp_path: Path) -> Path:
    manifest = manifest_path(CURRENT_VERSION)
    shutil.copy(manifest, tmp_path / manifest.name)
    shutil.copy(golden_dir() / f"{CURRENT_VERSION}.jsonl", tmp_path / f"{CURRENT_VERSION}.jsonl")
    return tmp_path


def test_the_committed_file_is_what_the_builder_writes() -> None:
    probes = build_probes(CURRENT_VERSION)
    written = b"".join(orjson.dumps(p.model_dump()) + b"\n" for p in probes)
    assert written == (golden_dir() / f"{CURRENT_VERSION}.jsonl").read_bytes()


def test_an_edited_file_is_refused(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    data = directory / f"{CURRENT_VERSION}.jsonl"
    data.write_bytes(data.read_bytes().replace(b'"label":1', b'"label":0', 1))
    with pytest.raises(GoldenSetCorrupt, match="hashes to"):
        load_golden(CURRENT_VERSION, directory)


def test_a_truncated_file_with_a_matching_hash_is_refused_on_its_counts(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    data = directory / f"{CURRENT_VERSION}.jsonl"
    data.write_bytes(b"".join(data.read_bytes().splitlines(keepends=True)[:-1]))
    manifest = orjson.loads(manifest_path(CURRENT_VERSION, directory).read_bytes())
    manifest["sha256"] = hashlib.sha256(data.read_bytes()).hexdigest()
    manifest_path(CURRENT_VERSION, directory).write_bytes(orjson.dumps(manifest))
    with pytest.raises(GoldenSetCorrupt, match="counts"):
        load_golden(CURRENT_VERSION, directory)


def test_every_family_and_the_programming_questions_are_probed() -> None:
    probes = load_golden().probes
    for family in FAMILIES:
        assert sum(p.family == family for p in probes) >= 100, family
    programming = [p for p in probes if p.kind == "programming"]
    assert len(programming) >= 100
    assert all(p.label == 0 and p.sub_category.startswith("programming_") for p in programming)


def test_every_hard_negative_has_one_held_out_variant() -> None:
    variants = [p for p in load_golden().probes if p.kind == "hard_negative"]
    originals = {text_key(r.text): r for r in hard_negatives()}
    assert sorted(p.variant_of or "" for p in variants) == sorted(originals)
    for probe in variants:
        original = originals[probe.variant_of or ""]
        assert probe.label == 0 and probe.family == BENIGN and probe.is_hard_negative
        assert original.text in probe.text
        assert text_key(probe.text) != text_key(original.text)


def test_no_golden_text_is_in_the_default_corpus(corpus: list[TrainingRecord]) -> None:
    """Also proves the exclusion changed nothing: the committed model's corpus is the one
    drawn without it."""
    keys = {normalise_text(p.text) for p in load_golden().probes}
    unfiltered = generate_corpus(exclude_golden=False)
    assert not keys & {normalise_text(r.text) for r in unfiltered}
    assert unfiltered == corpus


def test_golden_texts_are_never_drawn_into_a_corpus() -> None:
    keys = {normalise_text(p.text) for p in load_golden().probes}
    pool = generate_corpus(12_000, seed=20_261_124)
    assert not keys & {normalise_text(r.text) for r in pool}


def _as_record(text: str, label: int) -> TrainingRecord:
    family = BENIGN if label == 0 else "PI"
    return TrainingRecord.build(
        text,
        family,
        "technical",
        severity=0.5 * label,
        weight=1.0,
        confidence=1.0,
        source="test",
    )


def test_membership_is_on_the_normalised_text() -> None:
    probe = load_golden().probes[0]
    assert is_golden_text(probe.text)
    assert is_golden_text("  " + probe.text.upper() + "\n")
    assert not is_golden_text(probe.text + " and one more thing")


def test_trainers_refuse_golden_records(small_split: CorpusSplit) -> None:
    probe = load_golden().probes[-1]
    leaked = [*small_split.train[:50], _as_record(probe.text.upper(), probe.label)]
    with pytest.raises(GoldenSetLeak, match="golden set v1"):
        train_lite(leaked)
    with pytest.raises(GoldenSetLeak, match="validation"):
        validation_threshold(leaked, {})
    with pytest.raises(GoldenSetLeak, match="curated"):
        refuse_golden([probe.text], what="the curated day file")
    refuse_golden([r.text for r in small_split.train], what="a clean set")
