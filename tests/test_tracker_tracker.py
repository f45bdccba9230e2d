"""Automatic-mode Tracker on synthetic frames, plus the RLE round trip it relies on."""

from __future__ import annotations

import numpy as np
import pytest

from models.embedders.classical import ClassicalEmbedder
from models.segmenters.base import MaskProposal, bbox_of
from models.segmenters.classical import ClassicalSegmenter
from tests.media import moving_squares
from tests.media import square_masks as truth
from tracker.metrics import jaccard as iou
from tracker.tracker import Tracker
from tracker.types import RLE, KeyframeReason, Perception

W, H = 160, 120


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def read_only_frames(n: int) -> list[np.ndarray]:
    frames = moving_squares(n)
    for f in frames:
        f.setflags(write=False)
    return frames


class FixedSegmenter:
    """Fake segmenter returning given masks, counting its calls."""

    def __init__(self, masks: list[np.ndarray]) -> None:
        self.masks = masks
        self.calls = 0

    def segment(self, image, *, boxes=None, points=None, masks=None) -> list[MaskProposal]:
        self.calls += 1
        return [MaskProposal(m, bbox_of(m), int(m.sum()), 0.9, 0.9) for m in self.masks]


def make(segmenter=None, **kw) -> Tracker:
    return Tracker(segmenter or ClassicalSegmenter(), ClassicalEmbedder(), stream_id="cam0", **kw)


def run(tracker: Tracker, frames: list[np.ndarray]) -> list[Perception]:
    return [tracker.step(f, i / 12.0, frame_idx=i) for i, f in enumerate(frames)]


def test_stable_ids_and_boxes_follow_the_squares() -> None:
    frames = read_only_frames(34)  # the red square wraps around after frame 36
    before = [f.copy() for f in frames]
    out = run(make(), frames)
    for which in (0, 1):  # red, green
        ious = {iou(s.mask_rle.decode(), truth(0)[which]): s.track_id for s in out[0].tracks}
        track_id = ious[max(ious)]
        for i, p in enumerate(out):
            s = next(s for s in p.tracks if s.track_id == track_id)
            assert s.visible and s.label == "object" and s.age == i
            assert box_iou(s.bbox, bbox_of(truth(i)[which])) >= 0.9, (which, i, s.bbox)
            assert iou(s.mask_rle.decode(), truth(i)[which]) >= 0.9
            assert len({s.track_id for s in p.tracks}) == len(p.tracks) == 2
    assert all(np.array_equal(a, b) for a, b in zip(frames, before, strict=True))


def test_perception_fields_and_descriptors() -> None:
    p = make().step(read_only_frames(1)[0], 0.5, frame_idx=7)
    assert (p.stream_id, p.frame_idx, p.t, p.width, p.height) == ("cam0", 7, 0.5, W, H)
    for s in p.tracks:
        m = s.mask_rle.decode()
        assert m.shape == (H, W) and s.bbox == bbox_of(m) and 0 <= s.score <= 1
        assert s.descriptor.dtype == np.float32
        assert abs(float(np.linalg.norm(s.descriptor)) - 1) < 1e-5


def test_keyframe_reasons() -> None:
    frames = []
    for i, f in enumerate(moving_squares(40)):  # the red square slowly turns orange
        f[np.all(f == (220, 40, 40), axis=2)] = (220, 40 + 4 * i, 40)
        f.setflags(write=False)
        frames.append(f)
    tr = make(keyframe_gap=10)
    out = run(tr, frames[:25])
    assert out[0].keyframe.reason is KeyframeReason.REFERENCE
    assert out[0].keyframe.image is frames[0] and set(out[0].keyframe.track_ids) == {1, 2}
    periodic = [
        p.frame_idx for p in out if p.keyframe and p.keyframe.reason is KeyframeReason.PERIODIC
    ]
    assert periodic and all(i >= 10 for i in periodic)
    trig = tr.step(frames[25], 25 / 12, frame_idx=25, force_keyframe=True)
    assert trig.keyframe.reason is KeyframeReason.TRIGGER and trig.keyframe.frame_idx == 25
    assert tr.stats()["keyframes"] == sum(p.keyframe is not None for p in out) + 1


def test_new_track_keyframe_and_max_objects() -> None:
    red, green = truth(0)
    seg = FixedSegmenter([red])
    tr = make(seg, max_objects=2, segment_every=100)
    frame = read_only_frames(1)[0]
    assert len(tr.step(frame, 0.0, frame_idx=0).tracks) == 1
    extra = np.zeros_like(red)
    extra[90:110, 20:50] = True
    props = [MaskProposal(m, bbox_of(m), int(m.sum()), 0.9, 0.9) for m in (red, green, extra)]
    p = tr.step(frame, 0.1, frame_idx=1, proposals=props)
    assert p.keyframe.reason is KeyframeReason.NEW_TRACK
    assert len(p.tracks) == 2 and seg.calls == 1  # given proposals replace the segmenter
    assert tr.stats()["tracks_created"] == 2


def test_lost_track_is_dropped_after_max_missed() -> None:
    red, _ = truth(0)
    seg = FixedSegmenter([red])
    tr = make(seg, segment_every=1, max_missed=2)
    frame = read_only_frames(1)[0]
    tr.step(frame, 0.0, frame_idx=0)
    seg.masks = []  # the object is no longer proposed
    visible = [tr.step(frame, i * 0.1, frame_idx=i).tracks for i in range(1, 5)]
    assert [len(v) for v in visible] == [1, 1, 0, 0]
    assert not visible[0][0].visible
    assert tr.stats()["tracks_dropped"] == 1


def test_reset_clears_tracks_but_ids_keep_growing() -> None:
    frames = read_only_frames(3)
    tr = make()
    ids_a = {s.track_id for s in tr.step(frames[0], 0.0, frame_idx=0).tracks}
    tr.reset()
    p = tr.step(frames[1], 1.0, frame_idx=100)
    assert p.keyframe.reason is KeyframeReason.REFERENCE
    assert ids_a.isdisjoint({s.track_id for s in p.tracks})
    assert tr.stats()["frames"] == 2 and tr.stats()["segmentations"] == 2


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (64, 48)])
def test_rle_round_trip(rng: np.random.Generator, shape: tuple[int, int]) -> None:
    cases = [np.zeros(shape, bool), np.ones(shape, bool), rng.uniform(size=shape) < 0.5]
    corner = np.zeros(shape, bool)
    corner[0, 0] = True
    cases.append(corner)
    for _ in range(20):
        cases.append(rng.uniform(size=shape) < rng.uniform())
    for m in cases:
        rle = RLE.encode(m)
        assert rle.counts[0] == 0 or not m[0, 0]
        assert sum(rle.counts) == m.size and rle.area == int(m.sum())
        np.testing.assert_array_equal(rle.decode(), m)
        np.testing.assert_array_equal(RLE.from_json(rle.to_json()).decode(), m)
