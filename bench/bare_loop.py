"""The ceiling for the worker benchmark: POST pre-mapped payloads and nothing else.

    python -m bench.bare_loop URL PAYLOADS_FILE --concurrency N

Same HTTP client (:class:`worker.ometria.OmetriaClient`, same transport), same number of
requests in flight as the worker it is compared with; no Kafka, no decoding, no
bookkeeping. Payloads are one JSON body per line, sent once each, in order.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from worker.ometria import OmetriaClient


async def post_all(url: str, bodies: list[bytes], concurrency: int) -> None:
    """POST every body once with ``concurrency`` requests in flight."""
    client = OmetriaClient(url, auth=None, concurrency=concurrency)
    pending = iter(bodies)

    async def lane() -> None:
        for body in pending:
            answer = await client.track(body)
            if answer.status != 200:
                raise SystemExit(f"bare loop: stand-in answered {answer.status}")

    try:
        await asyncio.gather(*(lane() for _ in range(concurrency)))
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("payloads", type=Path)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    bodies = args.payloads.read_bytes().splitlines()
    asyncio.run(post_all(args.url, bodies, args.concurrency))


if __name__ == "__main__":
    main()
