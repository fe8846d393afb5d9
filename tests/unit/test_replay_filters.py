"""The pure half of dead-letter replay: parsing dead letters, filters and the plan."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from worker.config import ConfigError
from worker.deadletter import SourceRecord, dead_letter_headers, truncated
from worker.outcome import Failure, Reason
from worker.replay import (
    DeadLetter,
    Selection,
    kafka_settings,
    original_headers,
    parse_time,
    plan,
    reader_config,
    republisher_config,
)

T0 = 1_764_150_000.0  # 2025-11-26T09:40:00Z
ORIGINAL = [("trace", b"\x00\x01binary"), ("empty", None), ("ce_type", b"commerce.x")]


def letter(
    reason: Reason = "unknown_schema",
    *,
    topic: str = "shop",
    partition: int = 2,
    offset: int = 7,
    now: float = T0,
    headers: list[tuple[str, bytes | None]] | None = None,
) -> DeadLetter:
    """A dead letter exactly as the worker's writer builds it."""
    source = SourceRecord(topic, partition, offset, b"key", b"value", headers or list(ORIGINAL))
    extra = dead_letter_headers(source, Failure(reason, "why", "schema", "t/1"), 0, now=now)
    return DeadLetter.from_record(0, 41, source.key, source.value, list(source.headers) + extra)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26T10:00:00Z", datetime(2026, 11, 26, 10, tzinfo=UTC)),
        ("2026-11-26T10:00:00.250Z", datetime(2026, 11, 26, 10, 0, 0, 250_000, tzinfo=UTC)),
        ("2026-11-26T12:00:00+02:00", datetime(2026, 11, 26, 10, tzinfo=UTC)),
        ("2026-11-26T10:00", datetime(2026, 11, 26, 10, tzinfo=UTC)),  # no zone: UTC
        ("2026-11-26", datetime(2026, 11, 26, tzinfo=UTC)),  # a date: midnight UTC
        (" 2026-11-26 ", datetime(2026, 11, 26, tzinfo=UTC)),
    ],
)
def test_parse_time_reads_iso_8601_as_utc(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "", "26/11/2026", "2026-13-01"])
def test_parse_time_refuses_other_forms_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_time(text)


def test_from_record_reads_the_writers_headers() -> None:
    dead = letter("rejected", topic="orders", partition=3, offset=99)
    assert dead.reason == "rejected"
    assert dead.detail == "why"
    assert dead.schema == "t/1"
    assert (dead.source_topic, dead.source_partition, dead.source_offset) == ("orders", 3, 99)
    assert dead.time == datetime.fromtimestamp(T0, tz=UTC)
    assert not dead.truncated
    assert dead.headers == ORIGINAL  # byte for byte, order kept, None values kept
    assert (dead.key, dead.value) == (b"key", b"value")
    assert dead.position == "0:41"
    assert dead.source == "orders[3]@99"


def test_from_record_marks_truncated_dead_letters() -> None:
    source = SourceRecord("shop", 0, 1, None, b"x" * 100, list(ORIGINAL))
    extra = dead_letter_headers(source, Failure("too_large", "big", "decode"), 0)
    value, headers = truncated(source, extra, 10, drop_headers=False)
    dead = DeadLetter.from_record(0, 0, None, value, headers)
    assert dead.truncated
    assert dead.headers == ORIGINAL
    assert dead.value == b"x" * 10


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (None, []),
        ([], []),
        ([("a", b"1"), ("dlq.reason", b"x"), ("b", None)], [("a", b"1"), ("b", None)]),
        # Every dlq.* header goes, wherever it is; names that merely contain "dlq" stay.
        ([("dlq.old", b"1"), ("x-dlq.y", b"2"), ("dlq", b"3")], [("x-dlq.y", b"2"), ("dlq", b"3")]),
        ([("s", "text")], [("s", b"text")]),  # a str value is sent as its UTF-8 bytes
    ],
)
def test_original_headers_drop_every_dlq_header(
    headers: list[tuple[str, bytes | str | None]] | None, expected: list[tuple[str, bytes | None]]
) -> None:
    assert original_headers(headers) == expected


def test_malformed_dlq_headers_read_as_absent() -> None:
    dead = DeadLetter.from_record(
        0,
        5,
        None,
        b"v",
        [
            ("dlq.reason", b"invalid"),
            ("dlq.source.partition", b"two"),
            ("dlq.source.offset", b""),
            ("dlq.time", b"last tuesday"),
        ],
    )
    assert dead.reason == "invalid"
    assert dead.source_partition is None
    assert dead.source_offset is None
    assert dead.time is None
    assert dead.source == "(unknown source)"


def test_a_record_without_dlq_headers_is_not_a_dead_letter() -> None:
    dead = DeadLetter.from_record(0, 0, b"k", b"v", [("a", b"1")])
    assert dead.reason is None
    step = plan(dead, topic_partitions={"shop": 1}, dlq_topic="dlq")
    assert step.skip is not None
    assert "not a dead letter" in step.skip


HOUR = 3600.0
CASES = [
    # (selection, reason, source topic, seconds after T0, selected?)
    (Selection(), "invalid", "shop", 0, True),
    (Selection(reasons=frozenset({"unknown_schema"})), "unknown_schema", "shop", 0, True),
    (Selection(reasons=frozenset({"unknown_schema"})), "invalid", "shop", 0, False),
    (Selection(reasons=frozenset({"invalid", "rejected"})), "rejected", "shop", 0, True),
    (Selection(source_topics=frozenset({"shop"})), "invalid", "shop", 0, True),
    (Selection(source_topics=frozenset({"shop"})), "invalid", "other", 0, False),
    (Selection(since=datetime.fromtimestamp(T0, tz=UTC)), "invalid", "shop", 0, True),
    (Selection(since=datetime.fromtimestamp(T0, tz=UTC)), "invalid", "shop", -1, False),
    (Selection(until=datetime.fromtimestamp(T0, tz=UTC)), "invalid", "shop", 0, False),
    (Selection(until=datetime.fromtimestamp(T0, tz=UTC)), "invalid", "shop", -1, True),
    (
        Selection(
            reasons=frozenset({"invalid"}),
            source_topics=frozenset({"shop"}),
            since=datetime.fromtimestamp(T0 - HOUR, tz=UTC),
            until=datetime.fromtimestamp(T0 + HOUR, tz=UTC),
        ),
        "invalid",
        "shop",
        0,
        True,
    ),
    (
        Selection(
            reasons=frozenset({"invalid"}),
            since=datetime.fromtimestamp(T0 - HOUR, tz=UTC),
            until=datetime.fromtimestamp(T0 + HOUR, tz=UTC),
        ),
        "invalid",
        "shop",
        HOUR,  # until is exclusive
        False,
    ),
]


@pytest.mark.parametrize(("selection", "reason", "topic", "after", "selected"), CASES)
def test_selection_filters(
    selection: Selection, reason: Reason, topic: str, after: float, selected: bool
) -> None:
    assert selection.matches(letter(reason, topic=topic, now=T0 + after)) is selected


def test_a_time_window_never_selects_a_dead_letter_without_a_time() -> None:
    dead = DeadLetter.from_record(0, 0, None, b"v", [("dlq.reason", b"invalid")])
    assert Selection().matches(dead)
    assert not Selection(since=datetime(2000, 1, 1, tzinfo=UTC)).matches(dead)
    assert not Selection(until=datetime(2100, 1, 1, tzinfo=UTC)).matches(dead)


TOPICS = {"shop": 3, "other": 1, "dlq": 1}


@pytest.mark.parametrize(
    ("dead", "to_topic", "target", "partition", "verdict"),
    [
        # Back to the source: same topic, same partition.
        (letter(partition=2), None, "shop", 2, None),
        # The source partition is gone (topic re-created smaller): the key decides.
        (letter(partition=5), None, "shop", None, None),
        # Elsewhere: the key decides.
        (letter(), "other", "other", None, None),
        # --to-topic naming the source topic still keeps the partition.
        (letter(partition=1), "shop", "shop", 1, None),
        (letter(topic="gone"), None, None, None, "fail: does not exist"),
        (letter(), "dlq", None, None, "fail: dead-letter topic itself"),
    ],
)
def test_plan_targets(
    dead: DeadLetter,
    to_topic: str | None,
    target: str | None,
    partition: int | None,
    verdict: str | None,
) -> None:
    step = plan(dead, topic_partitions=TOPICS, dlq_topic="dlq", to_topic=to_topic)
    assert (step.target, step.partition) == (target, partition)
    if verdict is None:
        assert step.skip is None
        assert step.fail is None
        where = "by key" if partition is None else str(partition)
        assert step.describe() == f"0:41 unknown_schema {dead.source} -> {target}[{where}]"
    else:
        kind, _, text = verdict.partition(": ")
        assert kind == "fail"
        assert step.fail is not None
        assert text in step.fail
        assert "cannot replay" in step.describe()


def test_plan_needs_a_target_when_the_source_is_unknown() -> None:
    dead = DeadLetter.from_record(0, 3, None, b"v", [("dlq.reason", b"invalid")])
    step = plan(dead, topic_partitions=TOPICS, dlq_topic="dlq")
    assert step.fail is not None
    assert "--to-topic" in step.fail
    assert plan(dead, topic_partitions=TOPICS, dlq_topic="dlq", to_topic="other").target == "other"


def test_plan_skips_truncated_unless_asked() -> None:
    source = SourceRecord("shop", 0, 1, None, b"x" * 100, [])
    extra = dead_letter_headers(source, Failure("too_large", "big", "decode"), 0)
    value, headers = truncated(source, extra, 10, drop_headers=True)
    dead = DeadLetter.from_record(0, 0, None, value, headers)
    skipped = plan(dead, topic_partitions=TOPICS, dlq_topic="dlq")
    assert skipped.target is None
    assert skipped.skip is not None
    assert "truncated" in skipped.skip
    assert "skipped" in skipped.describe()
    sent = plan(dead, topic_partitions=TOPICS, dlq_topic="dlq", include_truncated=True)
    assert (sent.target, sent.partition, sent.skip) == ("shop", 0, None)


def test_kafka_settings_need_only_kafka_variables() -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "b:9092",
        "KAFKA_CONFIG_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_CONFIG_SASL_PASSWORD": "hunter2",
        "WORKER_CONCURRENCY": "not a number",  # not replay's business: not read
    }
    settings = kafka_settings(env)
    assert settings.dlq_topic == "ometria-worker.dlq"
    reader = reader_config(settings)
    assert reader["bootstrap.servers"] == "b:9092"
    assert reader["security.protocol"] == "SASL_SSL"
    assert reader["sasl.password"] == "hunter2"
    assert reader["enable.auto.commit"] is False
    assert str(reader["group.id"]).startswith("ometria-worker-dlq-read-")
    producer = republisher_config(settings, timeout=7)
    assert producer["enable.idempotence"] is True
    assert producer["acks"] == "all"
    assert producer["message.timeout.ms"] == 7000
    assert producer["partitioner"] == "murmur2_random"
    assert producer["sasl.password"] == "hunter2"
    assert "group.id" not in producer


def test_kafka_settings_overrides_and_errors() -> None:
    settings = kafka_settings(
        {"KAFKA_DLQ_TOPIC": "from-env"}, bootstrap_servers="cli:1", dlq_topic="from-cli"
    )
    assert (settings.bootstrap_servers, settings.dlq_topic) == ("cli:1", "from-cli")
    with pytest.raises(ConfigError) as caught:
        kafka_settings({"KAFKA_CONFIG_GROUP_ID": "x"})
    assert caught.value.problems == [
        "KAFKA_BOOTSTRAP_SERVERS is required",
        "KAFKA_CONFIG_GROUP_ID sets group.id, which the worker owns: use its own setting",
    ]
