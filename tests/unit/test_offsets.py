"""Commit watermark (the first offset taken and not done), what is at risk until the
broker acknowledges a commit, and the commit metadata naming offsets finished beyond it."""

from __future__ import annotations

import base64
import random
import time
import zlib
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.offsets import (
    METADATA_MAX_CHARS,
    METADATA_MAX_SPAN,
    METADATA_PREFIX,
    PartitionOffsets,
    decode_done,
    encode_done,
)

SETTINGS = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])


def size_of(offset: int) -> int:
    """A distinct size per offset, so byte accounting errors show."""
    return 10 + offset


@pytest.mark.parametrize(
    ("taken", "done", "watermark", "ahead", "at_risk"),
    [
        ([], [], None, set(), 0),
        ([0], [], 0, set(), 1),
        ([0], [0], 1, set(), 0),
        ([0, 1, 2], [1, 2], 0, {1, 2}, 3),  # done ahead of 0 is still at risk
        ([0, 1, 2], [1, 2, 0], 3, set(), 0),
        ([5, 6, 9], [5], 6, set(), 2),  # gaps (compaction, transaction markers)
        ([5, 6, 9], [6, 5], 9, set(), 1),
        ([5, 6, 9], [9], 5, {9}, 3),
        ([5, 6, 9], [9, 6, 5], 10, set(), 0),
    ],
)
def test_watermark(
    taken: list[int], done: list[int], watermark: int | None, ahead: set[int], at_risk: int
) -> None:
    offsets = PartitionOffsets()
    for o in taken:
        offsets.take(o, size_of(o))
    for o in done:
        offsets.done(o)
    assert offsets.watermark() == watermark
    assert offsets.uncommitted == len(taken)  # nothing is safe before a commit
    position = offsets.position()
    if watermark is None:
        assert position is None
        return
    assert position is not None
    mark, metadata = position
    assert mark == watermark
    assert decode_done(mark, metadata) == ahead
    assert (metadata == "") == (not ahead)
    # Committing at the watermark releases exactly the finished offsets below it.
    below = [o for o in taken if o < watermark]
    assert offsets.committed(watermark) == (len(below), sum(map(size_of, below)))
    assert offsets.uncommitted == at_risk
    assert offsets.uncommitted_bytes() == sum(size_of(o) for o in taken if o >= watermark)


def test_offsets_must_rise() -> None:
    offsets = PartitionOffsets()
    offsets.take(3)
    with pytest.raises(ValueError, match="must rise"):
        offsets.take(2)
    with pytest.raises(ValueError, match="must rise"):
        offsets.take(3)


def test_to_commit_only_when_moved() -> None:
    offsets = PartitionOffsets()
    assert offsets.to_commit() is None
    offsets.take(0)
    offsets.take(1)
    assert offsets.to_commit() == (0, "")
    offsets.committed(0)
    assert offsets.to_commit() is None
    offsets.done(1)
    assert offsets.to_commit() is None  # the commit point stays at 0
    offsets.done(0)
    assert offsets.to_commit() == (2, "")


def test_to_store_only_returns_when_something_moved() -> None:
    offsets = PartitionOffsets()
    assert offsets.to_store() is None  # nothing taken
    offsets.take(0)
    offsets.take(1)
    offsets.take(2)
    assert offsets.to_store() == (0, "")
    assert offsets.to_store() is None
    offsets.take(3)  # taking moves neither the watermark nor the finished set
    assert offsets.to_store() is None
    offsets.done(2)
    stored = offsets.to_store()
    assert stored is not None
    assert stored[0] == 0
    assert decode_done(0, stored[1]) == {2}
    assert offsets.to_store() is None
    offsets.done(1)  # the finished set moved, the watermark did not
    stored = offsets.to_store()
    assert stored is not None
    assert decode_done(*stored) == {1, 2}
    offsets.done(0)
    assert offsets.to_store() == (3, "")
    assert offsets.to_store() is None
    offsets.committed(3)
    assert offsets.to_store() is None


def test_to_store_is_quiet_at_a_position_already_committed() -> None:
    offsets = PartitionOffsets()
    offsets.take(7)
    offsets.done(7)
    offsets.committed(8)
    assert offsets.to_store() is None


def test_uncommitted_counts_until_the_broker_acknowledges() -> None:
    offsets = PartitionOffsets()
    for o in range(5):
        offsets.take(o, size_of(o))
    offsets.done(0)
    offsets.done(1)
    offsets.done(3)
    assert offsets.uncommitted == 5  # done is not safe until committed
    assert offsets.committed(2) == (2, size_of(0) + size_of(1))
    assert offsets.uncommitted == 3
    assert offsets.uncommitted_bytes() == sum(size_of(o) for o in (2, 3, 4))
    assert offsets.committed(1) == (0, 0)  # a late, older acknowledgement releases nothing
    assert offsets.to_commit() is None  # the older acknowledgement did not move it back
    offsets.done(2)
    offsets.done(4)
    assert offsets.committed(5) == (3, size_of(2) + size_of(3) + size_of(4))
    assert offsets.uncommitted == 0
    assert offsets.uncommitted_bytes() == 0


def test_random_completion_order_never_commits_an_unfinished_offset() -> None:
    rng = random.Random(7)
    offsets = PartitionOffsets()
    taken = sorted(rng.sample(range(10_000), 2_000))
    for o in taken:
        offsets.take(o, 1)
    pending = list(taken)
    rng.shuffle(pending)
    finished: set[int] = set()
    for i, o in enumerate(pending):
        offsets.done(o)
        finished.add(o)
        mark = offsets.watermark()
        assert mark is not None
        # Everything below the watermark is finished; the watermark itself is not, unless
        # it is one past the last taken.
        assert all(t in finished for t in taken if t < mark)
        assert mark == taken[-1] + 1 or mark not in finished
        if i % 50 == 0:
            # What the metadata names beyond the watermark is always finished.
            position = offsets.position()
            assert position is not None
            assert decode_done(*position) <= finished
    assert offsets.watermark() == taken[-1] + 1
    assert offsets.position() == (taken[-1] + 1, "")
    assert offsets.uncommitted == 2_000
    assert offsets.committed(taken[-1] + 1) == (2_000, 2_000)
    assert offsets.uncommitted == 0


# -- commit metadata ---------------------------------------------------------------------


def check_encoding(watermark: int, done: set[int]) -> frozenset[int]:
    """Encode and decode; check the invariants that hold whether or not the set fits."""
    text = encode_done(watermark, done)
    assert len(text) <= METADATA_MAX_CHARS
    ahead = {o for o in done if o > watermark}
    decoded = decode_done(watermark, text)
    assert decoded <= ahead  # never an offset that was not done
    if decoded:
        # A prefix in offset order: the farthest offsets are the ones left out.
        cut = max(decoded)
        assert decoded == {o for o in ahead if o <= cut}
    # However dense, the bitset of the nearest 8,000 offsets fits: those are always kept.
    assert {o for o in ahead if o <= watermark + 8_000} <= decoded
    return decoded


watermarks = st.integers(min_value=0, max_value=2**62)


@SETTINGS
@given(watermark=watermarks, relative=st.sets(st.integers(-50, 100_000), max_size=300))
def test_few_finished_offsets_round_trip_exactly(watermark: int, relative: set[int]) -> None:
    done = {watermark + r for r in relative}  # some at or below the watermark: ignored
    assert check_encoding(watermark, done) == {o for o in done if o > watermark}


@SETTINGS
@given(
    watermark=watermarks,
    span=st.integers(1, 100_000),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32),
)
def test_any_finished_offsets_decode_to_a_prefix_of_them(
    watermark: int, span: int, density: float, seed: int
) -> None:
    rng = random.Random(seed)
    done = {watermark + 1 + i for i in rng.sample(range(span), int(span * density))}
    decoded = check_encoding(watermark, done)
    if len(done) <= 300:
        assert decoded == done


@pytest.mark.parametrize("span", [20_000, 100_000])
def test_a_dense_random_set_that_does_not_fit_keeps_its_nearest_offsets(span: int) -> None:
    rng = random.Random(span)
    done = {1_000 + i for i in range(1, span + 1) if rng.random() < 0.5}
    decoded = check_encoding(1_000, done)
    assert decoded != done  # too many for METADATA_MAX_CHARS
    assert len(decoded) > 1_000  # but the cut keeps what fits, not nothing


def test_everything_finished_ahead_compresses_into_the_limit() -> None:
    done = set(range(1, 100_001))
    assert check_encoding(0, done) == done


@cache
def deflate_bomb() -> str:
    """zlib of 100 MB of 0xFF bytes (about 100 KB), as commit metadata."""
    deflate = zlib.compressobj(9)
    chunk = b"\xff" * 1_000_000
    packed = b"".join([deflate.compress(chunk) for _ in range(100)] + [deflate.flush()])
    return METADATA_PREFIX + base64.urlsafe_b64encode(packed).decode()


def legal_bomb() -> str:
    """A deflate bomb short enough for the broker's default metadata limit (4096)."""
    packed = zlib.compress(b"\xff" * 2_000_000, 9)
    text = METADATA_PREFIX + base64.urlsafe_b64encode(packed).decode()
    assert len(text) < 4096
    return text


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param("", id="empty"),
        pytest.param("hello", id="foreign"),
        pytest.param(METADATA_PREFIX, id="prefix-only"),
        pytest.param(METADATA_PREFIX + "!!!!", id="not-base64"),
        pytest.param(METADATA_PREFIX + "abc", id="bad-padding"),
        pytest.param(METADATA_PREFIX + "A" * 100_000, id="zero-bytes"),
        pytest.param(
            METADATA_PREFIX + base64.urlsafe_b64encode(b"not zlib at all").decode(), id="not-zlib"
        ),
        pytest.param(encode_done(0, {3, 5})[:-6], id="truncated"),
        pytest.param("ow0:" + encode_done(0, {3, 5})[4:], id="wrong-prefix"),
        pytest.param(" " + encode_done(0, {3, 5}), id="leading-space"),
        pytest.param(METADATA_PREFIX + "é" * 50, id="non-ascii"),
        pytest.param("legal-bomb", id="legal-size-deflate-bomb"),
        pytest.param("bomb", id="deflate-bomb-100MB"),
    ],
)
def test_hostile_metadata_decodes_to_a_bounded_set(metadata: str) -> None:
    if metadata == "bomb":
        metadata = deflate_bomb()
    elif metadata == "legal-bomb":
        metadata = legal_bomb()
    committed = 1_000
    started = time.perf_counter()
    decoded = decode_done(committed, metadata)
    took = time.perf_counter() - started
    assert isinstance(decoded, frozenset)
    assert len(decoded) <= METADATA_MAX_SPAN
    assert all(committed < o <= committed + METADATA_MAX_SPAN for o in decoded)
    assert took < 20.0  # never inflates 100 MB (about 1 s here for the capped 4 Mi bits)
    if not metadata.startswith(METADATA_PREFIX):
        assert decoded == frozenset()


def test_a_metadata_made_at_another_watermark_names_only_offsets_above_the_commit() -> None:
    text = encode_done(100, {101, 105})
    assert decode_done(100, text) == {101, 105}
    assert decode_done(0, text) == {1, 5}  # relative to the commit it came with
