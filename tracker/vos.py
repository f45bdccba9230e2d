"""Semi-supervised video object segmentation (DAVIS protocol): flow warping + colour refinement.

Given the first frame's label map, each object's mask is carried to the next frame by dense
optical flow (:mod:`tracker.propagate`). The ``"quality"`` preset then re-decides every pixel
from a Bayesian blend of the warped mask (a spatial prior, blurred to allow for flow error, with
a small floor so a lost object can be re-found by colour) and a colour model (joint RGB
histograms of the object and of its surroundings). The object's colour model is the mean over
``context_k`` keyframes chosen from its bounded :class:`~tracker.keyframes.KeyframeMemory` (the
reference plus those most like the current appearance, HQ-SMem style; the default, 1, uses the
reference only, which measured best on DAVIS 2016 so far); the background model follows the
scene. A refined mask is only accepted when it agrees with the warped one (IoU gate, as HQ-SMem
gates SAM-HQ), which keeps a bad colour decision from replacing a good flow estimate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from models.errors import ParameterError
from tracker.keyframes import KeyframeMemory
from tracker.propagate import FlowPropagator

logger = logging.getLogger(__name__)

__all__ = ["PRESETS", "ColourModel", "VOSPreset", "VOSTracker"]

EPS = 1e-4
MEDIAN_PX = 5  # median filter of the refined mask: removes speckle, and slightly erodes corners


@dataclass(frozen=True, slots=True)
class VOSPreset:
    """Tunables of one speed/quality trade-off.

    flow_scale: resolution factor of the optical flow; refine: run the colour refinement;
    prior_sigma: blur (fraction of the image diagonal) of the warped mask used as a prior;
    gate_iou: a refined mask replaces the warped one only above this IoU with it;
    bg_update: weight of the current frame in the running background colour model;
    context_k: keyframes (reference included) averaged into the object's colour model;
    min_keyframe_quality: gate IoU a frame needs to enter the keyframe memory;
    prior_floor: least prior probability of the object anywhere in the frame.
    """

    flow_scale: float = 0.5
    refine: bool = True
    prior_sigma: float = 0.008
    gate_iou: float = 0.3
    bg_update: float = 0.3
    context_k: int = 1
    min_keyframe_quality: float = 0.7
    prior_floor: float = 0.02


PRESETS: dict[str, VOSPreset] = {
    "quality": VOSPreset(),
    "fast": VOSPreset(flow_scale=0.25, refine=False),
}


class ColourModel:
    """Joint RGB histograms with ``bins`` levels per channel (``bins**3`` cells, L1-normalised)."""

    def __init__(self, *, bins: int = 16) -> None:
        if bins < 2 or 256 % bins:
            raise ParameterError(f"bins must divide 256 and be >= 2, got {bins!r}")
        self.bins = bins
        self._shift = int(np.log2(256 // bins))

    def index(self, image: np.ndarray) -> np.ndarray:
        """Histogram cell of every pixel of an RGB ``uint8[H, W, 3]`` frame: ``int32[H, W]``."""
        q = (image >> self._shift).astype(np.int32)
        return (q[..., 0] * self.bins + q[..., 1]) * self.bins + q[..., 2]

    def hist(self, idx: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Normalised ``float64[bins**3]`` histogram of the cells ``idx`` under ``mask``."""
        h = np.bincount(idx[mask], minlength=self.bins**3).astype(np.float64)
        return h / max(1.0, h.sum())

    @staticmethod
    def descriptor(hist: np.ndarray) -> np.ndarray:
        """Hellinger embedding (``float32``, unit norm): cosine = Bhattacharyya coefficient."""
        d = np.sqrt(hist).astype(np.float32)
        n = float(np.linalg.norm(d))
        return d / n if n > 0 else d


class _Decision(NamedTuple):
    """One object's result on one frame."""

    post: np.ndarray  # float32[H, W] P(object), used to settle overlaps between objects
    mask: np.ndarray  # bool[H, W]
    quality: float  # agreement (IoU) of the refined and the warped masks


@dataclass
class _Object:
    """Per-object state: current mask, colour models and bounded keyframe memory."""

    obj_id: int
    mask: np.ndarray
    bg_hist: np.ndarray
    memory: KeyframeMemory
    kf_hists: dict[int, np.ndarray] = field(default_factory=dict)
    descriptor: np.ndarray | None = None


class VOSTracker:
    """Propagates first-frame object masks through a video, one frame per :meth:`step`.

    Parameters
    ----------
    preset : {"quality", "fast"} or VOSPreset, keyword-only
        ``"quality"``: flow warp then colour refinement; ``"fast"``: downscaled flow warp only.
    keyframe_budget : int, keyword-only
        Keyframes kept per object (reference included).
    keyframe_gap : int, keyword-only
        Minimum frames between two keyframes of one object.
    """

    def __init__(
        self,
        *,
        preset: str | VOSPreset = "quality",
        keyframe_budget: int = 10,
        keyframe_gap: int = 30,
    ) -> None:
        if isinstance(preset, str):
            if preset not in PRESETS:
                raise ParameterError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
            preset = PRESETS[preset]
        self.preset = preset
        self.keyframe_budget = int(keyframe_budget)
        self.keyframe_gap = int(keyframe_gap)
        self._flow = FlowPropagator(scale=preset.flow_scale)
        self._colour = ColourModel()
        self._objects: list[_Object] = []
        self._prev: np.ndarray | None = None
        self._frame_idx = -1
        self._dtype = np.dtype(np.uint8)

    def start(self, image: np.ndarray, labels: np.ndarray) -> None:
        """Begin a video from ``image`` (``uint8[H, W, 3]`` RGB) and its ``int[H, W]`` label map.

        0 is background; every other value is an object id, returned as is by :meth:`step`.
        """
        if image.ndim != 3 or image.shape[2] != 3:
            raise ParameterError(f"image must be uint8[H, W, 3] RGB, got shape {image.shape}")
        if labels.shape != image.shape[:2]:
            raise ParameterError(f"labels shape {labels.shape} != frame shape {image.shape[:2]}")
        self._dtype = labels.dtype
        self._prev = image
        self._frame_idx = 0
        self._objects = []
        idx = self._colour.index(image)
        for obj_id in (int(v) for v in np.unique(labels) if v != 0):
            mask = labels == obj_id
            obj = _Object(
                obj_id,
                mask,
                self._background_hist(idx, mask),
                KeyframeMemory(budget=self.keyframe_budget, min_gap=self.keyframe_gap),
            )
            self._remember(obj, idx, quality=1.0)
            self._objects.append(obj)
        logger.debug("VOS started with %d objects", len(self._objects))

    def step(self, image: np.ndarray) -> np.ndarray:
        """Segment the next frame (``uint8[H, W, 3]`` RGB); return its labels (start's dtype)."""
        if self._prev is None:
            raise RuntimeError("call start(image, labels) before step(image)")
        self._frame_idx += 1
        flow = self._flow.flow(self._prev, image)
        idx = self._colour.index(image) if self.preset.refine else None
        decisions = [self._segment_object(obj, flow, idx) for obj in self._objects]
        labels = self._resolve(decisions, image.shape[:2])
        for obj, d in zip(self._objects, decisions, strict=True):
            obj.mask = labels == obj.obj_id
            if idx is not None:
                obj.bg_hist = self._update_background(obj, idx)
                self._remember(obj, idx, quality=d.quality)
        self._prev = image
        return labels

    def keyframes_kept(self) -> int:
        """Keyframes currently held, summed over objects (each object holds ≤ keyframe_budget)."""
        return sum(len(o.memory) for o in self._objects)

    def keyframes_per_object(self) -> dict[int, int]:
        """Keyframes currently held by each object id."""
        return {o.obj_id: len(o.memory) for o in self._objects}

    def _segment_object(self, obj: _Object, flow: np.ndarray, idx: np.ndarray | None) -> _Decision:
        """Warp one object's mask along ``flow``, then refine it by colour when ``idx`` is given."""
        soft = self._flow.warp(obj.mask, flow)
        coarse = soft > 0.5
        if idx is None:
            return _Decision(soft, coarse, 1.0)
        post = self._posterior(obj, soft, idx)
        refined = cv2.medianBlur((post > 0.5).astype(np.uint8), MEDIAN_PX) > 0
        agree = _iou(refined, coarse)
        if agree > self.preset.gate_iou:
            return _Decision(post, refined, agree)
        return _Decision(soft, coarse, agree)

    def _posterior(self, obj: _Object, soft: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Per-pixel ``P(object)`` from the blurred warped mask and the colour likelihoods.

        The prior never drops below ``prior_floor``, so pixels far from the warped mask whose
        colour is very typical of the object can still be claimed (recovery after flow failure).
        """
        sigma = self.preset.prior_sigma * float(np.hypot(*soft.shape))
        floor = self.preset.prior_floor
        prior = np.clip(cv2.GaussianBlur(soft, (0, 0), sigma), floor, 1 - floor)
        hf, hb = self._foreground_hist(obj), obj.bg_hist
        like = ((hf + EPS) / (hf + hb + 2 * EPS)).astype(np.float32)[idx]  # per-cell table lookup
        fg = prior * like
        return fg / (fg + (1 - prior) * (1 - like))

    def _foreground_hist(self, obj: _Object) -> np.ndarray:
        """Mean colour histogram of the reference and the keyframes most like the object now."""
        if obj.descriptor is None:
            entries = obj.memory.entries[:1]
        else:
            entries = obj.memory.select(obj.descriptor, self.preset.context_k)
        return np.mean([obj.kf_hists[e.frame_idx] for e in entries], axis=0)

    def _background_hist(
        self, idx: np.ndarray, mask: np.ndarray, *, margin: float = 0
    ) -> np.ndarray:
        """Background colours: half from a ring around the object, half from the whole frame.

        Pixels within ``margin`` px of ``mask`` are left out (they may belong to the object).
        """
        if not mask.any():
            return self._colour.hist(idx, np.ones(mask.shape, dtype=bool))
        dist = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        ring_r = max(3, int(0.05 * np.hypot(*mask.shape)))
        outside = dist > margin
        local = self._colour.hist(idx, outside & (dist <= margin + ring_r))
        return 0.5 * local + 0.5 * self._colour.hist(idx, outside)

    def _update_background(self, obj: _Object, idx: np.ndarray) -> np.ndarray:
        """Blend the current frame's background colours into the running model."""
        a = self.preset.bg_update
        margin = max(2, int(0.01 * np.hypot(*obj.mask.shape)))
        return (1 - a) * obj.bg_hist + a * self._background_hist(idx, obj.mask, margin=margin)

    def _remember(self, obj: _Object, idx: np.ndarray, *, quality: float) -> None:
        """Describe the object's current appearance and offer the frame to its memory."""
        if not obj.mask.any():
            return
        hist = self._colour.hist(idx, obj.mask)
        obj.descriptor = self._colour.descriptor(hist)
        if quality < self.preset.min_keyframe_quality:
            return
        if obj.memory.offer(self._frame_idx, obj.descriptor, quality):
            obj.kf_hists[self._frame_idx] = hist
            kept = {e.frame_idx for e in obj.memory.entries}
            obj.kf_hists = {k: v for k, v in obj.kf_hists.items() if k in kept}

    def _resolve(self, decisions: list[_Decision], shape: tuple[int, int]) -> np.ndarray:
        """Label map: a pixel goes to the claiming object with the highest posterior."""
        labels = np.zeros(shape, dtype=self._dtype)
        if len(decisions) <= 1:
            if decisions:
                labels[decisions[0].mask] = self._objects[0].obj_id
            return labels
        claim = np.stack([np.where(d.mask, d.post, -1.0) for d in decisions])
        best = np.argmax(claim, axis=0)
        fg = claim.max(axis=0) >= 0
        ids = np.array([o.obj_id for o in self._objects], dtype=self._dtype)
        labels[fg] = ids[best[fg]]
        return labels


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else float(np.count_nonzero(a & b) / union)
