"""The naive peer: the loop a user would write in an afternoon.

    python -m bench.naive_peer BOOTSTRAP TOPIC GROUP URL

Poll one record, map it (the same pipeline as the worker, so only the delivery loop
differs), POST it with httpx's synchronous client, commit synchronously, repeat. One
request in flight in all, whatever the partitions; runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import types

import httpx
from confluent_kafka import Consumer

from worker.outcome import Mapped
from worker.pipeline import Pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("group")
    parser.add_argument("url")
    args = parser.parse_args()
    running = True

    def stop(_sig: int, _frame: types.FrameType | None) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    pipeline = Pipeline.load()
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10_000,
        }
    )
    consumer.subscribe([args.topic])
    with httpx.Client(base_url=args.url) as client:
        while running:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            result = pipeline.process(msg.value(), msg.headers())  # type: ignore[arg-type]
            if isinstance(result, Mapped):
                client.post(
                    "/api/track", content=result.body, headers={"content-type": "application/json"}
                )
            consumer.commit(message=msg, asynchronous=False)
    consumer.close()


if __name__ == "__main__":
    main()
