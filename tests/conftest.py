pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.pipeline",
    "tests.fixtures.models",
    "tests.fixtures.faults",
    "tests.fixtures.receivers",
    "tests.fixtures.api",
    "tests.fixtures.exposure",
]
