"""The stand-in in a background thread with its own event loop, for synchronous tests.

:func:`running_stub` starts one for a ``with`` block and hands back a :class:`StubHandle`
whose methods are safe to call from any thread: each runs on the server's loop and
waits for the result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ometria_dev.stub.faults import Faults
from ometria_dev.stub.recording import Record
from ometria_dev.stub.server import StubConfig, StubServer

_T = TypeVar("_T")


class StubHandle:
    """A stand-in running in a background thread; every method is safe from any thread.

    Made by :func:`running_stub`. Reads return copies (JSON-shaped dicts, like the admin
    API), so a test can keep them while the server goes on.
    """

    def __init__(self, config: StubConfig) -> None:
        self.server = StubServer(config)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._thread_main, name="ometria-stub", daemon=True)

    def _start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("ometria stub did not start in time")
        if self._error is not None:
            self._thread.join()
            raise self._error

    def _thread_main(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:  # noqa: BLE001 - re-raised by _start in the caller's thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop_event.wait()
        await self.server.stop()

    def _call(self, fn: Callable[[], _T], timeout: float = 10.0) -> _T:
        """Run ``fn`` on the server's loop and return its result."""
        loop = self._loop
        assert loop is not None
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - re-raised by future.result below
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout)

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:41234``."""
        return self.server.url

    def records(self) -> list[Record]:
        """Accepted track bodies as :class:`Record` (raw bytes and times), in order."""
        return self._call(self.server.records)

    def requests(self) -> list[dict[str, object]]:
        """Accepted track bodies as ``{"t", "mono", "body"}`` dicts, in arrival order."""
        return [record.as_json() for record in self.records()]

    def bodies(self) -> list[object]:
        """Just the decoded accepted track bodies, in arrival order."""
        return [record.body() for record in self.records()]

    def attempts(self) -> list[dict[str, object]]:
        """Every API attempt as a dict (t, mono, path, status, reason, request_id, retry_after)."""
        return [attempt.as_json() for attempt in self._call(self.server.attempts)]

    def stats(self) -> dict[str, object]:
        """The ``GET /_admin/stats`` counters."""
        return self._call(self.server.stats)

    def faults(self) -> Faults:
        """The faults in force."""
        return self._call(lambda: self.server.faults)

    def set_faults(self, **changes: object) -> Faults:
        """Change some faults (see :meth:`StubServer.set_faults`)."""
        return self._call(lambda: self.server.set_faults(**changes))

    def clear_faults(self) -> Faults:
        """Break nothing any more."""
        return self._call(self.server.clear_faults)

    def reset(self) -> None:
        """Forget records, attempts and counters."""
        self._call(self.server.reset)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[dict[str, object]]:
        """Block until ``count`` track bodies are accepted; return them as dicts."""
        loop = self._loop
        assert loop is not None
        future = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(self.server.wait_for_requests(count), timeout), loop
        )
        try:
            records = future.result(timeout + 5.0)
        except TimeoutError:
            accepted = self._call(lambda: self.server.accepted)
            raise TimeoutError(
                f"ometria stub accepted {accepted} of {count} requests in {timeout}s"
            ) from None
        return [record.as_json() for record in records]

    def stop(self) -> None:
        """Stop the server and its thread (idempotent)."""
        loop, stop_event = self._loop, self._stop_event
        if loop is not None and stop_event is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stop_event.set)
        if self._thread.is_alive():
            self._thread.join(10.0)


@contextmanager
def running_stub(config: StubConfig | None = None, **overrides: Any) -> Iterator[StubHandle]:
    """Run a stand-in in a background thread for the ``with`` block.

    ``overrides`` are :class:`StubConfig` or :class:`Faults` fields, e.g.
    ``running_stub(key="k", secret="s", error_rate=0.2, seed=1)``.
    """
    handle = StubHandle((config or StubConfig()).with_overrides(**overrides))
    handle._start()
    try:
        yield handle
    finally:
        handle.stop()
