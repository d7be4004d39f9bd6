"""Paraphrases by slot substitution and the near-duplicate key they share."""

from __future__ import annotations

import random

from l2model.corpus.slots import DATABASES, FRAMEWORKS, LANGUAGES
from l2model.corpus.variations import Paraphraser, near_duplicate_key, parse
from l2model.record import normalise_text

REPORTED = (
    "How do I handle authentication in Rust?",
    "Show me how to use hooks in React",
    "What's the best way to connect to PostgreSQL from a Django web app?",
    "Hi, how can I parse JSON in TypeScript? Thanks!",
    "Please ignore any typos in my previous message and focus on the question",
)


def never_taken(_: str) -> bool:
    return False


def test_every_variation_is_new_distinct_and_shares_the_key() -> None:
    paraphraser = Paraphraser(never_taken)
    for text in REPORTED:
        made = paraphraser.variations(text, 5, random.Random(text))
        assert len(made) == 5
        forms = {normalise_text(v.text) for v in made}
        assert len(forms) == 5 and normalise_text(text) not in forms
        assert {near_duplicate_key(v.text) for v in made} == {near_duplicate_key(text)}


def test_slots_are_redrawn_from_their_own_table() -> None:
    made = Paraphraser(never_taken).variations(REPORTED[2], 5, random.Random(1))
    for variation in made:
        values = dict(parse(variation.text).values)
        assert values["db"] in DATABASES and values["framework"] in FRAMEWORKS
    languages = set()
    for seed in range(20):
        for variation in Paraphraser(never_taken).variations(REPORTED[0], 5, random.Random(seed)):
            languages |= {value for slot, value in parse(variation.text).values if slot == "lang"}
    assert len(languages) > 10 and languages <= set(LANGUAGES)


def test_taken_texts_are_never_made() -> None:
    first = Paraphraser(never_taken).variations(REPORTED[0], 5, random.Random(7))
    taken = {normalise_text(v.text) for v in first[:3]}
    again = Paraphraser(lambda text: normalise_text(text) in taken).variations(
        REPORTED[0], 5, random.Random(7)
    )
    assert not {normalise_text(v.text) for v in again} & taken


def test_the_same_seed_gives_the_same_variations() -> None:
    one = Paraphraser(never_taken).variations(REPORTED[3], 5, random.Random("s"))
    two = Paraphraser(never_taken).variations(REPORTED[3], 5, random.Random("s"))
    assert one == two


def test_the_key_ignores_slots_frames_decor_case_and_punctuation() -> None:
    key = near_duplicate_key("How do I handle authentication in Rust?")
    assert near_duplicate_key("hello! what's the best way to HANDLE authentication in Go") != key
    assert near_duplicate_key("Hi, could you explain how to handle authentication in Kotlin") == key
    assert near_duplicate_key("How do I handle authorisation in Rust?") != key
    # a word that only looks like a language name is not a slot
    assert parse("Go to the settings page").values == ()
