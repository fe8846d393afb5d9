"""The soak's verdicts: pure functions from what was observed to named pass/fail checks.

Nothing here reads a clock or talks to a process, so each rule is unit-tested on
made-up observations (``tests/unit/test_soak_checks.py``). Times are ``time.monotonic()``
readings, which on Linux are one clock for every process on the machine: the stand-in's
arrival times, the soak's kill times and the log lines' arrival times compare directly.

How duplicates are attributed
-----------------------------
Ometria has no idempotency key, so a record can arrive twice. The worker promises (README,
"What it promises"): a SIGKILL repeats at most ``WORKER_MAX_IN_FLIGHT`` records (those
taken and not yet committed); a clean hand-over (SIGTERM, a worker joining or leaving)
repeats nothing. For every two consecutive arrivals of one record, the first at ``m1``
from process P and the next at ``m2``, something between ``m1`` and ``m2`` must explain
the repeat:

1. P was killed (SIGKILL, or it exited by itself) at ``k <= m2``: the repeat counts
   against that kill, whose total must stay within the bound. (Not ``m1 < k``: a request
   P wrote just before it died can reach the stand-in a moment after the soak noted the
   kill; every arrival from P was sent before P died.)
2. else a broker fault (crash and restart, freeze) overlaps ``[m1, m2]``, its window
   stretched by :data:`BROKER_AFTERMATH` (sessions expire and the group rebalances after
   the broker is back): the repeat counts against that fault, which may repeat at most
   the bound per worker alive;
3. else nothing excuses it: a repeat on a clean hand-over (or with no hand-over at all).

A dead letter written twice is judged the same way, with the broker's timestamps and
without knowing its writer: any kill between the two writes excuses it (the timestamp is
taken when the writer hands the record to its producer, before it could die).
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from tests.soak.events import ACCEPT, Planned

#: Seconds after a broker fault ends during which its consequences (sessions expiring,
#: the group rebalancing, commits refused) may still cause a repeat.
BROKER_AFTERMATH: Final = 20.0
#: asyncio may run a timer callback up to its clock resolution early.
TIMER_SLACK: Final = 0.01
#: Kinds of fault that end a process without a drain.
KILLS: Final = frozenset({"sigkill", "self_exit"})
BROKER_FAULTS: Final = frozenset({"broker_crash", "broker_freeze"})
#: Shown per failed check, at most.
EXAMPLES: Final = 10


@dataclass(frozen=True, slots=True)
class Check:
    """One named verdict with the figures behind it."""

    name: str
    passed: bool
    figures: dict[str, Any]
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """For the report file."""
        return {
            "name": self.name,
            "passed": self.passed,
            "figures": self.figures,
            "problems": self.problems,
        }


@dataclass(frozen=True, slots=True)
class Life:
    """One worker process: its slot, when it ran, how it ended."""

    name: str
    slot: str
    started: float
    ended: float | None
    end_cause: str  # sigkill | sigterm | final | self | "" while running
    exit_code: int | None


@dataclass(frozen=True, slots=True)
class Fault:
    """Something the soak did (or saw happen): when, and to which process if any."""

    kind: str  # sigkill, self_exit, sigterm, join, leave, broker_crash, broker_freeze,
    # outage, throttle, restart
    start: float
    end: float
    proc: str | None = None


@dataclass(frozen=True, slots=True)
class Arrival:
    """A request the stand-in accepted: which record, when, from which process."""

    request_id: str
    mono: float
    proc: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Attempt:
    """Any request a stand-in saw (accepted or not), with its process."""

    mono: float
    proc: str
    status: int | None
    retry_after: float | None
    request_id: str | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: float  # seconds, the broker record's timestamp

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name``."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


def _examples(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if len(out) == EXAMPLES:
            out.append("…")
            break
        out.append(item)
    return out


# --- Nothing lost, nothing else -----------------------------------------------------------


def check_lost(plan: Sequence[Planned], arrivals: Sequence[Arrival]) -> Check:
    """Every record that must be accepted was, at least once; nothing else arrived."""
    wanted = {p.request_id for p in plan if p.expect == ACCEPT}
    seen = {a.request_id for a in arrivals}
    missing = sorted(str(i) for i in wanted - seen)
    stray = sorted(seen - {str(i) for i in wanted})
    problems = [f"never accepted: {i}" for i in _examples(missing)]
    problems += [f"accepted but no record must be: {i}" for i in _examples(stray)]
    return Check(
        "lost = 0 (delivered)",
        not missing and not stray,
        {"must_accept": len(wanted), "accepted": len(seen & wanted), "lost": len(missing),
         "unexpected": len(stray)},
        problems,
    )  # fmt: skip


def check_bodies(plan: Sequence[Planned], arrivals: Sequence[Arrival]) -> Check:
    """Every arrival is exactly the body the pipeline maps for its record (as JSON)."""
    expected = {p.request_id: p.body for p in plan if p.expect == ACCEPT}
    wrong: list[str] = []
    checked = 0
    for arrival in arrivals:
        body = expected.get(arrival.request_id)
        if body is None:
            continue
        checked += 1
        if orjson.loads(arrival.body) != orjson.loads(body):
            wrong.append(f"{arrival.request_id}: {arrival.body[:200]!r}")
    return Check(
        "bodies are what the pipeline maps",
        not wrong,
        {"arrivals": checked, "different": len(wrong)},
        _examples(wrong),
    )


def check_committed(committed: Mapping[int, int], end: Mapping[int, int]) -> Check:
    """The group committed every partition to its end: nothing left undone."""
    behind = {p: (committed.get(p, 0), o) for p, o in end.items() if committed.get(p, 0) < o}
    return Check(
        "everything committed",
        not behind,
        {"partitions": len(end), "records": sum(end.values()),
         "uncommitted": sum(o - c for c, o in behind.values())},
        [f"partition {p}: committed {c} of {o}" for p, (c, o) in sorted(behind.items())],
    )  # fmt: skip


_REQUIRED_DLQ: Final = (
    "dlq.reason", "dlq.detail", "dlq.stage", "dlq.source.topic", "dlq.source.partition",
    "dlq.source.offset", "dlq.attempts", "dlq.time",
)  # fmt: skip


def check_dead_letters(
    plan: Sequence[Planned],
    placed: Sequence[tuple[int, int]],
    topic: str,
    dead: Sequence[DeadLetter],
) -> Check:
    """Every record that must be dead-lettered is, with its reason, its original key,
    value and headers byte for byte, and complete ``dlq.*`` headers; nothing else is."""
    where = {pos: index for index, pos in enumerate(placed)}
    must = {placed[i] for i, p in enumerate(plan) if p.expect != ACCEPT}
    found: set[tuple[int, int]] = set()
    wrong: list[str] = []
    reasons: Counter[str] = Counter()
    for letter in dead:
        try:
            source = (
                int(letter.header("dlq.source.partition") or b"x"),
                int(letter.header("dlq.source.offset") or b"x"),
            )
        except ValueError:
            wrong.append(f"dead letter without a source: {letter.headers[-8:]!r}")
            continue
        index = where.get(source)
        if index is None or letter.header("dlq.source.topic") != topic.encode():
            wrong.append(f"dead letter of no record of ours: {source}")
            continue
        planned = plan[index]
        label = f"{source} ({planned.kind})"
        if planned.expect == ACCEPT:
            wrong.append(f"{label}: dead-lettered ({letter.header('dlq.reason')!r}), must be sent")
            continue
        found.add(source)
        reason = (letter.header("dlq.reason") or b"").decode()
        reasons[reason] += 1
        if reason != planned.expect:
            wrong.append(f"{label}: reason {reason!r}, must be {planned.expect!r}")
        if letter.key != planned.key or letter.value != planned.value:
            wrong.append(f"{label}: key or value differ from the original")
        original = list(planned.headers or [])
        if letter.headers[: len(original)] != original:
            wrong.append(f"{label}: original headers differ")
        added = letter.headers[len(original) :]
        if any(not name.startswith("dlq.") for name, _ in added):
            wrong.append(f"{label}: headers other than dlq.* added")
        names = {name for name, _ in added}
        missing = [name for name in _REQUIRED_DLQ if name not in names]
        if missing or not letter.header("dlq.detail"):
            wrong.append(f"{label}: dlq headers missing or empty: {missing or ['dlq.detail']}")
        attempts = letter.header("dlq.attempts")
        if planned.expect == "rejected":
            if letter.header("dlq.http.status") != b"400" or attempts in (None, b"0"):
                wrong.append(f"{label}: a rejected record without its status 400 and attempts")
        elif attempts != b"0":
            wrong.append(f"{label}: dlq.attempts {attempts!r} for a record never sent")
    missing_sources = sorted(must - found)
    problems = _examples(wrong)
    problems += [f"never dead-lettered: {s}" for s in _examples(map(str, missing_sources))]
    return Check(
        "dead letters complete and exact",
        not wrong and not missing_sources,
        {"must_dead_letter": len(must), "dead_lettered": len(found),
         "lost": len(missing_sources), "dead_letter_records": len(dead), "wrong": len(wrong),
         "by_reason": dict(sorted(reasons.items()))},
        problems,
    )  # fmt: skip


# --- Duplicates ---------------------------------------------------------------------------


@dataclass
class Attribution:
    """Repeats, by what explains them."""

    per_kill: dict[str, int] = field(default_factory=dict)  # "sigkill a2" → repeats
    per_broker_fault: dict[str, int] = field(default_factory=dict)
    unexplained: list[str] = field(default_factory=list)
    repeats: int = 0


def _kill_label(fault: Fault) -> str:
    return f"{fault.kind} {fault.proc} @{fault.start:.1f}"


def _broker_label(fault: Fault) -> str:
    return f"{fault.kind} @{fault.start:.1f}"


def attribute(
    arrivals: Sequence[Arrival],
    dead: Sequence[DeadLetter],
    faults: Sequence[Fault],
    clock_offset: float,
) -> Attribution:
    """Explain every repeat by a kill or a broker fault, as the module docstring says.

    ``clock_offset`` is the wall-clock time (``time.time()``) minus the time the
    observations are in, to place the broker's record timestamps on their clock.
    """
    result = Attribution()
    kills = sorted((f for f in faults if f.kind in KILLS), key=lambda f: f.start)
    brokers = [f for f in faults if f.kind in BROKER_FAULTS]
    for fault in kills:
        result.per_kill[_kill_label(fault)] = 0
    for fault in brokers:
        result.per_broker_fault[_broker_label(fault)] = 0

    def explain(m1: float, m2: float, proc: str | None, what: str) -> None:
        result.repeats += 1
        for kill in kills:
            if proc is None:
                explains = m1 < kill.start <= m2  # a dead letter: any kill between the writes
            else:
                explains = kill.proc == proc and kill.start <= m2
            if explains:
                result.per_kill[_kill_label(kill)] += 1
                return
        for broker in brokers:
            if broker.start <= m2 and m1 <= broker.end + BROKER_AFTERMATH:
                result.per_broker_fault[_broker_label(broker)] += 1
                return
        result.unexplained.append(what)

    by_id: dict[str, list[Arrival]] = defaultdict(list)
    for arrival in arrivals:
        by_id[arrival.request_id].append(arrival)
    for request_id, seen in by_id.items():
        seen.sort(key=lambda a: a.mono)
        for first, again in itertools.pairwise(seen):
            explain(
                first.mono,
                again.mono,
                first.proc,
                f"{request_id}: {first.proc} @{first.mono:.1f}, again {again.proc} "
                f"@{again.mono:.1f}",
            )
    letters: dict[tuple[bytes | None, bytes | None], list[float]] = defaultdict(list)
    for letter in dead:
        source = (letter.header("dlq.source.partition"), letter.header("dlq.source.offset"))
        letters[source].append(letter.timestamp - clock_offset)
    for (partition, offset), times in letters.items():
        times.sort()
        for m1, m2 in itertools.pairwise(times):
            # Broker timestamps are whole milliseconds: widen by one.
            explain(
                m1 - 0.001,
                m2 + 0.001,
                None,
                f"dead letter of {partition!r}/{offset!r} written @{m1:.1f} and @{m2:.1f}",
            )
    return result


def check_kill_repeats(attribution: Attribution, bound: int) -> Check:
    """Each SIGKILL (or exit by itself) repeats at most ``bound`` records."""
    over = {k: n for k, n in attribution.per_kill.items() if n > bound}
    counts = list(attribution.per_kill.values())
    return Check(
        "duplicates per kill within WORKER_MAX_IN_FLIGHT",
        not over,
        {"kills": len(counts), "bound": bound, "repeats": sum(counts),
         "max_per_kill": max(counts, default=0), "per_kill": attribution.per_kill},
        [f"{k}: {n} repeats > {bound}" for k, n in over.items()],
    )  # fmt: skip


def check_broker_repeats(attribution: Attribution, bound: int, workers: int) -> Check:
    """A broker fault repeats at most the bound per worker alive (each worker's
    uncommitted records)."""
    limit = bound * workers
    over = {k: n for k, n in attribution.per_broker_fault.items() if n > limit}
    return Check(
        "duplicates per broker fault within the bound per worker",
        not over,
        {"faults": len(attribution.per_broker_fault), "bound": limit,
         "per_fault": attribution.per_broker_fault},
        [f"{k}: {n} repeats > {limit}" for k, n in over.items()],
    )  # fmt: skip


def check_clean_repeats(attribution: Attribution) -> Check:
    """No repeat that no kill or broker fault explains: clean hand-overs repeat nothing."""
    return Check(
        "zero duplicates on clean hand-overs",
        not attribution.unexplained,
        {"repeats": attribution.repeats,
         "after_kills": sum(attribution.per_kill.values()),
         "after_broker_faults": sum(attribution.per_broker_fault.values()),
         "unexplained": len(attribution.unexplained)},
        _examples(attribution.unexplained),
    )  # fmt: skip


# --- Order --------------------------------------------------------------------------------


def check_order(
    plan: Sequence[Planned],
    placed: Sequence[tuple[int, int]],
    arrivals: Sequence[Arrival],
    ordering: str,
) -> Check:
    """First deliveries keep offset order per lane: per partition in ``partition`` mode,
    per (partition, key) in ``key`` mode."""
    index_of = {p.request_id: i for i, p in enumerate(plan) if p.expect == ACCEPT}
    first: dict[str, float] = {}
    for arrival in arrivals:
        if arrival.request_id not in first or arrival.mono < first[arrival.request_id]:
            first[arrival.request_id] = arrival.mono
    lanes: dict[tuple[int, bytes | None], list[tuple[float, int]]] = defaultdict(list)
    for request_id, mono in first.items():
        index = index_of.get(request_id)
        if index is None:
            continue
        partition, offset = placed[index]
        lane = (partition, plan[index].key if ordering == "key" else None)
        lanes[lane].append((mono, offset))
    broken: list[str] = []
    inversions = 0
    for lane, seen in lanes.items():
        seen.sort()
        previous = -1
        for _, offset in seen:
            if offset < previous:
                inversions += 1
                broken.append(f"lane {lane!r}: offset {offset} first arrived after {previous}")
            previous = max(previous, offset)
    unit = "key" if ordering == "key" else "partition"
    return Check(
        f"first-delivery order per {unit}",
        not broken,
        {"lanes": len(lanes), "records": len(first), "inversions": inversions},
        _examples(broken),
    )


# --- Retry-After --------------------------------------------------------------------------


def check_retry_after(
    attempts: Sequence[Attempt], lives: Sequence[Life], answer_delay: float, grace: float
) -> Check:
    """No process starts an attempt inside a Retry-After window it was told.

    A 429 closes the worker-wide gate (README): the window of a 429 that arrived at
    ``m`` is ``(m + answer_delay + grace, m + Retry-After)`` for every attempt of the same
    process, where ``answer_delay`` is the longest the stand-in delays an answer and
    ``grace`` the time the process may take to read it (attempts already on their way
    when it did are not "told"). A 503 with Retry-After is a floor for that record's own
    retry: no attempt of the same request id by the same process before ``m + Retry-After``.
    ``attempts`` are those of all stand-ins (one per slot, see :mod:`tests.soak.bed`).
    """
    ended = {life.name: life.ended for life in lives}
    by_proc: dict[str, list[Attempt]] = defaultdict(list)
    for attempt in attempts:
        by_proc[attempt.proc].append(attempt)
    throttles = floors = 0
    broken: list[str] = []
    worst = 0.0
    for proc, seen in by_proc.items():
        seen.sort(key=lambda a: a.mono)
        monos = [a.mono for a in seen]
        last = ended.get(proc)
        for told in seen:
            wait = told.retry_after
            if wait is None or wait <= 0:
                continue
            close = told.mono + wait - TIMER_SLACK
            if last is not None:
                close = min(close, last)
            if told.status == 429:
                throttles += 1
                opens = told.mono + answer_delay + grace
                lo, hi = bisect.bisect_right(monos, opens), bisect.bisect_left(monos, close)
                for early in seen[lo:hi]:
                    worst = max(worst, close - early.mono)
                    broken.append(
                        f"{proc}: attempt @{early.mono:.3f} inside the 429 window of "
                        f"@{told.mono:.3f} (Retry-After {wait:g}s)"
                    )
            elif told.request_id is not None:
                floors += 1
                start = bisect.bisect_right(monos, told.mono)
                for later in seen[start : bisect.bisect_left(monos, close)]:
                    if later.request_id == told.request_id:
                        worst = max(worst, close - later.mono)
                        broken.append(
                            f"{proc}: {told.request_id} retried @{later.mono:.3f}, "
                            f"{later.mono - told.mono:.3f}s after a {told.status} with "
                            f"Retry-After {wait:g}s"
                        )
    return Check(
        "Retry-After honoured per process",
        not broken,
        {"throttled_answers": throttles, "floors_503": floors, "early_attempts": len(broken),
         "worst_s": round(worst, 3), "grace_s": grace},
        _examples(broken),
    )  # fmt: skip


# --- Logs and exits -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Logs:
    """What one process's output showed (see :class:`tests.soak.bed.LogFacts`)."""

    proc: str
    lines: int
    broken: int
    broken_examples: list[str]
    secret_hits: list[str]
    stderr_lines: int
    arrivals: list[tuple[float, str]]  # lines that are not per-record: (mono, event)


def check_log_lines(logs: Sequence[Logs]) -> Check:
    """Every stdout line of every worker is exactly one JSON object."""
    broken = sum(log.broken for log in logs)
    examples = [e for log in logs for e in log.broken_examples]
    return Check(
        "every log line is one JSON object",
        broken == 0,
        {"processes": len(logs), "lines": sum(log.lines for log in logs), "broken": broken},
        _examples(examples),
    )


def check_secrets(logs: Sequence[Logs], secrets: int) -> Check:
    """No secret value the workers were given appears in their stdout or stderr."""
    hits = [h for log in logs for h in log.secret_hits]
    return Check(
        "no secret in logs",
        not hits,
        {"secrets_watched": secrets,
         "lines_scanned": sum(log.lines + log.stderr_lines for log in logs), "hits": len(hits)},
        _examples(hits),
    )  # fmt: skip


def check_log_volume(
    logs: Sequence[Logs], faults: Sequence[Fault], window: float, budget: int
) -> Check:
    """No log flood: at most ``budget`` lines per process in any ``window`` seconds, per-
    record lines (one per dead letter or retry streak, by design) aside. Figures: the
    busiest window overall and the busiest one that overlaps a broker fault."""
    worst = broker_worst = 0
    worst_where = ""
    over: list[str] = []
    brokers = [f for f in faults if f.kind in BROKER_FAULTS]
    for log in logs:
        times = sorted(t for t, _ in log.arrivals)
        busiest, busiest_at = 0, 0.0
        for i, start in enumerate(times):
            count = bisect.bisect_right(times, start + window) - i
            if count > busiest:
                busiest, busiest_at = count, start
            if any(
                b.start <= start + window and start <= b.end + BROKER_AFTERMATH for b in brokers
            ):
                broker_worst = max(broker_worst, count)
        if busiest > worst:
            worst, worst_where = busiest, f"{log.proc} @{busiest_at:.1f}"
        if busiest > budget:
            end = busiest_at + window
            events = Counter(e[:60] for t, e in log.arrivals if busiest_at <= t <= end)
            over.append(
                f"{log.proc} @{busiest_at:.1f}: {busiest} lines, {dict(events.most_common(3))}"
            )
    return Check(
        f"no log flood (≤ {budget} lines per {window:g} s per process)",
        not over,
        {"busiest_window_lines": worst, "busiest_at": worst_where,
         "busiest_during_broker_faults": broker_worst},
        _examples(over),
    )  # fmt: skip


def check_exits(lives: Sequence[Life]) -> Check:
    """Every SIGTERM (and the final stop) ended with exit 0 within the drain timeout; no
    worker exited by itself."""
    wrong = [
        f"{life.name}: {life.end_cause} exit {life.exit_code}"
        for life in lives
        if life.end_cause == "self"
        or (life.end_cause not in ("sigkill", "") and life.exit_code != 0)
    ]
    causes = Counter(life.end_cause or "running" for life in lives)
    return Check(
        "clean exits (SIGTERM → 0, none by itself)",
        not wrong,
        {"processes": len(lives), "ends": dict(sorted(causes.items()))},
        _examples(wrong),
    )


# --- Figures (not pass/fail: they depend on the machine) ----------------------------------


def recovery_figures(
    faults: Sequence[Fault],
    arrivals: Sequence[Arrival],
    produced: Mapping[str, float],
) -> list[dict[str, Any]]:
    """For each Ometria outage and broker fault: seconds from its end to the next
    acceptance, and until every record produced before its end had arrived; and which
    other faults began meanwhile (a kill or an outage there lengthens both)."""
    first: dict[str, float] = {}
    for arrival in arrivals:
        if arrival.request_id not in first or arrival.mono < first[arrival.request_id]:
            first[arrival.request_id] = arrival.mono
    monos = sorted(first.values())
    out: list[dict[str, Any]] = []
    for fault in sorted(faults, key=lambda f: f.start):
        if fault.kind not in ("outage", *BROKER_FAULTS):
            continue
        after = bisect.bisect_right(monos, fault.end)
        backlog = [first[i] for i, t in produced.items() if t <= fault.end and i in first]
        cleared = max(backlog) - fault.end if backlog and max(backlog) > fault.end else 0.0
        meanwhile = sorted(
            {
                other.kind
                for other in faults
                if other is not fault
                and other.kind not in ("restart", "burst")
                and fault.start < other.start <= fault.end + cleared
            }
        )
        out.append(
            {
                "fault": fault.kind,
                "at_s": round(fault.start, 1),
                "lasted_s": round(fault.end - fault.start, 1),
                "first_acceptance_after_s": round(monos[after] - fault.end, 2)
                if after < len(monos)
                else None,
                "backlog_cleared_after_s": round(cleared, 2),
                "other_faults_meanwhile": meanwhile,
            }
        )
    return out
