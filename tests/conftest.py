"""Shared fixtures: the real Kafka broker, the Schema Registry and the Ometria stand-in live in
tests/fixtures/.
"""

import logging
from collections.abc import Iterator

import pytest
import structlog

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.schema_registry",
    "tests.fixtures.stub",
    "tests.fixtures.worker",
]


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """Whatever a test does to logging (a command run in-process configures it, bound to
    that test's captured stdout), the next test starts from the same set-up: a handler left
    behind would write to a stream pytest has closed."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, previous in quiet.items():
        logging.getLogger(name).setLevel(previous)
