"""The period an assembly takes: a quarter, the quarter before a day, or two dates."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from l2loop.workers.assembly.period import Period


def test_a_period_is_a_quarter_or_two_dates() -> None:
    assert Period.quarter("2026Q4") == Period("2026Q4", date(2026, 10, 1), date(2027, 1, 1))
    assert Period.quarter_before(date(2026, 1, 1)) == Period.quarter("2025Q4")
    assert Period.quarter_before(date(2027, 1, 1)) == Period.quarter("2026Q4")
    assert Period.quarter_before(date(2026, 4, 1)) == Period.quarter("2026Q1")
    assert Period.quarter_before(date(2026, 8, 15)) == Period.quarter("2026Q2")
    between = Period.between(date(2026, 7, 1), date(2026, 7, 8))
    assert (between.name, between.end) == ("20260701-20260708", date(2026, 7, 8))
    # A model trained on it has seen everything curated before midnight UTC of the end day.
    assert between.trained_through == datetime(2026, 7, 8, tzinfo=UTC)
    with pytest.raises(ValueError):
        Period.quarter("2026Q5")
    with pytest.raises(ValueError):
        Period.between(date(2026, 7, 8), date(2026, 7, 8))
