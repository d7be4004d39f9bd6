from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson

from l2model.contract import CONTEXTS, FAMILIES
from l2model.corpus import (
    DEFAULT_SIZE,
    CorpusSplit,
    generate_corpus,
    read_jsonl,
    split_corpus,
    write_jsonl,
)
from l2model.corpus.dataset import stratum
from l2model.record import HARD_NEGATIVE_PREFIX, TrainingRecord, normalise_text

# seeds, incremental training guide, "Validate New Examples"
REQUIRED_FIELDS = (
    "text",
    "label",
    "family",
    "family_idx",
    "severity_score",
    "context",
    "context_idx",
    "weight_multiplier",
    "confidence",
    "source",
)


def _guide_errors(example: dict[str, object]) -> list[str]:
    errors = [f"missing {field}" for field in REQUIRED_FIELDS if field not in example]
    if example.get("label") not in (0, 1):
        errors.append("label")
    for field in ("severity_score", "confidence"):
        value = example.get(field)
        if not isinstance(value, float | int) or not 0.0 <= value <= 1.0:
            errors.append(field)
    weight = example.get("weight_multiplier")
    if not isinstance(weight, float | int) or weight <= 0:
        errors.append("weight_multiplier")
    return errors


def test_same_seed_same_records() -> None:
    assert generate_corpus(2_000, seed=3) == generate_corpus(2_000, seed=3)
    assert generate_corpus(2_000, seed=3) != generate_corpus(2_000, seed=4)


def test_default_size_has_20k_distinct_texts(corpus: list[TrainingRecord]) -> None:
    assert len(corpus) == DEFAULT_SIZE
    assert len({normalise_text(r.text) for r in corpus}) >= 20_000


def test_every_record_passes_the_guides_validation(corpus: list[TrainingRecord]) -> None:
    for record in corpus:
        example = orjson.loads(orjson.dumps(record.model_dump()))
        assert _guide_errors(example) == [], record.text
        assert FAMILIES[example["family_idx"]] == example["family"]
        assert CONTEXTS[example["context_idx"]] == example["context"]
        assert (example["label"] == 0) == (example["family"] == "benign")
        if example["label"] == 0:
            assert example["severity_score"] == 0.0


def test_balance_families_contexts_and_languages(corpus: list[TrainingRecord]) -> None:
    benign_share = sum(r.label == 0 for r in corpus) / len(corpus)
    assert 0.57 <= benign_share <= 0.63
    families = Counter(r.family for r in corpus)
    assert set(families) == set(FAMILIES)
    assert min(families[f] for f in FAMILIES if f != "benign") >= 500
    attacks = [r for r in corpus if r.label == 1]
    assert Counter(r.context for r in attacks).most_common(1)[0][0] == "attack"
    assert {r.context for r in corpus if r.label == 0} == {
        "technical",
        "conversational",
        "educational",
    }
    languages = Counter(r.notes.rsplit("lang=", 1)[-1] for r in corpus if "lang=" in r.notes)
    for lang in ("en", "es", "fr", "de", "pt"):
        assert languages[lang] >= 500, lang
    for family in ("PI", "JB", "CMD", "PII", "RAG", "HC"):
        attack_languages = {r.notes.rsplit("lang=", 1)[-1] for r in attacks if r.family == family}
        assert {"en", "es", "fr", "de", "pt"} <= attack_languages, family


def test_no_single_keyword_decides_the_label(corpus: list[TrainingRecord]) -> None:
    words = ("ignore", "admin", "password", "execute", "system", "base64", "root", "shell")
    for word in words:
        labels = {r.label for r in corpus if word in r.text.lower()}
        assert labels == {0, 1}, word
    endings = Counter(r.text.rstrip()[-1] for r in corpus if r.label == 1)
    assert endings["!"] / sum(endings.values()) < 0.1


def test_hard_negatives_cover_the_failure_modes(corpus: list[TrainingRecord]) -> None:
    hard = [r for r in corpus if r.is_hard_negative]
    assert len({normalise_text(r.text) for r in hard}) >= 150
    assert all(r.label == 0 and r.confidence == 1.0 for r in hard)
    assert all(len(r.notes) > len(HARD_NEGATIVE_PREFIX) + 5 for r in hard)
    texts = [r.text.lower() for r in hard]

    def count(*needles: str) -> int:
        return sum(any(n in t for n in needles) for t in texts)

    assert count("authentication in", "auth in", "authentication code") >= 4
    assert count("autenticación", "authentification", "authentifizierung", "autenticação") >= 4
    assert count("hooks") >= 5
    assert count("connect to", "database connections", "conecto", "connecter", "verbinde") >= 6
    assert count("typos", "errores", "fautes", "tippfehler", "erros de digitação") >= 5
    assert count("prompt injection", "inyección de prompts", "injection de prompt") >= 3
    assert count("rm -rf") >= 2
    assert "how do i implement administrator authentication in my web app?" in texts


def test_split_is_80_10_10_per_stratum_without_shared_texts(split: CorpusSplit) -> None:
    keys = {name: {normalise_text(r.text) for r in part} for name, part in split.parts()}
    assert not keys["train"] & keys["validation"]
    assert not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
    per_stratum = {name: Counter(stratum(r) for r in part) for name, part in split.parts()}
    for key, train_count in per_stratum["train"].items():
        total = train_count + per_stratum["validation"][key] + per_stratum["test"][key]
        assert abs(train_count - 0.8 * total) <= 1, key
        assert abs(per_stratum["test"][key] - 0.1 * total) <= 1, key
    for name, part in split.parts():
        assert sum(r.is_hard_negative for r in part) >= 15, name
        assert {r.family for r in part} == set(FAMILIES), name


def test_split_is_deterministic_and_ignores_record_order() -> None:
    records = generate_corpus(2_000)
    split = split_corpus(records)
    assert split == split_corpus(generate_corpus(2_000))
    reordered = split_corpus(list(reversed(records)))
    for (name, part), (_, other) in zip(split.parts(), reordered.parts(), strict=True):
        assert sorted(r.text for r in part) == sorted(r.text for r in other), name


def test_duplicates_travel_together() -> None:
    records = generate_corpus(2_000)
    copy = records[0].model_copy(update={"text": "  " + records[0].text.upper() + " "})
    split = split_corpus([*records, copy])
    homes = [name for name, part in split.parts() for r in part if r in (records[0], copy)]
    assert len(homes) == 2 and homes[0] == homes[1]


def test_jsonl_round_trip(tmp_path: Path, small_split: CorpusSplit) -> None:
    path = tmp_path / "test.jsonl"
    write_jsonl(path, small_split.test)
    assert read_jsonl(path) == small_split.test
    first = orjson.loads(path.read_bytes().splitlines()[0])
    assert list(first) == [*REQUIRED_FIELDS, "sub_category", "rule_id", "notes"]
