"""Refinement gate, re-acquisition and pluggable eviction, in the Tracker and the VOSTracker."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from models.embedders.classical import ClassicalEmbedder
from models.errors import ParameterError
from models.segmenters.base import MaskProposal, bbox_of
from tests.media import moving_squares
from tests.media import square_masks as truth
from tracker.keyframes import KeyframeMemory
from tracker.metrics import jaccard as iou
from tracker.refine import RefinementGate, guided_filter, mask_iou
from tracker.tracker import Tracker
from tracker.vos import VOSTracker

W, H = 160, 120


class BoxRefiner:
    """Fake prompted segmenter: each box comes back as a mask, moved by ``shift`` pixels."""

    def __init__(self, shift: int = 0) -> None:
        self.shift = shift
        self.calls: list[int] = []

    def segment(self, image, *, boxes=None, points=None, masks=None) -> list[MaskProposal]:
        self.calls.append(len(boxes))
        out = []
        for x0, y0, x1, y1 in np.asarray(boxes, dtype=int):
            m = np.zeros(image.shape[:2], dtype=bool)
            m[y0:y1, max(0, x0 + self.shift) : max(0, x1 + self.shift)] = True
            out.append(MaskProposal(m, bbox_of(m), int(m.sum()), 0.9, 0.9))
        return out


class ListSegmenter:
    """Fake automatic segmenter returning the masks it is told to."""

    def __init__(self, masks: list[np.ndarray]) -> None:
        self.masks = masks

    def segment(self, image, *, boxes=None, points=None, masks=None) -> list[MaskProposal]:
        return [MaskProposal(m, bbox_of(m), int(m.sum()), 0.9, 0.9) for m in self.masks]


def test_gate_accepts_only_above_tau() -> None:
    a = np.zeros((10, 10), dtype=bool)
    a[:, :5] = True
    b = np.zeros_like(a)
    b[:, 1:6] = True  # IoU 4/6
    gate = RefinementGate(tau=0.59)
    assert gate.acceptance_rate is None
    kept, v = gate(a, b)
    assert kept is b and v == pytest.approx(4 / 6)
    c = np.zeros_like(a)
    c[:, 3:8] = True  # IoU 2/8
    kept, _ = gate(a, c)
    assert kept is a and gate.tried == 2 and gate.accepted == 1 and gate.acceptance_rate == 0.5
    with pytest.raises(ParameterError):
        RefinementGate(tau=1.5)
    assert mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0


def test_guided_filter_keeps_a_step_edge() -> None:
    guide = np.zeros((40, 40), dtype=np.float32)
    guide[:, 20:] = 1.0
    src = np.zeros_like(guide)
    src[:, 18:] = 1.0  # a probability map whose edge is 2 px off the image edge
    out = guided_filter(guide, src, 4, 1e-4)
    assert out[:, 22:].min() > 0.9 and out[:, :12].max() < 0.1
    assert out[:, 18:20].mean() < 0.5  # pulled toward the image edge


@pytest.mark.parametrize("shift, accepted", [(0, True), (25, False)])
def test_tracker_refines_through_the_gate(shift: int, accepted: bool) -> None:
    frames = moving_squares(12)
    red, green = truth(0)
    refiner = BoxRefiner(shift)
    tr = Tracker(ListSegmenter([red, green]), ClassicalEmbedder(), stream_id="s",
                 segment_every=100, refiner=refiner, refine_every=5)  # fmt: skip
    for i, f in enumerate(frames):
        p = tr.step(f, i / 12, frame_idx=i)
    assert refiner.calls == [2, 2]  # steps 5 and 10, both tracks in one call each time
    st = tr.stats()
    assert st["refinements"] == 4 and st["refined_accepted"] == (4 if accepted else 0)
    assert st["refine_acceptance"] == (1.0 if accepted else 0.0)
    red11 = truth(11)[0]
    best = max(iou(s.mask_rle.decode(), red11) for s in p.tracks)
    assert best >= 0.85  # a rejected refinement never replaced the propagated mask


def test_tracker_reacquires_a_lost_object_with_its_id(caplog) -> None:
    frame = moving_squares(1)[0]
    red, green = truth(0)
    seg = ListSegmenter([red, green])
    tr = Tracker(seg, ClassicalEmbedder(), stream_id="s", segment_every=1, max_missed=1)
    first = {
        s.track_id: iou(s.mask_rle.decode(), red) for s in tr.step(frame, 0, frame_idx=0).tracks
    }
    red_id = max(first, key=first.get)
    hidden = frame.copy()
    hidden[red] = 90  # the red square is occluded
    seg.masks = [green]
    for i in range(1, 5):
        p = tr.step(hidden, i / 12, frame_idx=i)
    assert red_id not in {s.track_id for s in p.tracks} and tr.stats()["lost_kept"] == 1
    seg.masks = [red, green]
    with caplog.at_level(logging.INFO, logger="tracker.tracker"):
        p = tr.step(frame, 5 / 12, frame_idx=5)
    assert red_id in {s.track_id for s in p.tracks}
    assert tr.stats()["reacquired"] == 1 and tr.stats()["tracks_created"] == 2
    assert f"re-acquired track {red_id}" in caplog.text


def test_tracker_does_not_reacquire_a_different_object() -> None:
    frame = moving_squares(1)[0]
    red, green = truth(0)
    seg = ListSegmenter([red])
    tr = Tracker(seg, ClassicalEmbedder(), stream_id="s", segment_every=1, max_missed=0)
    tr.step(frame, 0, frame_idx=0)
    seg.masks = []
    tr.step(frame, 0.1, frame_idx=1)
    blue = frame.copy()
    blue[red] = (30, 30, 220)  # something else appears in the same place
    seg.masks = [red]
    tr.step(blue, 0.2, frame_idx=2)
    assert tr.stats()["reacquired"] == 0 and tr.stats()["tracks_created"] == 2


def test_vos_refiner_is_gated_and_batched() -> None:
    frames = moving_squares(11)
    lab = np.zeros((H, W), dtype=np.uint8)
    red, green = truth(0)
    lab[red], lab[green] = 1, 2
    for shift, accepted in ((0, 4), (40, 0)):
        refiner = BoxRefiner(shift)
        vos = VOSTracker(preset="fast", refiner=refiner, refine_every=5)
        vos.start(frames[0], lab)
        for f in frames[1:]:
            out = vos.step(f)
        assert refiner.calls == [2, 2]
        st = vos.stats()
        assert st["refinements"] == 4 and st["refined_accepted"] == accepted
        assert iou(out == 1, truth(10)[0]) >= 0.8


def test_vos_counts_an_object_lost_and_reacquired(caplog) -> None:
    frames = moving_squares(30)
    lab = np.zeros((H, W), dtype=np.uint8)
    lab[truth(0)[0]] = 1
    vos = VOSTracker(preset="quality")
    vos.start(frames[0], lab)
    with caplog.at_level(logging.INFO, logger="tracker.vos"):
        for i in range(1, 30):
            f = frames[i].copy()
            if 10 <= i < 14:
                f[truth(i)[0]] = 90  # hidden for four frames
            out = vos.step(f)
    st = vos.stats()
    assert st["lost"] == 1 and st["reacquired"] == 1
    assert "object 1 lost" in caplog.text and "object 1 re-acquired" in caplog.text
    assert iou(out == 1, truth(29)[0]) >= 0.7


def test_pluggable_eviction(rng: np.random.Generator) -> None:
    mem = KeyframeMemory(budget=3, min_gap=0, max_similarity=1.01, eviction="oldest")
    for i in range(6):
        mem.offer(i, rng.normal(size=8), 1.0)
    assert [e.frame_idx for e in mem.entries] == [0, 4, 5] and mem.evictions == 3
    mem = KeyframeMemory(budget=2, min_gap=0, max_similarity=1.01, eviction=lambda e, s: 0)
    mem.offer(0, rng.normal(size=8), 1.0)
    mem.offer(1, rng.normal(size=8), 1.0)
    with pytest.raises(ParameterError, match="non-reference"):
        mem.offer(2, rng.normal(size=8), 1.0)
    with pytest.raises(ParameterError, match="eviction"):
        KeyframeMemory(eviction="random")
