"""The /metrics exposition: what the README documents, once each, in Prometheus' format.

Whether each metric moves when it should is proven against a real run in
tests/integration/test_metrics_documented.py; here, the shape, in-process.
"""

from __future__ import annotations

import collections

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_metrics_documented import documented_metrics
from worker.metrics import LATENCY_BUCKETS, Metrics


def families(metrics: Metrics) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    """Family name → (type, samples), parsed by prometheus_client's own parser."""
    text = metrics.render()
    # The parser would merge a family exported twice: count the TYPE lines instead.
    declared = collections.Counter(
        line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE ")
    )
    assert [name for name, n in declared.items() if n > 1] == [], "exported twice"
    out: dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]] = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = (family.type, [(s.name, s.labels, s.value) for s in family.samples])
    return out


def test_exactly_the_documented_metrics_with_their_labels() -> None:
    documented = documented_metrics()
    exported = families(Metrics())
    # The parser names a counter's family without its _total suffix.
    names = {name + "_total" if kind == "counter" else name for name, (kind, _) in exported.items()}
    assert names == set(documented)
    for name, (kind, samples) in exported.items():
        full = name + "_total" if kind == "counter" else name
        for sample_name, labels, _ in samples:
            label_names = sorted(k for k in labels if kind != "histogram" or k != "le")
            assert tuple(label_names) == tuple(sorted(documented[full])), sample_name


def test_values_as_the_worker_counted_them() -> None:
    m = Metrics()
    m.consumed = 81
    m.dead_letter("undecodable")
    m.dead_letter("undecodable")
    m.observe_answer(202, 0.003)
    m.observe_answer(None, 2.0, "timeout")
    m.delivery_seconds.observe(0.004)
    m.committed[("shop.events", 3)] = 41
    m.lag[("shop.events", 3)] = 5
    m.stalled[("shop.events", 4)] = 9
    m.auth_failing = True
    refreshed: list[bool] = []
    m.collectors.append(lambda: refreshed.append(True))
    f = families(m)
    assert refreshed == [True]  # gauges that live elsewhere are read at each scrape
    assert f["ometria_worker_records_consumed"][1] == [
        ("ometria_worker_records_consumed_total", {}, 81.0)
    ]
    assert f["ometria_worker_records_dead_lettered"][1] == [
        ("ometria_worker_records_dead_lettered_total", {"reason": "undecodable"}, 2.0)
    ]
    assert sorted((s[1]["status_class"], s[2]) for s in f["ometria_worker_http_responses"][1]) == [
        ("2xx", 1.0),
        ("error", 1.0),
    ]
    assert f["ometria_worker_delivery_errors"][1] == [
        ("ometria_worker_delivery_errors_total", {"kind": "timeout"}, 1.0)
    ]
    assert f["ometria_worker_committed_offset"][1] == [
        ("ometria_worker_committed_offset", {"topic": "shop.events", "partition": "3"}, 41.0)
    ]
    assert sorted((s[1]["partition"], s[2]) for s in f["ometria_worker_consumer_lag"][1]) == [
        ("3", 5.0),
        ("4", 9.0),  # a stalled partition's lag, from the broker's watermarks
    ]
    assert f["ometria_worker_partitions_stalled"][1][0][2] == 1.0
    assert f["ometria_worker_auth_failing"][1][0][2] == 1.0
    kind, samples = f["ometria_worker_http_request_duration_seconds"]
    assert kind == "histogram"
    buckets = {s[1]["le"]: s[2] for s in samples if s[0].endswith("_bucket")}
    assert len(buckets) == len(LATENCY_BUCKETS) + 1
    # Bounds written as before prometheus_client rendered them ("1", not "1.0"): the
    # same series for Prometheus across the upgrade.
    assert (buckets["0.0025"], buckets["0.005"], buckets["1"], buckets["2.5"]) == (0, 1, 1, 2)
    assert buckets["+Inf"] == 2
    assert {s[0]: s[2] for s in samples if not s[0].endswith("_bucket")} == {
        "ometria_worker_http_request_duration_seconds_count": 2.0,
        "ometria_worker_http_request_duration_seconds_sum": 2.003,
    }


def test_a_fresh_worker_shows_a_zero_for_each_labelled_counter() -> None:
    f = families(Metrics())
    for name, label in (
        ("ometria_worker_records_dead_lettered", "reason"),
        ("ometria_worker_http_responses", "status_class"),
        ("ometria_worker_delivery_errors", "kind"),
    ):
        ((_, labels, value),) = f[name][1]
        assert (list(labels), value) == ([label], 0.0)


def test_each_worker_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.delivered = 3
    assert "ometria_worker_records_delivered_total 3.0" in first.render()
    assert "ometria_worker_records_delivered_total 0.0" in second.render()
    assert first.registry is not second.registry
