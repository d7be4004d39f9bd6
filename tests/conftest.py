"""Fixture plugins of every test area, and the unit/integration split of the suite."""

import pytest
from hypothesis import settings

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.pipeline",
    "tests.fixtures.models",
    "tests.fixtures.faults",
    "tests.fixtures.receivers",
    "tests.fixtures.api",
    "tests.fixtures.exposure",
    "tests.fixtures.objects",
]

# `make test-fast` runs the unit tests under this profile: property suites draw a tenth of the
# examples the full run draws (tests.fixtures.strategies.examples).
settings.register_profile("fast", max_examples=10)

# Fixtures that start or reach a real component. A test that uses one is an integration test
# whatever its module says; every test not marked integration is a unit test, so
# `pytest -m unit` (make test-fast) is the fast run and the two sets never overlap.
REAL_COMPONENT_FIXTURES = frozenset(
    {"service_endpoints", "own_redis", "own_broker", "webhook_receiver", "s3_server"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_COMPONENT_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("storage_kind") == "s3":
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.unit)
