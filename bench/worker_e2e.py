"""End-to-end throughput and CPU per event of the worker, side by side with its ceiling
(a bare POST loop, same client, same concurrency), a naive peer and a Quix Streams peer.

    .venv/bin/python -m bench.worker_e2e [--runs 3] [--quick] [--scenarios AB|C|CDE|…]

Needs a broker: ``KAFKA_BOOTSTRAP_SERVERS``, or one is started with scripts/kafka-local
(and stopped after). The stand-in, the broker and this process run pinned to core 1; each
contender runs pinned to core 0 in a process of its own. Scenarios:

  A. 0 ms stand-in latency, 8 partitions: worker (partition mode) vs bare loop at 8 in
     flight; worker (key mode, 64 in flight) vs bare loop at 64; naive peer.
  B. 50 ms latency, 8 partitions: worker partition mode (target 8 / 0.05 = 160/s within
     10 %); key mode with 1,000 keys and 256 in flight (target >= 12x partition mode), as a
     fraction of the bare loop at 256; naive peer.

In A and B, rates and CPU are read between 10 % and 90 % of each contender's records
(start-up and the group join are not counted): events/s from the stand-in's accepted
counter, CPU from the contender's /proc stat.

  C, D, E. Backlogs drained whole, per partition (bench/backlog_scenarios.py): C the
     worker at its defaults in both modes against the Quix Streams peer at 0 and 50 ms;
     D with WORKER_MAX_IN_FLIGHT=1000; E a stand-in that slows with load, adaptive
     concurrency against a sweep of fixed ones.

The Quix peer runs in the interpreter of ``--peer-python`` (default .venv-bench/bin/python,
a venv with the ``bench`` extra); C skips it, saying so, when there is none.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench.backlog import Drain
from bench.backlog_scenarios import Bed, describe, scenario_c, scenario_d, scenario_e
from bench.backlog_scenarios import report as report_drains
from bench.common import REPO, admin, cpu_seconds, median, pin, stand_in
from bench.e2e_bed import (
    PARTITIONS,
    broker,
    broker_on_core,
    child,
    events,
    make_topic,
    mapped_bodies,
    stop,
    worker_env,
)


@dataclass
class Result:
    """One contender's run: events/s and CPU microseconds per event."""

    rate: float
    cpu_us: float


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


def run_contender(
    url: str, start: Callable[[], subprocess.Popen[bytes]], target: int, timeout: float
) -> Result:
    admin(url, "/_admin/requests", "DELETE")
    proc = start()
    try:
        return measure(proc, url, target, timeout)
    finally:
        stop(proc)


def worker(
    bootstrap: str, topic: str, url: str, ordering: str, concurrency: int
) -> Callable[[], subprocess.Popen[bytes]]:
    env = worker_env(
        bootstrap,
        topic,
        url,
        f"bench-{uuid.uuid4().hex[:8]}",
        WORKER_ORDERING=ordering,
        WORKER_CONCURRENCY=concurrency,
        WORKER_ADAPTIVE_CONCURRENCY="false",
    )
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


def peer_python(given: str | None) -> str | None:
    """The interpreter for the Quix peer: ``given``, else .venv-bench's, else this one;
    None when none of them can import quixstreams and the worker's pipeline."""
    candidates = (
        [given] if given else [str(REPO / ".venv-bench" / "bin" / "python"), sys.executable]
    )
    for python in candidates:
        if Path(python).exists():
            probe = [python, "-c", "import quixstreams, worker.pipeline"]
            if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
                return python
    if given:
        raise SystemExit(f"{given} cannot import quixstreams (pip install -e '.[bench]')")
    return None


def versions(python: str) -> str:
    """confluent-kafka and librdkafka versions of an interpreter, for the record."""
    code = (
        "import confluent_kafka as c, importlib.metadata as m;"
        "print(m.version('confluent-kafka'), c.libversion()[0])"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    client, lib = out.stdout.split()
    return f"confluent-kafka {client}, librdkafka {lib}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    parser.add_argument("--scenarios", default="AB", help="any of A, B, C, D, E (e.g. AB, C, CDE)")
    parser.add_argument(
        "--backlog", type=int, help="events in the backlog of C, D and E at 0 ms (20,000)"
    )
    parser.add_argument(
        "--peer-python",
        help="interpreter with the bench extra for the Quix peer (default .venv-bench/bin/python)",
    )
    args = parser.parse_args()
    wanted = set(args.scenarios.upper())
    if not wanted or not wanted <= set("ABCDE"):
        parser.error(f"--scenarios takes letters of ABCDE, not {args.scenarios!r}")
    big, small, naive_n = (3000, 400, 100) if args.quick else (12000, 1600, 300)
    backlog = args.backlog or (4000 if args.quick else 20000)
    e_count = min(backlog, 1500 if args.quick else 5000)
    drains = bool(wanted & set("CDE"))
    peer = peer_python(args.peer_python) if "C" in wanted else None
    # The bench's own polling runs beside the broker and the stand-in, off the contenders' core.
    pin(1)

    records = events(max(big if wanted & set("AB") else 0, backlog if drains else 0))
    results: dict[str, list[Result]] = {}
    drained: dict[str, list[Drain]] = {}

    def record(name: str, result: Result) -> None:
        results.setdefault(name, []).append(result)
        print(f"  {name:44} {result.rate:8.0f}/s {result.cpu_us:8.0f} µs CPU/event", flush=True)

    def record_drain(name: str, result: Drain) -> None:
        drained.setdefault(name, []).append(result)
        print(f"  {name:52} {describe(result)}", flush=True)

    print(f"worker: {versions(sys.executable)}")
    if peer is not None:
        print(f"Quix peer: {versions(peer)} ({peer})")
    elif "C" in wanted:
        print("Quix peer skipped: no interpreter with quixstreams (see docs/performance.md)")
    with ExitStack() as stack:
        bootstrap = stack.enter_context(broker())
        stack.enter_context(broker_on_core(1))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if wanted & set("AB"):
            url = stack.enter_context(stand_in(core=1))
            payloads = tmp / "payloads.jsonl"
            payloads.write_bytes(b"\n".join(mapped_bodies(records[:big])))
            topic_big, _ = make_topic(bootstrap, records[:big])
            topic_small, _ = make_topic(bootstrap, records[:small])
            print(f"broker {bootstrap}; {big} and {small} events in {PARTITIONS} partitions")
        if drains:
            recording = stack.enter_context(stand_in(core=1, record=True))
            topic, partition_of = make_topic(bootstrap, records[:backlog])
            bed = Bed(bootstrap, recording, topic, partition_of, backlog, peer, tmp)
            sizes = Counter(partition_of.values())
            print(
                f"backlog of {backlog} events in {PARTITIONS} partitions "
                f"({', '.join(str(sizes[p]) for p in range(PARTITIONS))})"
            )
            if "E" in wanted:
                topic_e, partition_of_e = make_topic(bootstrap, records[:e_count])
                bed_e = Bed(bootstrap, recording, topic_e, partition_of_e, e_count, None, tmp)
                print(f"E: backlog of {e_count} events under load-dependent latency")
        for run in range(1, args.runs + 1):
            print(f"run {run}/{args.runs}")
            if "A" in wanted:
                scenario_a(record, bootstrap, url, topic_big, payloads, big, naive_n)
            if "B" in wanted:
                scenario_b(
                    record,
                    bootstrap,
                    url,
                    (topic_big, topic_small),
                    payloads,
                    (big, small),
                    naive_n,
                )
            if "C" in wanted:
                scenario_c(record_drain, bed)
            if "D" in wanted:
                scenario_d(record_drain, bed)
            if "E" in wanted:
                scenario_e(record_drain, bed_e, bed)
    if results:
        report(results, args.runs)
    report_drains(drained, args.runs)


if __name__ == "__main__":
    main()
