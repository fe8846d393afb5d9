"""The intake driven step by step against the in-memory consumer (no Worker, no thread):
pause state on assignment, admission cuts and rewinds, re-fetching without gap or
duplicate, stopping, commands for partitions gone, and the final commit."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
import structlog
from structlog.testing import capture_logs

from tests.fakes.source import CommitEntry, MemorySource
from worker.flow import FlowLimits, PartitionFlow
from worker.intake import STALL_AFTER, Assignment, Intake
from worker.records import TP, CommitResult, Committed, Record
from worker.repeats import log_reports

A: TP = ("t", 0)
B: TP = ("t", 1)
Offsets = list[tuple[TP, int, str]]


class ManualClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Recorder:
    """A :class:`~worker.intake.Listener` that keeps every call."""

    assigned: list[list[Assignment]] = field(default_factory=list)
    records: list[list[Record]] = field(default_factory=list)
    lost: list[list[TP]] = field(default_factory=list)
    committed: list[list[CommitResult]] = field(default_factory=list)
    stalled: list[dict[TP, int]] = field(default_factory=list)
    errors: list[tuple[str, str, bool]] = field(default_factory=list)

    def on_assigned(self, assignments: list[Assignment]) -> None:
        self.assigned.append(assignments)

    async def on_revoked(self, partitions: list[TP]) -> Offsets:
        raise AssertionError("revokes are driven by the test")

    def on_lost(self, partitions: list[TP]) -> None:
        self.lost.append(partitions)

    def on_records(self, records: list[Record]) -> None:
        self.records.append(records)

    def on_committed(self, results: list[CommitResult]) -> None:
        self.committed.append(results)

    def on_stats(self, lag: dict[TP, int]) -> None: ...

    def on_stalled(self, stalled: dict[TP, int]) -> None:
        self.stalled.append(stalled)

    def on_kafka_error(self, code: str, reason: str, fatal: bool) -> None:
        self.errors.append((code, reason, fatal))

    def handed(self, tp: TP) -> list[int]:
        """Offsets of ``tp`` handed to the loop, in order."""
        return [r.offset for batch in self.records for r in batch if r.tp == tp]


@dataclass
class RecordingSource(MemorySource):
    """The in-memory consumer, keeping what the intake asked it to store and commit."""

    store_calls: list[Offsets] = field(default_factory=list)
    commit_calls: list[tuple[Offsets, bool]] = field(default_factory=list)

    def store(self, offsets: Offsets) -> None:
        self.store_calls.append(list(offsets))
        super().store(offsets)

    def commit(self, offsets: Offsets, *, asynchronous: bool) -> None:
        self.commit_calls.append((list(offsets), asynchronous))
        super().commit(offsets, asynchronous=asynchronous)


class NoRebalance:
    def on_assign(self, partitions: list[TP]) -> None: ...

    def on_revoke(self, partitions: list[TP]) -> None: ...

    def on_lost(self, partitions: list[TP]) -> None: ...


@dataclass
class Bed:
    source: RecordingSource
    listener: Recorder
    intake: Intake
    clock: ManualClock

    def produce(self, tp: TP, count: int, size: int = 10) -> None:
        for _ in range(count):
            self.source.produce(tp[0], b"x" * size, partition=tp[1])

    def assign(self, *tps: TP) -> None:
        """The group assigns ``tps`` (what the rebalance callback does)."""
        self.source.apply_assign(list(tps))
        self.intake.assigned(list(tps))

    def revoke(self, *tps: TP, offsets: Offsets | None = None) -> None:
        """The group revokes ``tps`` after the loop drained them."""
        self.intake.revoked(list(tps), offsets or [])
        self.source.apply_revoke(list(tps))

    def flow(self, tp: TP) -> PartitionFlow:
        return self.intake.admission.flows[tp]

    def release(self, tp: TP, count: int) -> None:
        """The loop's commit covered the first ``count`` records ``tp`` holds."""
        if count == 0:
            return
        flow = self.flow(tp)
        first = self.listener.handed(tp)[flow.released]
        size = sum(self.source.logs[tp][o].size for o in range(first, first + count))
        flow.release(count, size)


def bed(partitions: int = 2, **limits: int) -> Bed:
    source = RecordingSource(partitions={"t": partitions})
    listener = Recorder()
    clock = ManualClock()
    intake = Intake(
        source, listener, FlowLimits(**limits), to_loop=lambda fn, *a: fn(*a), clock=clock
    )
    source.subscribe(["t"], NoRebalance(), intake)
    return Bed(source, listener, intake, clock)


# -- assignment -----------------------------------------------------------------------------


def test_assignment_resumes_a_partition_left_paused_by_an_earlier_ownership() -> None:
    b = bed(partitions=1, max_records=2, max_records_per_partition=2)
    b.produce(A, 5)
    b.assign(A)
    b.intake.step(0)
    b.intake.step(0)  # full: paused
    assert A in b.source.paused
    b.revoke(A)
    assert A in b.source.paused  # librdkafka keeps the flag across the revoke
    b.assign(A)
    assert A not in b.source.paused
    assert b.flow(A).paused is False
    b.intake.step(0)
    # Nothing was committed: the new ownership starts again from offset 0.
    assert [r.offset for r in b.listener.records[-1]] == [0, 1]


def test_assignment_while_stopping_pauses_the_new_partitions() -> None:
    b = bed()
    b.produce(B, 3)
    b.assign(A)
    b.intake.stop_fetching()
    b.intake.step(0)
    b.assign(B)
    assert B in b.source.paused
    assert b.flow(B).paused is True
    b.intake.step(0)
    assert b.listener.records == []


def test_assignment_reports_committed_offsets_and_metadata() -> None:
    b = bed()
    b.produce(A, 8)
    b.source.group_committed[A] = (5, "ow1:meta")
    b.assign(A, B)
    (assignments,) = b.listener.assigned
    assert [(a.tp, a.committed) for a in assignments] == [
        (A, Committed(5, "ow1:meta")),
        (B, Committed(None)),
    ]
    assert assignments[0].flow is b.flow(A)
    b.intake.step(0)
    assert b.listener.handed(A) == [5, 6, 7]


# -- admission ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "limits",
    [
        pytest.param({"max_records": 10, "max_records_per_partition": 5}, id="records"),
        pytest.param({"max_bytes": 100}, id="bytes"),  # shares of 50: five 10-byte records
    ],
)
def test_a_step_hands_over_at_most_the_shares_and_rewinds_the_rest(
    limits: dict[str, int],
) -> None:
    b = bed(**limits)
    b.produce(A, 20)
    b.assign(A, B)
    b.intake.step(0)
    assert len(b.listener.records) == 1
    assert b.listener.handed(A) == [0, 1, 2, 3, 4]
    assert b.source.position[A] == 5  # rewound to the first record not taken
    assert A in b.source.paused
    assert b.flow(A).paused is True
    assert B not in b.source.paused
    b.intake.step(0)
    assert b.listener.handed(A) == [0, 1, 2, 3, 4]  # nothing more while it is full


def test_records_are_fetched_again_after_room_frees_with_no_gap_and_no_duplicate() -> None:
    rng = random.Random(11)
    b = bed(max_records=7, max_records_per_partition=4, max_bytes=300, poll_batch=5)
    for _ in range(300):
        b.produce(rng.choice([A, B]), 1, size=rng.randint(1, 60))
    b.assign(A, B)
    for _ in range(3_000):
        b.intake.step(0)
        assert b.intake.admission.totals()[0] <= 7
        for tp in (A, B):
            held = b.flow(tp).in_flight
            if held and rng.random() < 0.4:
                b.release(tp, rng.randint(1, held))
        if all(len(b.listener.handed(tp)) == len(b.source.logs[tp]) for tp in (A, B)):
            break
    for tp in (A, B):
        assert b.listener.handed(tp) == list(range(len(b.source.logs[tp])))


def test_stop_fetching_pauses_everything_and_rewinds_what_a_poll_still_returned() -> None:
    b = bed(max_records=4, max_records_per_partition=2)
    b.produce(A, 10)
    b.produce(B, 10)
    b.assign(A, B)
    b.intake.step(0)
    handed = len(b.listener.records)
    b.intake.stop_fetching()
    b.intake.apply_commands()
    assert b.source.paused == {A, B}
    assert all(flow.paused for flow in b.intake.admission.flows.values())
    for tp in (A, B):
        b.release(tp, b.flow(tp).in_flight)  # room again: still nothing resumes
    # The consumer still returns what it had fetched before the pause took effect.
    at = b.source.position[A]
    b.source.resume([A])
    b.intake.step(0)
    assert len(b.listener.records) == handed
    assert b.source.position[A] == at
    assert b.source.paused == {A, B}
    b.intake.step(0)
    assert len(b.listener.records) == handed


# -- commands -------------------------------------------------------------------------------


def test_store_and_commit_for_partitions_no_longer_owned_are_dropped() -> None:
    b = bed()
    b.assign(A, B)
    b.revoke(B)
    b.intake.store([(A, 1, ""), (B, 2, "")])
    b.intake.commit([(B, 3, "")])  # nothing of it is ours: not sent at all
    b.intake.commit([(A, 2, "m"), (B, 3, "")])
    assert b.intake.pending()
    b.intake.step(0)
    assert not b.intake.pending()
    assert b.source.store_calls == [[(A, 1, "")]]
    assert b.source.commit_calls == [([(A, 2, "m")], True)]
    b.intake.step(0)  # asynchronous results arrive in the next poll
    assert b.listener.committed[-1] == [CommitResult(A, 2, "m", None)]
    b.intake.lost([A])
    b.source.apply_lose([A])
    assert b.listener.lost == [[A]]
    b.intake.store([(A, 5, "")])
    b.intake.step(0)
    assert [entry for call in b.source.store_calls for entry in call] == [(A, 1, "")]


def test_empty_commands_are_not_queued() -> None:
    b = bed()
    b.intake.store([])
    b.intake.commit([])
    assert not b.intake.pending()
    assert b.intake.commit_final([], timeout=1.0).done()


def test_commit_final_retries_through_stale_generation_until_it_commits() -> None:
    b = bed()
    b.assign(A)
    b.intake.stop_fetching()
    b.source.stale_generation_commits = 3
    done = b.intake.commit_final([(A, 7, "m")], timeout=30.0)
    b.intake.apply_commands()
    assert done.done()
    assert done.result() is None
    assert b.source.stale_generation_commits == 0
    assert [asynchronous for _, asynchronous in b.source.commit_calls] == [False] * 4
    assert b.source.commits == [CommitEntry(A, 7, "m", "sync")]
    assert b.listener.committed == [[CommitResult(A, 7, "m", None)]]


def test_commit_final_gives_up_at_its_timeout_and_still_resolves() -> None:
    b = bed()
    b.assign(A)
    b.intake.stop_fetching()
    b.source.stale_generation_commits = 10**9
    done = b.intake.commit_final([(A, 7, "m")], timeout=0.05)
    b.intake.apply_commands()
    assert done.done()
    assert b.source.commits == []


def test_commit_final_for_partitions_revoked_meanwhile_commits_nothing() -> None:
    b = bed()
    b.assign(A, B)
    done = b.intake.commit_final([(B, 4, "")], timeout=5.0)
    b.revoke(B)
    b.intake.apply_commands()
    assert done.done()
    assert b.source.commit_calls == []


# -- stall watchdog -------------------------------------------------------------------------


def test_a_partition_with_lag_that_receives_nothing_is_rewound_resumed_and_reported() -> None:
    b = bed()
    b.produce(A, 10)
    b.assign(A)
    b.intake.step(0)
    b.release(A, 10)
    b.produce(A, 5)
    b.source.paused.add(A)  # held outside the worker's view (a stuck fetch state)
    b.clock.now += STALL_AFTER + 1
    b.intake.step(0)
    assert b.listener.stalled == [{A: 5}]
    assert A not in b.source.paused
    assert b.source.position[A] == 10
    b.intake.step(0)
    assert b.listener.handed(A) == list(range(15))
    b.clock.now += 10
    b.intake.step(0)
    assert b.listener.stalled == [{A: 5}, {}]  # flowing again


def test_a_partition_without_lag_is_not_stalled() -> None:
    b = bed()
    b.produce(A, 3)
    b.assign(A)
    b.intake.step(0)
    b.release(A, 3)
    b.clock.now += STALL_AFTER + 1
    b.intake.step(0)
    assert b.listener.stalled == []


def test_pausing_and_resuming_for_backpressure_is_one_line_each_then_counted() -> None:
    # On a backlog at small bounds a partition pauses and resumes several times a second:
    # a line each flooded the log (the soak's key mode: 120 lines per 10 s per worker).
    b = bed(partitions=1, max_records=4, max_records_per_partition=4, poll_batch=4)
    b.produce(A, 40)
    b.assign(A)
    with capture_logs() as logs:
        for _ in range(8):  # fill, pause, free the room, resume: eight times over
            b.intake.step(0)
            b.intake.step(0)
            b.release(A, b.flow(A).in_flight)
            b.intake.step(0)
    events = [line["event"] for line in logs]
    assert events.count("partitions_paused") == 1
    assert events.count("partitions_resumed") == 1
    assert len(b.listener.handed(A)) >= 28  # the flow itself went on
    # What the worker's summary says of them: a count of each, then (a quiet interval
    # later) that they ended; both as log lines structlog accepts.
    with capture_logs() as said:
        log_reports(structlog.get_logger("test"), b.intake.repeats.sweep())
        log_reports(structlog.get_logger("test"), b.intake.repeats.sweep())
    repeated = {line["event"]: line["repeated"] for line in said[:2]}
    assert repeated["partitions_paused"] >= 6
    assert repeated["partitions_resumed"] >= 6
    ended = sorted((line["event"], line["of"]) for line in said[2:])
    assert ended == [
        ("repeats_ended", "partitions_paused"),
        ("repeats_ended", "partitions_resumed"),
    ]
