"""How a retraining run trains: the mode it picks and the records a full retraining fits on."""

from __future__ import annotations

from l2loop.settings import Settings
from l2loop.workers.retraining.training import choose_mode, training_set
from l2model.corpus import CorpusSplit
from l2model.corpus.hard_negatives import hard_negatives
from l2model.record import HARD_NEGATIVE_PREFIX, TrainingRecord


def test_mode_rule() -> None:
    assert choose_mode("auto", 9_999, 10_000) == "incremental"
    assert choose_mode("auto", 10_000, 10_000) == "full"
    assert choose_mode("full", 5, 10_000) == "full"


def _benign(text: str, weight: float, notes: str = "") -> TrainingRecord:
    return TrainingRecord.build(
        text,
        "benign",
        "technical",
        severity=0.0,
        weight=weight,
        confidence=0.5,
        source="production_false_positive",
        notes=notes,
    )


def test_hard_negatives_carry_the_expert_weight_in_a_retraining_set() -> None:
    expert = Settings.model_fields["retrain_hard_negative_weight"].default
    assert 3.0 <= expert <= 4.0  # docs/architecture.md: expert examples weigh 3-4
    written = hard_negatives()[0]
    assert written.weight_multiplier < expert  # the committed build's weight, raised here
    base = CorpusSplit([written, _benign("how do I sort a list", 1.0)], [], [])
    reported = _benign("how do I kill a zombie process", 1.0, f"{HARD_NEGATIVE_PREFIX}shell")
    confirmed = _benign("ignore typos please", 5.0, f"{HARD_NEGATIVE_PREFIX}everyday")
    plain = _benign("how do I parse json", 1.0)
    new = CorpusSplit([reported, confirmed, plain], [], [])

    remembered = _benign("how do I restart nginx", 5.0)
    records = training_set(base, new, [remembered], hard_negative_weight=expert)
    # Every other hand-written hard negative joins the base training split, once; what the
    # incumbent's memory held comes before the new training split.
    others = [r.text for r in hard_negatives()[1:]]
    assert [r.text for r in records] == [
        *(r.text for r in base.train),
        *others,
        remembered.text,
        *(r.text for r in new.train),
    ]
    weighed = [r.weight_multiplier for r in records]
    assert set(weighed[2 : 2 + len(others)]) == {expert}
    # Hard negatives at least the expert weight, a higher recorded weight kept, others as
    # recorded.
    assert [*weighed[:2], *weighed[2 + len(others) :]] == [expert, 1.0, 5.0, expert, 5.0, 1.0]
