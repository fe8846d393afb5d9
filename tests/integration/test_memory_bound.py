"""The in-flight bytes bound against the real broker: a backlog of large records is taken
a few at a time, never more than the bound plus one record, and all of it is delivered."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from ometria_dev.stub import running_stub
from tests.fixtures.kafka_helpers import MakeTopic, produce
from tests.fixtures.worker import worker_env
from tests.integration.helpers import basket_event, wait_committed, wait_until, worker_metrics

pytestmark = [pytest.mark.integration, pytest.mark.fault]


def accepted_ids(stub: Any) -> list[str]:
    return [body["request_id"] for body in stub.bodies()]


def test_a_backlog_of_large_records_stays_within_the_bytes_bound(
    kafka_bootstrap: str, make_topic: MakeTopic, spawn_worker: Any
) -> None:
    topic = make_topic(partitions=2, prefix="bytes")
    dlq = make_topic(prefix="dlq")
    total = 240
    values = [basket_event(f"big-{i}", pad=40_000 + 97 * i) for i in range(total)]
    largest = max(len(v) for v in values)  # no key, no headers: the value is the record
    produce(kafka_bootstrap, topic, [(None, v, None, None) for v in values])
    bound = 400_000  # about nine records: the count bound (10,000) never comes into play
    group = f"g-{uuid.uuid4().hex[:8]}"
    seen: list[float] = []
    with running_stub(latency_ms=3) as stub:
        worker = spawn_worker(
            worker_env(
                kafka_bootstrap,
                [topic],
                dlq,
                stub.url,
                group,
                WORKER_ORDERING="key",
                WORKER_MAX_IN_FLIGHT_BYTES=str(bound),
                WORKER_MAX_RECORD_BYTES="65536",
            )
        )
        port = worker.wait_for_log("health_listening")["port"]

        def sample() -> float:
            seen.append(worker_metrics(port)["ometria_worker_records_in_flight_bytes"])
            return seen[-1]

        def all_accepted() -> bool:
            sample()
            return len(set(accepted_ids(stub))) == total

        wait_until(all_accepted, 120, "every record accepted", interval=0.02)
        wait_committed(kafka_bootstrap, group, topic)
        wait_until(lambda: sample() == 0, 10, "no bytes in flight once all is committed")
        assert worker.stop() == 0
        ids = accepted_ids(stub)
    assert sorted(ids) == sorted(f"big-{i}" for i in range(total))  # all, each once
    # Each partition holds at most its share (bound / 2): the bound was reached per share,
    # every pause came when a record would not fit, and the total never went past it.
    assert worker.events("partitions_paused"), worker.tail()
    stopped = worker.wait_for_log("worker_stopped")
    # The peak is kept by the intake after every batch taken: no sample can miss it.
    assert bound - 2 * largest <= stopped["in_flight_bytes_peak"] <= bound
    assert stopped["in_flight_bytes"] == 0
    assert max(seen) <= bound
