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

With ``--idle-gaps 0 5 20 50`` it first times one request at 0 ms latency after each idle
gap: on this kind of machine a process that has slept for 50 ms runs its next request's
code about three times slower than one kept busy (cold caches, a descheduled virtual
CPU). The bare loop sleeps between answers, which the worker's other threads do not
quite, so this "ceiling" is a reference, not a hard bound (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time

from bench.bare_loop import post_all
from bench.common import median, pin, stand_in
from bench.e2e_bed import events, mapped_bodies
from worker.ometria import OmetriaClient

#: Requests per idle gap of ``--idle-gaps``: the first WARM_UP are not counted.
WARM_UP, TIMED = 20, 200


async def round_trips(url: str, bodies: list[bytes], gap_s: float) -> list[float]:
    """Seconds per request with one in flight, each sent ``gap_s`` after the previous
    answer (the first :data:`WARM_UP` warm the connection and are not counted)."""
    client = OmetriaClient(url, auth=None, concurrency=1)
    times: list[float] = []
    try:
        for body in bodies:
            if gap_s:
                await asyncio.sleep(gap_s)
            started = time.perf_counter()
            answer = await client.track(body)
            times.append(time.perf_counter() - started)
            if answer.status != 200:
                raise SystemExit(f"ceiling: stand-in answered {answer.status}")
    finally:
        await client.aclose()
    return times[WARM_UP:]


def idle_gaps(bodies: list[bytes], gaps_ms: list[float]) -> None:
    """Print the round trip at 0 ms latency after each idle gap: what waking costs."""
    with stand_in("--latency-ms", "0") as url:
        print("round trip at 0 ms latency, 1 in flight, after an idle gap (median)")
        for gap in gaps_ms:
            times = asyncio.run(round_trips(url, bodies[: WARM_UP + TIMED], gap / 1000))
            print(f"  after {gap:g} ms idle: {median(times) * 1000:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--events", type=int, default=1600)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--largest-share", type=float, default=2520 / 20000)
    parser.add_argument(
        "--idle-gaps",
        type=float,
        nargs="*",
        metavar="MS",
        help="also time one request after each idle gap (e.g. 0 5 20 50) at 0 ms latency",
    )
    args = parser.parse_args()
    bodies = mapped_bodies(events(max(args.events, WARM_UP + TIMED)))
    pin(0)
    if args.idle_gaps:
        idle_gaps(bodies, args.idle_gaps)
    bodies = bodies[: args.events]
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
