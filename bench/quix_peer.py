"""The Quix Streams peer: what a Python user would write with Quix Streams instead of
this worker.

    .venv-bench/bin/python -m bench.quix_peer BOOTSTRAP TOPIC GROUP URL [--flush sequential]

Written as Quix Streams' documentation shows: an ``Application`` at its defaults
(at-least-once, a checkpoint every 5 s), a ``StreamingDataFrame`` that maps each record
with the worker's own pipeline (so the mapping work is the same as the worker's), and a
``BatchingSink`` whose ``write(batch)`` POSTs one partition's records one by one, in
offset order, with a keep-alive ``httpx.Client``. A 429, a 5xx or a transport error
raises ``SinkBackpressureError``: Quix drops the checkpoint's batches, pauses the
partitions for ``retry_after`` and reprocesses from the last commit (at-least-once).

Quix's own ``BatchingSink.flush`` writes the batches of a checkpoint one partition after
another: one request in flight in all, so 20 events/s against a 50 ms endpoint however
many partitions there are. A user who needs more writes each partition's batch on a
thread of its own, which is the default here (``--flush parallel``: one request in
flight per partition, order kept within each); ``--flush sequential`` keeps Quix's.

Needs the ``bench`` extra (quixstreams), best in a venv of its own: see
docs/performance.md. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ThreadPoolExecutor

import httpx
from quixstreams import Application
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch

from worker.outcome import Mapped
from worker.pipeline import Pipeline
from worker.records import Headers

JSON = {"content-type": "application/json"}


class OmetriaSink(BatchingSink):
    """POSTs each record of a partition's batch to ``/api/track``, in offset order; Quix's
    own flush writes the batches one partition after another."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        self._client: httpx.Client | None = None

    def setup(self) -> None:
        """Open the keep-alive client when the app starts."""
        self._client = httpx.Client(base_url=self._url, timeout=10.0)

    def write(self, batch: SinkBatch) -> None:
        """POST the batch's records one after another; backpressure on 429, 5xx or errors."""
        assert self._client is not None
        for item in batch:
            try:
                answer = self._client.post("/api/track", content=item.value, headers=JSON)
            except httpx.TransportError as exc:
                raise SinkBackpressureError(retry_after=1.0) from exc
            if answer.status_code == 429 or answer.status_code >= 500:
                retry_after = answer.headers.get("retry-after", "1")
                raise SinkBackpressureError(
                    retry_after=float(retry_after) if retry_after.isdigit() else 1.0
                )
            answer.raise_for_status()


class ParallelOmetriaSink(OmetriaSink):
    """The same, writing each partition's batch on a thread of its own: one request in
    flight per partition, order kept within each."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="flush")

    def flush(self) -> None:
        """Write the checkpoint's batches, all partitions at once; fail as the first fails."""
        try:
            # list() waits for every partition and re-raises the first failure.
            list(self._pool.map(self.write, list(self._batches.values())))
        finally:
            self._batches.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("group")
    parser.add_argument("url")
    parser.add_argument("--flush", choices=("parallel", "sequential"), default="parallel")
    args = parser.parse_args()
    pipeline = Pipeline.load()

    def to_ometria(value: bytes, _key: object, _ts: int, headers: Headers | None) -> bytes | None:
        mapped = pipeline.process(value, headers)
        return mapped.body if isinstance(mapped, Mapped) else None

    # A stateless app keeps no state, but Quix still wants a state directory: keep it
    # out of the repository.
    with tempfile.TemporaryDirectory() as state_dir:
        app = Application(
            broker_address=args.bootstrap,
            consumer_group=args.group,
            auto_offset_reset="earliest",
            state_dir=state_dir,
        )
        topic = app.topic(args.topic, key_deserializer="bytes", value_deserializer="bytes")
        sdf = app.dataframe(topic)
        sdf = sdf.apply(to_ometria, metadata=True).filter(lambda body: body is not None)
        sink = ParallelOmetriaSink if args.flush == "parallel" else OmetriaSink
        sdf.sink(sink(args.url))
        app.run()


if __name__ == "__main__":
    main()
