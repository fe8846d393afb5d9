"""What the metrics cost a record, and a scrape.

    python -m bench.metrics_cost [--records 200000] [--repeat 7]

One delivered record (one attempt, 2xx) makes the hot path update: the answer's status
class and the attempt's duration (``Metrics.observe_answer``), the auth gauge, the
delivery's duration, ``delivered`` and ``consumed`` (per batch in truth; counted per
record here, an upper bound). Timed three ways, best of ``--repeat``:

- ``worker.metrics``: plain attributes, read by a collector at scrape time (what the
  worker does);
- ``prometheus_client`` objects (``Counter``, ``Histogram``, ``Gauge`` on a registry of
  their own, the labelled child looked up once and kept): each update takes a lock;
- the same with ``.labels(...)`` looked up per attempt, as most code writes it.

Then one scrape: :meth:`worker.metrics.Metrics.render` with a few partitions' gauges.
"""

from __future__ import annotations

import argparse
import itertools
import random
import timeit
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from worker.metrics import LATENCY_BUCKETS, Metrics


def worker_metrics(durations: list[float]) -> Callable[[], None]:
    """One record's updates on :class:`worker.metrics.Metrics`."""
    m = Metrics()
    values = itertools.cycle(durations)

    def record() -> None:
        rtt = next(values)
        m.consumed += 1
        m.observe_answer(202, rtt, None)
        m.auth_failing = False
        m.delivery_seconds.observe(rtt)
        m.delivered += 1

    return record


def library_metrics(durations: list[float], *, cached_child: bool) -> Callable[[], None]:
    """The same updates on prometheus_client's own metric objects."""
    registry = CollectorRegistry()
    consumed = Counter("consumed_total", "-", registry=registry)
    delivered = Counter("delivered_total", "-", registry=registry)
    answers = Counter("answers_total", "-", ["status_class"], registry=registry)
    auth = Gauge("auth_failing", "-", registry=registry)
    attempt = Histogram("attempt_seconds", "-", buckets=LATENCY_BUCKETS, registry=registry)
    delivery = Histogram("delivery_seconds", "-", buckets=LATENCY_BUCKETS, registry=registry)
    child = answers.labels("2xx")
    values = itertools.cycle(durations)

    def record() -> None:
        rtt = next(values)
        consumed.inc()
        (child if cached_child else answers.labels(status_class="2xx")).inc()
        attempt.observe(rtt)
        auth.set(0)
        delivery.observe(rtt)
        delivered.inc()

    return record


def best_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Best time of one call, in microseconds."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(1)
    durations = [rng.lognormvariate(-6, 1.0) for _ in range(1000)]  # ~2.5 ms median
    rows = [
        ("worker.metrics (plain attributes)", worker_metrics(durations)),
        ("prometheus_client, child kept", library_metrics(durations, cached_child=True)),
        ("prometheus_client, .labels() each", library_metrics(durations, cached_child=False)),
    ]
    print(f"per record, best of {args.repeat} x {args.records}:")
    for name, fn in rows:
        print(f"  {name:36s} {best_us(fn, args.records, args.repeat):6.2f} µs")
    m = Metrics()
    for p in range(12):
        m.committed[("shop.events", p)] = 1000 + p
        m.lag[("shop.events", p)] = p
    for value in durations:
        m.observe_answer(202, value)
    print(f"one scrape (Metrics.render, 12 partitions): {best_us(m.render, 200, 5):.0f} µs")


if __name__ == "__main__":
    main()
