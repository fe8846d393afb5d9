"""Every metric the README documents is real: exported, and moved by a run that should
move it.

The list is read from README.md (Operations → Metrics), so a metric documented without
being wired fails here. One worker run goes through phases that each move some of them:

1. a dead letter while the dead-letter topic does not exist yet (refused writes, its
   partition stalls and pauses, lag builds up), 5xx and then 429 answers on the other
   partition; then the topic appears and everything drains and is committed
2. Ometria refuses the credentials for a while (401)
3. a consumed topic is deleted under a record in flight: its commit is refused
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from ometria_dev.stub import running_stub
from tests.fixtures.kafka_helpers import (
    MakeTopic,
    Record,
    delete_topics,
    produce,
    wait_for_topic,
)
from tests.fixtures.worker import worker_env
from tests.integration.helpers import (
    basket_event,
    end_offsets,
    http_get,
    wait_committed,
    wait_until,
)
from worker.metrics import Metrics

pytestmark = [pytest.mark.integration, pytest.mark.fault]

README = Path(__file__).resolve().parents[2] / "README.md"

Labels = frozenset[tuple[str, str]]


def documented_metrics() -> dict[str, tuple[str, ...]]:
    """Full metric name → its documented label names, from the README's Metrics table."""
    text = README.read_text(encoding="utf-8")
    start = text.index("**Metrics**")
    paragraph = text[start : text.index("\n\n", start)]
    prefix_match = re.search(r"prefixed `([a-z_]+)`", paragraph)
    assert prefix_match, "the Metrics paragraph no longer names the prefix"
    prefix = prefix_match.group(1)
    names: dict[str, tuple[str, ...]] = {}
    for name, labels in re.findall(r"^\| `([a-z_]+)(?:\{([a-z_,]+)\})?` \|", paragraph, re.M):
        names[prefix + name] = tuple(labels.split(",")) if labels else ()
    return names


#: Metrics that need a scenario of their own (a second group member, a partition stuck
#: behind the worker's back): the test that moves each, and must name it.
MOVED_ELSEWHERE = {
    "records_skipped_total": "tests/integration/test_handover.py",
    "partitions_stalled": "tests/unit/test_worker_core.py",
    "schema_registry_failing": "tests/integration/test_registry_worker.py",
}


@dataclass
class Exposition:
    """One parsed /metrics answer."""

    types: dict[str, str] = field(default_factory=dict)
    series: dict[tuple[str, Labels], float] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Exposition:
        out = cls()
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ")
                out.types[name] = kind
            elif line and not line.startswith("#"):
                head, value = line.rsplit(" ", 1)
                name, _, labels = head.partition("{")
                pairs = re.findall(r'([a-z_]+)="([^"]*)"', labels)
                out.series[(name, frozenset(pairs))] = float(value)
        return out

    def of(self, metric: str) -> dict[tuple[str, Labels], float]:
        """The samples of ``metric`` (a histogram's as ``_count``, its event count)."""
        name = metric + "_count" if self.types.get(metric) == "histogram" else metric
        return {key: v for key, v in self.series.items() if key[0] == name}

    def value(self, metric: str, **labels: str) -> float:
        """One sample's value; 0 when absent (a labelled counter not yet seen)."""
        name = metric + "_count" if self.types.get(metric) == "histogram" else metric
        return self.series.get((name, frozenset(labels.items())), 0.0)


class Scraper:
    """Scrapes the worker's /metrics and keeps every answer."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.history: list[Exposition] = []

    def __call__(self) -> Exposition:
        status, body = http_get(self.url)
        assert status == 200
        exposition = Exposition.parse(body.decode())
        self.history.append(exposition)
        return exposition

    def until(self, check: Callable[[Exposition], bool], timeout: float) -> Exposition:
        """Scrape until ``check`` holds or ``timeout`` passes; the last scrape. Never fails:
        the waits of the run rest on what the stand-in, the broker and the logs show, so
        a metric that does not move is reported by the checks at the end, by name."""
        deadline = time.monotonic() + timeout
        while True:
            exposition = self()
            if check(exposition) or time.monotonic() > deadline:
                return exposition
            time.sleep(0.1)

    def highest(self, metric: str, **labels: str) -> float:
        """The highest value ``metric`` showed in any scrape so far."""
        return max(e.value(metric, **labels) for e in self.history)


P = "ometria_worker_"


def test_every_documented_metric_is_exported_and_moves(
    kafka_bootstrap: str, kafka_admin: AdminClient, make_topic: MakeTopic, spawn_worker: Any
) -> None:
    documented = documented_metrics()
    assert len(documented) >= 10, f"the README's metric list did not parse: {documented}"
    main = make_topic(partitions=2, prefix="metrics")
    doomed = make_topic(partitions=1, prefix="doomed")
    dlq = f"dlq-metrics-{uuid.uuid4().hex}"  # created only once writes to it have failed
    group = f"g-{uuid.uuid4().hex[:8]}"
    stalled: list[Record] = [(None, b"not json", None, 0)]
    stalled += [(None, basket_event(f"m0-{i}"), None, 0) for i in range(40)]
    flowing: list[Record] = [(None, basket_event(f"m1-{i}"), None, 1) for i in range(40)]
    produce(kafka_bootstrap, main, stalled + flowing)
    try:
        with running_stub(error_rate=1.0, error_status=503) as stub:
            worker = spawn_worker(
                worker_env(
                    kafka_bootstrap,
                    [main, doomed],
                    dlq,
                    stub.url,
                    group,
                    WORKER_MAX_IN_FLIGHT_PER_PARTITION="20",
                    WORKER_DLQ_TIMEOUT="120",
                    WORKER_AUTH_RETRY_INTERVAL="0.5",
                    # A missing topic is reported after 0.5 s instead of librdkafka's 30 s.
                    KAFKA_CONFIG_TOPIC_METADATA_PROPAGATION_MAX_MS="500",
                )
            )
            scrape = Scraper(worker.wait_for_log("health_listening")["port"])
            scrape()

            # Phase 1: 5xx, then 429, on partition 1 while partition 0 waits for its DLQ.
            wait_until(lambda: _answered(stub, 503) >= 2, 30, "two 503 answers")
            stub.set_faults(error_rate=0.0, throttle_rate=1.0, retry_after=1)
            wait_until(lambda: _answered(stub, 429) >= 1, 30, "a 429 answer")
            stub.clear_faults()
            worker.wait_for_log("dead_letter_write_failed")
            worker.wait_for_log("partitions_paused")
            # librdkafka reports lag every 5 s; partition 0 stays stalled until it has.
            lag_p0 = {"topic": main, "partition": "0"}
            scrape.until(lambda e: e.value(P + "consumer_lag", **lag_p0) > 0, 15)
            kafka_admin.create_topics([NewTopic(dlq, 1, 1)])[dlq].result(timeout=10)
            wait_for_topic(kafka_admin, dlq, 1)
            wait_until(lambda: len(stub.bodies()) == 80, 60, "all 80 accepted")
            committed = wait_committed(kafka_bootstrap, group, main)
            settled = scrape.until(
                lambda e: (
                    e.value(P + "records_in_flight") == 0
                    and e.value(P + "committed_offset", topic=main, partition="0") == 41
                ),
                10,
            )
            n503, n429 = _answered(stub, 503), _answered(stub, 429)
            dead_letters = end_offsets(kafka_bootstrap, dlq)
            write_failures = len(worker.events("dead_letter_write_failed"))

            # Phase 2: Ometria refuses the credentials, then takes them again.
            stub.set_faults(auth_fail=True)
            produce(kafka_bootstrap, main, [(None, basket_event("auth-0"), None, 1)])
            worker.wait_for_log("ometria_refuses_credentials")
            scrape()  # still refused: the stand-in answers 401 until told otherwise
            stub.clear_faults()
            wait_until(lambda: len(stub.bodies()) == 81, 30, "auth-0 accepted")
            wait_committed(kafka_bootstrap, group, main)
            scrape.until(
                lambda e: (
                    e.value(P + "auth_failing") == 0 and e.value(P + "records_in_flight") == 0
                ),
                5,
            )

            # Phase 2b: answers slower than the read timeout (2 s): errors with no answer.
            stub.set_faults(latency_ms=2500)
            produce(kafka_bootstrap, main, [(None, basket_event("slow-0"), None, 1)])
            slow = scrape.until(
                lambda e: e.value(P + "delivery_errors_total", kind="timeout") >= 1, 30
            )
            stub.clear_faults()
            wait_until(lambda: len(_distinct(stub)) == 82, 30, "slow-0 accepted")
            wait_committed(kafka_bootstrap, group, main)

            # Phase 3: a consumed topic deleted while its record is in flight: when that
            # record is done, the commit of its offset is refused (unknown partition).
            stub.set_faults(latency_ms=1500)
            produce(kafka_bootstrap, doomed, [(None, basket_event("doomed-0"), None, 0)])
            wait_until(
                lambda: scrape().value(P + "records_consumed_total") == 84, 30, "doomed-0 taken"
            )
            delete_topics(kafka_admin, [doomed])
            worker.wait_for_log("commit_failed")
            last = scrape()
            assert worker.stop() == 0
    finally:
        delete_topics(kafka_admin, [dlq])

    first = scrape.history[0]
    baseline = Exposition.parse(Metrics().render())  # what a fresh worker exports
    problems: list[str] = []
    for metric, labels in documented.items():
        if metric not in first.types:
            problems.append(f"{metric}: documented but not exported")
            continue
        label_names = {
            tuple(sorted(name for name, _ in key[1]))
            for e in scrape.history
            for key in e.of(metric)
        }
        if label_names != {tuple(sorted(labels))}:
            problems.append(f"{metric}: labels {label_names}, documented {labels}")
        elsewhere = MOVED_ELSEWHERE.get(metric.removeprefix(P))
        if elsewhere is not None:
            proof = README.parent / elsewhere
            if not proof.is_file() or metric.removeprefix(P) not in proof.read_text():
                problems.append(f"{metric}: {elsewhere} should move it, and does not name it")
            continue
        if all(e.of(metric) == baseline.of(metric) for e in scrape.history):
            problems.append(f"{metric}: never moved from its start value")

    # What each one should have shown, from what the run did.
    expected: dict[str, bool] = {
        "records_consumed_total": settled.value(P + "records_consumed_total") == 81,
        "records_delivered_total": settled.value(P + "records_delivered_total") == 80,
        "records_dead_lettered_total": settled.value(
            P + "records_dead_lettered_total", reason="undecodable"
        )
        == 1,
        "delivery_retries_total": settled.value(P + "delivery_retries_total") == n503 + n429,
        "delivery_throttled_total": settled.value(P + "delivery_throttled_total") == n429,
        "http_responses_total": (
            settled.value(P + "http_responses_total", status_class="2xx"),
            settled.value(P + "http_responses_total", status_class="4xx"),
            settled.value(P + "http_responses_total", status_class="5xx"),
        )
        == (80, n429, n503),
        "http_request_duration_seconds": settled.value(P + "http_request_duration_seconds")
        == 80 + n429 + n503,
        "delivery_duration_seconds": settled.value(P + "delivery_duration_seconds") == 80,
        "delivery_errors_total": slow.value(P + "delivery_errors_total", kind="timeout") >= 1
        and settled.value(P + "delivery_errors_total", kind="timeout") == 0,
        "records_in_flight_bytes": scrape.highest(P + "records_in_flight_bytes") > 0
        and settled.value(P + "records_in_flight_bytes") == 0,
        "records_in_flight": scrape.highest(P + "records_in_flight") >= 20
        and settled.value(P + "records_in_flight") == 0,
        "partitions_assigned": settled.value(P + "partitions_assigned") == 3,
        "partitions_paused": scrape.highest(P + "partitions_paused") >= 1
        and settled.value(P + "partitions_paused") == 0,
        "committed_offset": all(
            settled.value(P + "committed_offset", topic=main, partition=str(p)) == offset
            for p, offset in committed.items()
        ),
        "consumer_lag": scrape.highest(P + "consumer_lag", **lag_p0) > 0,
        "commits_total": settled.value(P + "commits_total") >= 2,
        "commit_failures_total": settled.value(P + "commit_failures_total") == 0
        and last.value(P + "commit_failures_total") >= 1,
        "dlq_write_failures_total": write_failures >= 1
        and settled.value(P + "dlq_write_failures_total") == write_failures,
        "auth_failing": settled.value(P + "auth_failing") == 0
        and scrape.highest(P + "auth_failing") == 1,
    }
    unchecked = sorted(set(documented) - {P + name for name in [*expected, *MOVED_ELSEWHERE]})
    problems += [
        f"{metric}: documented, but this test has no run that moves it" for metric in unchecked
    ]
    problems += [
        f"{P}{name}: not what the run should show (after phase 1: {settled.of(P + name)}, "
        f"at the end: {last.of(P + name)})"
        for name, ok in expected.items()
        if not ok
    ]
    assert committed == {0: 41, 1: 40}
    assert dead_letters == {0: 1}
    assert not problems, "\n".join(problems)


def _distinct(stub: Any) -> set[str]:
    return {body["request_id"] for body in stub.bodies()}


def _answered(stub: Any, status: int) -> int:
    return sum(1 for a in stub.attempts() if a["status"] == status)
