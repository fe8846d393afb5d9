"""End-to-end throughput and CPU per event of the worker, side by side with its ceiling
(a bare POST loop, same client, same concurrency) and with a naive peer.

    .venv/bin/python -m bench.worker_e2e [--runs 3] [--quick]

Needs a broker: ``KAFKA_BOOTSTRAP_SERVERS``, or one is started with scripts/kafka-local
(and stopped after). The stand-in and the broker run pinned to core 1; each contender runs
pinned to core 0 in a process of its own. Rates and CPU are read between 10 % and 90 % of each
contender's records (start-up and the group join are not counted): events/s from the
stand-in's accepted counter, CPU from the contender's /proc stat. Scenarios:

  A. 0 ms stand-in latency, 8 partitions: worker (partition mode) vs bare loop at 8 in
     flight; worker (key mode, 64 in flight) vs bare loop at 64; naive peer.
  B. 50 ms latency, 8 partitions: worker partition mode (target 8 / 0.05 = 160/s within
     10 %); key mode with 1,000 keys and 256 in flight (target >= 12x partition mode), as a
     fraction of the bare loop at 256; naive peer.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.bench_mapping import make_records
from bench.common import REPO, admin, cpu_seconds, median, pin, stand_in
from worker.outcome import Mapped
from worker.pipeline import Pipeline

PARTITIONS = 8
VISITORS = 1000


@dataclass
class Result:
    """One contender's run: events/s and CPU microseconds per event."""

    rate: float
    cpu_us: float


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


def make_topic(bootstrap: str, records: list[tuple[bytes, bytes]]) -> str:
    """A fresh topic with ``records`` in it."""
    name = f"bench-{uuid.uuid4().hex[:10]}"
    adm = AdminClient({"bootstrap.servers": bootstrap})
    adm.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])[
        name
    ].result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for key, value in records:
        while True:
            try:
                producer.produce(name, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    return name


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


def measure(proc: subprocess.Popen[bytes], url: str, target: int, timeout: float) -> Result:
    """Rate and CPU per event of ``proc`` between 10 % and 90 % of ``target`` accepted."""
    low, high = int(target * 0.1), int(target * 0.9)
    deadline = time.monotonic() + timeout
    first: tuple[float, float, int] | None = None
    while time.monotonic() < deadline:
        accepted = int(admin(url, "/_admin/stats")["accepted"])
        now = time.monotonic()
        if first is None and accepted >= low:
            first = (now, cpu_seconds(proc.pid), accepted)
        if first is not None and accepted >= high:
            cpu = cpu_seconds(proc.pid)
            done = accepted - first[2]
            return Result(done / (now - first[0]), (cpu - first[1]) / done * 1e6)
        if proc.poll() is not None and accepted < high:
            raise RuntimeError(f"contender exited ({proc.returncode}) at {accepted}/{target}")
        time.sleep(0.02)
    raise RuntimeError(f"timed out at {accepted}/{target} accepted")


def child(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A contender process pinned to core 0, quiet."""
    return subprocess.Popen(
        [sys.executable, *argv],
        env={**os.environ, **(env or {})},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: pin(0),  # noqa: PLW1509 - only sets CPU affinity
    )


def run_contender(
    url: str, start: Callable[[], subprocess.Popen[bytes]], target: int, timeout: float
) -> Result:
    admin(url, "/_admin/requests", "DELETE")
    proc = start()
    try:
        return measure(proc, url, target, timeout)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def worker(
    bootstrap: str, topic: str, url: str, ordering: str, concurrency: int
) -> Callable[[], subprocess.Popen[bytes]]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPICS": topic,
        "KAFKA_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
        "KAFKA_DLQ_TOPIC": f"{topic}.dlq",
        "OMETRIA_BASE_URL": url,
        "WORKER_ORDERING": ordering,
        "WORKER_CONCURRENCY": str(concurrency),
        "WORKER_ADAPTIVE_CONCURRENCY": "false",
        "WORKER_HTTP_PORT": "0",
        "WORKER_LOG_FORMAT": "json",
    }
    return lambda: child(["-m", "worker", "run"], env)


def bare(url: str, payloads: Path, concurrency: int) -> Callable[[], subprocess.Popen[bytes]]:
    return lambda: child(
        ["-m", "bench.bare_loop", url, str(payloads), "--concurrency", str(concurrency)]
    )


def naive(bootstrap: str, topic: str, url: str) -> Callable[[], subprocess.Popen[bytes]]:
    group = f"naive-{uuid.uuid4().hex[:8]}"
    return lambda: child(["-m", "bench.naive_peer", bootstrap, topic, group, url])


def set_latency(url: str, ms: float) -> None:
    admin(url, "/_admin/faults", "PUT", {"latency_ms": ms})


Record = Callable[[str, Result], None]


def scenario_a(
    record: Record, bootstrap: str, url: str, topic: str, payloads: Path, count: int, naive_n: int
) -> None:
    """0 ms latency: CPU per event beside the bare loop, in both modes; the naive peer."""
    set_latency(url, 0)
    record(
        "A worker partition mode",
        run_contender(url, worker(bootstrap, topic, url, "partition", 8), count, 120),
    )
    record("A bare loop, 8 in flight", run_contender(url, bare(url, payloads, 8), count, 120))
    record(
        "A worker key mode, 64 in flight",
        run_contender(url, worker(bootstrap, topic, url, "key", 64), count, 120),
    )
    record("A bare loop, 64 in flight", run_contender(url, bare(url, payloads, 64), count, 120))
    record("A naive peer", run_contender(url, naive(bootstrap, topic, url), naive_n * 4, 120))


def scenario_b(
    record: Record,
    bootstrap: str,
    url: str,
    topics: tuple[str, str],
    payloads: Path,
    counts: tuple[int, int],
    naive_n: int,
) -> None:
    """50 ms latency: partition mode bound by order, key mode beside its ceiling; naive."""
    (topic_big, topic_small), (big, small) = topics, counts
    set_latency(url, 50)
    record(
        "B worker partition mode",
        run_contender(url, worker(bootstrap, topic_small, url, "partition", 8), small, 120),
    )
    record(
        "B worker key mode, 256 in flight",
        run_contender(url, worker(bootstrap, topic_big, url, "key", 256), big, 180),
    )
    record("B bare loop, 256 in flight", run_contender(url, bare(url, payloads, 256), big, 180))
    record("B naive peer", run_contender(url, naive(bootstrap, topic_big, url), naive_n // 3, 120))


# (label, numerator, denominator, measure, target): a target "<= x", ">= x" or "" (report).
CHECKS: tuple[tuple[str, str, str, str, str], ...] = (
    (
        "A CPU/event, worker / bare (partition mode, 8)",
        "A worker partition mode",
        "A bare loop, 8 in flight",
        "cpu",
        "<= 1.3",
    ),
    (
        "A CPU/event, worker / bare (key mode, 64)",
        "A worker key mode, 64 in flight",
        "A bare loop, 64 in flight",
        "cpu",
        "<= 1.3",
    ),
    ("B partition mode / 160 events/s", "B worker partition mode", "", "rate", ">= 0.9"),
    (
        "B key mode / partition mode",
        "B worker key mode, 256 in flight",
        "B worker partition mode",
        "rate",
        ">= 12",
    ),
    (
        "B key mode / bare loop at 256 (ceiling)",
        "B worker key mode, 256 in flight",
        "B bare loop, 256 in flight",
        "rate",
        "",
    ),
    ("A worker partition mode / naive peer", "A worker partition mode", "A naive peer", "rate", ""),
    (
        "B worker key mode / naive peer",
        "B worker key mode, 256 in flight",
        "B naive peer",
        "rate",
        "",
    ),
)


def report(results: dict[str, list[Result]], runs: int) -> None:
    """Medians of each contender, then each check as the ratio of medians and as the
    median of the ratios paired within a run (the steadier figure on a noisy machine)."""

    def value(result: Result, measure: str) -> float:
        return result.cpu_us if measure == "cpu" else result.rate

    print(f"\nmedians of {runs} runs")
    print(f"{'contender':44} {'events/s':>9} {'CPU µs/event':>13}")
    for name, rs in results.items():
        print(
            f"{name:44} {median([r.rate for r in rs]):>9.0f} "
            f"{median([r.cpu_us for r in rs]):>13.0f}"
        )
    print(f"\n{'check':48} {'medians':>8} {'paired':>8} {'range':>13}  target")
    for label, top, bottom, measure, target in CHECKS:
        if top not in results or (bottom and bottom not in results):
            continue
        tops = [value(r, measure) for r in results[top]]
        bottoms = [value(r, measure) for r in results[bottom]] if bottom else [160.0] * len(tops)
        ratio = median(tops) / median(bottoms)
        paired = [t / b for t, b in zip(tops, bottoms, strict=True)]
        verdict = ""
        if target:
            bound = float(target[2:])
            met = ratio <= bound if target.startswith("<=") else ratio >= bound
            verdict = "ok" if met else "MISSED"
        print(
            f"{label:48} {ratio:8.2f} {median(paired):8.2f} "
            f"{min(paired):6.2f}-{max(paired):<6.2f}  {target or '(report)'} {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    parser.add_argument("--scenarios", default="AB", help="A (0 ms), B (50 ms), or AB")
    args = parser.parse_args()
    big, small, naive_n = (3000, 400, 100) if args.quick else (12000, 1600, 300)

    pipeline = Pipeline.load()
    records = events(big)
    bodies = []
    for _, value in records:
        mapped = pipeline.process(value, None)
        assert isinstance(mapped, Mapped), mapped
        bodies.append(mapped.body)

    results: dict[str, list[Result]] = {}

    def record(name: str, result: Result) -> None:
        results.setdefault(name, []).append(result)
        print(f"  {name:44} {result.rate:8.0f}/s {result.cpu_us:8.0f} µs CPU/event", flush=True)

    with (
        broker() as bootstrap,
        broker_on_core(1),
        stand_in(core=1) as url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        payloads = Path(tmp) / "payloads.jsonl"
        payloads.write_bytes(b"\n".join(bodies))
        topic_big = make_topic(bootstrap, records)
        topic_small = make_topic(bootstrap, records[:small])
        print(f"broker {bootstrap}; {big} and {small} events in {PARTITIONS} partitions")
        for run in range(1, args.runs + 1):
            print(f"run {run}/{args.runs}")
            if "A" in args.scenarios:
                scenario_a(record, bootstrap, url, topic_big, payloads, big, naive_n)
            if "B" in args.scenarios:
                scenario_b(
                    record,
                    bootstrap,
                    url,
                    (topic_big, topic_small),
                    payloads,
                    (big, small),
                    naive_n,
                )
    report(results, args.runs)


if __name__ == "__main__":
    main()
