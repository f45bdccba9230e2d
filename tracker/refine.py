"""Mask refinement helpers: the HQ-SMem IoU gate and an edge-aware guided filter."""

from __future__ import annotations

import logging

import cv2
import numpy as np

from models.errors import ParameterError

logger = logging.getLogger(__name__)

__all__ = ["GATE_IOU", "RefinementGate", "guided_filter", "mask_iou"]

GATE_IOU = 0.59  # HQ-SMem's tau: a refined mask is kept only above this IoU with the coarse one


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``bool[H, W]`` masks (1.0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else float(np.count_nonzero(a & b) / union)


class RefinementGate:
    """Accept a refined mask only when it agrees with the coarse (propagated) one.

    HQ-SMem found ungated SAM-HQ refinement made tracking worse: a refinement that disagrees
    much with the propagated mask has usually jumped to another object or the background.

    Parameters
    ----------
    tau : float, keyword-only
        A refined mask is accepted when ``IoU(refined, coarse) > tau``.
    """

    def __init__(self, *, tau: float = GATE_IOU) -> None:
        if not 0 <= tau < 1:
            raise ParameterError(f"tau must be in [0, 1), got {tau!r}")
        self.tau = float(tau)
        self.tried = 0
        self.accepted = 0

    def __call__(self, coarse: np.ndarray, refined: np.ndarray) -> tuple[np.ndarray, float]:
        """The mask to keep (``refined`` or ``coarse``) and their IoU."""
        iou = mask_iou(coarse, refined)
        self.tried += 1
        if iou > self.tau:
            self.accepted += 1
            return refined, iou
        logger.debug("refinement rejected by the gate: IoU %.3f <= %.2f", iou, self.tau)
        return coarse, iou

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted / tried refinements (None before the first)."""
        return self.accepted / self.tried if self.tried else None


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter: smooth ``src`` while following the edges of ``guide``.

    Parameters
    ----------
    guide, src : np.ndarray
        ``float32[H, W]``; the guide is a grey image in [0, 1], src e.g. a probability map.
    radius : int
        Window radius in pixels.
    eps : float
        Regularisation: edges with variance well above ``eps`` are kept.

    Returns
    -------
    np.ndarray
        ``float32[H, W]`` filtered ``src``.
    """
    k = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, k, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(guide), box(src)
    cov = box(guide * src) - mean_i * mean_p
    var = box(guide * guide) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)
