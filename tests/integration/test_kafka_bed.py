"""The test bed itself, on the real broker: commits resume where they should, bytes survive.

These pin down the Kafka behaviour the worker relies on (manual commits are where a
restarted group member resumes; keys, values and headers round-trip byte for byte,
including ``None`` and empty ones), and that the fixtures give what they promise.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from concurrent.futures import Future

import pytest
from confluent_kafka import Consumer, Message, TopicPartition

# Public names that confluent_kafka.admin imports without re-exporting them to type checkers.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from tests.fixtures.kafka_helpers import (
    MakeTopic,
    Record,
    committed_offsets,
    consume_all,
    consumer_config,
    produce,
)

pytestmark = pytest.mark.integration


def _read_in_group(consumer: Consumer, topic: str, expected: int, timeout: float) -> list[Message]:
    """Subscribe and poll until ``expected`` records arrived, then a moment more to catch extras."""
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(messages) < expected and time.monotonic() < deadline:
        for message in consumer.consume(expected - len(messages), timeout=0.2):
            assert message.error() is None, message.error()
            messages.append(message)
    assert len(messages) == expected, f"{len(messages)} of {expected} records in {timeout} s"
    # Anything past the committed point that shows up now would be a wrong resume position.
    extra = consumer.consume(10, timeout=0.5)
    assert not [m for m in extra if m.error() is None], "records beyond those expected"
    return messages


def _by_partition(messages: list[Message]) -> dict[int, list[int]]:
    offsets: dict[int, list[int]] = defaultdict(list)
    for message in messages:
        partition, offset = message.partition(), message.offset()
        assert partition is not None
        assert offset is not None
        offsets[partition].append(offset)
    return dict(offsets)


def test_restarted_group_member_resumes_exactly_at_manual_commits(
    kafka_bootstrap: str, make_topic: MakeTopic
) -> None:
    topic = make_topic(partitions=3, prefix="bed-resume")
    records: list[Record] = [
        (f"user-{i % 10}".encode(), f"event-{i}".encode(), None, None) for i in range(60)
    ]
    placed = produce(kafka_bootstrap, topic, records)
    partition_of_key: dict[bytes | None, set[int]] = defaultdict(set)
    for (key, _, _, _), (partition, _) in zip(records, placed, strict=True):
        partition_of_key[key].add(partition)
    assert all(len(parts) == 1 for parts in partition_of_key.values()), "a key spans partitions"
    sizes = {p: sum(1 for q, _ in placed if q == p) for p in range(3)}
    assert all(sizes.values()), f"keys did not reach every partition: {sizes}"

    group = f"bed-{uuid.uuid4().hex}"
    assert committed_offsets(kafka_bootstrap, group, topic) == {}

    first = Consumer(consumer_config(kafka_bootstrap, group))
    try:
        seen = _by_partition(_read_in_group(first, topic, len(records), timeout=30))
        assert {p: len(o) for p, o in seen.items()} == sizes
        # Half of partition 0 is done, all of partition 1, none of partition 2.
        plan = {0: sizes[0] // 2, 1: sizes[1]}
        answer = first.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in plan.items()], asynchronous=False
        )
        assert all(tp.error is None for tp in answer), answer
    finally:
        first.close()
    assert committed_offsets(kafka_bootstrap, group, topic) == plan

    second = Consumer(consumer_config(kafka_bootstrap, group))
    try:
        resumed = {0: plan[0], 1: plan[1], 2: 0}  # no commit on 2: auto.offset.reset=earliest
        expected = sum(sizes[p] - start for p, start in resumed.items())
        again = _by_partition(_read_in_group(second, topic, expected, timeout=30))
    finally:
        second.close()
    want = {p: list(range(start, sizes[p])) for p, start in resumed.items() if start < sizes[p]}
    assert again == want


ROUND_TRIP_CASES: list[tuple[str, Record]] = [
    ("binary-value-repeated-headers", (b"k\x00\xff", bytes(range(256)), [("h", b"\x00\xff"), ("h", b"again"), ("caf\u00e9", b"\xc3\xa9")], None)),  # noqa: E501
    ("empty-value", (b"k", b"", [("trace", b"1")], None)),
    ("none-key", (None, b"v", [("trace", b"2")], None)),
    ("none-value-tombstone", (b"gone", None, None, None)),
    ("empty-key-and-header-value", (b"", b"v", [("empty", b"")], None)),
    ("no-headers", (b"k", b"plain", None, None)),
]  # fmt: skip


@pytest.mark.parametrize(
    "record", [case for _, case in ROUND_TRIP_CASES], ids=[name for name, _ in ROUND_TRIP_CASES]
)
def test_key_value_and_headers_round_trip_byte_for_byte(
    kafka_bootstrap: str, make_topic: MakeTopic, record: Record
) -> None:
    topic = make_topic(prefix="bed-bytes")
    key, value, headers, _ = record
    produce(kafka_bootstrap, topic, [record])
    [message] = consume_all(kafka_bootstrap, topic, expected=1, timeout=10)
    assert message.key() == key
    assert message.value() == value
    # librdkafka reports "no headers" as None, never as an empty list.
    assert message.headers() == (headers or None)


def test_make_topic_creates_ready_topics_with_the_requested_config(
    kafka_admin: AdminClient, make_topic: MakeTopic
) -> None:
    started = time.monotonic()
    topic = make_topic(partitions=4, prefix="bed-cfg", config={"cleanup.policy": "compact"})
    elapsed = time.monotonic() - started
    assert topic.startswith("bed-cfg-")
    assert elapsed < 1.0, f"topic creation took {elapsed:.2f} s"
    metadata = kafka_admin.list_topics(topic=topic, timeout=5).topics[topic]
    assert sorted(metadata.partitions) == [0, 1, 2, 3]
    resource = ConfigResource(ResourceType.TOPIC, topic)
    futures: dict[ConfigResource, Future[dict[str, ConfigEntry]]] = kafka_admin.describe_configs(
        [resource]
    )
    assert futures[resource].result(timeout=10)["cleanup.policy"].value == "compact"
    assert make_topic(prefix="bed-cfg") != topic
