"""What the stand-in saw: accepted track bodies, every attempt, and counters.

Times are taken on arrival, before any injected latency: ``t`` is the wall clock
(``time.time()``) and ``mono`` is ``time.monotonic()``, which on Linux is one system-wide
clock, so a client in another process can compare its own monotonic readings with it
(e.g. to check that no attempt came before a Retry-After expired).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import BinaryIO, NamedTuple, cast

import orjson


class Record(NamedTuple):
    """One accepted ``/api/track`` body, byte for byte, with its arrival times."""

    t: float
    mono: float
    raw: bytes

    def body(self) -> object:
        """The body decoded (it was valid JSON, or it would not have been accepted)."""
        return orjson.loads(self.raw)

    def as_json(self) -> dict[str, object]:
        """The ``GET /_admin/requests`` item: ``{"t", "mono", "body"}``."""
        return {"t": self.t, "mono": self.mono, "body": orjson.loads(self.raw)}


class Attempt(NamedTuple):
    """One API request, whatever became of it.

    ``status`` is None when no answer was sent (``reason`` hang, reset or refuse);
    ``reason`` is ``ok``, ``auth``, ``invalid`` (400, 404, 405, 411, 413, 415), or the
    fault that fired (see :mod:`ometria_dev.stub.faults`); ``retry_after`` is the seconds
    announced in a Retry-After header, if one was sent.
    """

    t: float
    mono: float
    path: str
    status: int | None
    reason: str
    request_id: str | int | float | None
    retry_after: int | None

    def as_json(self) -> dict[str, object]:
        """The ``GET /_admin/attempts`` item."""
        return self._asdict()


class Recorder:
    """Keeps records and attempts in arrival order, counts statuses, appends a JSON-lines file.

    With ``keep=False`` nothing is kept in memory (for long soak runs): only the counters
    and the file.
    """

    def __init__(self, *, keep: bool = True, record_file: str | os.PathLike[str] | None = None):
        self.keep = keep
        self.records: list[Record] = []
        self.attempts: list[Attempt] = []
        self.by_status: Counter[str] = Counter()
        self.accepted = 0
        # Unbuffered: one write per record, so the file is complete whenever a test reads it
        # and nothing is lost if the process is killed.
        self._file: BinaryIO | None = (
            Path(record_file).open("ab", buffering=0)  # noqa: SIM115 - open for the server's life
            if record_file is not None
            else None
        )

    def accept(self, t: float, mono: float, path: str, raw: bytes, body: dict[str, object]) -> None:
        """Note an accepted track body (and its 200 attempt)."""
        self.accepted += 1
        self.by_status["200"] += 1
        # Validation has made it a string or a number when present.
        request_id = cast("str | int | float | None", body.get("request_id"))
        if self.keep:
            self.records.append(Record(t, mono, raw))
            self.attempts.append(Attempt(t, mono, path, 200, "ok", request_id, None))
        if self._file is not None:
            self._file.write(orjson.dumps({"t": t, "mono": mono, "body": body}) + b"\n")

    def attempt(self, attempt: Attempt) -> None:
        """Note any other API attempt (answered or not)."""
        status = attempt.status
        self.by_status[attempt.reason if status is None else str(status)] += 1
        if self.keep:
            self.attempts.append(attempt)

    def reset(self) -> None:
        """Forget records, attempts and counters (the file is left as it is)."""
        self.records = []
        self.attempts = []
        self.by_status = Counter()
        self.accepted = 0

    def close(self) -> None:
        """Close the record file, if any."""
        if self._file is not None:
            self._file.close()
            self._file = None
