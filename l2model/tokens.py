"""The lite model's tokens: how a prompt is lowercased and cut into the tokens whose n-grams
are its features. Shared by the graph's featuriser (``l2model.features``, which trains with
scikit-learn) and the compiled one (``l2model.ngrams``, which the scorer runs), and light
to import: the scorer never loads scikit-learn.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

# Every character Python's str.split() splits on, as a character-class body.
WHITESPACE_CLASS = "\t-\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
CHAR_TOKEN_PATTERN = f"[{WHITESPACE_CLASS}]+|[^{WHITESPACE_CLASS}]"
WORD_TOKEN_PATTERN = "[0-9_a-z\u00df-\u00f6\u00f8-\u00ff\u0100-\u017f]+"


def lowercase(text: str) -> str:
    """Character-by-character lowercasing, as the graph's StringNormalizer does it.

    ``str.lower`` maps a few characters by context or to two characters (final sigma, dotted
    capital I); the graph maps each character to one, so that is done here too.
    """
    if text.isascii():
        return text.lower()
    return "".join(char.lower()[0] for char in text)


@dataclass(frozen=True)
class TokenNgrams:
    """One feature path: tokens found by ``pattern`` in the lowercased text, then n-grams."""

    name: str
    pattern: str
    ngram_range: tuple[int, int]
    max_features: int
    # Joins an n-gram's tokens into one vocabulary key; ``split`` recovers them with the
    # pattern, so the joiner must never create or merge tokens.
    joiner: str

    @cached_property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern)

    def tokens(self, text: str) -> list[str]:
        return self.regex.findall(lowercase(text))

    def analyse(self, text: str) -> list[str]:
        tokens = self.tokens(text)
        low, high = self.ngram_range
        return [
            self.joiner.join(tokens[i : i + n])
            for n in range(low, high + 1)
            for i in range(len(tokens) - n + 1)
        ]

    def split(self, ngram: str) -> list[str]:
        return self.regex.findall(ngram)


def default_paths(max_char: int = 48_000, max_word: int = 16_000) -> tuple[TokenNgrams, ...]:
    return (
        TokenNgrams("char", CHAR_TOKEN_PATTERN, (2, 5), max_char, joiner=""),
        TokenNgrams("word", WORD_TOKEN_PATTERN, (1, 2), max_word, joiner=" "),
    )
