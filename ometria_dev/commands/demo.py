"""``ometria-worker demo``: Kafka, the worker and an Ometria stand-in, run and checked.

It starts a throwaway Kafka broker (``scripts/kafka-local``; or uses ``--bootstrap-servers``)
and Schema Registry (``scripts/schema-registry-local``; or uses ``--schema-registry-url``;
none with ``--no-registry``), the Ometria stand-in and the worker; produces a few hundred
sample events (every event type, both CloudEvents modes, two schema MODELs, and a bad
record for each dead-letter reason) and Avro records of two schema versions on a topic of
their own; waits until each is delivered or dead-lettered; prints a table; stops all it
started. Exit 0 when everything came out as expected, 1 when not, 2 when it could not run.
The steps are in :mod:`ometria_dev.demo`, the sample events in :mod:`ometria_dev.demo_events`.
"""

from __future__ import annotations

import argparse

from ometria_dev.demo import DemoOptions, run_demo
from ometria_dev.demo_avro import AVRO_BAD_COUNT
from ometria_dev.demo_events import BAD_COUNT, MIN_GOOD


def _events(text: str) -> int:
    value = int(text)
    if value < MIN_GOOD:
        # Fewer could not show every event type in both CloudEvents modes.
        raise argparse.ArgumentTypeError(f"must be at least {MIN_GOOD}, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number (1-65535), got {value}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options."""
    parser.add_argument(
        "--events",
        type=_events,
        default=300,
        metavar="N",
        help=f"good events (default 300, at least {MIN_GOOD}); {BAD_COUNT} bad ones come on top, "
        f"and a fifth as many Avro records, plus {AVRO_BAD_COUNT} bad ones",
    )
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="use this Kafka broker and start none (the demo's topics are deleted at the end)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        help="port of the broker to start (default 9092, or a free one when 9092 is taken)",
    )
    registry = parser.add_mutually_exclusive_group()
    registry.add_argument(
        "--schema-registry-url",
        metavar="URL",
        help="use this Schema Registry (its Confluent-compatible API) and start none "
        "(the demo's subject is deleted at the end)",
    )
    registry.add_argument(
        "--no-registry",
        action="store_true",
        help="start no Schema Registry and leave the Avro topic out",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the broker and the registry running and the demo's topics and subject "
        "in place, to look around",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for every record's outcome (default 120)",
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the sample events and the stand-in's faults"
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when everything checked out."""
    return run_demo(
        DemoOptions(
            events=args.events,
            bootstrap_servers=args.bootstrap_servers,
            port=args.port,
            registry=not args.no_registry,
            schema_registry_url=args.schema_registry_url,
            keep=args.keep,
            timeout=args.timeout,
            seed=args.seed,
        )
    )
