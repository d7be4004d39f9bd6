"""The lite model's n-gram features, found outside the graph in time proportional to the text.

The lite graph (``l2model.features``) tokenises, counts every one of its 64,000 n-grams and
weighs and normalises a dense [N, 64,000] matrix for every batch, however short the prompts:
most of a short prompt's time is arithmetic over slots it never touches. Here the same
tokens and n-grams are found by one compiled pass over the text's code points: each n-gram
is a 64-bit key chained over its tokens' ids, looked up in an open-addressing table of the
fitted vocabulary, and counted only where it is present. An n-gram whose prefix is absent
is not looked up: the table holds every feature's prefixes, as features or as markers. What
comes out, per prompt, is the vocabulary columns it holds with their TF-IDF values,
L2-normalised per path, as scikit-learn's ``TfidfVectorizer(sublinear_tf=True)`` computes
them with the fitted idf; the graph (``l2model.fast``) needs nothing else. The columns and
values are exactly those of the lite model's featuriser (``TextFeaturiser``): the tests
compare them on the corpus and on generated text.

Tokens, as in ``l2model.tokens``: the text is lowercased with ``lowercase``; the ``char``
path's tokens are each non-whitespace character and each run of whitespace as written, the
``word`` path's the runs of its letter class. A token's id is its code point when it is one
character, else a hash of its code points with the top bit set, so that the two never meet.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from numba import njit

from l2model.contract import VOCABULARY_FILE
from l2model.tokens import WHITESPACE_CLASS, WORD_TOKEN_PATTERN, TokenNgrams, lowercase

# Each vocabulary entry: the n-gram's key, its column in the feature matrix and its idf.
# A prefix of a feature that is no feature itself is a marker entry (column -1).
MARKER = -1
ENTRY = np.dtype([("key", "<u8"), ("column", "<i8"), ("idf", "<f8")])
# The hashed paths, in column order: a key chain starts from its path's seed.
PATHS = ("char", "word")
_SEEDS = np.array([0x243F6A8885A308D3, 0x13198A2E03707344], dtype=np.uint64)
_RUN_SEED = np.uint64(0xA4093822299F31D0)
_TOP_BIT = np.uint64(1 << 63)
# Code points the two token classes can hold are all below these bounds.
_WS_LIMIT = 0x3001
_WORD_LIMIT = 0x180


def _class_table(pattern: str, limit: int) -> np.ndarray:
    regex = re.compile(pattern)
    return np.array([regex.fullmatch(chr(cp)) is not None for cp in range(limit)], dtype=np.bool_)


IS_WHITESPACE = _class_table(f"[{WHITESPACE_CLASS}]", _WS_LIMIT)
IS_WORD = _class_table(WORD_TOKEN_PATTERN, _WORD_LIMIT)
# Every character with a lowercase form lies below this (the Basic Multilingual Plane and
# the Supplementary Multilingual Plane's alphabets).
_CASED_LIMIT = 0x20000


@lru_cache(maxsize=1)
def lowercase_table() -> np.ndarray:
    """``lowercase`` of every code point below ``_CASED_LIMIT``, as code points: built once
    per process that featurises (about 50 ms), never at import."""
    return np.array(
        [
            ord(lowercase(chr(cp))) if not 0xD800 <= cp < 0xE000 else cp
            for cp in range(_CASED_LIMIT)
        ],
        dtype=np.uint32,
    )


@njit(cache=True, inline="always")
def _mix(h: np.uint64) -> np.uint64:
    # splitmix64's finaliser: every input bit moves every output bit.
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@njit(cache=True)
def _token_id(cps: np.ndarray, start: int, end: int) -> np.uint64:
    if end - start == 1:
        return np.uint64(cps[start])
    h = _RUN_SEED
    for i in range(start, end):
        h = _mix(h ^ np.uint64(cps[i]))
    return h | _TOP_BIT


@njit(cache=True)
def _chain(seed: np.uint64, token: np.uint64) -> np.uint64:
    # Never zero: zero marks an empty slot of the table.
    return _mix(seed ^ token) | np.uint64(1)


@njit(cache=True)
def _table(keys: np.ndarray, columns: np.ndarray, bits: int, column_bits: int) -> np.ndarray:
    # One 64-bit word per slot: the key's low bits (its tag) above the column + 1 (0 marks an
    # empty slot). A probe reads 8 bytes, and the table of 64,000 n-grams, a quarter full,
    # is 2 MiB: memory latency is most of a lookup's cost.
    size = 1 << bits
    mask = np.uint64(size - 1)
    low = np.uint64(column_bits)  # shifting out the top bits leaves the tag
    table = np.zeros(size, dtype=np.uint64)
    for i in range(keys.shape[0]):
        slot = (keys[i] >> np.uint64(64 - bits)) & mask
        while table[slot] != 0:
            slot = (slot + np.uint64(1)) & mask
        tag = (keys[i] << low) >> low
        table[slot] = (tag << np.uint64(column_bits)) | np.uint64(columns[i] + 2)
    return table


# What a lookup returns for a key not in the table: no longer n-gram from here is either.
ABSENT = -2


@njit(cache=True)
def _lookup(table: np.ndarray, bits: int, column_bits: int, key: np.uint64) -> np.int64:
    mask = np.uint64(table.shape[0] - 1)
    low = np.uint64(column_bits)  # shifting out the top bits leaves the tag
    tag = (key << low) >> low
    slot = (key >> np.uint64(64 - bits)) & mask
    while table[slot] != 0:
        if table[slot] >> np.uint64(column_bits) == tag:
            return (
                np.int64(table[slot] & ((np.uint64(1) << np.uint64(column_bits)) - np.uint64(1)))
                - 2
            )
        slot = (slot + np.uint64(1)) & mask
    return np.int64(ABSENT)


@njit(cache=True)
def _count_ngrams(
    tokens: np.ndarray,
    count: int,
    low: int,
    high: int,
    seed: np.uint64,
    table: np.ndarray,
    bits: int,
    column_bits: int,
    tf: np.ndarray,
    touched: np.ndarray,
    touched_count: int,
) -> int:
    for start in range(count):
        key = seed
        for n in range(1, min(high, count - start) + 1):
            key = _chain(key, tokens[start + n - 1])
            if n < low:
                continue
            column = _lookup(table, bits, column_bits, key)
            if column == ABSENT:
                break
            if column >= 0:
                if tf[column] == 0:
                    touched[touched_count] = column
                    touched_count += 1
                tf[column] += 1
    return touched_count


# nogil: a scorer featurises in its inference thread while its event loop decodes and
# delivers other batches; holding the GIL here stalled that loop for the pass's length.
@njit(cache=True, nogil=True)
def _lowered(cps: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``lowercase``, by table: each code point to one."""
    out = np.empty_like(cps)
    for i in range(cps.shape[0]):
        out[i] = table[cps[i]] if cps[i] < table.shape[0] else cps[i]
    return out


@njit(cache=True)
def _emit(
    touched: np.ndarray,
    first: int,
    last: int,
    tf: np.ndarray,
    idf: np.ndarray,
    out_columns: np.ndarray,
    out_values: np.ndarray,
    used: int,
) -> int:
    """One path's columns of one text with their TF-IDF, L2-normalised over the path, as
    scikit-learn's ``TfidfVectorizer(sublinear_tf=True)`` computes them."""
    squares = 0.0
    for k in range(first, last):
        column = touched[k]
        count = tf[column]
        # Most n-grams occur once in a prompt: 1 + log 1 is 1, without the log's cost.
        value = idf[column] if count == 1 else (1.0 + np.log(float(count))) * idf[column]
        out_columns[used + k - first] = column
        out_values[used + k - first] = value
        squares += value * value
        tf[column] = 0
    norm = max(np.sqrt(squares), 1e-12)
    for k in range(used, used + last - first):
        out_values[k] = out_values[k] / norm
    return used + last - first


@njit(cache=True)
def _char_tokens(
    cps: np.ndarray, begin: int, end: int, is_ws: np.ndarray, tokens: np.ndarray
) -> int:
    """The char path's tokens: each non-whitespace character, each whitespace run."""
    count = 0
    i = begin
    while i < end:
        j = i + 1
        if cps[i] < _WS_LIMIT and is_ws[cps[i]]:
            while j < end and cps[j] < _WS_LIMIT and is_ws[cps[j]]:
                j += 1
        tokens[count] = _token_id(cps, i, j)
        count += 1
        i = j
    return count


@njit(cache=True)
def _word_tokens(
    cps: np.ndarray, begin: int, end: int, is_word: np.ndarray, tokens: np.ndarray
) -> int:
    """The word path's tokens: the runs of the letter class."""
    count = 0
    i = begin
    while i < end:
        if cps[i] < _WORD_LIMIT and is_word[cps[i]]:
            j = i + 1
            while j < end and cps[j] < _WORD_LIMIT and is_word[cps[j]]:
                j += 1
            tokens[count] = _token_id(cps, i, j)
            count += 1
            i = j
        else:
            i += 1
    return count


@njit(cache=True, nogil=True)
def _featurise(
    cps: np.ndarray,
    starts: np.ndarray,
    is_ws: np.ndarray,
    is_word: np.ndarray,
    ranges: np.ndarray,
    seeds: np.ndarray,
    table: np.ndarray,
    bits: int,
    column_bits: int,
    idf: np.ndarray,
    tf: np.ndarray,
    touched: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # ``tf`` (zero) and ``touched`` are scratch the size of the vocabulary, kept by the
    # caller between calls: allocating them per call cost more than a short prompt's pass.
    # ``tf`` is left zero again.
    columns = tf.shape[0]
    docs = starts.shape[0] - 1
    indptr = np.zeros(docs + 1, dtype=np.int64)
    longest = 0
    for d in range(docs):
        longest = max(longest, starts[d + 1] - starts[d])
    tokens = np.empty(longest, dtype=np.uint64)
    # A text of c characters holds at most c tokens per path, and each start at most
    # (high - low + 1) n-grams; the columns are distinct per text besides.
    per_start = (ranges[0, 1] - ranges[0, 0] + 1) + (ranges[1, 1] - ranges[1, 0] + 1)
    capacity = 0
    for d in range(docs):
        capacity += min(columns, (starts[d + 1] - starts[d]) * per_start)
    out_columns = np.empty(capacity, dtype=np.int64)
    out_values = np.empty(capacity, dtype=np.float32)
    used = 0
    for d in range(docs):
        begin, end = starts[d], starts[d + 1]
        touched_count = 0
        char_count = 0
        for path in range(2):
            if path == 0:
                count = _char_tokens(cps, begin, end, is_ws, tokens)
            else:
                count = _word_tokens(cps, begin, end, is_word, tokens)
            touched_count = _count_ngrams(
                tokens,
                count,
                ranges[path, 0],
                ranges[path, 1],
                seeds[path],
                table,
                bits,
                column_bits,
                tf,
                touched,
                touched_count,
            )
            if path == 0:
                char_count = touched_count
        used = _emit(touched, 0, char_count, tf, idf, out_columns, out_values, used)
        used = _emit(touched, char_count, touched_count, tf, idf, out_columns, out_values, used)
        indptr[d + 1] = used
    return indptr, out_columns[:used], out_values[:used]


@njit(cache=True, nogil=True)
def _padded(
    indptr: np.ndarray, columns: np.ndarray, found: np.ndarray, pad: int
) -> tuple[np.ndarray, np.ndarray]:
    docs = indptr.shape[0] - 1
    width = 1
    for d in range(docs):
        width = max(width, indptr[d + 1] - indptr[d])
    ids = np.full((docs, width), pad, dtype=np.int64)
    values = np.zeros((docs, width), dtype=np.float32)
    for d in range(docs):
        for k in range(indptr[d], indptr[d + 1]):
            ids[d, k - indptr[d]] = columns[k]
            values[d, k - indptr[d]] = found[k]
    return ids, values


@njit(cache=True, nogil=True)
def _prototype_dots(
    indptr: np.ndarray,
    columns: np.ndarray,
    found: np.ndarray,
    starts: np.ndarray,
    owners: np.ndarray,
    weights: np.ndarray,
    count: int,
) -> np.ndarray:
    docs = indptr.shape[0] - 1
    dots = np.zeros((docs, count), dtype=np.float32)
    for d in range(docs):
        for k in range(indptr[d], indptr[d + 1]):
            column = columns[k]
            for p in range(starts[column], starts[column + 1]):
                dots[d, owners[p]] += found[k] * weights[p]
    return dots


class PrototypeDots:
    """A memory's prototypes (``l2model.memory``) by vocabulary column: which prototypes
    hold a column and with what value. A prompt's dot product with every prototype then
    costs a pass over its own columns, about one prototype each, where the graph's Gathers
    and scatters over the prototypes' features cost as much as the rest of the model."""

    def __init__(
        self, columns: np.ndarray, owners: np.ndarray, weights: np.ndarray, count: int, width: int
    ) -> None:
        if len(columns) and (columns.min() < 0 or columns.max() >= width):
            raise ValueError(f"prototype columns outside the vocabulary's {width}")
        if len(owners) and (owners.min() < 0 or owners.max() >= count):
            raise ValueError(f"prototype numbers outside the memory's {count}")
        order = np.argsort(columns, kind="stable")
        self.count = count
        self._starts = np.zeros(width + 1, dtype=np.int64)
        np.cumsum(np.bincount(columns, minlength=width), out=self._starts[1:])
        self._owners = owners[order].astype(np.int64)
        self._weights = weights[order].astype(np.float32)

    @classmethod
    def read(cls, path: Path, width: int) -> PrototypeDots:
        with np.load(path, allow_pickle=False) as saved:
            return cls(
                saved["column"], saved["prototype"], saved["value"], int(saved["count"]), width
            )

    def dots(self, rows: SparseRows) -> np.ndarray:
        """[N, m]: each text's features times each prototype's."""
        return _prototype_dots(
            rows.indptr,
            rows.columns,
            rows.values,
            self._starts,
            self._owners,
            self._weights,
            self.count,
        )


def prototype_bytes(
    columns: np.ndarray, owners: np.ndarray, weights: np.ndarray, count: int
) -> bytes:
    """A memory's prototypes as the bytes of a ``prototypes.npz``: each kept feature's
    column, its prototype's number and its value, and how many prototypes there are."""
    buffer = io.BytesIO()
    np.savez(
        buffer,
        column=columns.astype(np.int64),
        prototype=owners.astype(np.int64),
        value=weights.astype(np.float32),
        count=np.array(count, np.int64),
    )
    return buffer.getvalue()


def ngram_key(path: int, tokens: Sequence[str]) -> int:
    """The key of one n-gram of path ``path`` (an index into ``PATHS``) given its tokens."""
    key = _SEEDS[path]
    for token in tokens:
        cps = np.array([ord(c) for c in token], dtype=np.uint32)
        # Typed as uint64 on every call: a Python int above 2**63 does not convert.
        key = np.uint64(_chain(np.uint64(key), np.uint64(_token_id(cps, 0, len(cps)))))
    return int(key)


def vocabulary_entries(
    paths: Sequence[TokenNgrams],
    vocabularies: Sequence[Mapping[str, int]],
    idf: Sequence[np.ndarray],
) -> np.ndarray:
    """Every n-gram of the fitted vocabularies as (key, column, idf), columns numbered as the
    featuriser concatenates its paths, and the markers of prefixes (column ``MARKER``);
    refuses a vocabulary whose keys collide."""
    if tuple(p.name for p in paths) != PATHS:
        raise ValueError(f"the hashed featuriser reads the paths {PATHS}, not {paths}")
    entries: list[tuple[int, int, float]] = []
    offset = 0
    for index, (path, vocabulary, weights) in enumerate(zip(paths, vocabularies, idf, strict=True)):
        split = {ngram: tuple(path.split(ngram)) for ngram in vocabulary}
        entries.extend(
            (ngram_key(index, split[ngram]), offset + column, float(weights[column]))
            for ngram, column in vocabulary.items()
        )
        # The pass extends an n-gram only while its prefix is in the table: a prefix that
        # is not itself a feature (a tie at the vocabulary's size limit can leave one out)
        # is entered as a marker, so that pruning never loses a feature.
        features = set(split.values())
        low = path.ngram_range[0]
        markers = {
            tokens[:n]
            for tokens in features
            for n in range(low, len(tokens))
            if tokens[:n] not in features
        }
        entries.extend((ngram_key(index, tokens), MARKER, 0.0) for tokens in markers)
        offset += len(vocabulary)
    table = np.array(sorted(entries), dtype=ENTRY)
    if len(np.unique(table["key"])) != len(table):
        raise ValueError("two n-grams of the vocabulary share a key")
    return table


@dataclass(frozen=True)
class SparseRows:
    """A batch's features in CSR form: text i holds ``columns[indptr[i]:indptr[i + 1]]``
    with their TF-IDF ``values`` at the same positions."""

    indptr: np.ndarray
    columns: np.ndarray
    values: np.ndarray

    def padded(self, pad: int) -> tuple[np.ndarray, np.ndarray]:
        """[N, L] columns (``pad`` where a text has fewer than the longest's L) and values
        (0 there)."""
        ids, values = _padded(self.indptr, self.columns, self.values, pad)
        return ids, values


class NgramVectorizer:
    """The fitted vocabulary and idf as a lookup table, and the pass that turns a batch of
    texts into their TF-IDF rows."""

    def __init__(self, entries: np.ndarray, ranges: Sequence[tuple[int, int]]) -> None:
        features = entries[entries["column"] >= 0]
        self.columns = len(features)
        # At most half full: a probe sequence ends after a slot or two.
        self._bits = max(4, int(np.ceil(np.log2(max(1, 2 * len(entries))))))
        self._column_bits = int(self.columns + 2).bit_length()
        keys = entries["key"].astype(np.uint64)
        # The table tells keys apart by their low 64 - column_bits bits (48 for 64,000
        # columns); a vocabulary two of whose keys share them is refused.
        tags = keys & np.uint64((1 << (64 - self._column_bits)) - 1)
        if len(np.unique(tags)) != len(tags):
            raise ValueError("two n-grams of the vocabulary share a table tag")
        self._table = _table(
            keys, entries["column"].astype(np.int64), self._bits, self._column_bits
        )
        self._idf = np.zeros(self.columns, dtype=np.float64)
        self._idf[features["column"]] = features["idf"]
        self._ranges = np.array(ranges, dtype=np.int64)
        # The pass's scratch, one per thread: it runs without the GIL, and a scorer
        # featurises chunks of a batch on several threads at once.
        self._scratch = threading.local()
        self._lower = lowercase_table()

    @classmethod
    def from_dir(cls, model_dir: Path, ranges: Sequence[tuple[int, int]]) -> NgramVectorizer:
        return cls(read_vocabulary(model_dir), ranges)

    def transform(self, texts: Sequence[str]) -> SparseRows:
        """Each text must have a UTF-8 encoding (no lone surrogates)."""
        cps = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
        starts = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum([len(text) for text in texts], out=starts[1:])
        scratch = self._scratch
        if not hasattr(scratch, "tf"):
            scratch.tf = np.zeros(self.columns, dtype=np.int32)
            scratch.touched = np.empty(self.columns, dtype=np.int64)
        indptr, columns, values = _featurise(
            _lowered(cps, self._lower),
            starts,
            IS_WHITESPACE,
            IS_WORD,
            self._ranges,
            _SEEDS,
            self._table,
            self._bits,
            self._column_bits,
            self._idf,
            scratch.tf,
            scratch.touched,
        )
        return SparseRows(indptr, columns, values)


def vocabulary_bytes(entries: np.ndarray) -> bytes:
    """``entries`` as the bytes of an ``.npy`` file."""
    buffer = io.BytesIO()
    np.save(buffer, entries, allow_pickle=False)
    return buffer.getvalue()


def write_vocabulary(model_dir: Path, entries: np.ndarray) -> None:
    (model_dir / VOCABULARY_FILE).write_bytes(vocabulary_bytes(entries))


def read_vocabulary(model_dir: Path) -> np.ndarray:
    entries: np.ndarray = np.load(model_dir / VOCABULARY_FILE, allow_pickle=False)
    return entries
