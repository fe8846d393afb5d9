"""Shared fixtures: the real Kafka broker, the Schema Registry and the Ometria stand-in live in
tests/fixtures/.
"""

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.schema_registry",
    "tests.fixtures.stub",
    "tests.fixtures.worker",
]
