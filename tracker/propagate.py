"""Mask propagation by dense optical flow: backward-warp the previous frame's masks."""

from __future__ import annotations

import logging

import cv2
import numpy as np

from models.errors import ParameterError

logger = logging.getLogger(__name__)

__all__ = ["FlowPropagator", "to_grey"]

METHODS = ("dis", "farneback")
DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
MIN_FLOW_SIDE_PX = 320  # flow is never estimated on a frame whose longer side is below this


def to_grey(image: np.ndarray) -> np.ndarray:
    """``uint8[H, W]`` luminance of an RGB ``uint8[H, W, 3]`` frame (grey passes through)."""
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


class FlowPropagator:
    """Propagates masks from one frame to the next with dense optical flow.

    The flow is estimated from the current frame back to the previous one on a grey copy
    downscaled by ``scale``, upsampled to full resolution, and the previous mask is sampled at the
    displaced positions (``cv2.remap``), so every pixel of the new frame gets a value.

    Parameters
    ----------
    scale : float, keyword-only
        Resolution factor for the flow estimate, in (0, 1]; small frames are downscaled less,
        so the flow's longer side stays at least ``MIN_FLOW_SIDE_PX`` (or the frame's own).
    method : {"dis", "farneback"}, keyword-only
        OpenCV's DIS optical flow (fast, default) or Farneback's polynomial expansion.
    threshold : float, keyword-only
        A warped soft mask above this value is foreground.
    dis_preset : {"ultrafast", "fast", "medium"}, keyword-only
        OpenCV's DIS speed/accuracy preset (``method="dis"`` only).
    """

    def __init__(
        self,
        *,
        scale: float = 0.5,
        method: str = "dis",
        threshold: float = 0.5,
        dis_preset: str = "medium",
    ) -> None:
        if not 0 < scale <= 1:
            raise ParameterError(f"scale must be in (0, 1], got {scale!r}")
        if method not in METHODS:
            raise ParameterError(f"method must be one of {METHODS}, got {method!r}")
        if dis_preset not in DIS_PRESETS:
            raise ParameterError(
                f"dis_preset must be one of {sorted(DIS_PRESETS)}, got {dis_preset!r}"
            )
        self.scale = float(scale)
        self.method = method
        self.threshold = float(threshold)
        self._dis = None
        if method == "dis":
            self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[dis_preset])

    def flow(self, prev_image: np.ndarray, image: np.ndarray) -> np.ndarray:
        """Backward flow ``float32[H, W, 2]``: pixel (x, y) of ``image`` came from
        ``(x + flow[y, x, 0], y + flow[y, x, 1])`` of ``prev_image`` (pixels, full resolution).

        Both frames are ``uint8[H, W, 3]`` RGB (or ``uint8[H, W]`` grey) of the same size.
        """
        if prev_image.shape[:2] != image.shape[:2]:
            raise ParameterError(f"frame sizes differ: {prev_image.shape} vs {image.shape}")
        h, w = image.shape[:2]
        cur, prev = to_grey(image), to_grey(prev_image)
        scale = min(1.0, max(self.scale, MIN_FLOW_SIDE_PX / max(h, w)))
        if scale < 1:
            size = (round(w * scale), round(h * scale))
            cur = cv2.resize(cur, size, interpolation=cv2.INTER_AREA)
            prev = cv2.resize(prev, size, interpolation=cv2.INTER_AREA)
        if self._dis is not None:
            f = self._dis.calc(cur, prev, None)
        else:
            f = cv2.calcOpticalFlowFarneback(cur, prev, None, 0.5, 4, 15, 3, 5, 1.2, 0)
        if f.shape[:2] != (h, w):
            sx, sy = w / f.shape[1], h / f.shape[0]
            f = cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR)
            f[..., 0] *= sx
            f[..., 1] *= sy
        return f

    @staticmethod
    def maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ``cv2.remap`` coordinates of a backward ``flow``: compute them once to
        :meth:`warp` several masks along one flow."""
        h, w = flow.shape[:2]
        map_x = flow[..., 0] + np.arange(w, dtype=np.float32)[None, :]
        map_y = flow[..., 1] + np.arange(h, dtype=np.float32)[:, None]
        return map_x, map_y

    @staticmethod
    def warp(
        prev: np.ndarray, flow: np.ndarray, *, border: float = 0.0,
        maps: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Sample ``prev`` (``[H, W]`` mask or soft map, any dtype) along a backward ``flow``
        (``maps``: its :meth:`maps`, if already computed).

        Returns ``float32[H, W]`` (bilinear); positions outside the frame read ``border``.
        """
        map_x, map_y = FlowPropagator.maps(flow) if maps is None else maps
        src = np.asarray(prev, dtype=np.float32)
        return cv2.remap(
            src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border
        )

    def propagate(
        self, prev_image: np.ndarray, image: np.ndarray, prev_mask: np.ndarray
    ) -> np.ndarray:
        """Move ``prev_mask`` (``bool[H, W]`` on ``prev_image``) onto ``image``: ``bool[H, W]``."""
        f = self.flow(prev_image, image)
        return self.warp(prev_mask, f) > self.threshold

    def propagate_labels(
        self, prev_image: np.ndarray, image: np.ndarray, prev_labels: np.ndarray
    ) -> np.ndarray:
        """Move an integer label map (``int[H, W]``, 0 = background) onto ``image``.

        Each label's indicator is warped softly and every pixel takes the most likely label, so
        objects never overlap. Returns an array of ``prev_labels``'s dtype.
        """
        f = self.flow(prev_image, image)
        return warp_labels(prev_labels, f)


def warp_labels(prev_labels: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Soft-warp each label of ``prev_labels`` (``int[H, W]``) along ``flow``; take the argmax."""
    ids = [int(v) for v in np.unique(prev_labels) if v != 0]
    out = np.zeros(prev_labels.shape, dtype=prev_labels.dtype)
    if not ids:
        return out
    maps = FlowPropagator.maps(flow)
    soft = [FlowPropagator.warp(prev_labels == 0, flow, border=1.0, maps=maps)]
    soft += [FlowPropagator.warp(prev_labels == i, flow, maps=maps) for i in ids]
    best = np.argmax(np.stack(soft), axis=0)
    lut = np.array([0, *ids], dtype=prev_labels.dtype)
    return lut[best]
