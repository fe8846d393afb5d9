"""Clean hand-overs repeat nothing, in both ordering modes, against the real broker.

A partition moves to another group member (a worker joins, or one leaves on SIGTERM)
while many keys are in flight and one hot key holds the commit point back: its long
queue is still being worked through, one record at a time, while every other key of
the partition has finished far ahead of it. The departing worker drains what is in
flight and commits the first unfinished offset *and*, in the commit's metadata, the
offsets finished beyond it; the next owner skips those (``records_skipped_total``)
instead of sending them again. So every event reaches Ometria exactly once, and the
first delivery of each key keeps its order.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from typing import Any, cast

import pytest

from ometria_dev.stub import running_stub
from tests.fixtures.kafka_helpers import MakeTopic, Record, produce
from tests.fixtures.worker import worker_env
from tests.integration.helpers import basket_event, wait_committed, wait_until, worker_metrics

pytestmark = [pytest.mark.integration, pytest.mark.fault]

PARTITIONS = 2
HOT = 200  # records of the hot key, per partition, first in line
OTHERS = 400  # records of other keys (two each), per partition, interleaved


def records() -> list[Record]:
    """Per partition: the hot key's records interleaved with many other keys'."""
    out: list[Record] = []
    for p in range(PARTITIONS):
        hot = f"hot-{p}"
        for i in range(HOT + OTHERS):
            if i % 3 == 0 and i // 3 < HOT:
                uid, event_id = hot, f"p{p}-hot-{i // 3}"
            else:
                uid, event_id = f"v{p}-{i % 200}", f"p{p}-o-{i}"
            out.append((uid.encode(), basket_event(event_id, uid=uid), None, p))
    return out


def skipped(port: int) -> float:
    return worker_metrics(port)["ometria_worker_records_skipped_total"]


@pytest.mark.parametrize("ordering", ["key", "partition"])
def test_a_worker_joining_then_one_leaving_repeats_nothing(
    kafka_bootstrap: str, make_topic: MakeTopic, spawn_worker: Any, ordering: str
) -> None:
    topic = make_topic(partitions=PARTITIONS, prefix="handover")
    dlq = make_topic(prefix="dlq")
    produce(kafka_bootstrap, topic, records())
    total = PARTITIONS * (HOT + OTHERS)
    group = f"g-{uuid.uuid4().hex[:8]}"
    with running_stub(latency_ms=15) as stub:
        env = worker_env(
            kafka_bootstrap,
            [topic],
            dlq,
            stub.url,
            group,
            WORKER_ORDERING=ordering,
            WORKER_REBALANCE_DRAIN_TIMEOUT="20",
            WORKER_DRAIN_TIMEOUT="20",
        )
        first = spawn_worker(env, name="first")
        wait_until(lambda: len(stub.bodies()) >= 150, 60, "150 accepted by the first worker")
        second = spawn_worker(env, name="second")
        second_port = second.wait_for_log("health_listening")["port"]
        second.wait_for_log("partitions_assigned", timeout=60)
        wait_until(lambda: len(stub.bodies()) >= total // 2, 120, "half accepted")
        # The first leaves cleanly: its partitions go to the second, drained first.
        assert first.stop() == 0
        wait_until(lambda: len(stub.bodies()) >= total, 180, "everything accepted")
        wait_committed(kafka_bootstrap, group, topic)
        handed_over = skipped(second_port)
        assert second.stop() == 0
        bodies = [cast(dict[str, Any], body) for body in stub.bodies()]

    ids = [body["request_id"] for body in bodies]
    repeated = {i: n for i, n in Counter(ids).items() if n > 1}
    assert repeated == {}, f"{len(repeated)} events sent more than once"
    assert len(set(ids)) == total
    assert first.events("partitions_revoked")
    assert all(line["drained"] for line in first.events("partitions_revoked"))
    if ordering == "key":
        # The hot keys held the commit points back while other keys finished beyond them:
        # the new owner skipped what its commits' metadata named as done.
        assert handed_over > 0
    per_key: dict[str, list[int]] = defaultdict(list)
    for body in bodies:
        event_id = body["request_id"]
        per_key[body["user"]["uid"]].append(int(event_id.rsplit("-", 1)[1]))
    for uid, numbers in per_key.items():
        assert numbers == sorted(numbers), f"{uid} out of order"
