"""Classical segmenter (automatic + prompted GrabCut) and its companion classical embedder."""

from __future__ import annotations

import numpy as np
import pytest

from models.embedders.base import Embedder
from models.embedders.classical import ClassicalEmbedder
from models.errors import ParameterError
from models.registry import EMBEDDERS, SEGMENTERS, create
from models.segmenters.base import Segmenter, bbox_of
from models.segmenters.classical import ClassicalSegmenter
from tests.media import moving_squares, square_masks
from tracker.metrics import jaccard as iou

W, H = 160, 120


def blob_scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A noisy orange ellipse on a noisy blue-grey textured background: (image, truth mask)."""
    h, w = 180, 240
    yy, xx = np.mgrid[:h, :w]
    truth = ((xx - 130) / 55.0) ** 2 + ((yy - 95) / 38.0) ** 2 <= 1.0
    img = np.empty((h, w, 3), dtype=np.float64)
    img[:] = (70, 90, 120)
    img += 25 * np.sin(xx / 7.0)[..., None]  # background stripes
    img[truth] = (230, 140, 40)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), truth


def test_is_a_segmenter_and_registered() -> None:
    seg = create(SEGMENTERS, "classical", max_proposals=4)
    assert isinstance(seg, ClassicalSegmenter) and isinstance(seg, Segmenter)
    assert isinstance(create(EMBEDDERS, "classical"), Embedder)


@pytest.mark.parametrize("i", [0, 7, 19, 26, 33])
def test_automatic_finds_the_squares(i: int) -> None:
    frame = moving_squares(i + 1)[i]
    frame.setflags(write=False)
    props = ClassicalSegmenter().segment(frame)
    red, green = square_masks(i)
    assert max(iou(p.mask, red) for p in props) >= 0.8
    assert max(iou(p.mask, green) for p in props) >= 0.8


def test_automatic_proposals_are_well_formed() -> None:
    frame = moving_squares(5)[4]
    seg = ClassicalSegmenter(max_proposals=1, min_area_frac=0.01)
    props = seg.segment(frame)
    assert len(props) == 1
    for p in props:
        assert p.mask.dtype == bool and p.mask.shape == (H, W)
        assert p.area == int(p.mask.sum()) >= 0.01 * H * W
        assert p.bbox == bbox_of(p.mask)
        assert 0.0 <= p.predicted_iou <= 1.0 and 0.0 <= p.stability_score <= 1.0


def test_automatic_on_a_flat_frame_proposes_nothing_big() -> None:
    flat = np.full((H, W, 3), 90, dtype=np.uint8)
    props = ClassicalSegmenter().segment(flat)
    assert all(p.area <= 0.5 * H * W for p in props)


def test_grabcut_from_box_recovers_the_object(rng: np.random.Generator) -> None:
    img, truth = blob_scene(rng)
    x0, y0, x1, y1 = bbox_of(truth)
    box = np.array([[x0 - 8, y0 - 8, x1 + 8, y1 + 8]], dtype=np.float32)
    (p,) = ClassicalSegmenter().segment(img, boxes=box)
    box_mask = np.zeros_like(truth)
    box_mask[int(y0) - 8 : int(y1) + 8, int(x0) - 8 : int(x1) + 8] = True
    assert iou(p.mask, truth) >= 0.9
    assert iou(p.mask, truth) > iou(box_mask, truth) + 0.15
    assert p.predicted_iou > 0.5


def test_grabcut_from_coarse_mask_improves_it(rng: np.random.Generator) -> None:
    img, truth = blob_scene(rng)
    coarse = np.roll(truth, (6, -7), axis=(0, 1))
    (p,) = ClassicalSegmenter().segment(img, masks=coarse[None])
    assert iou(p.mask, truth) > iou(coarse, truth) + 0.05
    assert iou(p.mask, truth) >= 0.85


def test_point_prompt_selects_the_clicked_square() -> None:
    frame = moving_squares(1)[0]
    red, green = square_masks(0)
    props = ClassicalSegmenter().segment(frame, points=np.array([[25.0, 45.0], [122.0, 32.0]]))
    assert len(props) == 2
    assert iou(props[0].mask, red) >= 0.8
    assert iou(props[1].mask, green) >= 0.8


def test_prompts_come_back_in_order_and_degenerate_box_is_empty(rng: np.random.Generator) -> None:
    img, truth = blob_scene(rng)
    boxes = np.array([[10, 10, 10.5, 60], list(bbox_of(truth))], dtype=np.float32)
    props = ClassicalSegmenter().segment(img, boxes=boxes, masks=truth[None])
    assert len(props) == 3
    assert props[0].area == 0 and props[0].predicted_iou == 0.0
    assert iou(props[1].mask, truth) > 0.8 and iou(props[2].mask, truth) > 0.8


def test_input_is_never_mutated(rng: np.random.Generator) -> None:
    img, truth = blob_scene(rng)
    img.setflags(write=False)
    before = img.copy()
    coarse = truth.copy()
    coarse.setflags(write=False)
    seg = ClassicalSegmenter(grabcut_iters=1)
    seg.segment(img)
    seg.segment(img, boxes=np.array([bbox_of(truth)]), points=np.array([[130.0, 95.0]]))
    seg.segment(img, masks=coarse[None])
    np.testing.assert_array_equal(img, before)
    np.testing.assert_array_equal(coarse, truth)


def test_bad_arguments_raise_parameter_error() -> None:
    with pytest.raises(ParameterError):
        ClassicalSegmenter(max_proposals=0)
    seg = ClassicalSegmenter()
    img = np.zeros((H, W, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="boxes"):
        seg.segment(img, boxes=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="masks"):
        seg.segment(img, masks=np.zeros((1, 5, 5), dtype=bool))
    with pytest.raises(ValueError, match="image"):
        seg.segment(np.zeros((H, W), dtype=np.uint8))


# ------------------------------------------------------------------ classical embedder


def test_embedder_shape_norm_and_determinism() -> None:
    frames = moving_squares(3)
    red, green = square_masks(0)
    emb = ClassicalEmbedder()
    x = emb.embed_images([frames[0], frames[0], frames[0]], [red, green, None])
    assert x.shape == (3, emb.dim) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(x, emb.embed_images(frames[:1] * 3, [red, green, None]))
    empty = emb.embed_images([frames[0]], [np.zeros((H, W), dtype=bool)])
    assert not empty.any()


def test_embedder_similar_objects_high_cosine_different_low(rng: np.random.Generator) -> None:
    frames = moving_squares(12)
    r0, g0 = square_masks(0)
    r9, g9 = square_masks(9)
    noisy = np.clip(frames[9].astype(int) + rng.integers(-15, 16, frames[9].shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    x = ClassicalEmbedder().embed_images([frames[0], noisy, frames[0], noisy], [r0, r9, g0, g9])
    sim = x @ x.T
    assert sim[0, 1] > 0.9 and sim[2, 3] > 0.9  # same square, later frame, noise
    assert sim[0, 2] < 0.5 and sim[1, 3] < 0.5  # red vs green


def test_embedder_on_real_objects(shared_data) -> None:
    from PIL import Image

    root = shared_data / "davis2016"
    seqs = ["bear", "blackswan", "car-shadow"]
    imgs, masks = [], []
    for seq in seqs:
        for i in (0, 15):
            imgs.append(
                np.asarray(Image.open(root / f"JPEGImages/480p/{seq}/{i:05d}.jpg").convert("RGB"))
            )
            png = Image.open(root / f"Annotations/480p/{seq}/{i:05d}.png").convert("L")
            masks.append(np.asarray(png) > 127)
    x = ClassicalEmbedder().embed_images(imgs, masks)
    sim = x @ x.T
    for k in range(len(seqs)):
        same = sim[2 * k, 2 * k + 1]
        others = np.delete(sim[2 * k], [2 * k, 2 * k + 1])
        assert same > 0.85 and same > others.max() + 0.1, (seqs[k], same, others)
