"""Alike log lines coalesced: the first, one line per sweep while they last, an end line.

The pure part on a fake clock, then a real Worker (in-memory collaborators, virtual
time) through a broker outage: errors reported many times a second, refused commits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from tests.fakes.clock import run
from tests.fakes.harness import Harness
from worker.observe import KAFKA_LOGGER, KAFKA_REPEATS
from worker.records import CommitResult
from worker.repeats import Repeats, log_reports

TRANSPORT = {"of": "kafka_error", "code": "_TRANSPORT"}
DOWN = {"of": "kafka_error", "code": "_ALL_BROKERS_DOWN"}


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def line(i: int) -> dict[str, Any]:
    return {"event": "kafka_error", "code": "_TRANSPORT", "reason": f"refused {i}"}


def sweep_lines(repeats: Repeats) -> list[MutableMapping[str, Any]]:
    with capture_logs() as logs:
        log_reports(structlog.get_logger("test"), repeats.sweep())
    return logs


@pytest.mark.parametrize("name", ["event", "repeated", "lasted_s"])
def test_a_kind_naming_a_field_of_the_report_lines_is_refused_at_once(name: str) -> None:
    # Its repeats_ended line would pass the name twice and fail at the sweep (at shutdown,
    # once: found by the long soak), far from the line that chose the kind.
    with pytest.raises(ValueError, match=name):
        Repeats(Clock()).admit({"of": "x", name: "y"}, logging.INFO, {"event": "x"})


def test_log_writes_the_first_line_of_a_kind_and_counts_the_rest() -> None:
    repeats = Repeats(Clock())
    with capture_logs() as logs:
        for i in range(3):
            repeats.log(structlog.get_logger("test"), TRANSPORT, logging.WARNING, **line(i))
    assert [(entry["event"], entry["reason"]) for entry in logs] == [("kafka_error", "refused 0")]
    assert [(entry["event"], entry["repeated"]) for entry in sweep_lines(repeats)] == [
        ("kafka_error", 2)
    ]


@pytest.mark.parametrize(
    ("offers", "admitted"),
    [
        ([TRANSPORT], [True]),
        ([TRANSPORT, TRANSPORT, TRANSPORT], [True, False, False]),
        ([TRANSPORT, DOWN, TRANSPORT, DOWN], [True, True, False, False]),
    ],
)
def test_the_first_line_of_each_kind_passes_and_the_rest_are_held(
    offers: list[dict[str, str]], admitted: list[bool]
) -> None:
    repeats = Repeats(clock=Clock())
    assert [repeats.admit(kind, logging.WARNING, line(0)) for kind in offers] == admitted


def test_a_flood_is_its_first_line_one_line_per_sweep_and_an_end_line() -> None:
    clock = Clock()
    repeats = Repeats(clock=clock)
    assert repeats.admit(TRANSPORT, logging.WARNING, line(0))
    for i in range(1, 58):  # 57 more within the first interval
        clock.now += 0.1
        assert not repeats.admit(TRANSPORT, logging.WARNING, line(i))
    assert sweep_lines(repeats) == [
        {
            "event": "kafka_error",
            "code": "_TRANSPORT",
            "reason": "refused 57",  # the last one held back
            "repeated": 57,
            "log_level": "warning",
        }
    ]
    for i in range(58, 61):  # it goes on: 3 more before the next sweep
        clock.now += 1
        assert not repeats.admit(TRANSPORT, logging.WARNING, line(i))
    assert [(e["reason"], e["repeated"]) for e in sweep_lines(repeats)] == [("refused 60", 3)]
    clock.now += 30  # a whole interval without one: it ended
    assert sweep_lines(repeats) == [
        {
            "event": "repeats_ended",
            "of": "kafka_error",
            "code": "_TRANSPORT",
            "repeated": 60,
            "lasted_s": 8.7,  # first to last line
            "log_level": "info",
        }
    ]
    assert sweep_lines(repeats) == []
    # The next one starts a new episode: logged again.
    assert repeats.admit(TRANSPORT, logging.WARNING, line(61))


def test_a_single_line_ends_silently() -> None:
    repeats = Repeats(clock=Clock())
    assert repeats.admit(DOWN, logging.WARNING, line(0))
    assert sweep_lines(repeats) == []  # nothing held back
    assert sweep_lines(repeats) == []  # and no end line for an episode of one
    assert repeats.admit(DOWN, logging.WARNING, line(1))  # forgotten: a new episode


def test_kinds_are_counted_apart() -> None:
    repeats = Repeats(clock=Clock())
    for kind, n in ((TRANSPORT, 5), (DOWN, 2)):
        for i in range(n):
            repeats.admit(kind, logging.WARNING, {**line(i), "code": kind["code"]})
    assert {(e["code"], e["repeated"]) for e in sweep_lines(repeats)} == {
        ("_TRANSPORT", 4),
        ("_ALL_BROKERS_DOWN", 1),
    }
    assert {(e["event"], e["code"], e["repeated"]) for e in sweep_lines(repeats)} == {
        ("repeats_ended", "_TRANSPORT", 4),
        ("repeats_ended", "_ALL_BROKERS_DOWN", 1),
    }


@pytest.fixture
def fresh_kafka_repeats() -> Iterator[None]:
    """Nothing held in the process-wide librdkafka counts before or after the test."""
    for _ in range(2):  # the first sweep reports what is held, the second ends it
        KAFKA_REPEATS.sweep()
    yield
    for _ in range(2):
        KAFKA_REPEATS.sweep()


@pytest.mark.usefixtures("fresh_kafka_repeats")
def test_librdkafka_lines_are_held_per_client_facility_and_level() -> None:
    def kafka_line(level: int, facility: str, client: str, message: str) -> None:
        # How confluent-kafka hands librdkafka's lines to the configured logger.
        KAFKA_LOGGER.log(level, "%s [%s] %s", facility, client, message)

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    KAFKA_LOGGER.addHandler(handler)
    try:
        for i in range(20):
            kafka_line(logging.ERROR, "FAIL", "rdkafka#consumer-2", f"refused {i}")
            kafka_line(logging.ERROR, "FAIL", "rdkafka#producer-1", f"refused {i}")
        kafka_line(logging.WARNING, "FAIL", "rdkafka#consumer-2", "disconnected")
        kafka_line(logging.WARNING, "SESSTMOUT", "rdkafka#consumer-2", "session timed out")
        kafka_line(logging.CRITICAL, "FATAL", "rdkafka#consumer-2", "fatal 1")
        kafka_line(logging.CRITICAL, "FATAL", "rdkafka#consumer-2", "fatal 2")
    finally:
        KAFKA_LOGGER.removeHandler(handler)
    assert seen == [
        "FAIL [rdkafka#consumer-2] refused 0",
        "FAIL [rdkafka#producer-1] refused 0",
        "FAIL [rdkafka#consumer-2] disconnected",
        "SESSTMOUT [rdkafka#consumer-2] session timed out",
        "FATAL [rdkafka#consumer-2] fatal 1",  # critical lines always pass
        "FATAL [rdkafka#consumer-2] fatal 2",
    ]
    with capture_logs() as logs:
        log_reports(structlog.get_logger("test"), KAFKA_REPEATS.sweep())
    assert sorted((e["event"], e["repeated"], e["logger"]) for e in logs) == [
        ("FAIL [rdkafka#consumer-2] refused 19", 19, "librdkafka"),
        ("FAIL [rdkafka#producer-1] refused 19", 19, "librdkafka"),
    ]
    assert {e["log_level"] for e in logs} == {"error"}
    with capture_logs() as logs:
        log_reports(structlog.get_logger("test"), KAFKA_REPEATS.sweep())
    assert sorted((e["event"], e["client"], e["facility"], e["repeated"]) for e in logs) == [
        ("repeats_ended", "rdkafka#consumer-2", "FAIL", 19),
        ("repeats_ended", "rdkafka#producer-1", "FAIL", 19),
    ]


@pytest.mark.usefixtures("fresh_kafka_repeats")
def test_a_worker_through_a_broker_outage_says_it_in_a_few_lines() -> None:
    """20 errors a second for 10 s, and refused commits for every partition: the first
    of each, one line each per summary while it lasts, one end line each; a fatal error
    is never held back."""

    async def scenario() -> tuple[list[MutableMapping[str, Any]], int, int]:
        h = Harness(partitions={"t": 4}, summary_interval=5.0)
        h.produce_events(40)
        await h.start()
        await h.until(lambda: len(h.ometria.accepted) == 40)
        loop = asyncio.get_running_loop()
        rounds = 0
        with capture_logs() as logs:
            outage_end = loop.time() + 10
            while loop.time() < outage_end:
                h.intake.on_error(
                    "_TRANSPORT",
                    "127.0.0.1:9092/bootstrap: Connect failed: Connection refused",
                    fatal=False,
                    all_brokers_down=False,
                )
                h.worker.on_committed(
                    [CommitResult(("t", p), 10, "", "UNKNOWN_MEMBER_ID") for p in range(4)]
                )
                rounds += 1
                await asyncio.sleep(0.05)
            await asyncio.sleep(12)  # two summaries without any
            h.intake.on_error("_FATAL", "fenced", fatal=True, all_brokers_down=False)
            code = await h.exited()
        return logs, rounds, code

    logs, rounds, code = run(scenario())
    assert code == 1  # the fatal error stopped the worker at once
    assert [e["event"] for e in logs].count("kafka_fatal_error") == 1
    ended = {e["of"]: e for e in logs if e["event"] == "repeats_ended"}
    for event, per_round in (("kafka_error", 1), ("commit_failed", 4)):
        lines = [e for e in logs if e["event"] == event]
        assert "repeated" not in lines[0]  # the state change, as it always was
        # Then one line per summary (every 5 s) while it lasts: 2 or 3 in 10 s.
        assert 3 <= len(lines) <= 4, lines
        held = sum(e.get("repeated", 0) for e in lines[1:])
        assert 1 + held == per_round * rounds  # every one of them counted
        assert ended[event]["repeated"] == held
    assert len(logs) < 20, [e["event"] for e in logs]
