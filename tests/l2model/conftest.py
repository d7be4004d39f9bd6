from __future__ import annotations

import pytest

from l2model.corpus import CorpusSplit, generate_corpus, split_corpus
from l2model.lite import LiteModel, train_lite
from l2model.record import TrainingRecord

# Big enough for every spec to contribute and every family to reach each split, small
# enough to train in a few seconds.
SMALL_SIZE = 3_000


@pytest.fixture(scope="session")
def corpus() -> list[TrainingRecord]:
    return generate_corpus()


@pytest.fixture(scope="session")
def split(corpus: list[TrainingRecord]) -> CorpusSplit:
    return split_corpus(corpus)


@pytest.fixture(scope="session")
def small_split() -> CorpusSplit:
    return split_corpus(generate_corpus(SMALL_SIZE))


@pytest.fixture(scope="session")
def small_model(small_split: CorpusSplit) -> LiteModel:
    return train_lite(small_split.train)
