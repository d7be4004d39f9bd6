"""The writing system a text is mostly in: a language key for traffic that names none.

Scan events may say their language in metadata; most do not. Grouping such traffic by the
Unicode script its letters are in is crude (Spanish and English are both ``latin``) but it
needs no model, never fails, and separates exactly the traffic a change learned on English
reports is most likely to treat differently: other alphabets.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from typing import Final

OTHER: Final = "other"

# (first code point, last code point, script), sorted and disjoint. Han, kana and Hangul
# are one group: what matters here is "not an alphabet the corpus is mostly written in".
_RANGES: Final[tuple[tuple[int, int, str], ...]] = (
    (0x0041, 0x005A, "latin"),
    (0x0061, 0x007A, "latin"),
    (0x00AA, 0x00AA, "latin"),
    (0x00BA, 0x00BA, "latin"),
    (0x00C0, 0x024F, "latin"),
    (0x0250, 0x02AF, "latin"),
    (0x0370, 0x03FF, "greek"),
    (0x0400, 0x052F, "cyrillic"),
    (0x0530, 0x058F, "armenian"),
    (0x0590, 0x05FF, "hebrew"),
    (0x0600, 0x06FF, "arabic"),
    (0x0750, 0x077F, "arabic"),
    (0x08A0, 0x08FF, "arabic"),
    (0x0900, 0x097F, "devanagari"),
    (0x0980, 0x09FF, "bengali"),
    (0x0E00, 0x0E7F, "thai"),
    (0x10A0, 0x10FF, "georgian"),
    (0x1100, 0x11FF, "cjk"),
    (0x1C80, 0x1C8F, "cyrillic"),
    (0x1E00, 0x1EFF, "latin"),
    (0x1F00, 0x1FFF, "greek"),
    (0x2C60, 0x2C7F, "latin"),
    (0x2DE0, 0x2DFF, "cyrillic"),
    (0x3040, 0x30FF, "cjk"),
    (0x3130, 0x318F, "cjk"),
    (0x31F0, 0x31FF, "cjk"),
    (0x3400, 0x4DBF, "cjk"),
    (0x4E00, 0x9FFF, "cjk"),
    (0xA640, 0xA69F, "cyrillic"),
    (0xA720, 0xA7FF, "latin"),
    (0xA8E0, 0xA8FF, "devanagari"),
    (0xAC00, 0xD7AF, "cjk"),
    (0xF900, 0xFAFF, "cjk"),
    (0xFB50, 0xFDFF, "arabic"),
    (0xFE70, 0xFEFF, "arabic"),
    (0xFF21, 0xFF3A, "latin"),
    (0xFF41, 0xFF5A, "latin"),
    (0xFF66, 0xFF9F, "cjk"),
    (0x20000, 0x2FA1F, "cjk"),
)
_STARTS: Final = tuple(start for start, _, _ in _RANGES)


def script_of(char: str) -> str:
    """The script of one character (``other`` for one outside the table)."""
    point = ord(char)
    at = bisect_right(_STARTS, point) - 1
    if at >= 0 and point <= _RANGES[at][1]:
        return _RANGES[at][2]
    return OTHER


def dominant_script(text: str) -> str:
    """The script most of the text's letters are in: ``latin``, ``cyrillic``, ``arabic``,
    ``devanagari``, ``bengali``, ``cjk``, ... or ``other`` (no letters, or letters of a
    script not in the table). Digits, punctuation and symbols do not count; a tie goes to
    the script seen first."""
    counts = Counter(script_of(char) for char in text if char.isalpha())
    if not counts:
        return OTHER
    # Counter keeps first-seen order and max() keeps the first of equal counts.
    return max(counts, key=counts.__getitem__)
