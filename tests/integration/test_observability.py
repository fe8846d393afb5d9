"""Health and metrics during a real run: the numbers must agree with what happened."""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
import pytest

from ometria_dev.stub import running_stub
from tests.fixtures.kafka_helpers import MakeTopic, Record, produce
from tests.fixtures.worker import worker_env
from tests.integration.helpers import (
    basket_event,
    end_offsets,
    http_get,
    numbered,
    wait_committed,
    wait_until,
    worker_metrics,
)

pytestmark = pytest.mark.integration


def test_metrics_and_health_agree_with_the_run(
    kafka_bootstrap: str, make_topic: MakeTopic, spawn_worker: Any
) -> None:
    topic = make_topic(partitions=2, prefix="obs")
    dlq = make_topic(prefix="dlq")
    good = numbered(60, prefix="obs")
    bad: list[Record] = [
        (None, b"not json", None, 0),
        (None, basket_event("bad-1", quantity=0), None, 1),
        (None, b'{"specversion":"1.0","id":"x","type":"commerce.nope"}', None, 0),
    ]
    produce(kafka_bootstrap, topic, good + bad)
    group = f"g-{uuid.uuid4().hex[:8]}"
    with running_stub(error_rate=0.2, error_status=503, seed=5) as stub:
        worker = spawn_worker(
            worker_env(kafka_bootstrap, [topic], dlq, stub.url, group, WORKER_ORDERING="key")
        )
        port = worker.wait_for_log("health_listening")["port"]
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: len(stub.bodies()) == 60, 60, "60 accepted")
        wait_until(
            lambda: sum(end_offsets(kafka_bootstrap, dlq).values()) == 3, 30, "3 dead letters"
        )
        committed = wait_committed(kafka_bootstrap, group, topic)
        attempts = stub.attempts()

        def lags() -> list[float | None]:
            m = worker_metrics(port)
            return [
                m.get(f'ometria_worker_consumer_lag{{partition="{p}",topic="{topic}"}}')
                for p in (0, 1)
            ]

        # Lag comes from librdkafka's statistics, every 5 s; commits every 0.2 s.
        wait_until(lambda: lags() == [0, 0], 20, "consumer lag 0 on both partitions")
        m = worker_metrics(port)
        live_status, live = http_get(base + "/livez")
        ready_status, ready = http_get(base + "/readyz")
        assert worker.stop() == 0

    answered_503 = sum(1 for a in attempts if a["status"] == 503)
    assert answered_503 > 0
    assert m["ometria_worker_records_consumed_total"] == 63
    assert m["ometria_worker_records_delivered_total"] == 60
    assert m['ometria_worker_records_dead_lettered_total{reason="undecodable"}'] == 1
    assert m['ometria_worker_records_dead_lettered_total{reason="invalid"}'] == 1
    assert m['ometria_worker_records_dead_lettered_total{reason="unknown_schema"}'] == 1
    assert m['ometria_worker_http_responses_total{status_class="2xx"}'] == 60
    assert m['ometria_worker_http_responses_total{status_class="5xx"}'] == answered_503
    assert m["ometria_worker_delivery_retries_total"] == answered_503
    assert m["ometria_worker_http_request_duration_seconds_count"] == 60 + answered_503
    assert m["ometria_worker_delivery_duration_seconds_count"] == 60
    assert m["ometria_worker_records_in_flight"] == 0
    assert m["ometria_worker_partitions_assigned"] == 2
    assert m["ometria_worker_partitions_paused"] == 0
    assert m["ometria_worker_auth_failing"] == 0
    assert m["ometria_worker_commit_failures_total"] == 0
    for partition, offset in committed.items():
        key = f'ometria_worker_committed_offset{{partition="{partition}",topic="{topic}"}}'
        assert m[key] == offset
    assert live_status == 200
    assert orjson.loads(live)["live"] is True
    assert ready_status == 200
    health = orjson.loads(ready)
    assert health["ready"] is True
    assert health["partitions"] == 2
    # Exposition format: every sample line is "name{labels} value".
    assert all(re.fullmatch(r"[a-z_]+(\{[^}]*\})? \S+", k + " 0") for k in m)
