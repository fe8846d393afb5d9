"""The worker's fatal path in-process: which consumer errors stop it, and a record that
meets a fatal fault is abandoned, not done (so never committed)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, Message

from worker.app import EXIT_FATAL, EXIT_OK, Worker
from worker.config import Settings
from worker.deadletter import DeadLetterUnavailable, SourceRecord
from worker.outcome import Failure
from worker.pipeline import Pipeline
from worker.schemas import Registry

ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
    "KAFKA_TOPICS": "t",
    "OMETRIA_BASE_URL": "http://127.0.0.1:9",
}


def make_worker() -> Worker:
    return Worker(Settings.from_env(ENV), Pipeline(Registry.load()))


class FakeMessage:
    """The parts of confluent_kafka.Message the worker reads."""

    def __init__(self, offset: int, value: bytes, error: KafkaError | None = None) -> None:
        self._offset = offset
        self._value = value
        self._error = error

    def error(self) -> KafkaError | None:
        return self._error

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return None

    def value(self) -> bytes:
        return self._value

    def headers(self) -> None:
        return None


@pytest.mark.parametrize(
    ("error", "fatal"),
    [
        # How a fenced static member's fatal error really arrives: code _FATAL, flag unset.
        (KafkaError(KafkaError._FATAL, "fenced"), True),
        (KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "gone", fatal=True), True),
        (KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "gone"), False),
        (KafkaError(KafkaError._PARTITION_EOF, "eof"), False),
    ],
)
def test_a_fatal_consumer_error_in_a_batch_stops_the_worker(error: KafkaError, fatal: bool) -> None:
    worker = make_worker()
    worker.on_messages([cast(Message, FakeMessage(0, b"", error))])
    assert worker.exit_code == (EXIT_FATAL if fatal else EXIT_OK)
    assert worker._stopping is fatal
    assert worker.metrics.consumed == 0


class UnwritableDeadLetters:
    """A dead-letter writer whose topic cannot be written."""

    def __init__(self) -> None:
        self.writes: list[int] = []

    async def write(self, source: SourceRecord, failure: Failure, attempts: int) -> None:
        del failure, attempts
        self.writes.append(source.offset)
        raise DeadLetterUnavailable("scripted")


def test_a_record_meeting_a_fatal_fault_is_abandoned_and_its_lane_stops() -> None:
    async def main() -> tuple[Worker, Any, UnwritableDeadLetters]:
        worker = make_worker()
        dlq = UnwritableDeadLetters()
        worker._dlq = dlq  # type: ignore[assignment]  # a stand-in
        worker._deliverer = object()  # type: ignore[assignment]  # never reached: undecodable
        worker._stop_event = asyncio.Event()
        worker.on_assigned([("t", 0)])
        lanes = worker.partitions[("t", 0)]
        for offset in (5, 6):
            lanes.submit(cast(Message, FakeMessage(offset, b"not json")))
        await asyncio.wait_for(worker._stop_event.wait(), 5)
        await asyncio.wait_for(lanes.idle.wait(), 5)
        await asyncio.sleep(0.01)  # a runner that would take offset 6 has had its chance
        return worker, lanes, dlq

    worker, lanes, dlq = asyncio.run(main())
    assert worker.exit_code == EXIT_FATAL
    assert lanes.closed
    assert dlq.writes == [5]  # the record behind it was never started
    assert lanes.offsets.watermark() == 5  # offset 5 is not done: nothing past it commits
