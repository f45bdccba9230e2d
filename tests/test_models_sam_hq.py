"""SAM-HQ backend: strict, hash-checked loading of random-weight checkpoints, batched prompts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.errors import CheckpointError, ParameterError
from models.registry import SAM_HQ_ARCHS, SEGMENTERS, create
from models.segmenters.base import Segmenter, bbox_of
from models.segmenters.sam_hq import (
    OFFICIAL_SHA256,
    SamHQSegmenter,
    save_random_checkpoint,
    sha256_of,
)

torch = pytest.importorskip("torch")
H, W = 96, 128


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = save_random_checkpoint("vit_tiny", tmp_path_factory.mktemp("sam") / "tiny.pth", seed=0)
    return path, sha256_of(path)


@pytest.fixture(scope="module")
def tiny(tiny_ckpt: tuple[Path, str]) -> SamHQSegmenter:
    seg = create(SEGMENTERS, "sam_hq", model_type="vit_tiny", checkpoint=tiny_ckpt[0],
                 sha256=tiny_ckpt[1])  # fmt: skip
    seg.load()
    return seg


@pytest.fixture
def image() -> np.ndarray:
    img = np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)
    img.setflags(write=False)
    return img


def count_calls(module: torch.nn.Module, calls: list) -> torch.utils.hooks.RemovableHandle:
    """Record the keyword arguments of every forward call of ``module``."""
    return module.register_forward_pre_hook(lambda m, a, kw: calls.append(kw), with_kwargs=True)


def test_registered_and_official_hashes_listed() -> None:
    assert set(SAM_HQ_ARCHS) == {"vit_tiny", "vit_b", "vit_l", "vit_h"} == set(OFFICIAL_SHA256)
    assert all(len(h) == 64 for h in OFFICIAL_SHA256.values())
    assert len(set(OFFICIAL_SHA256.values())) == 4


def test_loads_strictly_and_matches_the_saved_weights(tiny, tiny_ckpt) -> None:
    assert isinstance(tiny, Segmenter)
    saved = torch.load(tiny_ckpt[0], weights_only=True)
    loaded = tiny._predictor.model.state_dict()
    assert set(saved) == set(loaded)
    for k in ("mask_decoder.hf_token.weight", "image_encoder.patch_embed.seq.0.c.weight"):
        assert torch.equal(saved[k], loaded[k])


def test_boxes_are_batched_in_one_encoder_and_one_decoder_call(tiny, image) -> None:
    enc, dec = [], []
    handles = [count_calls(tiny._predictor.model.image_encoder, enc),
               count_calls(tiny._predictor.model.mask_decoder, dec)]  # fmt: skip
    try:
        boxes = np.array([[4, 4, 60, 50], [50, 30, 120, 90], [0, 0, W, H]], dtype=np.float32)
        props = tiny.segment(image, boxes=boxes)
    finally:
        for h in handles:
            h.remove()
    assert len(enc) == 1 and len(dec) == 1
    assert dec[0]["sparse_prompt_embeddings"].shape[0] == 3  # all boxes in one batch
    assert dec[0]["hq_token_only"] is False
    assert len(props) == 3
    for p in props:
        assert p.mask.dtype == bool and p.mask.shape == (H, W)
        assert p.area == int(p.mask.sum()) and p.bbox == bbox_of(p.mask)
        assert 0 <= p.predicted_iou <= 1 and 0 <= p.stability_score <= 1


def test_mask_and_point_prompts(tiny, image) -> None:
    coarse = np.zeros((2, H, W), dtype=bool)
    coarse[0, 10:40, 10:50] = True
    coarse[1, 50:90, 60:120] = True
    dec: list = []
    h = count_calls(tiny._predictor.model.mask_decoder, dec)
    try:
        props = tiny.segment(image, masks=coarse, points=np.array([[20.0, 20.0]]))
    finally:
        h.remove()
    assert len(props) == 3 and all(p.mask.shape == (H, W) for p in props)
    assert len(dec) == 2  # the two masks in one call, the point in another
    assert dec[0]["dense_prompt_embeddings"].shape[0] == 2


def test_hq_token_only_is_passed_to_the_decoder(tiny, image) -> None:
    dec: list = []
    h = count_calls(tiny._predictor.model.mask_decoder, dec)
    tiny.hq_token_only = True
    try:
        tiny.segment(image, boxes=np.array([[0, 0, 50, 50]]))
    finally:
        tiny.hq_token_only = False
        h.remove()
    assert dec[0]["hq_token_only"] is True


def test_bad_prompts_are_parameter_errors(tiny, image) -> None:
    with pytest.raises(ParameterError, match="boxes"):
        tiny.segment(image, boxes=np.zeros((2, 3)))
    with pytest.raises(ParameterError, match="masks"):
        tiny.segment(image, masks=np.zeros((1, 5, 5), dtype=bool))
    with pytest.raises(ParameterError, match="image"):
        tiny.segment(np.zeros((H, W), dtype=np.uint8), boxes=np.zeros((1, 4)))


def test_unknown_file_needs_a_configured_hash(tiny_ckpt) -> None:
    path, digest = tiny_ckpt
    with pytest.raises(CheckpointError, match=f"not the official vit_tiny.*sha256: {digest}"):
        SamHQSegmenter(model_type="vit_tiny", checkpoint=path).load()
    with pytest.raises(CheckpointError, match="SHA-256 .* != configured"):
        SamHQSegmenter(model_type="vit_tiny", checkpoint=path, sha256="0" * 64).load()


def test_missing_or_unexpected_keys_fail(tiny_ckpt, tmp_path) -> None:
    state = torch.load(tiny_ckpt[0], weights_only=True)
    state.pop("mask_decoder.hf_token.weight")
    state["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    seg = SamHQSegmenter(model_type="vit_tiny", checkpoint=bad, sha256=sha256_of(bad))
    with pytest.raises(
        CheckpointError, match=r"1 missing keys \['mask_decoder.hf_token.weight'\], 1 unexpected"
    ):
        seg.load()


def test_plain_sam_without_hq_decoder_is_named(tiny_ckpt, tmp_path) -> None:
    state = torch.load(tiny_ckpt[0], weights_only=True)
    plain = {k: v for k, v in state.items() if not k.startswith("mask_decoder.hf_")}
    p = tmp_path / "plain.pth"
    torch.save(plain, p)
    with pytest.raises(CheckpointError, match="without the HQ decoder"):
        SamHQSegmenter(model_type="vit_tiny", checkpoint=p, sha256=sha256_of(p)).load()


def test_unreadable_and_missing_files(tmp_path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        SamHQSegmenter(checkpoint=junk, sha256=sha256_of(junk)).load()
    with pytest.raises(CheckpointError, match="not found.*nothing is downloaded"):
        SamHQSegmenter(checkpoint=tmp_path / "none.pth").load()


def test_bad_arguments() -> None:
    with pytest.raises(ParameterError, match="model_type"):
        SamHQSegmenter(model_type="vit_x", checkpoint="x.pth")
    with pytest.raises(ParameterError, match="sha256"):
        SamHQSegmenter(checkpoint="x.pth", sha256="abc")
    with pytest.raises(ParameterError, match="device"):
        SamHQSegmenter(checkpoint="x.pth", device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_requested_without_cuda(tiny_ckpt) -> None:
    seg = SamHQSegmenter(checkpoint=tiny_ckpt[0], sha256=tiny_ckpt[1], device="cuda")
    with pytest.raises(ParameterError, match="CUDA is not available"):
        seg.load()


@pytest.mark.slow
def test_a_tiny_file_loaded_as_vit_b_says_what_it_is(tiny_ckpt) -> None:
    seg = SamHQSegmenter(model_type="vit_b", checkpoint=tiny_ckpt[0], sha256=tiny_ckpt[1])
    with pytest.raises(CheckpointError, match="looks like vit_tiny"):
        seg.load()


def round_trip(model_type: str, tmp_path: Path, image: np.ndarray, device: str) -> None:
    path = save_random_checkpoint(model_type, tmp_path / f"{model_type}.pth", seed=1)
    seg = SamHQSegmenter(
        model_type=model_type, checkpoint=path, sha256=sha256_of(path), device=device
    )
    seg.load()
    props = seg.segment(image, boxes=np.array([[10, 10, 60, 60]]))
    assert len(props) == 1 and props[0].mask.shape == (H, W)
    path.unlink()


@pytest.mark.slow
def test_vit_b_round_trip(tmp_path, image) -> None:
    round_trip("vit_b", tmp_path, image, "cpu")  # ~1.5 min on a loaded 2-core CPU


@pytest.mark.gpu
@pytest.mark.parametrize("model_type", ["vit_l", "vit_h"])
def test_large_architectures_round_trip_on_cuda(model_type: str, tmp_path, image) -> None:
    round_trip(model_type, tmp_path, image, "cuda")  # 4-7 min each on a 2-core CPU: GPU only


@pytest.mark.gpu
def test_runs_on_cuda(tiny_ckpt, image) -> None:
    seg = SamHQSegmenter(checkpoint=tiny_ckpt[0], sha256=tiny_ckpt[1], device="cuda")
    props = seg.segment(image, boxes=np.array([[10, 10, 60, 60]]))
    assert len(props) == 1 and props[0].mask.shape == (H, W)
