"""Shared fixtures: the real Kafka broker and the Ometria stand-in live in tests/fixtures/."""

pytest_plugins = ["tests.fixtures.kafka", "tests.fixtures.stub", "tests.fixtures.worker"]
