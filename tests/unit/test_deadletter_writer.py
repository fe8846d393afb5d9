"""The dead-letter writer's retry loop against a scripted producer: what each refusal
leads to, and which refusals count as write failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from worker.deadletter import DeadLetterWriter, SourceRecord
from worker.outcome import Failure
from worker.records import DeadLetterUnavailable

SOURCE = SourceRecord(
    topic="commerce", partition=0, offset=7, key=b"k", value=b"x" * 100, headers=[]
)
FAILURE = Failure("undecodable", "not JSON", "decode")

#: A scripted step: an error code for the delivery report, "ok", or "raise:<code>" for
#: produce() itself raising (as it does once the producer failed fatally).
Step = str | int


class ScriptedProducer:
    """Stands in for confluent_kafka.Producer: answers each produce() from a script."""

    def __init__(self, script: list[Step]) -> None:
        self.script = script
        self.values: list[bytes | None] = []

    def produce(
        self, topic: str, *, value: bytes | None, on_delivery: Callable[..., None], **_: Any
    ) -> None:
        del topic
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, str) and step.startswith("raise:"):
            raise KafkaException(KafkaError(int(step.split(":")[1]), "scripted"))
        self.values.append(value)
        on_delivery(None if step == "ok" else KafkaError(int(step)), None)

    def poll(self, timeout: float) -> int:
        time.sleep(timeout)
        return 0

    def flush(self, timeout: float) -> int:
        del timeout
        return 0


@pytest.fixture
def make_writer() -> Iterator[Callable[..., tuple[DeadLetterWriter, list[None]]]]:
    writers: list[DeadLetterWriter] = []

    def make(
        script: list[Step], give_up_after: float = 60.0
    ) -> tuple[DeadLetterWriter, list[None]]:
        failures: list[None] = []
        # Nothing listens there; the real producer is replaced before any write.
        writer = DeadLetterWriter(
            {"bootstrap.servers": "127.0.0.1:9"},
            "dlq",
            truncate_bytes=10,
            give_up_after=give_up_after,
            on_failure=lambda: failures.append(None),
        )
        writer._producer = ScriptedProducer(script)  # type: ignore[assignment]  # a stand-in
        writers.append(writer)
        return writer, failures

    yield make
    for writer in writers:
        writer.close(0)


def write(writer: DeadLetterWriter) -> float:
    """Write one dead letter; the seconds it took."""
    started = time.monotonic()
    asyncio.run(writer.write(SOURCE, FAILURE, 0))
    return time.monotonic() - started


UNKNOWN_TOPIC = KafkaError.UNKNOWN_TOPIC_OR_PART
TOO_LARGE = KafkaError.MSG_SIZE_TOO_LARGE


def test_each_refused_attempt_is_counted_and_retried(make_writer: Any) -> None:
    writer, failures = make_writer([UNKNOWN_TOPIC, KafkaError._MSG_TIMED_OUT, "ok"])
    write(writer)
    assert len(failures) == 2
    assert writer._producer.values == [SOURCE.value] * 3  # verbatim every time


def test_a_dead_letter_cut_to_fit_is_not_a_failure(make_writer: Any) -> None:
    writer, failures = make_writer([TOO_LARGE, "ok"])
    write(writer)
    assert failures == []
    assert writer._producer.values == [SOURCE.value, b"x" * 10]


def test_a_fatal_producer_error_gives_up_at_once(make_writer: Any) -> None:
    writer, failures = make_writer([f"raise:{KafkaError._FATAL}"], give_up_after=300.0)
    started = time.monotonic()
    with pytest.raises(DeadLetterUnavailable, match="fatal"):
        write(writer)
    assert time.monotonic() - started < 5  # not the 300 s of give_up_after
    assert len(failures) == 1


def test_gives_up_after_the_configured_time(make_writer: Any) -> None:
    writer, failures = make_writer([UNKNOWN_TOPIC], give_up_after=0.5)
    started = time.monotonic()
    with pytest.raises(DeadLetterUnavailable, match="cannot write"):
        write(writer)
    assert 0.2 < time.monotonic() - started < 5
    assert len(failures) >= 2  # retried with backoff before giving up
