"""Every log line is exactly one JSON object, whatever thread writes it.

The worker logs from the event loop, the intake thread, the dead-letter producer's poll
thread and, through the standard library's logging, from whatever thread librdkafka's
lines arrive on. Here all of them write at once, to a file written through as the
image's stdout is, and every line of the output must parse as one JSON object (the
writer before this one tore about one line in a hundred here).
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import orjson
import pytest
import structlog
from confluent_kafka import Consumer

from worker.observe import configure_logging

THREADS = 6
LINES_PER_THREAD = 400


@contextlib.contextmanager
def configured(stream: TextIO) -> Iterator[None]:
    """The worker's JSON logging to ``stream``; the previous set-up restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("json", "info", stream=stream)
    try:
        yield
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """The worker's JSON logging, to a file written through as the image's stdout is
    (PYTHONUNBUFFERED=1): each ``write`` is a system call, which lets other threads run."""
    path = tmp_path / "out.log"
    raw = path.open("wb", buffering=0)
    with (
        io.TextIOWrapper(raw, encoding="utf-8", write_through=True) as stream,
        configured(stream),
    ):
        yield path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_lines_from_every_thread_at_once_stay_whole(log_file: Path) -> None:
    start = threading.Barrier(2 * THREADS + 1)
    stop_kafka = threading.Event()
    # Lines long enough that a torn write would show.
    padding = "x" * 300

    def structlog_thread(n: int) -> None:
        log = structlog.get_logger("worker.test")
        start.wait()
        for i in range(LINES_PER_THREAD):
            log.info("retry_streak_ended", thread=n, i=i, padding=padding)

    def stdlib_thread(n: int) -> None:
        log = logging.getLogger(f"library.{n}")
        start.wait()
        for i in range(LINES_PER_THREAD):
            log.warning("FAIL [rdkafka#consumer-%d] line %d %s", n, i, padding)

    def kafka_thread() -> None:
        # A real client whose connection attempts fail: librdkafka's own lines, through
        # the logging module, from the thread that polls it.
        consumer = Consumer(
            {
                "bootstrap.servers": f"127.0.0.1:{_closed_port()}",
                "group.id": "log-lines",
                "logger": logging.getLogger("librdkafka-under-test"),
                "reconnect.backoff.ms": 1,
                "reconnect.backoff.max.ms": 10,
            }
        )
        consumer.subscribe(["t"])
        start.wait()
        try:
            while not stop_kafka.is_set():
                consumer.poll(0.01)
        finally:
            consumer.close()

    workers = [threading.Thread(target=structlog_thread, args=(n,)) for n in range(THREADS)]
    workers += [threading.Thread(target=stdlib_thread, args=(n,)) for n in range(THREADS)]
    kafka = threading.Thread(target=kafka_thread)
    for thread in [*workers, kafka]:
        thread.start()
    for thread in workers:
        thread.join(timeout=60)
    stop_kafka.set()
    kafka.join(timeout=30)

    text = log_file.read_text(encoding="utf-8")
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    problems = []
    for number, line in enumerate(lines, 1):
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            problems.append(f"line {number}: {line[:120]!r}")
            continue
        if not isinstance(parsed, dict):
            problems.append(f"line {number}: not an object")
    assert not problems, f"{len(problems)} broken lines, e.g. {problems[:3]}"
    events = [orjson.loads(line) for line in lines]
    assert sum(1 for e in events if e["event"] == "retry_streak_ended") == (
        THREADS * LINES_PER_THREAD
    )
    assert sum(1 for e in events if e["event"].startswith("FAIL [rdkafka#consumer-")) >= (
        THREADS * LINES_PER_THREAD
    )
    assert any(e.get("logger") == "librdkafka-under-test" for e in events)


class RecordingStream(io.StringIO):
    """Remembers each ``write`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_a_line_and_its_newline_are_one_write() -> None:
    # print() writes the text and the newline in two calls: a line from another thread
    # could land between them (two objects on one line, then an empty line).
    stream = RecordingStream()
    with configured(stream):
        structlog.get_logger("worker.test").info("one")
        logging.getLogger("library").warning("two")
    assert [orjson.loads(w)["event"] for w in stream.writes] == ["one", "two"]
    assert all(w.endswith("\n") and w.count("\n") == 1 for w in stream.writes)


def test_a_library_traceback_is_rendered_as_text() -> None:
    stream = io.StringIO()
    with configured(stream):
        try:
            _ = 1 / 0
        except ZeroDivisionError:
            logging.getLogger("aiohttp.server").exception("Error handling request")
    event = orjson.loads(stream.getvalue())
    assert event["event"] == "Error handling request"
    assert "exc_info" not in event
    assert event["exception"].startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: division by zero" in event["exception"]


def test_httpx_request_lines_stay_out_but_its_warnings_pass() -> None:
    # httpx logs each request at INFO: one line per POST would drown the worker's own.
    stream = io.StringIO()
    with configured(stream):
        logging.getLogger("httpx").info("HTTP Request: POST https://x/api/track 202")
        logging.getLogger("httpcore.connection").debug("connect_tcp.started")
        logging.getLogger("httpx").warning("something worth seeing")
    events = [orjson.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert events == ["something worth seeing"]
