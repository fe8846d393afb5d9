"""The worker's counters and gauges, and their Prometheus text exposition.

Plain attributes updated on the hot path (one event loop thread, so no locks), rendered
on scrape. Names follow Prometheus conventions: ``_total`` counters, base units
(seconds), ``ometria_worker_`` prefix.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

#: Delivery latency buckets, seconds: a local stand-in answers in ~1 ms, Ometria in tens.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Histogram:
    """A cumulative-bucket histogram (Prometheus ``histogram`` type)."""

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

    def render(self, name: str, help_text: str) -> list[str]:
        """Exposition lines for this histogram."""
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        running = 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            running += n
            lines.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {self.total:.6f}")
        lines.append(f"{name}_count {self.count}")
        return lines


def _status_class(status: int | None) -> str:
    if status is None:
        return "error"
    return f"{status // 100}xx"


class Metrics:
    """Everything /metrics shows. Gauges that live elsewhere are read through ``collectors``."""

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
        """The Prometheus text exposition (format 0.0.4)."""
        for collect in self.collectors:
            collect()
        p = "ometria_worker"
        out: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {p}_{name} {help_text}")
            out.append(f"# TYPE {p}_{name} {kind}")
            for labels, value in samples:
                out.append(f"{p}_{name}{labels} {value:g}")

        metric(
            "records_consumed_total", "counter", "Records taken from Kafka.", [("", self.consumed)]
        )
        metric(
            "records_skipped_total",
            "counter",
            "Records a previous owner of the partition had finished (commit metadata).",
            [("", self.skipped)],
        )
        metric(
            "records_delivered_total",
            "counter",
            "Records accepted by Ometria (2xx).",
            [("", self.delivered)],
        )
        metric(
            "records_dead_lettered_total",
            "counter",
            "Records written to the dead-letter topic and acknowledged, by reason.",
            [(f'{{reason="{r}"}}', n) for r, n in sorted(self.dead_lettered.items())]
            or [('{reason="invalid"}', 0)],
        )
        metric(
            "delivery_retries_total",
            "counter",
            "Delivery attempts that will be retried.",
            [("", self.retries)],
        )
        metric(
            "delivery_throttled_total",
            "counter",
            "429 answers (Retry-After honoured).",
            [("", self.throttled)],
        )
        metric(
            "http_responses_total",
            "counter",
            "Ometria answers by status class.",
            [(f'{{status_class="{c}"}}', n) for c, n in sorted(self.answers.items())]
            or [('{status_class="2xx"}', 0)],
        )
        metric(
            "delivery_errors_total",
            "counter",
            "Attempts that got no HTTP answer, by kind: tls, dns, connect, timeout, reset,"
            " protocol, or unexpected (an exception no network trouble explains: a bug).",
            [(f'{{kind="{k}"}}', n) for k, n in sorted(self.errors.items())]
            or [('{kind="unexpected"}', 0)],
        )
        metric("commits_total", "counter", "Offset commits acknowledged.", [("", self.commits)])
        metric(
            "commit_failures_total",
            "counter",
            "Offset commits (per partition) that failed.",
            [("", self.commit_failures)],
        )
        metric(
            "dlq_write_failures_total",
            "counter",
            "Dead-letter write attempts refused (topic missing, denied, unreachable); "
            "each is retried until WORKER_DLQ_TIMEOUT. A dead letter cut to fit is not one.",
            [("", self.dlq_write_failures)],
        )
        metric(
            "auth_failing",
            "gauge",
            "1 while Ometria refuses the credentials (401/403).",
            [("", 1 if self.auth_failing else 0)],
        )
        metric(
            "schema_registry_failing",
            "gauge",
            "1 while the Schema Registry cannot give a writer schema that records wait for.",
            [("", 1 if self.registry_failing else 0)],
        )
        metric(
            "records_in_flight",
            "gauge",
            "Records taken and not yet committed.",
            [("", self.in_flight)],
        )
        metric(
            "records_in_flight_bytes",
            "gauge",
            "Bytes of the records taken and not yet committed.",
            [("", self.in_flight_bytes)],
        )
        metric(
            "records_in_flight_bytes",
            "gauge",
            "Bytes (value, key and headers) of the records taken and not yet committed.",
            [("", self.in_flight_bytes)],
        )
        metric(
            "partitions_assigned",
            "gauge",
            "Partitions this worker owns.",
            [("", self.assigned_partitions)],
        )
        metric(
            "partitions_paused",
            "gauge",
            "Owned partitions paused for backpressure.",
            [("", self.paused_partitions)],
        )
        metric(
            "committed_offset",
            "gauge",
            "Last committed offset per partition.",
            [
                (f'{{topic="{t}",partition="{pt}"}}', o)
                for (t, pt), o in sorted(self.committed.items())
            ],
        )
        lag = {**self.lag, **self.stalled}
        metric(
            "consumer_lag",
            "gauge",
            "Consumer lag per partition (librdkafka statistics; broker watermarks for a "
            "stalled partition).",
            [(f'{{topic="{t}",partition="{pt}"}}', n) for (t, pt), n in sorted(lag.items())],
        )
        metric(
            "partitions_stalled",
            "gauge",
            "Owned partitions with lag that received nothing for 30 s (being unstuck).",
            [("", len(self.stalled))],
        )
        out += self.attempt_seconds.render(
            f"{p}_http_request_duration_seconds", "Duration of one POST to Ometria."
        )
        out += self.delivery_seconds.render(
            f"{p}_delivery_duration_seconds",
            "From the first attempt to acceptance, retries included.",
        )
        return "\n".join(out) + "\n"
