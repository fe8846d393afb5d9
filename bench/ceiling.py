"""The ceiling of ordered delivery at a latency: the bare loop against the stand-in alone.

    .venv/bin/python -m bench.ceiling [--latency-ms 50] [--in-flight 8] [--events 1600] [--runs 3]

`partition` mode sends one request per partition at a time, so its rate is bound by
partitions ÷ (time per request). That time is the stand-in's latency plus what the HTTP
client and the stand-in add to each request. This bench measures that time with nothing
else: the bare loop (:mod:`bench.bare_loop`'s ``post_all``: the worker's own client, the
same transport, ``--in-flight`` requests at a time, no Kafka) against the stand-in at
``--latency-ms``, pinned to core 0 and the stand-in to core 1 as in
:mod:`bench.worker_e2e`. It prints events/s and the time per request (median of
``--runs``), and the rate of ``partition`` mode it bounds on a backlog whose largest
partition holds ``--largest-share`` of the events (the 20,000-event backlog of scenario
C: 2,520 of 20,000 in its largest partition).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time

from bench.bare_loop import post_all
from bench.common import median, pin, stand_in
from bench.e2e_bed import events
from worker.outcome import Mapped
from worker.pipeline import Pipeline


def mapped_bodies(count: int) -> list[bytes]:
    """The bodies the worker POSTs for the bench's event mix (as scenario A's bare loop)."""
    pipeline = Pipeline.load()
    bodies = []
    for _, value in events(count):
        mapped = pipeline.process(value, None)
        assert isinstance(mapped, Mapped), mapped
        bodies.append(mapped.body)
    return bodies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--events", type=int, default=1600)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--largest-share", type=float, default=2520 / 20000)
    args = parser.parse_args()
    bodies = mapped_bodies(args.events)
    pin(0)
    rates: list[float] = []
    with stand_in("--latency-ms", f"{args.latency_ms:g}") as url:
        for _ in range(args.runs):
            started = time.monotonic()
            asyncio.run(post_all(url, bodies, args.in_flight))
            rates.append(len(bodies) / (time.monotonic() - started))
    rate = median(rates)
    per_request = args.in_flight / rate
    ideal = args.in_flight / (args.latency_ms / 1000) if args.latency_ms > 0 else math.inf
    # Ordered delivery drains a backlog when its largest partition is done.
    bound = 1 / (args.largest_share * per_request)
    print(f"bare loop, {args.in_flight} in flight, stand-in at {args.latency_ms:g} ms")
    print(f"  events/s: {rate:.1f} (runs {', '.join(f'{r:.1f}' for r in rates)})")
    print(f"  time per request: {per_request * 1000:.2f} ms")
    print(f"  ÷ {ideal:g} events/s (in flight ÷ latency): {rate / ideal:.3f}")
    print(
        f"  ordered drain of a backlog with {args.largest_share:.1%} in its largest "
        f"partition: at most {bound:.1f} events/s = {bound / ideal:.3f} of {ideal:g}"
    )


if __name__ == "__main__":
    main()
