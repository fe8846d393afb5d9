"""The worker's counters and gauges, exported for Prometheus by ``prometheus_client``.

The hot path only adds to plain attributes (all on the event loop's thread, so no
locks): an increment costs what ``+= 1`` costs. A collector on a per-worker
:class:`~prometheus_client.CollectorRegistry` reads them at scrape time and
``prometheus_client`` renders the text exposition, so the format (escaping, HELP and
TYPE lines, one family per name) is the library's, not ours. The library's own
``Counter`` and ``Histogram`` would cost each record about 3 µs of locking more (measured
with ``bench/metrics_cost.py``) for a thread safety that one thread does not need.

Names follow Prometheus conventions: ``_total`` counters, base units (seconds),
``ometria_worker_`` prefix. README.md (Operations → Metrics) documents each one.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

#: Delivery latency buckets, seconds: a local stand-in answers in ~1 ms, Ometria in tens.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: The content type of :meth:`Metrics.render` (Prometheus text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

PREFIX = "ometria_worker_"


@dataclass
class Histogram:
    """Observations counted into buckets (each counts the values up to its bound), with
    their sum: what a Prometheus histogram exports."""

    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        """Add one observation."""
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def family(self, name: str, help_text: str) -> HistogramMetricFamily:
        """This histogram as a metric family (cumulative buckets)."""
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            running += n
            cumulative.append((f"{bound:g}", running))
        cumulative.append(("+Inf", self.count))
        return HistogramMetricFamily(name, help_text, buckets=cumulative, sum_value=self.total)


def _status_class(status: int | None) -> str:
    if status is None:
        return "error"
    return f"{status // 100}xx"


class Metrics:
    """Everything /metrics shows. Gauges that live elsewhere are refreshed at scrape time
    by the callables in ``collectors`` (the worker's in-flight counts, say)."""

    def __init__(self) -> None:
        self.consumed = 0
        self.skipped = 0
        self.delivered = 0
        self.dead_lettered: dict[str, int] = {}
        self.retries = 0
        self.throttled = 0
        self.answers: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.commit_failures = 0
        self.commits = 0
        self.dlq_write_failures = 0
        self.auth_failing = False
        self.registry_failing = False
        self.in_flight = 0
        self.in_flight_bytes = 0
        self.paused_partitions = 0
        self.assigned_partitions = 0
        self.committed: dict[tuple[str, int], int] = {}
        self.lag: dict[tuple[str, int], int] = {}
        self.stalled: dict[tuple[str, int], int] = {}
        self.attempt_seconds = Histogram()
        self.delivery_seconds = Histogram()
        self.collectors: list[Callable[[], None]] = []
        self.registry = CollectorRegistry()
        self.registry.register(_Exporter(self))

    def observe_answer(self, status: int | None, seconds: float, error: str | None = None) -> None:
        """Count one HTTP attempt by status class (and, without an answer, by the error
        kind of :class:`worker.ometria.Answer`) and time it."""
        cls = _status_class(status)
        self.answers[cls] = self.answers.get(cls, 0) + 1
        if error is not None:
            self.errors[error] = self.errors.get(error, 0) + 1
        self.attempt_seconds.observe(seconds)

    def dlq_write_failed(self) -> None:
        """Count one refused dead-letter write (it is tried again)."""
        self.dlq_write_failures += 1

    def dead_letter(self, reason: str) -> None:
        """Count one acknowledged dead letter."""
        self.dead_lettered[reason] = self.dead_lettered.get(reason, 0) + 1

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4, :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry).decode()


class _Exporter:
    """Reads a :class:`Metrics` into metric families, at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        for refresh in m.collectors:
            refresh()
        yield _counter("records_consumed_total", "Records taken from Kafka.", m.consumed)
        yield _counter(
            "records_skipped_total",
            "Records a previous owner of the partition had finished (commit metadata).",
            m.skipped,
        )
        yield _counter("records_delivered_total", "Records accepted by Ometria (2xx).", m.delivered)
        # A labelled counter shows one zero sample before its first event, as it always
        # has: dashboards and the documented-metrics test see its label from the start.
        yield _labelled_counter(
            "records_dead_lettered_total",
            "Records written to the dead-letter topic and acknowledged, by reason.",
            "reason",
            m.dead_lettered or {"invalid": 0},
        )
        yield _counter(
            "delivery_retries_total", "Delivery attempts that will be retried.", m.retries
        )
        yield _counter(
            "delivery_throttled_total", "429 answers (Retry-After honoured).", m.throttled
        )
        yield _labelled_counter(
            "http_responses_total",
            "Ometria answers by status class.",
            "status_class",
            m.answers or {"2xx": 0},
        )
        yield _labelled_counter(
            "delivery_errors_total",
            "Attempts that got no HTTP answer, by kind: tls, dns, connect, timeout, reset,"
            " protocol, or unexpected (an exception no network trouble explains: a bug).",
            "kind",
            m.errors or {"unexpected": 0},
        )
        yield _counter("commits_total", "Offset commits acknowledged.", m.commits)
        yield _counter(
            "commit_failures_total",
            "Offset commits (per partition) that failed.",
            m.commit_failures,
        )
        yield _counter(
            "dlq_write_failures_total",
            "Dead-letter write attempts refused (topic missing, denied, unreachable); "
            "each is retried until WORKER_DLQ_TIMEOUT. A dead letter cut to fit is not one.",
            m.dlq_write_failures,
        )
        yield _gauge(
            "auth_failing",
            "1 while Ometria refuses the credentials (401/403).",
            1 if m.auth_failing else 0,
        )
        yield _gauge(
            "schema_registry_failing",
            "1 while the Schema Registry cannot give a writer schema that records wait for.",
            1 if m.registry_failing else 0,
        )
        yield _gauge("records_in_flight", "Records taken and not yet committed.", m.in_flight)
        yield _gauge(
            "records_in_flight_bytes",
            "Bytes (value, key and headers) of the records taken and not yet committed.",
            m.in_flight_bytes,
        )
        yield _gauge("partitions_assigned", "Partitions this worker owns.", m.assigned_partitions)
        yield _gauge(
            "partitions_paused", "Owned partitions paused for backpressure.", m.paused_partitions
        )
        yield _per_partition(
            "committed_offset", "Last committed offset per partition.", m.committed
        )
        yield _per_partition(
            "consumer_lag",
            "Consumer lag per partition (librdkafka statistics; broker watermarks for a "
            "stalled partition).",
            {**m.lag, **m.stalled},
        )
        yield _gauge(
            "partitions_stalled",
            "Owned partitions with lag that received nothing for 30 s (being unstuck).",
            len(m.stalled),
        )
        yield m.attempt_seconds.family(
            PREFIX + "http_request_duration_seconds", "Duration of one POST to Ometria."
        )
        yield m.delivery_seconds.family(
            PREFIX + "delivery_duration_seconds",
            "From the first attempt to acceptance, retries included.",
        )


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, help_text, value=value)


def _labelled_counter(
    name: str, help_text: str, label: str, values: Mapping[str, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, help_text, labels=[label])
    for key, n in sorted(values.items()):
        family.add_metric([key], n)
    return family


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, help_text, value=value)


def _per_partition(
    name: str, help_text: str, values: Mapping[tuple[str, int], int]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(PREFIX + name, help_text, labels=["topic", "partition"])
    for (topic, partition), n in sorted(values.items()):
        family.add_metric([topic, str(partition)], n)
    return family
