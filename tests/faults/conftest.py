"""The fault-injection suite prints what each fault cost (duplicates, outage) at the end."""

from __future__ import annotations

from collections.abc import Callable

import pytest

_REPORT: list[str] = []


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    def report(line: str) -> None:
        _REPORT.append(f"{request.node.name}: {line}")

    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _REPORT:
        terminalreporter.section("fault injection: what each fault cost")
        for line in _REPORT:
            terminalreporter.write_line(line)
