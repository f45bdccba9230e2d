"""The Segmenter seam and the MaskProposal it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, slots=True)
class MaskProposal:
    """One candidate object mask (SAM automatic-mask-generator field names).

    mask: ``bool[H, W]``; bbox: XYXY pixels ``(x0, y0, x1, y1)`` of the mask, x1/y1 exclusive;
    area: foreground pixel count; predicted_iou and stability_score in [0, 1].
    """

    mask: np.ndarray
    bbox: tuple[float, float, float, float]
    area: int
    predicted_iou: float = 1.0
    stability_score: float = 1.0


@runtime_checkable
class Segmenter(Protocol):
    """Turns one RGB frame (``uint8[H, W, 3]``) plus optional prompts into mask proposals.

    boxes: ``float[N, 4]`` XYXY pixels, one proposal per box in the same order.
    points: ``float[N, 2]`` XY pixels of foreground clicks.
    masks: ``bool[N, H, W]`` coarse masks to refine, one proposal per mask in order.
    With no prompt, proposes the salient objects of the frame (automatic mode).
    Never mutates ``image``.
    """

    def segment(
        self,
        image: np.ndarray,
        *,
        boxes: np.ndarray | None = None,
        points: np.ndarray | None = None,
        masks: np.ndarray | None = None,
    ) -> list[MaskProposal]: ...


def bbox_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    """XYXY box of a ``bool[H, W]`` mask (x1/y1 exclusive); all zeros for an empty mask."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1))
