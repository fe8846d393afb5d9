"""The in-flight bytes bound: the setting, and the worker's accounting and backpressure.

The worker runs here without Kafka: a fake source records pause/resume, fake messages
carry sizes, and a fake handler finishes records when the test says so. The real broker
version is in tests/integration/test_worker_faults.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import cast

import pytest
from confluent_kafka import Message

from worker.app import Worker
from worker.config import ConfigError, Settings
from worker.consumer import KafkaSource
from worker.lanes import PartitionLanes
from worker.pipeline import Pipeline
from worker.schemas import Registry

TOPIC = "t"
BASE = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "KAFKA_TOPICS": TOPIC,
    "OMETRIA_BASE_URL": "http://127.0.0.1:1",
}


def test_the_default_bound_is_128_mib() -> None:
    assert Settings.from_env(BASE).max_in_flight_bytes == 128 * 1024 * 1024
    assert (
        Settings.from_env({**BASE, "WORKER_MAX_IN_FLIGHT_BYTES": "1000"}).max_in_flight_bytes
        == 1000
    )


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("0", "WORKER_MAX_IN_FLIGHT_BYTES must be >= 1, got 0"),
        ("64MiB", "WORKER_MAX_IN_FLIGHT_BYTES must be an integer, got '64MiB'"),
    ],
)
def test_a_bad_bound_is_named(raw: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**BASE, "WORKER_MAX_IN_FLIGHT_BYTES": raw})
    assert problem in raised.value.problems


class FakeMessage:
    """What the worker reads of a confluent-kafka Message."""

    def __init__(self, partition: int, offset: int, value: bytes, key: bytes | None = None,
                 headers: list[tuple[str, bytes | None]] | None = None) -> None:  # fmt: skip
        self._partition, self._offset = partition, offset
        self._value, self._key, self._headers = value, key, headers

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers


class FakeSource:
    """Records what the worker asks of the consumer."""

    def __init__(self) -> None:
        self.paused: set[tuple[str, int]] = set()
        self.commits: list[list[tuple[tuple[str, int], int]]] = []
        self.accepted = 0

    def pause(self, partitions: list[tuple[str, int]]) -> None:
        self.paused |= set(partitions)

    def resume(self, partitions: list[tuple[str, int]]) -> None:
        self.paused -= set(partitions)

    def commit(self, offsets: list[tuple[tuple[str, int], int]]) -> None:
        self.commits.append(offsets)

    def store(self, offsets: list[tuple[tuple[str, int], int]]) -> None:
        pass


class HeldWorker(Worker):
    """The worker, with records that finish when the test sets :attr:`release`."""

    release: asyncio.Event

    async def _handle(self, lanes: PartitionLanes[Message], msg: Message) -> None:
        await self.release.wait()

    def take(self, messages: list[FakeMessage]) -> None:
        self.on_messages(cast(list[Message], messages))


def run(body: Callable[[HeldWorker, FakeSource], Awaitable[None]], **env: str) -> None:
    async def main() -> None:
        worker = HeldWorker(Settings.from_env({**BASE, **env}), Pipeline(Registry()))
        worker.release = asyncio.Event()
        source = FakeSource()
        worker._source = cast(KafkaSource, source)  # the fake has what the worker uses
        worker.on_assigned([(TOPIC, 0), (TOPIC, 1)])
        await body(worker, source)

    asyncio.run(main())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def commit_all(worker: Worker) -> None:
    """What the broker's answer to a commit of every watermark does."""
    marks = [(tp, lanes.offsets.watermark()) for tp, lanes in worker.partitions.items()]
    worker.on_committed([(tp, mark, None) for tp, mark in marks if mark is not None], False)


def test_bytes_are_counted_from_take_to_commit_and_pause_at_the_bound() -> None:
    async def body(worker: HeldWorker, source: FakeSource) -> None:
        # value 289 + key 4 + headers 2 + 4 and 1 (a null value): 300 bytes a record.
        def msg(partition: int, offset: int) -> FakeMessage:
            return FakeMessage(
                partition, offset, b"v" * 289, b"kkkk", [("h1", b"abcd"), ("n", None)]
            )

        assert worker._capacity() == 1000 // 300  # room counted in records of 300 bytes
        worker.take([msg(0, 0), msg(1, 0), msg(0, 1)])
        assert (worker.in_flight, worker.in_flight_bytes) == (3, 900)
        assert not source.paused
        assert worker._capacity() == 1  # under the bound: always room for one more
        worker.take([msg(1, 1)])
        assert worker.in_flight_bytes == 1200  # over by less than one record
        assert worker._capacity() <= 0
        assert source.paused == {(TOPIC, 0), (TOPIC, 1)}  # every partition paused
        assert worker.metrics.render().count("ometria_worker_records_in_flight_bytes 1200\n") == 1
        worker.release.set()
        await settle()
        assert worker.in_flight_bytes == 1200  # done is not committed yet
        commit_all(worker)
        assert (worker.in_flight, worker.in_flight_bytes) == (0, 0)
        assert not source.paused  # resumed at half the bound
        assert worker.in_flight_bytes_peak == 1200

    run(body, WORKER_MAX_IN_FLIGHT_BYTES="1000", WORKER_MAX_RECORD_BYTES="300")


def test_a_record_larger_than_the_bound_still_flows() -> None:
    async def body(worker: HeldWorker, source: FakeSource) -> None:
        assert worker._capacity() == 10  # 1000 bytes in records of 100
        worker.take([FakeMessage(0, 0, b"x" * 5000)])
        assert worker.in_flight_bytes == 5000
        assert source.paused  # alone over the bound: nothing else is taken
        assert worker._capacity() <= 0
        worker.release.set()
        await settle()
        commit_all(worker)
        assert worker.in_flight_bytes == 0
        assert not source.paused
        # The next poll is sized by the last batch's largest record: one at a time.
        assert worker._capacity() == 1

    run(body, WORKER_MAX_IN_FLIGHT_BYTES="1000", WORKER_MAX_RECORD_BYTES="100")


def test_resume_waits_for_half_the_bytes() -> None:
    async def body(worker: HeldWorker, source: FakeSource) -> None:
        worker.take([FakeMessage(0, o, b"x" * 100) for o in range(10)])
        assert worker.in_flight_bytes == 1000
        assert source.paused
        lanes = worker.partitions[(TOPIC, 0)]
        for offset in range(4):  # as if four records were done and committed
            lanes.offsets.done(offset)
        worker.on_committed([((TOPIC, 0), 4, None)], False)
        assert worker.in_flight_bytes == 600
        assert source.paused  # 600 > 500: still paused
        lanes.offsets.done(4)
        worker.on_committed([((TOPIC, 0), 5, None)], False)
        assert worker.in_flight_bytes == 500
        assert not source.paused

    run(body, WORKER_MAX_IN_FLIGHT_BYTES="1000", WORKER_MAX_RECORD_BYTES="100")


@pytest.mark.parametrize("how", ["revoked", "lost"])
def test_revoked_or_lost_partitions_give_their_bytes_back(how: str) -> None:
    async def body(worker: HeldWorker, source: FakeSource) -> None:
        worker.take([FakeMessage(p, 0, b"x" * 600) for p in (0, 1)])
        assert worker.in_flight_bytes == 1200
        assert source.paused
        worker.release.set()
        if how == "revoked":
            await worker.on_revoked([(TOPIC, 0), (TOPIC, 1)])
        else:
            worker.on_lost([(TOPIC, 0), (TOPIC, 1)])
        assert (worker.in_flight, worker.in_flight_bytes) == (0, 0)
        assert not worker._global_pause  # a new assignment is not born paused
        worker.on_assigned([(TOPIC, 2)])
        assert (TOPIC, 2) not in source.paused

    run(body, WORKER_MAX_IN_FLIGHT_BYTES="1000", WORKER_MAX_RECORD_BYTES="100")
