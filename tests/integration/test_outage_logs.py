"""A broker outage is a few log lines, not a flood, and every line is one JSON object.

librdkafka fails each connection attempt several times a second and reports each one
twice (a log line and an error callback); auto-commits refused meanwhile fail once per
partition. The worker logs the first of each kind, one line per kind with each summary
while it lasts (``repeated``), and ``repeats_ended`` when it is over (worker/repeats.py).

- a broker frozen for 10 s (SIGSTOP, as in test_worker_faults.py): counted from the
  freeze until everything is delivered and committed again; nothing is lost
- a broker that refuses every connection (nothing listens on its port) for 10 s: what
  the worker logs while it cannot reach Kafka at all
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import time
from typing import Any

import orjson
import pytest

from ometria_dev.stub import running_stub
from tests.fixtures.kafka_helpers import MakeTopic, produce
from tests.fixtures.worker import WorkerProcess, worker_env
from tests.integration.helpers import end_offsets, numbered, wait_committed, wait_until
from tests.integration.test_worker_faults import _broker_pid, accepted_ids, group_name

pytestmark = [pytest.mark.integration, pytest.mark.fault]

#: Lines allowed for a 10 s outage: the first line of each kind (librdkafka's, the error
#: callback's, the session's, refused commits), one per kind with each summary (every
#: 5 s here), the end lines, the summaries themselves and the rebalance after it. The
#: worker logged 200 to 400 lines here before its lines were coalesced.
MAX_LINES = 30


def parsed(lines: list[str]) -> list[dict[str, Any]]:
    """Every line as one JSON object (fails naming the first that is not)."""
    out = []
    for line in lines:
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            pytest.fail(f"not one JSON object: {line[:200]!r}")
        assert isinstance(value, dict), line[:200]
        out.append(value)
    return out


def tally(events: list[dict[str, Any]]) -> str:
    """What the lines were, for a failure message."""
    counts = collections.Counter(str(e.get("event", ""))[:60] for e in events)
    return ", ".join(f"{n} x {name}" for name, n in counts.most_common())


def test_a_frozen_broker_is_a_few_lines_and_loses_nothing(
    kafka_bootstrap: str, make_topic: MakeTopic, spawn_worker: Any
) -> None:
    topic = make_topic(partitions=4, prefix="outage")
    dlq = make_topic(prefix="dlq")
    total = 400
    produce(kafka_bootstrap, topic, numbered(total, prefix="o"))
    group = group_name()
    pid = _broker_pid(kafka_bootstrap)
    # 50 ms a POST, one lane per partition: deliveries go on through the freeze, so
    # there is always something to commit, and every commit is refused.
    with running_stub(latency_ms=50) as stub:
        worker: WorkerProcess = spawn_worker(
            worker_env(kafka_bootstrap, [topic], dlq, stub.url, group, WORKER_SUMMARY_INTERVAL="5")
        )
        wait_until(lambda: len(stub.bodies()) >= 40, 60, "40 accepted")
        before = len(worker.raw)
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(10)
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: set(accepted_ids(stub)) >= {f"o-{i}" for i in range(total)}, 90, "all")
        wait_committed(kafka_bootstrap, group, topic, timeout=60)
        window = parsed(worker.raw[before:])
        ids = set(accepted_ids(stub))
        assert worker.stop() == 0
    assert len(window) < MAX_LINES, tally(window)
    assert ids == {f"o-{i}" for i in range(total)}
    assert end_offsets(kafka_bootstrap, dlq) == {0: 0}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_broker_refusing_connections_is_a_few_lines(spawn_worker: Any) -> None:
    with running_stub() as stub:
        worker: WorkerProcess = spawn_worker(
            worker_env(
                f"127.0.0.1:{_closed_port()}",
                ["outage"],
                "outage-dlq",
                stub.url,
                group_name(),
                WORKER_SUMMARY_INTERVAL="5",
            )
        )
        worker.wait_for_log("worker_started")
        before = len(worker.raw)
        time.sleep(10)
        window = parsed(worker.raw[before:])
        assert worker.stop() == 0
    assert len(window) < MAX_LINES, tally(window)
    errors = [e for e in window if e["event"] == "kafka_error"]
    refused = [e for e in window if "Connection refused" in str(e["event"])]
    assert errors
    assert refused
    # The ones held back are counted: many more than were logged.
    assert sum(1 + e.get("repeated", 0) for e in errors) > 2 * len(errors), tally(window)
    assert sum(1 + e.get("repeated", 0) for e in refused) > 2 * len(refused), tally(window)
    # Nothing held back goes unsaid at the exit.
    assert any(e.get("repeated") for e in worker.logs[-10:] if e["event"] != "summary")
