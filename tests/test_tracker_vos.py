"""Semi-supervised VOS on real DAVIS-2016 frames, on synthetic squares, and the J/F measures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.media import moving_squares
from tracker.metrics import f_measure, jaccard, seg2bmap
from tracker.propagate import FlowPropagator
from tracker.vos import VOSTracker

DAVIS_SEQS = ("blackswan", "bear", "car-shadow")
N_FRAMES = 15


def load_davis(root: Path, seq: str, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """First ``n`` frames (``uint8[480, 854, 3]``, read-only) and masks (``bool``) of ``seq``."""
    names = sorted((root / "JPEGImages/480p" / seq).glob("*.jpg"))[:n]
    frames, masks = [], []
    for p in names:
        img = np.asarray(Image.open(p).convert("RGB"))
        img.setflags(write=False)
        frames.append(img)
        png = Image.open(root / "Annotations/480p" / seq / f"{p.stem}.png").convert("L")
        masks.append(np.asarray(png) > 127)
    return frames, masks


def run_vos(preset: str, frames: list[np.ndarray], first: np.ndarray) -> list[np.ndarray]:
    vos = VOSTracker(preset=preset)
    vos.start(frames[0], first)
    return [vos.step(f) for f in frames[1:]]


@pytest.fixture(scope="module")
def davis(shared_data: Path) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    root = shared_data / "davis2016"
    return {seq: load_davis(root, seq, N_FRAMES) for seq in DAVIS_SEQS}


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["quality", "fast"])
def test_vos_beats_zero_motion_on_davis(davis, preset: str) -> None:
    ours, still = [], []
    for seq, (frames, masks) in davis.items():
        first = masks[0].astype(np.uint8) * 255  # DAVIS object id 255, as in the PNGs
        out = run_vos(preset, frames, first)
        assert all(o.dtype == np.uint8 and set(np.unique(o)) <= {0, 255} for o in out)
        j = np.mean([jaccard(o == 255, gt) for o, gt in zip(out, masks[1:], strict=True)])
        j0 = np.mean([jaccard(masks[0], gt) for gt in masks[1:]])
        assert j > j0, (seq, j, j0)
        ours.append(j)
        still.append(j0)
    margin = 0.1 if preset == "quality" else 0.05
    assert np.mean(ours) >= np.mean(still) + margin, (ours, still)
    if preset == "quality":
        assert np.mean(ours) >= 0.8


def squares_labels(i: int, ids: tuple[int, int] = (3, 7)) -> np.ndarray:
    lab = np.zeros((120, 160), dtype=np.int32)
    x = 10 + (i * 3) % 110
    lab[30:60, x : x + 30] = ids[0]
    y = 20 + (i * 2) % 75
    lab[y : y + 25, 110:135] = ids[1]
    return lab


@pytest.mark.parametrize("preset", ["quality", "fast"])
def test_vos_keeps_object_ids_on_synthetic_squares(preset: str) -> None:
    frames = moving_squares(30)
    vos = VOSTracker(preset=preset, keyframe_budget=3)
    vos.start(frames[0], squares_labels(0))
    for i in range(1, 30):
        frames[i].setflags(write=False)
        out = vos.step(frames[i])
        assert out.dtype == np.int32 and set(np.unique(out)) <= {0, 3, 7}
        truth = squares_labels(i)
        for obj in (3, 7):
            assert jaccard(out == obj, truth == obj) >= 0.8, (i, obj)
    assert 2 <= vos.keyframes_kept() <= 6
    assert set(vos.keyframes_per_object()) == {3, 7}


def test_keyframes_stay_bounded_on_a_long_video() -> None:
    """300 frames of a square slowly changing colour: memory fills to the budget, never beyond."""
    vos = VOSTracker(preset="quality", keyframe_budget=4, keyframe_gap=5)
    base = np.full((64, 80, 3), 90, dtype=np.uint8)
    lab = np.zeros((64, 80), dtype=np.uint8)
    lab[20:40, 20:40] = 1

    def frame(i: int) -> np.ndarray:
        img = base.copy()
        img[20:40, 20:40] = (200, 40 + (2 * i) % 160, 40 + (5 * i) % 160)
        return img

    vos.start(frame(0), lab)
    for i in range(1, 300):
        out = vos.step(frame(i))
        assert vos.keyframes_kept() <= 4
    assert vos.keyframes_kept() == 4
    assert vos._objects[0].memory.evictions > 10
    assert vos._objects[0].memory.entries[0].frame_idx == 0
    assert jaccard(out == 1, lab == 1) > 0.4  # still on the object (corners erode slowly)


def test_vos_errors() -> None:
    with pytest.raises(ValueError, match="preset"):
        VOSTracker(preset="best")
    vos = VOSTracker()
    with pytest.raises(RuntimeError, match="start"):
        vos.step(np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="shape"):
        vos.start(np.zeros((8, 8, 3), dtype=np.uint8), np.zeros((4, 4), dtype=np.uint8))


def test_flow_propagator_moves_a_mask_and_labels() -> None:
    frames = moving_squares(6)
    fp = FlowPropagator(scale=0.5)
    lab = squares_labels(0, ids=(1, 2)).astype(np.uint8)
    moved = fp.propagate(frames[0], frames[5], lab == 1)
    assert moved.dtype == bool and jaccard(moved, squares_labels(5) == 3) >= 0.8
    labels = fp.propagate_labels(frames[0], frames[5], lab)
    assert labels.dtype == np.uint8
    assert jaccard(labels == 2, squares_labels(5) == 7) >= 0.8


# ------------------------------------------------------------------ metrics


def square(h: int, w: int, y0: int, x0: int, size: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0 : y0 + size, x0 : x0 + size] = True
    return m


def test_jaccard_known_answers() -> None:
    a = square(20, 20, 0, 0, 10)
    b = square(20, 20, 0, 5, 10)  # overlap 10x5 = 50, union 150
    assert jaccard(a, b) == pytest.approx(50 / 150)
    assert jaccard(a, a) == 1.0
    empty = np.zeros((20, 20), dtype=bool)
    assert jaccard(empty, empty) == 1.0
    assert jaccard(a, empty) == 0.0
    assert jaccard(a.astype(np.uint8) * 255, a) == 1.0
    with pytest.raises(ValueError):
        jaccard(a, np.zeros((5, 5), dtype=bool))


def test_seg2bmap_marks_a_one_pixel_outline() -> None:
    m = square(10, 10, 2, 2, 4)
    b = seg2bmap(m)
    # inside pixels whose east/south/south-east neighbour differs: right column + bottom row of the
    # square (7) plus the outside pixels left of and above it that border it (4 + 4 + 1 corner)
    assert b.dtype == bool and not b[0, 0] and b[2, 1] and b[1, 2] and b[5, 5] and not b[3, 3]
    assert int(b.sum()) == 16


def test_f_measure_known_answers() -> None:
    h, w = 100, 100  # diagonal 141 px: bound_th 0.008 → 2 px tolerance
    a = square(h, w, 20, 20, 40)
    assert f_measure(a, a) == 1.0
    assert f_measure(a, square(h, w, 21, 21, 40)) == 1.0  # 1 px shift is within tolerance
    assert f_measure(a, square(h, w, 70, 70, 20)) == 0.0  # far apart: nothing matches
    empty = np.zeros((h, w), dtype=bool)
    assert f_measure(empty, empty) == 1.0 and f_measure(a, empty) == 0.0
    # a shift of 5 px: the edges parallel to the shift stay matched, the other two do not
    f5 = f_measure(a, square(h, w, 20, 25, 40))
    assert 0.4 < f5 < 0.6
    assert f_measure(a, square(h, w, 20, 25, 40), bound_th=6) == 1.0  # tolerance in pixels


def brute_force_f(pred: np.ndarray, gt: np.ndarray, radius: int) -> float:
    """Boundary F by explicit nearest-boundary-pixel distances (reference for f_measure)."""
    pb, gb = np.argwhere(seg2bmap(pred)), np.argwhere(seg2bmap(gt))
    if len(pb) == 0 or len(gb) == 0:
        return float(len(pb) == len(gb))
    d2 = ((pb[:, None, :] - gb[None, :, :]) ** 2).sum(-1)
    precision = np.mean(d2.min(1) <= radius**2)
    recall = np.mean(d2.min(0) <= radius**2)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def test_f_measure_matches_brute_force(rng: np.random.Generator) -> None:
    import cv2

    for _ in range(10):
        masks = []
        for _ in range(2):
            m = np.zeros((48, 64), dtype=np.uint8)
            for _ in range(3):
                c = (int(rng.integers(0, 64)), int(rng.integers(0, 48)))
                cv2.ellipse(
                    m, c, (int(rng.integers(3, 15)), int(rng.integers(3, 15))), 0, 0, 360, 1, -1
                )
            masks.append(m > 0)
        r = int(np.ceil(0.008 * np.hypot(48, 64)))
        assert f_measure(*masks) == pytest.approx(brute_force_f(*masks, r))


def test_flow_confidence_flags_forward_backward_disagreement() -> None:
    vos = VOSTracker(preset="quality")
    h, w = 60, 80
    back = np.zeros((h, w, 2), dtype=np.float32)
    back[..., 0] = -4.0  # every pixel came from 4 px to its left...
    fwd = -back  # ... and the forward flow takes it back: consistent
    maps = FlowPropagator.maps(back)
    conf = vos._flow_confidence(back, fwd, maps)
    assert conf.shape == (h, w) and conf.min() > 0.95
    bad = fwd.copy()
    bad[:, : w // 2] = 0.0  # the forward flow forgets the motion on the left half
    conf = vos._flow_confidence(back, bad, maps)
    assert conf[:, : w // 4].max() < 0.1  # 4 px error against a ~1.4 px tolerance
    assert conf[:, 3 * w // 4 :].min() > 0.9


def test_unreliable_flow_only_lowers_the_warped_masks_claim() -> None:
    vos = VOSTracker(preset="quality")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    first = np.zeros((40, 40), dtype=np.uint8)
    first[10:30, 10:30] = 1
    vos.start(img, first)
    obj = vos._objects[0]
    idx = vos._colour.index(img)
    soft = first.astype(np.float32)
    vos._conf = np.ones((40, 40), dtype=np.float32)
    trusted = vos._posterior(obj, soft, idx)
    vos._conf = np.zeros((40, 40), dtype=np.float32)
    doubted = vos._posterior(obj, soft, idx)
    inside, outside = first > 0, first == 0
    assert np.all(doubted[inside] <= trusted[inside] + 1e-6)
    assert np.any(doubted[inside] < trusted[inside] - 0.1)
    np.testing.assert_allclose(doubted[outside], trusted[outside], atol=1e-6)
