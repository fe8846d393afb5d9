"""One contender draining a backlog, measured whole: from the group join and the first
record to the last, per partition, from the stand-in's own record of each request.

The stand-in (recording on) keeps every attempt with its arrival time on the system-wide
monotonic clock and its ``request_id``, which is the CloudEvent id; the bench knows the
partition of each event from producing it. While the contender runs, :func:`measure`
polls the stand-in's attempts, the contender's CPU time (``/proc``, every thread) and,
until it has joined, the consumer group (Kafka's admin API: stable, every partition
assigned): every 20 ms until the join, then every 100 ms, so that the observer's own
requests take little of the stand-in's core while the backlog drains (the figures come
from the stand-in's timestamps, not from when the bench reads them). From these:

- events/s from the first accepted record to the last distinct one (and between 10 % and
  90 % of them, the figure scenarios A and B use);
- CPU µs per event from the group join to the last record: the work before the first
  request (fetching and mapping the first batch) counts, start-up and imports do not;
- seconds from the join to each partition's first request, and to the last record;
- requests in flight at the stand-in (mean of the samples while draining).

The pure parts (:class:`Arrivals`, :func:`cpu_at`, :func:`concurrency_limits`) are
unit-tested in tests/unit/test_bench_backlog.py.
"""

from __future__ import annotations

import itertools
import math
import statistics
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from bench.common import admin, cpu_seconds

POLL_S = 0.02  # until the group join
POLL_DRAINING_S = 0.1  # after it


class Arrivals:
    """Accepted requests in arrival order, reduced to what the figures need: when each
    distinct event was first delivered, and when each partition got its first request."""

    def __init__(self, partition_of: Mapping[str, int]) -> None:
        self._partition_of = partition_of
        self._seen: set[object] = set()
        self.times: list[float] = []  # times[k]: arrival of the (k+1)-th distinct event
        self.first: dict[int, float] = {}  # partition -> arrival of its first request
        self.accepted = 0

    def add(self, mono: float, request_id: object) -> None:
        """Note one accepted request (a duplicate counts as accepted, not as distinct)."""
        self.accepted += 1
        if request_id in self._seen:
            return
        self._seen.add(request_id)
        self.times.append(mono)
        partition = self._partition_of.get(request_id) if isinstance(request_id, str) else None
        if partition is not None and partition not in self.first:
            self.first[partition] = mono

    @property
    def distinct(self) -> int:
        """Distinct events delivered so far."""
        return len(self.times)

    @property
    def duplicates(self) -> int:
        """Accepted requests that repeated an event already delivered."""
        return self.accepted - self.distinct

    def rate(self, low: float = 0.0, high: float = 1.0) -> float:
        """Events/s between the ``low`` and ``high`` shares of the distinct events (0 and 1:
        from the first to the last)."""
        n = len(self.times)
        i = max(0, math.ceil(low * n) - 1)
        j = max(i + 1, math.ceil(high * n) - 1)
        if j >= n or self.times[j] <= self.times[i]:
            return math.nan
        return (j - i) / (self.times[j] - self.times[i])

    def first_requests(self, origin: float) -> dict[int, float]:
        """Seconds from ``origin`` to each partition's first request, by partition."""
        return {p: t - origin for p, t in sorted(self.first.items())}


def cpu_at(samples: Sequence[tuple[float, float]], when: float) -> float:
    """CPU seconds at ``when``, interpolated between (time, CPU seconds) samples in order
    (clamped to the first and last)."""
    if not samples:
        raise ValueError("no samples")
    if when <= samples[0][0]:
        return samples[0][1]
    for (t0, c0), (t1, c1) in itertools.pairwise(samples):
        if t0 <= when <= t1:
            return c0 if t1 == t0 else c0 + (c1 - c0) * (when - t0) / (t1 - t0)
    return samples[-1][1]


def concurrency_limits(lines: Iterable[bytes]) -> list[int]:
    """The ``concurrency_limit`` of each ``summary`` line in a worker's JSON log."""
    out = []
    for line in lines:
        if b'"summary"' not in line:
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(doc, dict) or doc.get("event") != "summary":
            continue
        limit = doc.get("concurrency_limit")
        if isinstance(limit, int) and not isinstance(limit, bool):
            out.append(limit)
    return out


@dataclass
class Drain:
    """One contender's run through a backlog of ``events``."""

    events: int
    rate: float  # events/s, first record to last
    rate_mid: float  # events/s, 10 % to 90 %
    cpu_us: float  # CPU µs per event, group join to last record
    join_s: float  # process start to group join
    drain_s: float  # group join to last record
    first_requests: dict[int, float]  # partition -> s from the join to its first request
    duplicates: int
    in_flight: float  # mean requests in flight at the stand-in while draining
    limits: list[int] = field(default_factory=list)  # worker summary lines' concurrency_limit

    @property
    def latest_first(self) -> float:
        """Seconds from the join to the first request of the last partition served."""
        return max(self.first_requests.values(), default=math.nan)


def _joined(adm: AdminClient, group: str, partitions: int) -> bool:
    try:
        desc = adm.describe_consumer_groups([group], request_timeout=5)[group].result(5)
    except Exception:  # the group does not exist yet, or the broker is busy: not yet
        return False
    assigned = sum(len(m.assignment.topic_partitions) for m in desc.members)
    return bool(desc.state == ConsumerGroupState.STABLE and assigned >= partitions)


def measure(
    proc: subprocess.Popen[bytes],
    url: str,
    *,
    bootstrap: str,
    group: str,
    partitions: int,
    partition_of: Mapping[str, int],
    total: int,
    started: float,
    timeout: float,
) -> Drain:
    """Watch ``proc`` drain ``total`` events (see the module docstring)."""
    adm = AdminClient({"bootstrap.servers": bootstrap})
    arrivals = Arrivals(partition_of)
    samples: list[tuple[float, float]] = []
    in_flight: list[int] = []
    join: float | None = None
    seen = 0
    deadline = time.monotonic() + timeout
    while arrivals.distinct < total:
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError(f"timed out at {arrivals.distinct}/{total} delivered")
        if proc.poll() is not None:
            raise RuntimeError(
                f"contender exited ({proc.returncode}) at {arrivals.distinct}/{total}"
            )
        samples.append((now, cpu_seconds(proc.pid)))
        if join is None and _joined(adm, group, partitions):
            join = now
        attempts: list[dict[str, Any]] = admin(url, f"/_admin/attempts?since={seen}")
        seen += len(attempts)
        for attempt in attempts:
            if attempt["status"] == 200:
                arrivals.add(attempt["mono"], attempt["request_id"])
        if arrivals.distinct:
            in_flight.append(int(admin(url, "/_admin/stats")["in_flight"]))
        time.sleep(POLL_S if join is None else POLL_DRAINING_S)
    samples.append((time.monotonic(), cpu_seconds(proc.pid)))
    if join is None:  # drained before the group was seen stable: count from the first request
        join = arrivals.times[0]
    last = arrivals.times[-1]
    return Drain(
        events=total,
        rate=arrivals.rate(),
        rate_mid=arrivals.rate(0.1, 0.9),
        cpu_us=(cpu_at(samples, last) - cpu_at(samples, join)) / total * 1e6,
        join_s=join - started,
        drain_s=last - join,
        first_requests=arrivals.first_requests(join),
        duplicates=arrivals.duplicates,
        in_flight=statistics.fmean(in_flight) if in_flight else math.nan,
    )
