"""Scenarios C, D and E of bench/worker_e2e.py: contenders draining a real backlog,
measured whole (bench/backlog.py), and the report of their figures side by side.

  C. A backlog (20,000 events, 8 partitions) at 0 ms and at 50 ms stand-in latency: the
     worker in partition mode and in key mode, at its defaults, against the Quix Streams
     peer (bench/quix_peer.py; at 0 ms also with Quix's own one-partition-at-a-time flush).
  D. The same backlog with ``WORKER_MAX_IN_FLIGHT=1000``: the worker only, both modes.
  E. A stand-in that slows with load (20 ms + 2 ms per other request in flight): the
     worker in key mode with adaptive concurrency (its default, and at most 256) beside a
     sweep of fixed concurrencies, so the concurrency of best throughput is measured; and
     what adaptive concurrency costs at 0 ms (the big backlog, adaptive vs fixed).

Every worker run logs a summary each second; its ``concurrency_limit`` is reported.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.backlog import Drain, concurrency_limits, measure
from bench.common import admin, median
from bench.e2e_bed import PARTITIONS, child, stop, worker_env

SWEEP = (8, 16, 32, 64, 128)
E_BASE_MS, E_PER_IN_FLIGHT_MS = 20.0, 2.0


@dataclass(frozen=True)
class Bed:
    """A backlog to drain: a topic of ``events`` events, the recording stand-in at ``url``."""

    bootstrap: str
    url: str
    topic: str
    partition_of: dict[str, int]
    events: int
    peer_python: str | None  # the interpreter with quixstreams, or None to skip the peer
    logs: Path


Record = Callable[[str, Drain], None]


def set_faults(url: str, latency_ms: float, per_in_flight_ms: float = 0.0) -> None:
    """Put the stand-in's latency (and load-dependent latency) in force, nothing else."""
    admin(url, "/_admin/faults", "DELETE")
    admin(
        url,
        "/_admin/faults",
        "PUT",
        {"latency_ms": latency_ms, "latency_per_in_flight_ms": per_in_flight_ms},
    )


def drain(
    bed: Bed,
    argv: list[str],
    group: str,
    env: dict[str, str] | None = None,
    *,
    python: str = sys.executable,
    log: bool = False,
) -> Drain:
    """Start one contender on a reset stand-in, watch it drain the backlog, stop it."""
    admin(bed.url, "/_admin/requests", "DELETE")
    log_path = bed.logs / f"{group}.log" if log else None
    started = time.monotonic()
    proc = child(argv, env, python=python, log=log_path)
    try:
        result = measure(
            proc,
            bed.url,
            bootstrap=bed.bootstrap,
            group=group,
            partitions=PARTITIONS,
            partition_of=bed.partition_of,
            total=bed.events,
            started=started,
            timeout=60 + bed.events / 40,
        )
    finally:
        stop(proc)
    if log_path is not None:
        result.limits = concurrency_limits(log_path.read_bytes().splitlines())
    return result


def run_worker(bed: Bed, ordering: str, **settings: str | int) -> Drain:
    """``ometria-worker run`` at its defaults but ``ordering`` and ``settings``."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    env = worker_env(
        bed.bootstrap,
        bed.topic,
        bed.url,
        group,
        WORKER_ORDERING=ordering,
        WORKER_SUMMARY_INTERVAL=1,
        **settings,
    )
    return drain(bed, ["-m", "worker", "run"], group, env, log=True)


def run_quix(bed: Bed, flush: str) -> Drain:
    """The Quix Streams peer, in its own interpreter."""
    assert bed.peer_python is not None
    group = f"quix-{uuid.uuid4().hex[:8]}"
    argv = ["-m", "bench.quix_peer", bed.bootstrap, bed.topic, group, bed.url, "--flush", flush]
    return drain(bed, argv, group, python=bed.peer_python)


def scenario_c(record: Record, bed: Bed) -> None:
    """The backlog at 0 and 50 ms: the worker in both modes against the Quix peer."""
    for ms in (0, 50):
        set_faults(bed.url, ms)
        record(f"C {ms} ms: worker, partition mode", run_worker(bed, "partition"))
        record(f"C {ms} ms: worker, key mode", run_worker(bed, "key"))
        if bed.peer_python is not None:
            record(f"C {ms} ms: Quix peer", run_quix(bed, "parallel"))
            if ms == 0:  # at 50 ms it is 1 / 0.05 s = 20 events/s by construction
                record("C 0 ms: Quix peer, Quix's own flush", run_quix(bed, "sequential"))


def scenario_d(record: Record, bed: Bed) -> None:
    """The backlog with a small in-flight bound (``WORKER_MAX_IN_FLIGHT=1000``)."""
    for ms in (0, 50):
        set_faults(bed.url, ms)
        for ordering in ("partition", "key"):
            record(
                f"D {ms} ms: worker, {ordering} mode, max in flight 1000",
                run_worker(bed, ordering, WORKER_MAX_IN_FLIGHT=1000),
            )


def scenario_e(record: Record, bed_small: Bed, bed: Bed) -> None:
    """Load-dependent latency: adaptive vs a sweep of fixed concurrencies; then the cost
    of adaptive concurrency at 0 ms."""
    set_faults(bed_small.url, E_BASE_MS, E_PER_IN_FLIGHT_MS)
    for n in SWEEP:
        record(
            f"E load: key mode, fixed {n}",
            run_worker(bed_small, "key", WORKER_CONCURRENCY=n, WORKER_ADAPTIVE_CONCURRENCY="false"),
        )
    record("E load: key mode, adaptive", run_worker(bed_small, "key"))
    record(
        "E load: key mode, adaptive, max 256", run_worker(bed_small, "key", WORKER_CONCURRENCY=256)
    )
    set_faults(bed.url, 0)
    record("E 0 ms: key mode, adaptive", run_worker(bed, "key"))
    record("E 0 ms: key mode, fixed", run_worker(bed, "key", WORKER_ADAPTIVE_CONCURRENCY="false"))


def describe(drain_: Drain) -> str:
    """One run on one line, with each partition's first request (s after the join)."""
    firsts = " ".join(f"{p}:{s:.1f}" for p, s in drain_.first_requests.items())
    limit = f" limit {drain_.limits[-1]}" if drain_.limits else ""
    return (
        f"{drain_.rate:7.0f}/s {drain_.cpu_us:6.0f} µs CPU/event, join {drain_.join_s:.1f} s, "
        f"drain {drain_.drain_s:.1f} s, in flight {drain_.in_flight:.0f}{limit}; "
        f"first requests {firsts}"
    )


def _spread(values: Sequence[float], fmt: str = ".0f") -> str:
    mid = format(median(values), fmt)
    if len(values) < 2:
        return mid
    return f"{mid} ({format(min(values), fmt)}-{format(max(values), fmt)})"


# (label, numerator, denominator): ratios of events/s and of CPU per event.
RATIOS: tuple[tuple[str, str, str], ...] = (
    ("C 0 ms: partition mode ÷ Quix peer", "C 0 ms: worker, partition mode", "C 0 ms: Quix peer"),
    ("C 0 ms: key mode ÷ Quix peer", "C 0 ms: worker, key mode", "C 0 ms: Quix peer"),
    (
        "C 0 ms: Quix peer ÷ with Quix's own flush",
        "C 0 ms: Quix peer",
        "C 0 ms: Quix peer, Quix's own flush",
    ),
    (
        "C 50 ms: partition mode ÷ Quix peer",
        "C 50 ms: worker, partition mode",
        "C 50 ms: Quix peer",
    ),
    ("C 50 ms: key mode ÷ Quix peer", "C 50 ms: worker, key mode", "C 50 ms: Quix peer"),
    *(
        (
            f"D {ms} ms: {mode} mode, max in flight 1000 ÷ default",
            f"D {ms} ms: worker, {mode} mode, max in flight 1000",
            f"C {ms} ms: worker, {mode} mode",
        )
        for ms in (0, 50)
        for mode in ("partition", "key")
    ),
    ("E 0 ms: adaptive ÷ fixed", "E 0 ms: key mode, adaptive", "E 0 ms: key mode, fixed"),
)


def report(results: dict[str, list[Drain]], runs: int) -> None:
    """Medians (and ranges) of each contender, the ratios of events/s and CPU per event
    paired within each run, and the checks of issue 11."""
    if not results:
        return
    print(f"\nbacklogs, medians (ranges) of {runs} runs; events/s and CPU from the first record")
    print("(CPU from the group join) to the last; 'first req' is when the last partition to be")
    print("served got its first request, in s after the join; 'in flight' is the stand-in's")
    print("count of answers it holds, so 0 at 0 ms latency")
    print(
        f"{'contender':52} {'events/s':>16} {'CPU µs/event':>16} {'10-90 %/s':>9} "
        f"{'join s':>6} {'drain s':>7} {'first req':>9} {'in flight':>9} {'dup':>4} {'limit':>5}"
    )
    for name, ds in results.items():
        limits = [d.limits[-1] for d in ds if d.limits]
        print(
            f"{name:52} {_spread([d.rate for d in ds]):>16} {_spread([d.cpu_us for d in ds]):>16} "
            f"{median([d.rate_mid for d in ds]):>9.0f} {median([d.join_s for d in ds]):>6.1f} "
            f"{median([d.drain_s for d in ds]):>7.1f} "
            f"{median([d.latest_first for d in ds]):>9.1f} "
            f"{median([d.in_flight for d in ds]):>9.0f} {max(d.duplicates for d in ds):>4} "
            f"{format(median(limits), '.0f') if limits else '':>5}"
        )

    print(f"\n{'ratio (paired within a run: median, range)':52} {'events/s':>22} {'CPU/event':>22}")
    for label, top, bottom in RATIOS:
        if top not in results or bottom not in results:
            continue
        pairs = list(zip(results[top], results[bottom], strict=True))
        rate = [t.rate / b.rate for t, b in pairs]
        cpu = [t.cpu_us / b.cpu_us for t, b in pairs]
        print(f"{label:52} {_spread(rate, '.2f'):>22} {_spread(cpu, '.2f'):>22}")

    print("\nchecks")
    partition_50 = results.get("C 50 ms: worker, partition mode")
    if partition_50:
        ratio = median([d.rate for d in partition_50]) / (PARTITIONS / 0.05)
        verdict = "ok" if ratio >= 0.95 else "MISSED"
        print(f"  C 50 ms partition mode ÷ 160 events/s: {ratio:.3f} (>= 0.95) {verdict}")
    for name, ds in results.items():
        if name.startswith(("C", "D")) and "worker" in name:
            latest = max(d.latest_first for d in ds)
            verdict = "ok" if latest <= 1.0 else "MISSED"
            print(
                f"  {name}: every partition's first request within 1 s of the join: "
                f"latest {latest:.1f} s {verdict}"
            )
    sweep = {n: results.get(f"E load: key mode, fixed {n}") for n in SWEEP}
    rates = {n: median([d.rate for d in ds]) for n, ds in sweep.items() if ds}
    if rates:
        best = max(rates, key=lambda n: rates[n])
        print(
            f"  E load: fixed concurrency of best throughput: {best} ({rates[best]:.0f}/s); "
            + ", ".join(f"{n}: {r:.0f}/s" for n, r in rates.items())
        )
        for name in ("E load: key mode, adaptive", "E load: key mode, adaptive, max 256"):
            ds = results.get(name, [])
            if ds:
                limits = [d.limits[-1] for d in ds if d.limits]
                settled = format(median(limits), ".0f") if limits else "?"
                print(
                    f"  {name}: {median([d.rate for d in ds]) / rates[best]:.2f} of the best "
                    f"fixed rate, settled at limit {settled}, "
                    f"{median([d.in_flight for d in ds]):.0f} in flight at the stand-in"
                )
