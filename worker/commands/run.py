"""``ometria-worker run``: consume, map, deliver, dead-letter, commit (configured by env).

``run --help`` imports this module and nothing heavy: the worker's modules and its
dependencies are imported inside :func:`run` and :func:`_main`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Iterator

    from worker.config import Settings
    from worker.registry.client import RegistryClient


def configure(parser: argparse.ArgumentParser) -> None:
    """No options: a deployment configures the worker through its environment."""
    parser.epilog = "Every setting is an environment variable: see README.md, 'Configuration'."


def run(args: argparse.Namespace) -> int:
    """Validate the settings and schemas, then run until stopped."""
    del args
    import asyncio  # noqa: PLC0415 - keep `run --help` light (see the module docstring)

    import structlog  # noqa: PLC0415
    from confluent_kafka import KafkaException  # noqa: PLC0415

    from worker.commands.errors import load_settings, refused_setting  # noqa: PLC0415
    from worker.config import Settings  # noqa: PLC0415
    from worker.observe import configure_logging  # noqa: PLC0415
    from worker.pipeline import Pipeline  # noqa: PLC0415
    from worker.schemas import SchemaError  # noqa: PLC0415

    settings = load_settings(Settings.from_env)
    if settings is None:
        return 2
    configure_logging(settings.observability.log_format, settings.observability.log_level)
    log = structlog.get_logger("worker")
    registry = _registry_client(settings)
    try:
        pipeline = Pipeline.from_settings(
            settings.pipeline, writers=registry.cached if registry is not None else None
        )
    except SchemaError as exc:
        print(f"ometria-worker: broken schema: {exc.summary()}", file=sys.stderr)
        return 2
    log.info("settings", **settings.redacted())
    for warning in settings.transport_warnings():
        log.warning("unsafe_transport", problem=warning)
    try:
        with startup_frozen():
            return asyncio.run(_main(settings, pipeline, registry))
    except KafkaException as exc:  # the clients are made before anything is consumed
        sys.stdout.flush()
        print(f"ometria-worker: {refused_setting(exc)}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def startup_frozen() -> Iterator[None]:
    """While the worker runs, what start-up made (modules, settings, compiled schemas:
    alive until exit) is out of the cyclic collector's reach (``gc.freeze``), so a full
    collection walks only what the worker makes while running: a shorter pause of the
    event loop, during which every lane waits (docs/performance.md). Unfrozen after, for
    callers that go on (the tests run commands in-process)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _registry_client(settings: Settings) -> RegistryClient | None:
    """The Schema Registry client, when SCHEMA_REGISTRY_URL is set."""
    if not settings.registry.schema_registry_url:
        return None
    from worker.registry.client import RegistryClient  # noqa: PLC0415

    return RegistryClient.from_settings(settings.registry)


async def _main(settings: Settings, pipeline: object, registry: RegistryClient | None) -> int:
    import orjson  # noqa: PLC0415
    import structlog  # noqa: PLC0415

    from worker.app import Worker  # noqa: PLC0415
    from worker.consumer import ConfluentSource  # noqa: PLC0415
    from worker.deadletter import DeadLetterWriter  # noqa: PLC0415
    from worker.flow import FlowLimits  # noqa: PLC0415
    from worker.health import HealthServer  # noqa: PLC0415
    from worker.intake import IntakeThread, Listener  # noqa: PLC0415
    from worker.metrics import CONTENT_TYPE, Metrics  # noqa: PLC0415
    from worker.ometria import OmetriaClient  # noqa: PLC0415
    from worker.pipeline import Pipeline  # noqa: PLC0415

    assert isinstance(pipeline, Pipeline)
    s = settings

    def intake(
        listener: Listener, limits: FlowLimits, loop: asyncio.AbstractEventLoop
    ) -> IntakeThread:
        return IntakeThread(
            ConfluentSource(s.consumer_config()),
            listener,
            limits,
            loop,
            topics=s.kafka.topics,
            revoke_timeout=s.delivery.rebalance_drain_timeout,
            start_at_earliest=s.kafka.auto_offset_reset == "earliest",
        )

    metrics = Metrics()
    worker = Worker(
        s,
        pipeline,
        intake=intake,
        metrics=metrics,
        sink=DeadLetterWriter(
            s.producer_config(),
            s.kafka.dlq_topic,
            truncate_bytes=s.delivery.dlq_truncate_bytes,
            give_up_after=s.delivery.dlq_timeout,
            on_failure=metrics.dlq_write_failed,
        ),
        sender=OmetriaClient.from_settings(s.ometria, concurrency=s.delivery.concurrency),
        schemas=registry,
    )

    def livez() -> tuple[int, str, bytes]:
        health = worker.health()
        return (
            200 if health["live"] or health["state"] == "starting" else 503,
            "application/json",
            orjson.dumps(health),
        )

    def readyz() -> tuple[int, str, bytes]:
        health = worker.health()
        return (200 if health["ready"] else 503, "application/json", orjson.dumps(health))

    def scrape() -> tuple[int, str, bytes]:
        return (200, CONTENT_TYPE, metrics.render().encode())

    http = s.observability
    server = HealthServer(
        http.http_host,
        http.http_port,
        {"/livez": livez, "/readyz": readyz, "/metrics": scrape},
    )
    try:
        await server.start()
    except OSError as exc:
        print(f"ometria-worker: WORKER_HTTP_PORT {http.http_port}: {exc}", file=sys.stderr)
        return 2
    structlog.get_logger("worker").info("health_listening", host=http.http_host, port=server.port)
    try:
        code = await worker.run()
    finally:
        await server.stop()
    if code != 0:
        sys.stdout.flush()  # the log lines first, then the reason, also on a shared pipe
        print(f"ometria-worker: stopped by a fatal fault: {worker.fatal_reason}", file=sys.stderr)
    return code
