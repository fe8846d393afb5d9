"""Alike log lines, coalesced: an outage is a few lines, not a flood.

A broker that is down makes librdkafka fail every connection attempt, a few times a
second per connection, and report each one twice (a log line and an error callback);
auto-commits refused meanwhile fail once per partition. Logging each one gave a single
worker 172 lines a second. Instead, lines of one *kind* (the same event with the same
code, say) form an *episode*:

- the first line is logged as it is: the state changed;
- further lines are held back and counted; the sweep that the worker runs with each
  ``summary`` (every WORKER_SUMMARY_INTERVAL) logs one line for the kind, the last one
  held back with ``repeated=N`` (how many were held back since the previous sweep);
- a sweep that finds no line of the kind since the previous sweep ends the episode:
  ``repeats_ended`` with the kind, ``repeated`` (held back over the whole episode) and
  ``lasted_s`` (first to last line). An episode of one line ends silently.

Callers decide what a kind is and what always passes (fatal errors are never held back).
Lines may be offered from any thread (librdkafka's arrive on the intake thread and the
dead-letter producer's poll thread); the sweep runs on the event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from worker.records import Clock

Kind = Mapping[str, str | int]

#: Field names the report lines use themselves (:func:`log_reports`): a kind naming one
#: would collide with them when its ``repeats_ended`` line is logged.
RESERVED: Final = frozenset({"event", "repeated", "lasted_s"})


@dataclass(frozen=True, slots=True)
class Report:
    """What a sweep has to say about one kind of line."""

    kind: Kind
    level: int  # logging level of the lines
    fields: Mapping[str, Any]  # the last line held back (for an ended episode: its first)
    held: int  # lines held back: since the previous sweep, or (ended) over the episode
    lasted: float  # seconds from the first line of the episode to its last
    ended: bool


@dataclass(slots=True)
class _Episode:
    kind: Kind
    level: int
    first: Mapping[str, Any]
    started: float
    last_at: float
    last: Mapping[str, Any] | None = None
    held: int = 0  # since the previous sweep
    total: int = 0  # over the episode
    seen: bool = True  # a line came since the previous sweep


class Repeats:
    """Counts alike lines per kind and says when a kind repeats or stops (module doc)."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._episodes: dict[tuple[tuple[str, str | int], ...], _Episode] = {}

    def admit(self, kind: Kind, level: int, fields: Mapping[str, Any]) -> bool:
        """Whether to log this line now (the first of its episode); if not, it is held
        back and counted, and ``fields`` are kept as the kind's last line."""
        key = tuple(sorted(kind.items()))
        now = self._clock()
        with self._lock:
            episode = self._episodes.get(key)
            if episode is None:
                if not RESERVED.isdisjoint(kind):
                    raise ValueError(f"a kind may not name {sorted(RESERVED & kind.keys())}")
                self._episodes[key] = _Episode(kind, level, fields, now, now)
                return True
            episode.seen = True
            episode.last_at = now
            episode.last = fields
            episode.held += 1
            episode.total += 1
            return False

    def log(self, logger: LevelLogger, kind: Kind, level: int, event: str, **fields: Any) -> None:
        """Log ``event`` with ``fields`` now if it is the first line of ``kind``'s
        episode; else hold it back and count it for the next sweep."""
        if self.admit(kind, level, {"event": event, **fields}):
            logger.log(level, event, **fields)

    def sweep(self) -> list[Report]:
        """What to log now: a repeat line for each kind held back since the previous
        sweep, an end line for each episode that had none since (and held any back)."""
        reports: list[Report] = []
        with self._lock:
            for key, episode in list(self._episodes.items()):
                if episode.seen:
                    episode.seen = False
                    if episode.held and episode.last is not None:
                        reports.append(
                            Report(
                                episode.kind,
                                episode.level,
                                episode.last,
                                episode.held,
                                episode.last_at - episode.started,
                                ended=False,
                            )
                        )
                        episode.held = 0
                    continue
                del self._episodes[key]
                if episode.total:
                    reports.append(
                        Report(
                            episode.kind,
                            episode.level,
                            episode.first,
                            episode.total,
                            episode.last_at - episode.started,
                            ended=True,
                        )
                    )
        return reports


class LevelLogger(Protocol):
    """What :func:`log_reports` needs of a logger (structlog's bound loggers have it)."""

    def log(self, level: int, event: str, **fields: Any) -> Any: ...

    def info(self, event: str, **fields: Any) -> Any: ...


def log_reports(logger: LevelLogger, reports: list[Report]) -> None:
    """Log what a sweep found: each repeat as its last line with ``repeated``, each end
    as a ``repeats_ended`` line naming the kind."""
    for report in reports:
        if report.ended:
            logger.info(
                "repeats_ended",
                **report.kind,
                repeated=report.held,
                lasted_s=round(report.lasted, 1),
            )
            continue
        fields = dict(report.fields)
        event = str(fields.pop("event"))
        logger.log(report.level, event, **fields, repeated=report.held)
