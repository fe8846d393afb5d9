"""Dead-letter headers and truncation (pure parts; the broker round trip is an integration test)."""

from __future__ import annotations

import hashlib

from worker.deadletter import SourceRecord, dead_letter_headers, truncated
from worker.outcome import Failure

SOURCE = SourceRecord(
    topic="commerce",
    partition=3,
    offset=41,
    key=b"k",
    value=b"x" * 100,
    headers=[("ce_type", b"commerce.page.viewed"), ("empty", None)],
)


def test_headers_carry_every_field() -> None:
    failure = Failure(
        "rejected", "HTTP 400: bad", "deliver", schema="commerce.x/1", http_status=400
    )
    headers = dict(dead_letter_headers(SOURCE, failure, 3, now=0.0))
    assert headers == {
        "dlq.reason": b"rejected",
        "dlq.detail": b"HTTP 400: bad",
        "dlq.stage": b"deliver",
        "dlq.source.topic": b"commerce",
        "dlq.source.partition": b"3",
        "dlq.source.offset": b"41",
        "dlq.attempts": b"3",
        "dlq.time": b"1970-01-01T00:00:00.000Z",
        "dlq.schema": b"commerce.x/1",
        "dlq.http.status": b"400",
    }


def test_optional_headers_absent_when_unknown() -> None:
    headers = dict(dead_letter_headers(SOURCE, Failure("undecodable", "d", "decode"), 0))
    assert "dlq.schema" not in headers
    assert "dlq.http.status" not in headers


def test_truncation_keeps_original_headers_then_drops_them() -> None:
    extra = dead_letter_headers(SOURCE, Failure("too_large", "d", "decode"), 0)
    value, headers = truncated(SOURCE, extra, 10, drop_headers=False)
    assert value == b"x" * 10
    assert headers[:2] == SOURCE.headers
    marks = dict(headers)
    assert marks["dlq.value.truncated"] == b"true"
    assert marks["dlq.value.size"] == b"100"
    assert marks["dlq.value.sha256"] == hashlib.sha256(b"x" * 100).hexdigest().encode()
    value, headers = truncated(SOURCE, extra, 10, drop_headers=True)
    names = [name for name, _ in headers]
    assert "ce_type" not in names
    assert dict(headers)["dlq.headers.dropped"] == b"2"
