"""The test bed of the end-to-end benchmarks: the broker, topics full of events, and the
contenders as child processes pinned to core 0 (the broker and the stand-in are on core 1).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import orjson
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.bench_mapping import make_records
from bench.common import REPO, pin
from worker.outcome import Mapped
from worker.pipeline import Pipeline

PARTITIONS = 8
VISITORS = 1000


def events(count: int) -> list[tuple[bytes, bytes]]:
    """(key, structured CloudEvent) for ``count`` events of the eight-type mix, keyed by
    one of :data:`VISITORS` visitors."""
    out = []
    for i, event in enumerate(make_records(count)):
        uid = f"visitor-{i % VISITORS:04d}"
        data = event["data"]
        if "visitor" in data:
            data["visitor"]["id"] = uid
        else:
            data["user"]["uid"] = uid
        out.append((uid.encode(), orjson.dumps(event)))
    return out


def mapped_bodies(records: list[tuple[bytes, bytes]]) -> list[bytes]:
    """The bodies the worker POSTs for ``records`` (the bare loop's payloads)."""
    pipeline = Pipeline.load()
    bodies = []
    for _, value in records:
        mapped = pipeline.process(value, None)
        assert isinstance(mapped, Mapped), mapped
        bodies.append(mapped.body)
    return bodies


def make_topic(bootstrap: str, records: list[tuple[bytes, bytes]]) -> tuple[str, dict[str, int]]:
    """A fresh topic with ``records`` in it, and the partition of each by its CloudEvent id
    (Ometria's request_id once delivered)."""
    name = f"bench-{uuid.uuid4().hex[:10]}"
    adm = AdminClient({"bootstrap.servers": bootstrap})
    adm.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])[
        name
    ].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    partition_of: dict[str, int] = {}
    failed: list[KafkaError] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failed.append(err)
            return
        value, partition = msg.value(), msg.partition()
        assert value is not None
        assert partition is not None
        partition_of[orjson.loads(value)["id"]] = partition

    for key, value in records:
        while True:
            try:
                producer.produce(name, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    assert not failed, failed[:3]
    return name, partition_of


@contextmanager
def broker_on_core(core: int) -> Iterator[None]:
    """Pin every thread of the local Kafka broker(s) to ``core`` for the block: the broker
    works only while the worker runs, and on the worker's core it would bill the worker
    for cache and pipeline contention that the bare loop never meets."""
    pinned: list[int] = []
    if (os.cpu_count() or 1) > 1:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes()
                if b"kafka.Kafka" not in cmdline:
                    continue
                for task in (proc / "task").iterdir():
                    os.sched_setaffinity(int(task.name), {core})
                    pinned.append(int(task.name))
            except OSError:
                continue
    try:
        yield
    finally:
        every = set(range(os.cpu_count() or 1))
        for tid in pinned:
            try:
                os.sched_setaffinity(tid, every)
            except OSError:
                continue


@contextmanager
def broker() -> Iterator[str]:
    """The broker to use: ``$KAFKA_BOOTSTRAP_SERVERS`` or a local one for the run."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    port = "19492"
    script = str(REPO / "scripts" / "kafka-local")
    out = subprocess.run(
        [script, "start", "--port", port], check=True, capture_output=True, text=True
    )
    try:
        yield out.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([script, "stop", "--port", port], check=False, capture_output=True)


def child(
    argv: list[str],
    env: dict[str, str] | None = None,
    *,
    python: str = sys.executable,
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """A contender process pinned to core 0; its stdout goes to ``log`` (else nowhere)."""
    with ExitStack() as stack:  # the child has its own copy of the log file: close ours
        out = stack.enter_context(log.open("wb")) if log is not None else subprocess.DEVNULL
        return subprocess.Popen(
            [python, *argv],
            env={**os.environ, **(env or {})},
            cwd=REPO,
            stdout=out,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: pin(0),  # noqa: PLW1509 - only sets CPU affinity
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def worker_env(
    bootstrap: str, topic: str, url: str, group: str, **settings: str | int
) -> dict[str, str]:
    """The environment of ``ometria-worker run`` against the bed, plus ``settings``
    (``WORKER_…`` names); everything else at the worker's defaults."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPICS": topic,
        "KAFKA_GROUP_ID": group,
        "KAFKA_DLQ_TOPIC": f"{topic}.dlq",
        "OMETRIA_BASE_URL": url,
        "WORKER_HTTP_PORT": "0",
        "WORKER_LOG_FORMAT": "json",
        **{k: str(v) for k, v in settings.items()},
    }
