"""The perception config section: segmenter choice, SAM-HQ checkpoint settings, refinement."""

from __future__ import annotations

import pytest

from models.segmenters.classical import ClassicalSegmenter
from pipeline.config import load_config
from pipeline.errors import ConfigError


def test_classical_is_the_default_without_a_checkpoint() -> None:
    from pipeline.actors.perception_actor import build_segmenter, refinement_kwargs

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
    from pipeline.actors.perception_actor import build_segmenter, refinement_kwargs

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
