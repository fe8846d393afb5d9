"""How big and how rough a soak is: the short form (CI) and the long form (the figures
of docs/reliability.md), and the schedule of faults drawn from a seed."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any, Final


@dataclass(frozen=True, slots=True)
class Profile:
    """One soak's size and faults, per ordering mode."""

    name: str
    valid: int  # valid events, per mode
    invalid: int  # records with a known dead-letter reason, per mode
    fuzz: int  # mutated records, per mode
    partitions: int
    visitors: int  # distinct record keys
    produce_s: float  # records are produced over this long, faults happen meanwhile
    burst_share: float  # share of the records produced in bursts (backlogs, pauses)
    bursts: int  # bursts at random moments, besides one before each SIGKILL
    kills: int  # SIGKILLs of a running worker (restarted after a second or two)
    terms: int  # SIGTERMs of a running worker (restarted once it exited)
    joins: int  # times a third worker joins and later leaves (SIGTERM)
    broker_crashes: int  # broker SIGKILLed, started again over its data
    broker_down_s: float  # how long it stays down
    broker_freezes: int  # broker SIGSTOPped, then SIGCONTed
    broker_freeze_s: float
    outages: int  # Ometria answers 503 + Retry-After to everything
    outage_s: float
    throttles: int  # bursts of 429s
    throttle_s: float
    throttle_rate: float  # share of requests answered 429 during a burst
    error_rate: float  # share answered 503 (no Retry-After) all along
    max_in_flight: int  # WORKER_MAX_IN_FLIGHT: the duplicate bound per kill
    max_in_flight_per_partition: int
    max_record_bytes: int
    finish_s: float  # after the last fault, how long everything may take to be done

    def with_overrides(self, **changes: Any) -> Profile:
        """A copy with some fields changed (the command line's knobs)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


SHORT: Final = Profile(
    name="short", valid=4000, invalid=150, fuzz=300, partitions=8, visitors=400,
    produce_s=75, burst_share=0.3, bursts=2, kills=1, terms=1, joins=1, broker_crashes=1,
    broker_down_s=4, broker_freezes=0, broker_freeze_s=10, outages=1, outage_s=6,
    throttles=2, throttle_s=3, throttle_rate=0.5, error_rate=0.05, max_in_flight=400,
    max_in_flight_per_partition=100, max_record_bytes=32768, finish_s=120,
)  # fmt: skip

LONG: Final = Profile(
    name="long", valid=100_000, invalid=2_000, fuzz=5_000, partitions=8, visitors=2_000,
    produce_s=900, burst_share=0.3, bursts=8, kills=15, terms=4, joins=2, broker_crashes=2,
    broker_down_s=8, broker_freezes=1, broker_freeze_s=10, outages=2, outage_s=20,
    throttles=12, throttle_s=4, throttle_rate=0.5, error_rate=0.05, max_in_flight=1000,
    max_in_flight_per_partition=250, max_record_bytes=32768, finish_s=600,
)  # fmt: skip

PROFILES: Final = {"short": SHORT, "long": LONG}


@dataclass(frozen=True, slots=True)
class Action:
    """One fault at ``at`` seconds after the mode's start."""

    at: float
    kind: str  # sigkill, sigterm, join, leave, broker_crash, broker_freeze, outage, throttle, burst
    retry_after: int = 1  # throttle: the Retry-After announced


#: Seconds without faults at the start, while the group forms.
WARM_UP: Final = 8.0


def schedule(profile: Profile, rng: random.Random) -> list[Action]:
    """The faults of one mode, spread over the production time in a random order; joins
    and leaves alternate (a worker leaves only after it joined). The run keeps broker
    faults apart from clean hand-overs as it goes (:mod:`tests.soak.run`)."""
    kinds = (
        ["sigkill"] * profile.kills
        + ["sigterm"] * profile.terms
        + ["member"] * (2 * profile.joins)
        + ["broker_crash"] * profile.broker_crashes
        + ["broker_freeze"] * profile.broker_freezes
        + ["outage"] * profile.outages
        + ["throttle"] * profile.throttles
        + ["burst"] * profile.bursts
    )
    rng.shuffle(kinds)
    span = (profile.produce_s - WARM_UP) / max(len(kinds), 1)
    actions: list[Action] = []
    joined = False
    for index, drawn in enumerate(kinds):
        at = WARM_UP + span * (index + rng.uniform(0.2, 0.8))
        kind = drawn
        if drawn == "member":
            kind, joined = ("leave" if joined else "join"), not joined
        actions.append(Action(round(at, 1), kind, retry_after=rng.choice([1, 1, 2])))
    return actions
