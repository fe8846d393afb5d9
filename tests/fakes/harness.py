"""A real :class:`~worker.app.Worker` wired to in-memory collaborators, on virtual time.

The intake runs as a task on the loop instead of a thread (:class:`InlineIntake`): it
calls the same :class:`~worker.intake.Intake` steps, and the test drives rebalances
through :meth:`Harness.assign`, :meth:`Harness.revoke` and :meth:`Harness.lose`, which
take the same steps as the intake thread's rebalance callbacks (a revoke blocks the
intake, exactly as a rebalance callback blocks the consumer's thread).

    async def scenario() -> None:
        h = Harness(partitions={"t": 2}, ordering="key")
        h.produce_events(100)
        await h.start()
        await h.until(lambda: len(h.ometria.accepted) == 100)
        assert await h.stop() == 0

    tests.fakes.clock.run(scenario())
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import fields, replace
from functools import cache
from typing import Any

import orjson

from tests.fakes.ometria import FakeOmetria
from tests.fakes.sink import MemoryDeadLetters
from tests.fakes.source import MemorySource
from worker.app import Worker
from worker.config import (
    DeliverySettings,
    KafkaSettings,
    ObservabilitySettings,
    OmetriaSettings,
    Settings,
)
from worker.flow import FlowLimits
from worker.intake import POLL_TIMEOUT, Intake, Listener
from worker.pipeline import Pipeline
from worker.records import TP, Headers, SchemaSource


@cache
def default_pipeline() -> Pipeline:
    """The built-in schemas, loaded once per test session."""
    return Pipeline.load()


def worker_settings(topics: tuple[str, ...] = ("t",), **changes: Any) -> Settings:
    """A test worker's settings: in-memory Kafka and Ometria, short retries, no summary
    lines; ``changes`` sets fields of any section by name (``ordering="key"``)."""
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="memory", topics=topics),
        ometria=OmetriaSettings(base_url="http://ometria.test"),
        delivery=DeliverySettings(retry_base=0.05, retry_cap=1.0),
        observability=ObservabilitySettings(summary_interval=3600.0),
    )
    sections: dict[str, Any] = {}
    for each in fields(settings):
        section = getattr(settings, each.name)
        mine = {name: changes.pop(name) for name in section.__dataclass_fields__ if name in changes}
        if mine:
            sections[each.name] = replace(section, **mine)
    if changes:
        raise TypeError(f"no such setting: {', '.join(sorted(changes))}")
    return replace(settings, **sections)


def event(event_id: str, uid: str = "u1", page: str = "home") -> bytes:
    """A structured CloudEvent (``commerce.page.viewed``) with ``event_id``."""
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "test",
            "type": "commerce.page.viewed",
            "dataschema": "commerce/page.viewed/1-0-0",
            "data": {"user": {"uid": uid, "sid": "s1"}, "page": {"id": page}},
        }
    )


class InlineIntake:
    """Runs an :class:`Intake` as a task on the event loop (an ``IntakeRunner``)."""

    def __init__(
        self,
        source: MemorySource,
        listener: Listener,
        limits: FlowLimits,
        loop: asyncio.AbstractEventLoop,
        *,
        commit_interval: float,
    ) -> None:
        self.source = source
        self.listener = listener
        self.intake = Intake(source, listener, limits, to_loop=loop.call_soon, clock=loop.time)
        self.blocked = False  # inside a revoke: the intake thread would be waiting
        self.closed = False
        self._commit_interval = commit_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.intake.wakeup = self._wake.set
        source.on_produce = self._wake.set

    def start(self) -> None:
        self.source.subscribe([], _NoRebalance(), self.intake)
        self._task = asyncio.get_running_loop().create_task(self._drive())

    def poke(self) -> None:
        """Wake the driver now (something changed)."""
        self._wake.set()

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        next_commit = loop.time() + self._commit_interval
        while not self.closed:
            if not self.blocked:
                self.intake.step(0)
                if loop.time() >= next_commit:
                    self.source.auto_commit()
                    next_commit = loop.time() + self._commit_interval
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_TIMEOUT):
                    await self._wake.wait()

    async def close(self) -> None:
        """Stop driving and close the consumer: revoke what is still assigned."""
        self.intake.apply_commands()
        self.closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
        assigned = self.source.assignment()
        if assigned:
            offsets = await self.listener.on_revoked(assigned)
            self.intake.revoked(assigned, offsets)
        self.source.close()


class _NoRebalance:
    def on_assign(self, partitions: list[TP]) -> None: ...

    def on_revoke(self, partitions: list[TP]) -> None: ...

    def on_lost(self, partitions: list[TP]) -> None: ...


class Harness:
    """One worker, an in-memory source, dead-letter sink and Ometria (module docstring)."""

    def __init__(
        self,
        *,
        partitions: dict[str, int] | None = None,
        pipeline: Pipeline | None = None,
        schemas: SchemaSource | None = None,
        **settings: Any,
    ) -> None:
        parts = partitions or {"t": 1}
        self.source = MemorySource(partitions=dict(parts))
        self.sink = MemoryDeadLetters()
        self.ometria = FakeOmetria()
        self.settings = worker_settings(tuple(parts), **settings)
        self.worker = Worker(
            self.settings,
            pipeline or default_pipeline(),
            intake=self._make_intake,
            sink=self.sink,
            sender=self.ometria,
            schemas=schemas,
            handle_signals=False,
        )
        self.runner: InlineIntake | None = None
        self._where: dict[str, tuple[TP, int]] = {}
        self.task: asyncio.Task[int] | None = None

    def _make_intake(
        self, listener: Listener, limits: FlowLimits, loop: asyncio.AbstractEventLoop
    ) -> InlineIntake:
        self.runner = InlineIntake(
            self.source,
            listener,
            limits,
            loop,
            commit_interval=self.settings.delivery.commit_interval,
        )
        return self.runner

    @property
    def intake(self) -> Intake:
        """The intake the worker drives."""
        assert self.runner is not None
        return self.runner.intake

    # -- records ------------------------------------------------------------------------

    def produce(
        self,
        value: bytes | None,
        *,
        key: bytes | None = None,
        topic: str | None = None,
        partition: int | None = None,
        headers: Headers = (),
    ) -> None:
        """Append one record to the in-memory topic."""
        self.source.produce(
            topic or self.settings.kafka.topics[0],
            value,
            key=key,
            partition=partition,
            headers=headers,
        )

    def produce_events(
        self, count: int, *, keys: int = 10, topic: str | None = None, prefix: str = "e"
    ) -> list[str]:
        """``count`` page-view events keyed over ``keys`` visitors; returns their ids."""
        ids = []
        for i in range(count):
            event_id = f"{prefix}{i}"
            uid = f"v{i % keys}"
            self.produce(event(event_id, uid), key=uid.encode(), topic=topic)
            ids.append(event_id)
        return ids

    def where(self, event_id: str) -> tuple[TP, int]:
        """(partition, offset) of the record whose CloudEvent id is ``event_id``."""
        if not self._where:
            for tp, log in self.source.logs.items():
                for record in log:
                    try:
                        self._where[str(orjson.loads(record.value or b"")["id"])] = (
                            tp,
                            record.offset,
                        )
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue
        return self._where[event_id]

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, *, assign: list[TP] | None = None) -> None:
        """Run the worker and assign it ``assign`` (default: every partition)."""
        self.task = asyncio.get_running_loop().create_task(self.worker.run())
        await self.until(lambda: self.runner is not None and self.worker.state == "running")
        await self.assign(assign if assign is not None else list(self.source.logs))

    async def stop(self) -> int:
        """SIGTERM, as it were: the ordered shutdown; returns the exit code."""
        self.worker.stop("test")
        return await self.exited()

    async def exited(self) -> int:
        """Wait for the worker to exit; its exit code."""
        assert self.task is not None
        return await self.task

    async def assign(self, partitions: list[TP]) -> None:
        """The group assigns ``partitions`` (what the intake's on_assign callback does)."""
        self.source.apply_assign(partitions)
        self.intake.assigned(partitions)
        self._poke()
        await asyncio.sleep(0)

    async def revoke(self, partitions: list[TP]) -> None:
        """The group revokes ``partitions``: the intake blocks while the loop drains them,
        stores what the loop returns, and the consumer commits it as it unassigns."""
        assert self.runner is not None
        self.runner.blocked = True
        try:
            offsets = await self.worker.on_revoked(partitions)
        finally:
            self.runner.blocked = False
        self.intake.revoked(partitions, offsets)
        self.source.apply_revoke(partitions)
        self._poke()

    async def lose(self, partitions: list[TP]) -> None:
        """The session is lost: the partitions go without a revoke or a commit."""
        self.source.apply_lose(partitions)
        self.intake.lost(partitions)
        self._poke()
        await asyncio.sleep(0)

    def _poke(self) -> None:
        if self.runner is not None:
            self.runner.poke()

    async def until(
        self, predicate: Callable[[], bool], timeout: float = 600.0, step: float = 0.01
    ) -> None:
        """Wait (virtual time) until ``predicate()`` holds; fail after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(f"condition not met within {timeout} virtual seconds")
            if self.task is not None and self.task.done():
                self.task.result()  # surfaces an exception from the worker
                raise AssertionError("the worker exited while waiting")
            await asyncio.sleep(step)
