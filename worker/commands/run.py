"""``ometria-worker run``: consume, map, deliver, dead-letter, commit (configured by env).

``run --help`` imports this module and nothing heavy: the worker's modules and its
dependencies are imported inside :func:`run` and :func:`_main`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

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

    from worker.commands.errors import refused_setting  # noqa: PLC0415
    from worker.config import ConfigError, Settings  # noqa: PLC0415
    from worker.envelope import EnvelopeConfig  # noqa: PLC0415
    from worker.observe import configure_logging  # noqa: PLC0415
    from worker.pipeline import Pipeline  # noqa: PLC0415
    from worker.schemas import SchemaError  # noqa: PLC0415

    try:
        settings = Settings.from_env()
        envelope = EnvelopeConfig.from_env(dict(os.environ))
    except ConfigError as exc:
        print(f"ometria-worker: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"ometria-worker: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    log = structlog.get_logger("worker")
    registry = _registry_client(settings)
    try:
        pipeline = Pipeline.load(
            settings.schema_dirs,
            envelope=envelope,
            max_bytes=settings.max_record_bytes,
            writers=registry.cached if registry is not None else None,
        )
    except SchemaError as exc:
        print(f"ometria-worker: broken schema: {exc.summary()}", file=sys.stderr)
        return 2
    log.info("settings", **settings.redacted())
    for warning in settings.transport_warnings():
        log.warning("unsafe_transport", problem=warning)
    try:
        return asyncio.run(_main(settings, pipeline, registry))
    except KafkaException as exc:  # the clients are made before anything is consumed
        sys.stdout.flush()
        print(f"ometria-worker: {refused_setting(exc)}", file=sys.stderr)
        return 2


def _registry_client(settings: Settings) -> RegistryClient | None:
    """The Schema Registry client, when SCHEMA_REGISTRY_URL is set."""
    if not settings.schema_registry_url:
        return None
    from worker.registry.client import RegistryClient  # noqa: PLC0415

    return RegistryClient(
        settings.schema_registry_url,
        auth=settings.schema_registry_auth,
        verify=settings.schema_registry_tls_verify,
        cache_bytes=settings.schema_registry_cache_bytes,
        timeout=settings.schema_registry_timeout,
    )


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
            topics=s.topics,
            revoke_timeout=s.rebalance_drain_timeout,
            start_at_earliest=s.auto_offset_reset == "earliest",
        )

    metrics = Metrics()
    worker = Worker(
        s,
        pipeline,
        intake=intake,
        metrics=metrics,
        sink=DeadLetterWriter(
            s.producer_config(),
            s.dlq_topic,
            truncate_bytes=s.dlq_truncate_bytes,
            give_up_after=s.dlq_timeout,
            on_failure=metrics.dlq_write_failed,
        ),
        sender=OmetriaClient(
            s.base_url,
            auth=s.auth,
            concurrency=s.concurrency,
            connect_timeout=s.connect_timeout,
            read_timeout=s.read_timeout,
            attempt_timeout=s.attempt_timeout,
            verify=s.tls_verify,
            transport=s.http_transport,
        ),
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

    server = HealthServer(
        settings.http_host,
        settings.http_port,
        {"/livez": livez, "/readyz": readyz, "/metrics": scrape},
    )
    try:
        await server.start()
    except OSError as exc:
        print(f"ometria-worker: WORKER_HTTP_PORT {settings.http_port}: {exc}", file=sys.stderr)
        return 2
    structlog.get_logger("worker").info(
        "health_listening", host=settings.http_host, port=server.port
    )
    try:
        code = await worker.run()
    finally:
        await server.stop()
    if code != 0:
        sys.stdout.flush()  # the log lines first, then the reason, also on a shared pipe
        print(f"ometria-worker: stopped by a fatal fault: {worker.fatal_reason}", file=sys.stderr)
    return code
