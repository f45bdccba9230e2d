"""Name → lazily imported factory, so that selecting a backend is what imports it."""

from __future__ import annotations

import importlib
from typing import Any

from models.errors import BackendUnavailable

SEGMENTERS: dict[str, str] = {
    "classical": "models.segmenters.classical:ClassicalSegmenter",
    "sam_hq": "models.segmenters.sam_hq:SamHQSegmenter",
}
# SAM-HQ architectures (random weights; models.segmenters.sam_hq loads checkpoints strictly)
SAM_HQ_ARCHS: dict[str, str] = {
    "vit_tiny": "segment_anything_hq.build_sam:build_sam_vit_t",
    "vit_b": "segment_anything_hq.build_sam:build_sam_vit_b",
    "vit_l": "segment_anything_hq.build_sam:build_sam_vit_l",
    "vit_h": "segment_anything_hq.build_sam:build_sam_vit_h",
}
EMBEDDERS: dict[str, str] = {
    "classical": "models.embedders.classical:ClassicalEmbedder",
}
AUDIO_DETECTORS: dict[str, str] = {
    "energy": "models.audio.energy:EnergyDetector",
}


def resolve(table: dict[str, str], key: str) -> Any:
    """Import and return the object registered under ``key`` in ``table``.

    Raises ``ValueError`` for an unknown key (listing the known ones) and
    ``BackendUnavailable`` when the backend's module cannot be imported.
    """
    if key not in table:
        raise ValueError(f"unknown backend {key!r}; known: {', '.join(sorted(table))}")
    module_name, attr = table[key].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BackendUnavailable(f"backend {key!r} cannot be imported: {e}") from e
    return getattr(module, attr)


def create(table: dict[str, str], key: str, **kwargs: Any) -> Any:
    """Instantiate the backend ``key`` of ``table`` with ``kwargs``."""
    return resolve(table, key)(**kwargs)
