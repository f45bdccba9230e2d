"""Perception components built from config (no Ray): the segmenter and its refinement role."""

from __future__ import annotations

from typing import Any

from pipeline.config import PerceptionConfig


def build_segmenter(cfg: PerceptionConfig) -> Any:
    """The configured segmenter: SAM-HQ from its checkpoint (loaded lazily), else classical."""
    from models import registry

    if cfg.segmenter == "sam_hq":
        return registry.create(
            registry.SEGMENTERS, "sam_hq", model_type=cfg.sam_hq_model,
            checkpoint=cfg.sam_hq_checkpoint, sha256=cfg.sam_hq_sha256, device=cfg.device,
            hq_token_only=cfg.hq_token_only,
        )  # fmt: skip
    return registry.create(registry.SEGMENTERS, "classical")


def refinement_kwargs(cfg: PerceptionConfig, segmenter: Any) -> dict[str, Any]:
    """Tracker arguments for SAM-HQ refinement of tracks (none for the classical segmenter)."""
    if cfg.segmenter != "sam_hq" or cfg.refine_every == 0:
        return {}
    return {"refiner": segmenter, "refine_every": cfg.refine_every, "refine_gate": cfg.refine_gate}
