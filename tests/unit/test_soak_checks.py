"""The soak's verdicts (tests/soak/checks.py) on made-up observations: each rule passes
what it must and fails what it must, so a green soak means what it says."""

from __future__ import annotations

import random

import pytest

from tests.soak import checks
from tests.soak.checks import Arrival, Attempt, DeadLetter, Fault, Life, Logs
from tests.soak.events import ACCEPT, Generator, Mix, Planned
from tests.soak.profile import SHORT, schedule


def planned(request_id: str | None, key: bytes = b"k", expect: str = ACCEPT) -> Planned:
    body = None if request_id is None else b'{"request_id":"%s"}' % request_id.encode()
    return Planned(key, b"value", [("h", b"\x00")], "valid", expect, request_id, body)


def arrival(request_id: str, mono: float, proc: str = "a1") -> Arrival:
    return Arrival(request_id, mono, proc, b'{"request_id":"%s"}' % request_id.encode())


# --- attribution of repeats ---------------------------------------------------------------

KILL_A1 = Fault("sigkill", 10.0, 10.0, "a1")
TERM_A1 = Fault("sigterm", 10.0, 11.0, "a1")
CRASH = Fault("broker_crash", 50.0, 60.0)


@pytest.mark.parametrize(
    ("first", "again", "faults", "kills", "brokers", "unexplained"),
    [
        # The first deliverer was killed in between: the kill's.
        (arrival("e", 9.0, "a1"), arrival("e", 12.0, "b1"), [KILL_A1], 1, 0, 0),
        # Another process was killed: nothing explains it.
        (arrival("e", 9.0, "b1"), arrival("e", 12.0, "a2"), [KILL_A1], 0, 0, 1),
        # A request a1 wrote just before it died reached the stand-in after the kill was
        # noted: still that kill's.
        (arrival("e", 10.01, "a1"), arrival("e", 12.0, "b1"), [KILL_A1], 1, 0, 0),
        # Delivered again before the kill: the kill explains nothing.
        (arrival("e", 8.0, "a1"), arrival("e", 9.0, "b1"), [KILL_A1], 0, 0, 1),
        # A clean SIGTERM in between: a repeat on a clean hand-over.
        (arrival("e", 9.0, "a1"), arrival("e", 12.0, "b1"), [TERM_A1], 0, 0, 1),
        # A broker fault in between, or its aftermath: the broker's.
        (arrival("e", 49.0, "a1"), arrival("e", 52.0, "a1"), [CRASH], 0, 1, 0),
        (arrival("e", 70.0, "a1"), arrival("e", 75.0, "b1"), [CRASH], 0, 1, 0),
        # Long after the broker came back: unexplained.
        (arrival("e", 90.0, "a1"), arrival("e", 95.0, "b1"), [CRASH], 0, 0, 1),
    ],
)
def test_a_repeat_is_explained_only_by_a_kill_of_its_deliverer_or_a_broker_fault(
    first: Arrival,
    again: Arrival,
    faults: list[Fault],
    kills: int,
    brokers: int,
    unexplained: int,
) -> None:
    result = checks.attribute([again, first, arrival("other", 1.0)], [], faults, 0.0)

    assert result.repeats == 1
    assert sum(result.per_kill.values()) == kills
    assert sum(result.per_broker_fault.values()) == brokers
    assert len(result.unexplained) == unexplained
    assert checks.check_clean_repeats(result).passed is (unexplained == 0)


def _letter(offset: int, at: float) -> DeadLetter:
    headers = [("dlq.source.partition", b"0"), ("dlq.source.offset", str(offset).encode())]
    return DeadLetter(b"k", b"v", headers, at)


def test_a_dead_letter_written_twice_needs_a_kill_between_the_writes() -> None:
    # Broker timestamps are wall-clock seconds; the offset puts them on the monotonic clock.
    offset = 1000.0
    excused = [_letter(1, offset + 9.0), _letter(1, offset + 12.0)]
    unexcused = [_letter(2, offset + 20.0), _letter(2, offset + 21.0)]

    result = checks.attribute([], excused + unexcused, [KILL_A1], offset)

    assert result.per_kill == {"sigkill a1 @10.0": 1}
    assert len(result.unexplained) == 1
    assert "written" in result.unexplained[0]


def test_each_kill_may_repeat_at_most_the_in_flight_bound() -> None:
    arrivals = []
    for i in range(5):
        arrivals += [arrival(f"e{i}", 9.0, "a1"), arrival(f"e{i}", 12.0, "b1")]
    result = checks.attribute(arrivals, [], [KILL_A1], 0.0)

    assert checks.check_kill_repeats(result, bound=5).passed
    failed = checks.check_kill_repeats(result, bound=4)
    assert not failed.passed
    assert failed.problems == ["sigkill a1 @10.0: 5 repeats > 4"]


def test_a_broker_fault_may_repeat_the_bound_of_every_worker() -> None:
    arrivals = []
    for i in range(7):
        arrivals += [arrival(f"e{i}", 49.0, "a1"), arrival(f"e{i}", 61.0, "b1")]
    result = checks.attribute(arrivals, [], [CRASH], 0.0)

    assert checks.check_broker_repeats(result, bound=3, workers=3).passed
    assert not checks.check_broker_repeats(result, bound=3, workers=2).passed


# --- lost, bodies, dead letters, commits --------------------------------------------------


def test_lost_names_what_never_arrived_and_what_arrived_unasked() -> None:
    plan = [planned("e1"), planned("e2"), planned(None, expect="invalid")]

    result = checks.check_lost(plan, [arrival("e1", 1.0), arrival("x9", 2.0)])

    assert not result.passed
    assert result.figures["lost"] == 1
    assert result.figures["unexpected"] == 1
    assert result.problems == ["never accepted: e2", "accepted but no record must be: x9"]
    assert checks.check_lost(plan, [arrival("e1", 1.0), arrival("e2", 2.0)]).passed


def test_a_body_other_than_the_mapped_one_fails() -> None:
    plan = [planned("e1")]
    changed = Arrival("e1", 1.0, "a1", b'{"request_id":"e1","scope":"view"}')

    assert checks.check_bodies(plan, [arrival("e1", 1.0)]).passed
    assert not checks.check_bodies(plan, [changed]).passed


def test_committed_must_reach_every_partitions_end() -> None:
    assert checks.check_committed({0: 5, 1: 3}, {0: 5, 1: 3}).passed
    behind = checks.check_committed({0: 5}, {0: 5, 1: 3})
    assert not behind.passed
    assert behind.figures["uncommitted"] == 3


TOPIC = "soak-t"


def dead_letter(
    plan_item: Planned, offset: int, reason: str, *, value: bytes | None = None, **extra: bytes
) -> DeadLetter:
    headers = list(plan_item.headers or [])
    dlq = {
        "dlq.reason": reason.encode(),
        "dlq.detail": b"why",
        "dlq.stage": b"decode",
        "dlq.source.topic": TOPIC.encode(),
        "dlq.source.partition": b"0",
        "dlq.source.offset": str(offset).encode(),
        "dlq.attempts": b"0",
        "dlq.time": b"2026-01-01T00:00:00.000Z",
        **extra,
    }
    headers += list(dlq.items())
    return DeadLetter(plan_item.key, plan_item.value if value is None else value, headers, 1.0)


def test_dead_letters_must_be_exact_and_complete() -> None:
    bad = planned(None, expect="undecodable")
    rejected = planned(None, expect="rejected")
    good = planned("e1")
    plan = [good, bad, rejected]
    placed = [(0, 0), (0, 1), (0, 2)]
    exact = [
        dead_letter(bad, 1, "undecodable"),
        dead_letter(rejected, 2, "rejected", **{"dlq.attempts": b"1", "dlq.http.status": b"400"}),
    ]

    assert checks.check_dead_letters(plan, placed, TOPIC, exact).passed

    cases = {
        "value differs": [dead_letter(bad, 1, "undecodable", value=b"other"), exact[1]],
        "wrong reason": [dead_letter(bad, 1, "invalid"), exact[1]],
        "missing": [exact[1]],
        "sent record dead-lettered": [*exact, dead_letter(good, 0, "rejected")],
        "rejected without status": [exact[0], dead_letter(rejected, 2, "rejected")],
    }
    for name, letters in cases.items():
        assert not checks.check_dead_letters(plan, placed, TOPIC, letters).passed, name

    no_detail = DeadLetter(
        exact[0].key, exact[0].value, [h for h in exact[0].headers if h[0] != "dlq.detail"], 1.0
    )
    assert not checks.check_dead_letters(plan, placed, TOPIC, [no_detail, exact[1]]).passed


# --- order --------------------------------------------------------------------------------


def test_order_is_judged_on_first_deliveries_per_lane() -> None:
    plan = [planned("e0", b"k1"), planned("e1", b"k2"), planned("e2", b"k1")]
    placed = [(0, 0), (0, 1), (0, 2)]
    # k2's record overtook k1's first one: fine per key, not per partition.
    overtaken = [arrival("e1", 1.0), arrival("e0", 2.0), arrival("e2", 3.0)]
    # A repeat of e0 after e2 (after a kill) does not break order: first arrivals count.
    repeated = [arrival("e0", 1.0), arrival("e1", 2.0), arrival("e2", 3.0), arrival("e0", 4.0)]

    assert checks.check_order(plan, placed, overtaken, "key").passed
    assert not checks.check_order(plan, placed, overtaken, "partition").passed
    assert checks.check_order(plan, placed, repeated, "partition").passed
    swapped = [arrival("e2", 1.0), arrival("e0", 2.0)]
    result = checks.check_order(plan, placed, swapped, "key")
    assert not result.passed
    assert result.figures["inversions"] == 1


# --- Retry-After --------------------------------------------------------------------------

LIVES = [Life("a1", "a", 0.0, 50.0, "sigkill", -9), Life("a2", "a", 52.0, None, "", None)]


def throttled(at: float, proc: str = "a1", seconds: float = 1.0) -> Attempt:
    return Attempt(at, proc, 429, seconds, "t")


@pytest.mark.parametrize(
    ("later", "early"),
    [
        (Attempt(10.5, "a1", 200, None, "x"), True),  # same process, inside the window
        (Attempt(10.5, "b1", 200, None, "x"), False),  # another process was not told
        (Attempt(10.1, "a1", 200, None, "x"), False),  # on its way before the 429 was read
        (Attempt(11.0, "a1", 200, None, "x"), False),  # after the window
    ],
)
def test_a_429_closes_the_window_for_its_own_process(later: Attempt, early: bool) -> None:
    result = checks.check_retry_after([throttled(10.0), later], LIVES, 0.005, 0.25)

    assert result.passed is not early
    assert result.figures["throttled_answers"] == 1


def test_a_429_told_to_a_killed_process_binds_not_its_successor() -> None:
    attempts = [throttled(49.9, "a1", 5.0), Attempt(52.5, "a2", 200, None, "x")]

    assert checks.check_retry_after(attempts, LIVES, 0.005, 0.25).passed


def test_a_503_retry_after_is_a_floor_for_the_same_record() -> None:
    told = Attempt(10.0, "a1", 503, 3.0, "r1")
    other_record = Attempt(11.0, "a1", 503, None, "r2")
    too_soon = Attempt(12.5, "a1", 200, None, "r1")
    in_time = Attempt(13.0, "a1", 200, None, "r1")

    assert checks.check_retry_after([told, other_record, in_time], LIVES, 0.0, 0.25).passed
    result = checks.check_retry_after([told, too_soon], LIVES, 0.0, 0.25)
    assert not result.passed
    assert "r1 retried" in result.problems[0]


# --- logs and exits -----------------------------------------------------------------------


def logs(proc: str, arrivals: list[tuple[float, str]], broken: int = 0) -> Logs:
    return Logs(proc, len(arrivals), broken, ["{}{}"] if broken else [], [], 0, arrivals)


def test_a_log_flood_is_found_per_process_and_window() -> None:
    calm = logs("a1", [(float(i), "summary") for i in range(100)])
    flood = logs("b1", [(50 + i / 100, "kafka_error") for i in range(150)])
    crash = [Fault("broker_crash", 49.0, 55.0)]

    assert checks.check_log_volume([calm], crash, 10.0, 100).passed
    result = checks.check_log_volume([calm, flood], crash, 10.0, 100)
    assert not result.passed
    assert result.figures["busiest_window_lines"] == 150
    assert result.figures["busiest_during_broker_faults"] == 150
    assert "kafka_error" in result.problems[0]


def test_broken_lines_and_secrets_fail_their_checks() -> None:
    assert checks.check_log_lines([logs("a1", [(1.0, "x")])]).passed
    assert not checks.check_log_lines([logs("a1", [(1.0, "x")], broken=1)]).passed
    leaky = Logs("a1", 1, 0, [], ["a1 stdout: 20-byte secret"], 0, [])
    assert not checks.check_secrets([leaky], 3).passed


@pytest.mark.parametrize(
    ("life", "clean"),
    [
        (Life("a1", "a", 0, 1, "sigterm", 0), True),
        (Life("a1", "a", 0, 1, "final", 0), True),
        (Life("a1", "a", 0, 1, "sigkill", -9), True),
        (Life("a1", "a", 0, 1, "sigterm", -15), False),  # died of the signal: no handler
        (Life("a1", "a", 0, 1, "sigterm-timeout", -9), False),  # did not stop in time
        (Life("a1", "a", 0, 1, "self", 1), False),  # exited without being asked
    ],
)
def test_exits(life: Life, clean: bool) -> None:
    assert checks.check_exits([life]).passed is clean


# --- the plan and the schedule ------------------------------------------------------------


def test_the_plan_is_repeatable_and_each_record_names_one_outcome() -> None:
    mix = Mix(valid=200, invalid=60, fuzz=200, visitors=20, max_record_bytes=4096)
    first = Generator(mix, seed=5, id_prefix="t").plan()
    again = Generator(mix, seed=5, id_prefix="t").plan()

    assert first == again
    kinds = {(p.kind, p.expect) for p in first}
    assert ("valid", ACCEPT) in kinds
    assert {"undecodable", "unknown_schema", "invalid", "too_large"} <= {
        p.expect for p in first if p.kind == "invalid"
    }
    ids = [p.request_id for p in first if p.expect == ACCEPT]
    assert (
        len(ids)
        == len(set(ids))
        == 200 + sum(1 for p in first if p.kind == "fuzz" and p.expect == ACCEPT)
    )


def test_the_schedule_has_every_fault_and_leaves_only_after_joins() -> None:
    actions = schedule(SHORT, random.Random(3))
    kinds = [a.kind for a in actions]

    assert kinds.count("sigkill") == SHORT.kills
    assert kinds.count("broker_crash") == SHORT.broker_crashes
    assert kinds.count("join") == kinds.count("leave") == SHORT.joins
    members = [k for k in kinds if k in ("join", "leave")]
    assert members == ["join", "leave"] * SHORT.joins
    assert [a.at for a in actions] == sorted(a.at for a in actions)


def test_recovery_figures_name_the_faults_that_overlapped() -> None:
    outage = Fault("outage", 10.0, 20.0)
    kill = Fault("sigkill", 21.0, 21.0, "a1")
    arrivals = [arrival("e1", 5.0), arrival("e2", 22.0), arrival("e3", 25.0)]
    produced = {"e1": 4.0, "e2": 12.0, "e3": 21.0}

    (figures,) = checks.recovery_figures([outage, kill], arrivals, produced)

    assert figures["first_acceptance_after_s"] == 2.0
    assert figures["backlog_cleared_after_s"] == 2.0  # e3 was produced after the outage
    assert figures["other_faults_meanwhile"] == ["sigkill"]
