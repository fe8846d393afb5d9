"""Dead letters: the original record, byte for byte, plus headers that say why.

A dead letter counts as done only once the broker acknowledged it; until then the
source offset is not committed. Headers follow Kafka Connect's ``__connect.errors.*``
idea with the worker's own names::

    dlq.reason            undecodable | unknown_schema | invalid | too_large | rejected
                          | retries_exhausted
    dlq.detail            human-readable, names the field at fault
    dlq.stage             decode | schema | validate | map | deliver
    dlq.source.topic / dlq.source.partition / dlq.source.offset
    dlq.attempts          delivery attempts made (0 when it never reached Ometria)
    dlq.time              ISO-8601 UTC time the dead letter was written
    dlq.schema            "type/MODEL" when known
    dlq.http.status       Ometria's status when it answered
    dlq.schema.id         the Schema Registry id of the writer schema (a framed record)

A record too large for the dead-letter topic (over the producer's or the topic's
limit) is written again with its value cut to ``truncate_bytes`` and the headers
``dlq.value.truncated=true``, ``dlq.value.size`` (the original size) and
``dlq.value.sha256`` (of the whole original value). If even that is too large, the
original headers are dropped as well (``dlq.headers.dropped=<count>``). The record never
stalls its partition and never vanishes.

Any other refused write (the topic missing, not authorised, the broker unreachable for
the producer's ``message.timeout.ms``) is reported to ``on_failure`` and tried again,
with backoff, until ``give_up_after``; a fatal producer error (the idempotent producer
can no longer guarantee order) gives up at once. Giving up raises
:class:`DeadLetterUnavailable`, which stops the worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer

from worker.observe import KAFKA_LOGGER
from worker.outcome import Failure
from worker.records import DeadLetterUnavailable, Header, Record

log = structlog.get_logger("worker.deadletter")

SourceRecord = Record
"""The original record a dead letter preserves (the project's :class:`Record`)."""


def dead_letter_headers(
    source: SourceRecord, failure: Failure, attempts: int, *, now: float | None = None
) -> list[Header]:
    """The ``dlq.*`` headers for ``failure`` (appended after the original headers)."""
    when = datetime.fromtimestamp(time.time() if now is None else now, tz=UTC)
    headers: list[Header] = [
        ("dlq.reason", failure.reason.encode()),
        ("dlq.detail", failure.detail.encode("utf-8", "replace")[:4096]),
        ("dlq.stage", failure.stage.encode()),
        ("dlq.source.topic", source.topic.encode()),
        ("dlq.source.partition", str(source.partition).encode()),
        ("dlq.source.offset", str(source.offset).encode()),
        ("dlq.attempts", str(attempts).encode()),
        ("dlq.time", when.isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()),
    ]
    if failure.schema is not None:
        headers.append(("dlq.schema", failure.schema.encode()))
    if failure.http_status is not None:
        headers.append(("dlq.http.status", str(failure.http_status).encode()))
    if failure.schema_id is not None:
        headers.append(("dlq.schema.id", str(failure.schema_id).encode()))
    return headers


def truncated(
    source: SourceRecord, extra: list[Header], limit: int, *, drop_headers: bool
) -> tuple[bytes | None, list[Header]]:
    """The value cut to ``limit`` bytes and the headers that say so."""
    value = source.value or b""
    marks: list[Header] = [
        ("dlq.value.truncated", b"true"),
        ("dlq.value.size", str(len(value)).encode()),
        ("dlq.value.sha256", hashlib.sha256(value).hexdigest().encode()),
    ]
    if drop_headers:
        marks.append(("dlq.headers.dropped", str(len(source.headers)).encode()))
        return value[:limit], extra + marks
    return value[:limit], list(source.headers) + extra + marks


class DeadLetterWriter:
    """Produces dead letters and resolves each write when the broker acknowledges it.

    ``on_failure`` is called once per refused attempt that is not a too-large refusal
    (those are written again cut, as the module says), e.g. to count it in a metric.
    """

    def __init__(
        self,
        producer_config: dict[str, Any],
        topic: str,
        *,
        truncate_bytes: int,
        give_up_after: float,
        on_failure: Callable[[], None] = lambda: None,
    ) -> None:
        self.topic = topic
        self.truncate_bytes = truncate_bytes
        self.give_up_after = give_up_after
        self.on_failure = on_failure
        self._producer = Producer({**producer_config, "logger": KAFKA_LOGGER})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dlq-producer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        # Delivery callbacks run inside poll(): a thread of its own keeps them prompt.
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def write(self, source: SourceRecord, failure: Failure, attempts: int) -> None:
        """Write one dead letter; return once acknowledged. Raises
        :class:`DeadLetterUnavailable` when it cannot be written within ``give_up_after``."""
        extra = dead_letter_headers(source, failure, attempts)
        value: bytes | None = source.value
        headers: list[Header] = list(source.headers) + extra
        stage = 0  # 0 verbatim, 1 value cut, 2 value cut and original headers dropped
        started = time.monotonic()
        delay = 0.1
        while True:
            error = await self._produce_once(source.key, value, headers)
            if error is None:
                if stage:
                    log.warning(
                        "dead_letter_truncated",
                        source_topic=source.topic,
                        partition=source.partition,
                        offset=source.offset,
                        original_size=len(source.value or b""),
                        headers_dropped=stage == 2,
                    )
                return
            if _too_large(error) and stage < 2:
                stage += 1
                value, headers = truncated(
                    source, extra, self.truncate_bytes, drop_headers=stage == 2
                )
                continue
            elapsed = time.monotonic() - started
            self.on_failure()
            fatal = _fatal(error)
            log.error(
                "dead_letter_write_failed",
                dlq_topic=self.topic,
                source_topic=source.topic,
                partition=source.partition,
                offset=source.offset,
                error=str(error),
                fatal=fatal,
                elapsed_s=round(elapsed, 1),
                give_up_after_s=self.give_up_after,
            )
            if fatal:
                # The producer is unusable for good: waiting out give_up_after would only
                # hold the partition back longer before the same exit.
                raise DeadLetterUnavailable(
                    f"dead-letter producer failed fatally on {self.topic!r}: {error}"
                )
            if elapsed + delay > self.give_up_after:
                raise DeadLetterUnavailable(
                    f"cannot write to dead-letter topic {self.topic!r} for {elapsed:.0f}s: {error}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _produce_once(
        self, key: bytes | None, value: bytes | None, headers: list[Header]
    ) -> KafkaError | None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[KafkaError | None] = loop.create_future()

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            loop.call_soon_threadsafe(_resolve, fut, err)

        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value=value,
                    key=key,
                    headers=cast(list[tuple[str, str | bytes | None]], headers),
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                await asyncio.sleep(0.05)  # local queue full: the poll thread drains it
            except KafkaException as exc:
                return (
                    exc.args[0]
                    if exc.args and isinstance(exc.args[0], KafkaError)
                    else (KafkaError(KafkaError._FAIL, str(exc)))
                )
        return await fut

    def close(self, timeout: float = 10.0) -> int:
        """Flush and stop; returns how many dead letters were still unacknowledged."""
        remaining = int(self._producer.flush(timeout))
        self._stop.set()
        self._thread.join(timeout=2.0)
        return remaining


def _resolve(fut: asyncio.Future[KafkaError | None], err: KafkaError | None) -> None:
    if not fut.done():
        fut.set_result(err)


def _fatal(error: KafkaError) -> bool:
    # confluent-kafka sets fatal() on some error objects only: after a fatal error,
    # produce() and consume() report the code _FATAL, often with the flag unset.
    return bool(error.fatal() or error.code() == KafkaError._FATAL)


def _too_large(error: KafkaError) -> bool:
    # The producer's own limit and the broker's (topic max.message.bytes) share code 10.
    return bool(error.code() in (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE))
