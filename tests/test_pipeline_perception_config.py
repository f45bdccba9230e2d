"""The perception config section: segmenter choice, SAM-HQ checkpoint settings, refinement."""

from __future__ import annotations

import pytest

from models.segmenters.classical import ClassicalSegmenter
from pipeline.config import load_config
from pipeline.errors import ConfigError


def test_classical_is_the_default_without_a_checkpoint() -> None:
    from pipeline.perception import build_segmenter, refinement_kwargs

    cfg = load_config(environ={}).perception
    seg = build_segmenter(cfg)
    assert isinstance(seg, ClassicalSegmenter)
    assert refinement_kwargs(cfg, seg) == {}


def test_sam_hq_needs_a_checkpoint_and_a_valid_hash() -> None:
    with pytest.raises(ConfigError, match="sam_hq needs sam_hq_checkpoint"):
        load_config(environ={}, perception={"segmenter": "sam_hq"})
    with pytest.raises(ConfigError, match="sam_hq_sha256"):
        load_config(environ={}, perception={"sam_hq_sha256": "xyz"})
    with pytest.raises(ConfigError, match="device"):
        load_config(environ={}, perception={"device": "gpu0"})
    with pytest.raises(ConfigError, match="sam_hq_model"):
        load_config(environ={}, perception={"sam_hq_model": "vit_s"})


def test_sam_hq_config_builds_a_lazy_segmenter_and_refiner(tmp_path) -> None:
    from models.segmenters.sam_hq import SamHQSegmenter
    from pipeline.perception import build_segmenter, refinement_kwargs

    digest = "ab" * 32
    env = {"EIDETIC__PERCEPTION__SEGMENTER": "sam_hq",
           "EIDETIC__PERCEPTION__SAM_HQ_CHECKPOINT": str(tmp_path / "none.pth"),
           "EIDETIC__PERCEPTION__SAM_HQ_SHA256": digest,
           "EIDETIC__PERCEPTION__HQ_TOKEN_ONLY": "true"}  # fmt: skip
    cfg = load_config(environ=env).perception
    seg = build_segmenter(cfg)  # nothing is read before the first frame
    assert isinstance(seg, SamHQSegmenter)
    assert (seg.model_type, seg.sha256, seg.device, seg.hq_token_only) == (
        "vit_tiny",
        digest,
        "cpu",
        True,
    )
    kw = refinement_kwargs(cfg, seg)
    assert kw == {"refiner": seg, "refine_every": 10, "refine_gate": 0.59}


def _davis_frames(shared_data, tmp_path, n: int):
    from tests.conftest import need

    seq = need(shared_data / "davis2016" / "JPEGImages" / "480p" / "blackswan")
    frames = tmp_path / "frames"
    frames.mkdir()
    for f in sorted(seq.iterdir())[:n]:
        (frames / f.name).write_bytes(f.read_bytes())
    return frames, shared_data / "davis2016" / "Annotations" / "480p" / "blackswan" / "00000.png"


def test_track_with_a_bad_sam_hq_checkpoint_is_a_config_error(tmp_path, shared_data) -> None:
    from pipeline.api import Eidetic

    frames, first = _davis_frames(shared_data, tmp_path, 2)
    ckpt = tmp_path / "sam.pth"
    ckpt.write_bytes(b"junk")
    app = Eidetic(None, config=load_config(environ={}, perception={
        "segmenter": "sam_hq", "sam_hq_checkpoint": str(ckpt), "sam_hq_sha256": "0" * 64}))  # fmt: skip
    with pytest.raises(ConfigError, match="sam_hq_checkpoint: .*SHA-256"):
        app.track(frames, first, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_track_refines_with_sam_hq_end_to_end(tmp_path, shared_data) -> None:
    from models.segmenters.sam_hq import save_random_checkpoint, sha256_of
    from pipeline.api import Eidetic

    frames, first = _davis_frames(shared_data, tmp_path, 3)
    ckpt = save_random_checkpoint("vit_tiny", tmp_path / "tiny.pth")
    cfg = load_config(environ={}, perception={
        "segmenter": "sam_hq", "sam_hq_checkpoint": str(ckpt), "sam_hq_sha256": sha256_of(ckpt),
        "refine_every": 2})  # fmt: skip
    doc = Eidetic(None, config=cfg).track(frames, first, tmp_path / "out", preset="fast")
    assert doc["frames"] == 3 and doc["objects"] == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "00000.png",
        "00001.png",
        "00002.png",
    ]
