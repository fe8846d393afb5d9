"""Peak memory of the worker under hostile backlogs, against the chart's 512Mi limit.

    .venv/bin/python -m bench.memory_peak [--scenarios slow,junk] [--seconds 30]

Needs a broker: ``KAFKA_BOOTSTRAP_SERVERS``, or one is started with scripts/kafka-local
(and stopped after). ``ometria-worker run`` runs with its default settings (plus a free
health port and JSON logs); its peak resident memory is ``VmHWM`` from /proc. Scenarios:

  slow  400 records of about 1 MB in 8 partitions, each mapping to a 1 MB body (a long
        ``page_url``), ``key`` mode, and the stand-in answering after 30 s, past the
        worker's 15 s attempt timeout: nothing is delivered, nothing committed, so the
        worker holds as much as its bounds let it (64 bodies being sent included).
  junk  2,000 records whose ``dataschema`` is 256 KiB, each different, of an unknown
        type: all dead-lettered (the case that used to grow the worker past 500 MiB).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.common import REPO, stand_in
from bench.e2e_bed import broker

LIMIT_MIB = 512


def slow_records(count: int) -> list[bytes]:
    """Valid product views whose 990 KB ``page_url`` is mapped into the payload."""
    return [
        orjson.dumps(
            {
                "specversion": "1.0",
                "id": f"slow-{i}",
                "type": "commerce.product.viewed",
                "data": {
                    "user": {"uid": f"u-{i}", "sid": "s"},
                    "product": {"id": "P"},
                    "page_url": "x" * 990_000,
                },
            }
        )
        for i in range(count)
    ]


def junk_records(count: int) -> list[bytes]:
    """Unknown-type events with a distinct 256 KiB ``dataschema`` each."""
    pad = "p" * 262_144
    return [
        orjson.dumps(
            {
                "specversion": "1.0",
                "id": f"junk-{i}",
                "type": "junk.type",
                "dataschema": f"x/{i}/{pad}/1-0-0",
                "data": {},
            }
        )
        for i in range(count)
    ]


def topics(bootstrap: str, values: list[bytes]) -> tuple[str, str]:
    """A fresh 8-partition topic holding ``values`` (keyed one per record), and a DLQ."""
    topic, dlq = f"mem-{uuid.uuid4().hex[:8]}", f"mem-dlq-{uuid.uuid4().hex[:8]}"
    client = AdminClient({"bootstrap.servers": bootstrap})  # kept until the futures resolve
    created = client.create_topics(
        [NewTopic(topic, 8, 1), NewTopic(dlq, 1, 1, config={"max.message.bytes": "3000000"})]
    )
    for future in created.values():
        future.result()
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "message.max.bytes": 2_000_000}
    )
    for i, value in enumerate(values):
        producer.produce(topic, value, key=f"k-{i}".encode())
        producer.poll(0)
    assert producer.flush(120) == 0
    return topic, dlq


def peak_mib(pid: int) -> int:
    """The process's peak resident set (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no VmHWM")


def run_worker(
    bootstrap: str, topic: str, dlq: str, url: str, seconds: float, total: int
) -> dict[str, Any]:
    """Run the worker for ``seconds``, or until it has dead-lettered all ``total`` records;
    its peak memory and the last summary line."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPICS": topic,
        "KAFKA_DLQ_TOPIC": dlq,
        "KAFKA_GROUP_ID": f"mem-{uuid.uuid4().hex[:8]}",
        "OMETRIA_BASE_URL": url,
        "WORKER_ORDERING": "key",
        "WORKER_HTTP_PORT": "0",
        "WORKER_LOG_FORMAT": "json",
        "WORKER_SUMMARY_INTERVAL": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "run"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    summaries: list[dict[str, Any]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if b'"summary"' in line:
                summaries.append(orjson.loads(line))

    threading.Thread(target=read, daemon=True).start()
    peak = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            peak = max(peak, peak_mib(proc.pid))
            last = summaries[-1] if summaries else {}
            if sum(last.get("dead_lettered", {}).values()) == total:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return {"peak_mib": peak, **(summaries[-1] if summaries else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="slow,junk")
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    with broker() as bootstrap, stand_in("--latency-ms", "30000", "--max-body", "3000000") as url:
        for name in chosen:
            values = slow_records(400) if name == "slow" else junk_records(2000)
            topic, dlq = topics(bootstrap, values)
            result = run_worker(bootstrap, topic, dlq, url, args.seconds, len(values))
            print(
                f"{name}: {len(values)} records of {len(values[0]):,} bytes; peak RSS "
                f"{result['peak_mib']} MiB (limit {LIMIT_MIB} MiB); consumed "
                f"{result.get('consumed')}, dead-lettered {result.get('dead_lettered')}, "
                f"in flight {result.get('in_flight')} records, peak "
                f"{result.get('in_flight_bytes_peak', 0) / 2**20:.1f} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
