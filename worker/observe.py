"""Logs: one JSON object per line on stdout, whatever thread writes it.

Logs are structlog events rendered as JSON lines (orjson) on stdout, or as readable
console lines when stdout is a terminal (``WORKER_LOG_FORMAT=auto``). Secrets never
reach a log line: settings are logged only through :meth:`Settings.redacted`, and a
last processor masks any value whose key names a secret, by the rule the settings use
(:func:`worker.settings_rules.is_secret_name`: ``client_secret``, ``sasl_password``,
``access_token``, ``api_key``…), in nested dicts too.

Several threads log: the event loop, the intake thread, the dead-letter producer's poll
thread (librdkafka's lines arrive on the last two, through :data:`KAFKA_LOGGER`). Every
line, structlog's and the standard library's alike, goes through one
:class:`LineWriter`: the whole line and its newline in one ``write`` under one lock, so
two lines never share a line of output (``print`` writes the text and the newline in two
calls, and structlog's lock is not the logging handler's).

librdkafka's lines are coalesced (:mod:`worker.repeats`): per client, facility and
level, the first line of an episode is logged; the rest are counted until the worker's
next summary sweeps them (:data:`KAFKA_REPEATS`).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from worker.repeats import Repeats
from worker.settings_rules import is_secret_name


def _mask_secrets(
    _logger: object, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if isinstance(key, str) and is_secret_name(key):
            event_dict[key] = "***"
        elif isinstance(value, dict):
            event_dict[key] = _masked(value)
    return event_dict


def _masked(mapping: dict[Any, Any]) -> dict[Any, Any]:
    """A copy of ``mapping`` with secret-named values masked (the caller's dict is left
    alone: it may be the worker's own state)."""
    return {
        key: "***"
        if isinstance(key, str) and is_secret_name(key)
        else (_masked(value) if isinstance(value, dict) else value)
        for key, value in mapping.items()
    }


def _orjson_dumps(obj: Any, default: Callable[[Any], Any] | None = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


class LineWriter:
    """Writes whole lines to one stream: each line and its newline in one ``write``,
    flushed, under one lock, whichever thread calls. It is also the structlog logger
    (the methods structlog calls by level name)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        """Write ``message`` as one line."""
        line = message + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _LineHandler(logging.Handler):
    """The standard library's way in to a :class:`LineWriter`."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.msg(self.format(record))
        except Exception:  # noqa: BLE001 - logging's own convention: report, never raise
            self.handleError(record)


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog (and the stdlib root logger, for libraries) once per process, both
    writing through one :class:`LineWriter` to ``stream`` (default: stdout)."""
    out = stream if stream is not None else sys.stdout
    writer = LineWriter(out)
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if use_console
        else structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, _mask_secrets, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_args: writer,
        cache_logger_on_first_use=True,
    )
    # Standard-library loggers (librdkafka's, through KAFKA_LOGGER; asyncio's; aiohttp's)
    # render the same way, through the same writer, so an operator reads one format.
    handler = _LineHandler(writer)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # A library's traceback (aiohttp's, asyncio's) as text, not a tuple's repr.
                structlog.processors.format_exc_info,
                _mask_secrets,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
    # httpx and httpcore log every request at INFO (and DEBUG): one line per POST would
    # drown the worker's own lines and cost time per record. Their warnings still pass.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(numeric, logging.WARNING))


#: The logger librdkafka's own lines go to (passed as the clients' ``logger`` setting).
KAFKA_LOGGER = logging.getLogger("librdkafka")

#: librdkafka's lines held back and counted; the worker sweeps it with each summary.
KAFKA_REPEATS = Repeats()


class _KafkaRepeats(logging.Filter):
    """Lets through the first of librdkafka's lines of a kind (client, facility, level)
    and counts the rest in :data:`KAFKA_REPEATS`; critical lines always pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # confluent-kafka logs ("%s [%s] %s", facility, client name, message).
        if record.levelno >= logging.CRITICAL or not (isinstance(args, tuple) and len(args) == 3):
            return True
        facility, client, _ = args
        kind = {
            "of": "librdkafka",
            "facility": str(facility),
            "client": str(client),
            "severity": record.levelname.lower(),
        }
        fields = {"event": record.getMessage(), "logger": KAFKA_LOGGER.name}
        return KAFKA_REPEATS.admit(kind, record.levelno, fields)


KAFKA_LOGGER.addFilter(_KafkaRepeats())
