"""KeyframeMemory: bounded, reference kept, HQ-SMem eviction of the least similar keyframe."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tracker.keyframes import KeyframeMemory


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_bounded_over_10000_offers_and_reference_kept(rng: np.random.Generator) -> None:
    mem = KeyframeMemory(budget=10, min_gap=3)
    first = unit(rng.normal(size=32))
    assert mem.offer(0, first, 1.0)
    admitted = 0
    for i in range(1, 10_000):
        admitted += mem.offer(i, rng.normal(size=32), float(rng.uniform()), force=bool(i % 7 == 0))
        assert len(mem) <= 10
        ref = mem.entries[0]
        assert ref.reference and ref.frame_idx == 0
    assert admitted > 1000  # it kept cycling, not just filling once
    assert len(mem) == 10 and mem.evictions == admitted - 9
    assert sum(e.reference for e in mem.entries) == 1
    np.testing.assert_allclose(mem.reference.descriptor, first)


def test_min_gap_between_admissions(rng: np.random.Generator) -> None:
    mem = KeyframeMemory(budget=50, min_gap=30)
    kept = [i for i in range(300) if mem.offer(i, rng.normal(size=8), 1.0, force=True)]
    assert kept == list(range(0, 300, 30))
    assert np.all(np.diff([e.frame_idx for e in mem.entries]) >= 30)


def test_redundant_candidates_need_force() -> None:
    mem = KeyframeMemory(budget=5, min_gap=0, max_similarity=0.95)
    d = unit(np.array([1.0, 0.0, 0.0]))
    assert mem.offer(0, d, 1.0)
    assert not mem.offer(1, d, 1.0)  # same appearance: not novel
    assert not mem.offer(2, d + 0.01, 1.0)
    assert mem.offer(3, d, 1.0, force=True)
    assert mem.offer(4, np.array([0.0, 1.0, 0.0]), 1.0)
    assert [e.frame_idx for e in mem.entries] == [0, 3, 4]


def test_evicts_least_similar_to_current_never_reference(caplog: pytest.LogCaptureFixture) -> None:
    mem = KeyframeMemory(budget=3, min_gap=0, max_similarity=0.999)
    e = np.eye(4, dtype=np.float32)
    mem.offer(0, e[0], 1.0)  # reference
    mem.offer(1, e[1], 1.0)
    mem.offer(2, e[2], 1.0)
    current = unit(e[1] + 0.9 * e[3])  # like frame 1, unlike frames 0 and 2
    with caplog.at_level(logging.DEBUG, logger="tracker.keyframes"):
        assert mem.offer(3, current, 1.0)
    assert [k.frame_idx for k in mem.entries] == [0, 1, 3]  # frame 2 evicted, not reference 0
    assert mem.evictions == 1
    assert any("evicted keyframe 2" in r.getMessage() for r in caplog.records)
    current = unit(e[2] + e[3])  # unlike the reference: still keeps it
    assert mem.offer(4, current, 1.0, force=True)
    assert mem.entries[0].frame_idx == 0 and len(mem) == 3


def test_quality_floor_and_budget_of_one(rng: np.random.Generator) -> None:
    mem = KeyframeMemory(budget=4, min_gap=0, min_quality=0.5)
    assert mem.offer(0, rng.normal(size=8), 0.1)  # the reference is always taken
    assert not mem.offer(1, rng.normal(size=8), 0.2, force=True)
    assert mem.offer(2, rng.normal(size=8), 0.9)
    solo = KeyframeMemory(budget=1, min_gap=0)
    for i in range(20):
        solo.offer(i, rng.normal(size=8), 1.0, force=True)
    assert len(solo) == 1 and solo.entries[0].frame_idx == 0


def test_select_returns_reference_then_most_similar() -> None:
    mem = KeyframeMemory(budget=5, min_gap=0)
    e = np.eye(5, dtype=np.float32)
    for i in range(4):
        mem.offer(i, e[i], 1.0)
    picked = mem.select(unit(e[2] + 0.5 * e[3]), 3)
    assert [k.frame_idx for k in picked] == [0, 2, 3]
    assert mem.select(e[1], 0) == []
    mem.clear()
    assert len(mem) == 0 and mem.reference is None
    assert mem.offer(99, e[4], 1.0) and mem.reference.frame_idx == 99


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="budget"):
        KeyframeMemory(budget=0)
    with pytest.raises(ValueError, match="min_gap"):
        KeyframeMemory(min_gap=-1)
