"""An asyncio event loop on virtual time: sleeps, timeouts and timers take no real time.

Whenever the loop has nothing ready and waits only for a timer, the clock jumps to that
timer instead of sleeping, so a test of a 30-second backoff runs in microseconds and
always sees the same order of events. Real I/O still works (the selector is polled
without blocking first); a loop with nothing scheduled and nothing to read is a
deadlock, reported as an error instead of hanging the test.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

T = TypeVar("T")

#: How long (real seconds) a loop with nothing scheduled waits for I/O before it is
#: declared deadlocked.
IDLE_LIMIT = 5.0


class _FastForward(selectors.BaseSelector):
    """A selector that advances the loop's virtual clock instead of blocking."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop
        self._real = selectors.DefaultSelector()

    def register(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            ready = self._real.select(IDLE_LIMIT)
            if not ready:
                raise RuntimeError("virtual-time loop deadlocked: nothing scheduled, no I/O")
            return ready
        self._loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` only moves when the loop would sleep."""

    def __init__(self) -> None:
        self._virtual_now = 0.0
        super().__init__(_FastForward(self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the loop does it by itself when idle)."""
        self._virtual_now += max(0.0, seconds)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh :class:`VirtualTimeLoop`."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coro)
