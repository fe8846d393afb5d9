"""An in-memory dead-letter sink that can be made slow or unwritable."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from worker.outcome import Failure
from worker.records import DeadLetterUnavailable, Record


@dataclass
class DeadLetter:
    """One acknowledged dead letter."""

    record: Record
    failure: Failure
    attempts: int


@dataclass
class MemoryDeadLetters:
    """A :class:`~worker.records.DeadLetterSink` keeping what it was given."""

    letters: list[DeadLetter] = field(default_factory=list)
    delay: float = 0.0  # (virtual) seconds before a write is acknowledged
    unavailable: bool = False  # every write fails after ``give_up_after``
    give_up_after: float = 1.0
    closed: bool = False

    async def write(self, record: Record, failure: Failure, attempts: int) -> None:
        if self.unavailable:
            await asyncio.sleep(self.give_up_after)
            raise DeadLetterUnavailable("dead-letter topic unwritable (test)")
        if self.delay:
            await asyncio.sleep(self.delay)
        self.letters.append(DeadLetter(record, failure, attempts))

    def close(self, timeout: float = 10.0) -> int:
        del timeout
        self.closed = True
        return 0

    def offsets(self) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) of every dead letter, in order written."""
        return [(d.record.topic, d.record.partition, d.record.offset) for d in self.letters]
