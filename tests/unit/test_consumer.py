"""The confluent-kafka edge: which consumer errors stop the worker, and how a Message
becomes the project's Record."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from worker.consumer import ConfluentSource
from worker.records import TP, CommitResult


class Events:
    """Records what the source reports."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, bool]] = []

    def on_commit(self, results: list[CommitResult]) -> None:
        del results

    def on_error(self, code: str, reason: str, *, fatal: bool, all_brokers_down: bool) -> None:
        del reason, all_brokers_down
        self.errors.append((code, fatal))

    def on_stats(self, lag: dict[TP, int], connected: bool) -> None:
        del lag, connected


@pytest.mark.parametrize(
    ("error", "reported"),
    [
        # A static member fenced by another with the same group.instance.id: only in a batch.
        (KafkaError(KafkaError._FATAL, "fenced"), [("_FATAL", True)]),
        (KafkaError(KafkaError._FAIL, "fatal flag", fatal=True), [("_FAIL", True)]),
        (KafkaError(KafkaError._PARTITION_EOF, "end"), []),
        (KafkaError(KafkaError._TRANSPORT, "blip"), []),  # logged; librdkafka retries
    ],
)
def test_consume_errors_that_are_fatal_reach_the_worker_as_fatal(
    error: KafkaError, reported: list[tuple[str, bool]]
) -> None:
    source = ConfluentSource({"bootstrap.servers": "127.0.0.1:9", "group.id": "g"})
    events = Events()
    source._events = events
    source._consume_error(error)
    assert events.errors == reported
    source.close()
