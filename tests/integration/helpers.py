"""Event builders and checks shared by the worker's integration and fault tests."""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any, cast

import orjson
from confluent_kafka import Message, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.fixtures.kafka_helpers import Record, committed_offsets

UID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
SID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def basket_event(event_id: str, uid: str = UID, quantity: int = 1, pad: int = 0) -> bytes:
    """A structured CloudEvent that maps (commerce.basket.item_added, MODEL 1)."""
    data: dict[str, Any] = {
        "user": {"uid": uid, "sid": SID},
        "product": {"id": "SKU-1"},
        "quantity": quantity,
    }
    if pad:
        data["padding"] = "x" * pad  # unknown fields are dropped, but count for size
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "tests",
            "type": "commerce.basket.item_added",
            "dataschema": "commerce/basket.item_added/1-0-0",
            "data": data,
        }
    )


def numbered(count: int, prefix: str = "e", keys: int = 0) -> list[Record]:
    """``count`` mappable records with ids ``{prefix}-{i}``; keyed by visitor when ``keys``."""
    records: list[Record] = []
    for i in range(count):
        uid = f"visitor-{i % keys}" if keys else UID
        key = uid.encode() if keys else None
        records.append((key, basket_event(f"{prefix}-{i}", uid=uid), None, None))
    return records


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``check`` until true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition → high watermark (one past the last record)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    meta = admin.list_topics(topic=topic, timeout=10)
    partitions = sorted(meta.topics[topic].partitions)
    from confluent_kafka import Consumer  # noqa: PLC0415

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"wm-{uuid.uuid4().hex}"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def wait_committed(bootstrap: str, group: str, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """Wait until the group committed every partition to its end; return the offsets."""
    end = {p: o for p, o in end_offsets(bootstrap, topic).items() if o > 0}
    wait_until(
        lambda: all(
            committed_offsets(bootstrap, group, topic).get(p, -1) >= o for p, o in end.items()
        ),
        timeout,
        f"group {group} to commit {end}",
        interval=0.2,
    )
    return committed_offsets(bootstrap, group, topic)


def http_get(url: str) -> tuple[int, bytes]:
    """GET without raising for 5xx."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def metric_samples(text: str) -> dict[str, float]:
    """Prometheus text → {"name{labels}": value}, labels sorted by name."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            head, value = line.rsplit(" ", 1)
            name, _, labels = head.partition("{")
            pairs = sorted(re.findall(r'[a-z_]+="[^"]*"', labels))
            out[name + ("{" + ",".join(pairs) + "}" if pairs else "")] = float(value)
    return out


def worker_metrics(port: int) -> dict[str, float]:
    """A running worker's ``/metrics`` on ``port``, as :func:`metric_samples` reads them."""
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, f"/metrics answered {status}"
    return metric_samples(body.decode())


def headers_of(msg: Message) -> list[tuple[str, bytes | None]]:
    """A consumed record's headers, typed as consumed records carry them."""
    return cast(list[tuple[str, bytes | None]], msg.headers() or [])


def header_dict(msg: Message) -> dict[str, bytes]:
    """A consumed record's headers as a dict (last value wins; None values as b"")."""
    return {name: value or b"" for name, value in headers_of(msg)}


def attempt_times(attempts: list[dict[str, object]], status: int | None = None) -> list[float]:
    """Arrival times (wall clock) of the stand-in's recorded attempts, optionally by status."""
    return [float(cast(float, a["t"])) for a in attempts if status is None or a["status"] == status]
