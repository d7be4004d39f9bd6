"""The period an assembly takes: whole UTC days of ``curated_at``, named for the dataset's
version and for the scheduler's per-period lock and record."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Self


@dataclass(frozen=True)
class Period:
    """Days ``start`` <= day < ``end`` (UTC days of ``curated_at``), named for the version
    (and for the scheduler's per-period lock and record)."""

    name: str
    start: date
    end: date

    def __post_init__(self) -> None:
        if self.start >= self.end:
            raise ValueError(f"period {self.name}: start {self.start} is not before {self.end}")
        if not re.fullmatch(r"[0-9A-Za-z_-]+", self.name):
            raise ValueError(f"period name {self.name!r} must be letters, digits, '-', '_'")

    @classmethod
    def quarter(cls, name: str) -> Self:
        """``"2026Q3"``: July, August and September 2026."""
        found = re.fullmatch(r"(\d{4})Q([1-4])", name)
        if found is None:
            raise ValueError(f"{name!r} is not a quarter like 2026Q3")
        year, number = int(found.group(1)), int(found.group(2))
        start = date(year, 3 * number - 2, 1)
        end = date(year + 1, 1, 1) if number == 4 else date(year, 3 * number + 1, 1)
        return cls(name, start, end)

    @classmethod
    def between(cls, since: date, until: date) -> Self:
        """Days ``since`` <= day < ``until``."""
        return cls(f"{since:%Y%m%d}-{until:%Y%m%d}", since, until)

    @classmethod
    def quarter_before(cls, day: date) -> Self:
        """The last whole quarter before the one ``day`` is in (what a quarterly run takes)."""
        number = (day.month - 1) // 3 + 1
        year, number = (day.year - 1, 4) if number == 1 else (day.year, number - 1)
        return cls.quarter(f"{year}Q{number}")

    @property
    def trained_through(self) -> datetime:
        """The moment the period's data ends: midnight UTC starting ``end``."""
        return datetime.combine(self.end, time(), tzinfo=UTC)
