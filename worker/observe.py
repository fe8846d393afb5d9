"""Logs and the health/metrics endpoints.

Logs are structlog events rendered as JSON lines (orjson) on stdout, or as readable
console lines when stdout is a terminal (``WORKER_LOG_FORMAT=auto``). Secrets never
reach a log line: settings are logged only through :meth:`Settings.redacted`, and a
last processor masks any value whose key names a secret, by the rule the settings use
(:func:`worker.settings_rules.is_secret_name`: ``client_secret``, ``sasl_password``,
``access_token``, ``api_key``…), in nested dicts too.

The health server is a tiny asyncio HTTP/1.1 responder for ``/livez``, ``/readyz`` and
``/metrics``: scrapes and probes are a few a second, so no framework is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import orjson
import structlog

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


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Set up structlog (and the stdlib root logger, for libraries) once per process."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
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
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Standard-library loggers (librdkafka's, through KAFKA_LOGGER; asyncio's) render the
    # same way, on the same stream, so an operator reads one format.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _mask_secrets,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))


#: The logger librdkafka's own lines go to (passed as the clients' ``logger`` setting).
KAFKA_LOGGER = logging.getLogger("librdkafka")


Handler = Callable[[], tuple[int, str, bytes]]


class HealthServer:
    """Serves GET routes (path → handler returning status, content type, body)."""

    def __init__(self, host: str, port: int, routes: dict[str, Handler]) -> None:
        self._host = host
        self._port = port
        self._routes = routes
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and serve in the background."""
        self._server = await asyncio.start_server(self._serve, self._host, self._port)

    async def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30.0)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                    return
                request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
                parts = request_line.split(" ")
                method, target = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
                path = target.split("?", 1)[0]
                handler = self._routes.get(path)
                if method not in ("GET", "HEAD"):
                    status, ctype, body = 405, "text/plain", b"method not allowed\n"
                elif handler is None:
                    status, ctype, body = 404, "text/plain", b"not found\n"
                else:
                    status, ctype, body = handler()
                reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(
                    status, "Service Unavailable"
                )
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}\r\n"
                    f"content-length: {len(body)}\r\n\r\n".encode()
                    + (b"" if method == "HEAD" else body)
                )
                await writer.drain()
        except ConnectionError:
            return
        finally:
            writer.close()
