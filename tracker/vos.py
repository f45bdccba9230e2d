"""Semi-supervised video object segmentation (DAVIS protocol): flow warping + colour refinement.

Given the first frame's label map, each object's mask is carried to the next frame by dense
optical flow (:mod:`tracker.propagate`). With ``refine`` on (both presets), every pixel is then
re-decided from a Bayesian blend of the warped mask (a spatial prior, blurred to allow for flow
error, with a small floor so a lost object can be re-found by colour) and a colour model (joint
RGB histograms of the object and of its surroundings, like ObjectFlow/BVS). The object's colour
model is the mean over ``context_k`` keyframes chosen from its bounded
:class:`~tracker.keyframes.KeyframeMemory` (the reference plus those most like the current
appearance, HQ-SMem style); the background model follows the scene (appearance update). The
``"quality"`` preset then decides the mask by a graph cut of the probability map with
contrast-sensitive smoothness (:mod:`tracker.graphcut`), which snaps boundaries to image edges
and removes speckle; where a forward-backward check finds the flow unreliable, it lowers the
warped mask's claim so that colour can remove uncovered background (an edge-aware guided filter of the map is the other, unused, option). A colour-refined mask is only accepted when it agrees with the warped
one, which keeps a bad colour decision from replacing a good flow estimate.

With a ``refiner`` (a prompted :class:`~models.segmenters.base.Segmenter`, e.g. SAM-HQ), every
``refine_every`` frames all objects' boxes are sent in one call and each refined mask replaces
the tracked one only if their IoU exceeds ``refine_gate`` (HQ-SMem's tau = 0.59).
Objects that vanish are counted as lost; when colour finds one again it is re-acquired (both
logged). Presets were tuned on six DAVIS 2016 sequences only (``benchmarks/vos_eval.py TUNE``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from models.errors import ParameterError
from models.segmenters.base import Segmenter, bbox_of
from tracker.graphcut import graph_cut
from tracker.keyframes import KeyframeMemory
from tracker.propagate import DIS_PRESETS, FlowPropagator
from tracker.refine import GATE_IOU, RefinementGate, guided_filter, mask_iou

logger = logging.getLogger(__name__)

__all__ = ["PRESETS", "ColourModel", "VOSPreset", "VOSTracker"]

EPS = 1e-4
LOST_AREA_FRAC = 1e-4  # an object whose mask covers less of the frame than this is lost
VANISHED_POSTERIOR = 0.1  # colour denies the whole warped mask: the object is hidden or gone...
VANISHED_FRAMES = 3  # ... when that lasts this many frames in a row
MIN_PRIOR_SIGMA_PX = 1.0  # flow is rarely better than a pixel, so the prior is never sharper


@dataclass(frozen=True, slots=True)
class VOSPreset:
    """Tunables of one speed/quality trade-off.

    flow_scale: resolution factor of the optical flow; flow_preset: OpenCV DIS preset;
    refine: run the colour refinement; prior_sigma: blur (fraction of the image diagonal) of the
    warped mask used as a prior; gate_iou: a colour-refined mask replaces the warped one only
    above this IoU with it; bg_update: weight of the current frame in the running background
    colour model; context_k: keyframes (reference included) averaged into the object's colour
    model; min_keyframe_quality: gate IoU a frame needs to enter the keyframe memory;
    prior_floor: least prior probability of the object anywhere in the frame; guided_radius /
    guided_eps: edge-aware guided filter of the probability map (radius as a fraction of the
    diagonal, at least 1 px; 0: off); median_px:
    median filter of the refined mask (removes speckle; 0 or 1: off); bins: colour histogram
    levels per channel; cut_gamma: weight of the contrast-sensitive smoothness of a graph cut
    of the probability map (:func:`tracker.graphcut.graph_cut`, replaces thresholding and the
    median filter; 0: off), run on the object's box grown by ``cut_margin`` of the diagonal;
    cut_agree: the cut is used only if its IoU with the thresholded map is at least this (the
    smoothness term can erase a small object); fb_tol: forward-backward flow check (a second
    flow, new -> previous frame): inside the warped mask the prior is pulled toward 0.5 where
    the two flows disagree by more than ``sqrt(fb_tol**2 + fb_rel * |flow|**2)`` px
    (occlusions, disocclusions, failed flow), so colour decides there; the prior outside the
    mask is never raised (0: off); fb_blur: blur of that confidence (fraction of the diagonal).
    """

    flow_scale: float = 0.5
    flow_preset: str = "medium"
    refine: bool = True
    prior_sigma: float = 0.005
    gate_iou: float = 0.3
    bg_update: float = 0.3
    context_k: int = 3
    min_keyframe_quality: float = 0.7
    prior_floor: float = 0.02
    guided_radius: float = 0.004
    guided_eps: float = 1e-4
    median_px: int = 5
    bins: int = 16
    cut_gamma: float = 0.0
    cut_margin: float = 0.04
    cut_agree: float = 0.0
    fb_tol: float = 0.0
    fb_rel: float = 0.05
    fb_blur: float = 0.005

    def __post_init__(self) -> None:
        if self.flow_preset not in DIS_PRESETS:
            raise ParameterError(
                f"flow_preset must be one of {sorted(DIS_PRESETS)}, got {self.flow_preset!r}"
            )
        if self.median_px > 1 and self.median_px % 2 == 0:
            raise ParameterError(f"median_px must be odd, got {self.median_px!r}")
        if self.cut_gamma < 0 or self.cut_margin < 0 or not 0 <= self.cut_agree <= 1:
            raise ParameterError(f"need cut_gamma, cut_margin >= 0, cut_agree in [0, 1]: {self}")
        if self.guided_radius < 0 or self.context_k < 1:
            raise ParameterError(f"need guided_radius >= 0 and context_k >= 1, got {self}")


PRESETS: dict[str, VOSPreset] = {
    "quality": VOSPreset(guided_radius=0, cut_gamma=3.0, cut_agree=0.5, fb_tol=1.0),
    "fast": VOSPreset(flow_preset="ultrafast", prior_sigma=0.008, guided_radius=0),
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
    lost: bool = False
    denied: int = 0  # consecutive frames in which colour denied the whole warped mask


class VOSTracker:
    """Propagates first-frame object masks through a video, one frame per :meth:`step`.

    Parameters
    ----------
    preset : {"quality", "fast"} or VOSPreset, keyword-only
        ``"quality"``: flow warp, colour refinement and graph cut; ``"fast"``: a cheaper flow,
        the probability map thresholded and median-filtered.
    keyframe_budget : int, keyword-only
        Keyframes kept per object (reference included).
    keyframe_gap : int, keyword-only
        Minimum frames between two keyframes of one object.
    refiner : Segmenter, optional, keyword-only
        Box-prompted segmenter (e.g. SAM-HQ) whose masks may replace the tracked ones.
    refine_every : int, keyword-only
        Frames between two refiner runs (every frame: 1).
    refine_gate : float, keyword-only
        IoU with the tracked mask above which a refined mask is accepted.
    """

    def __init__(
        self,
        *,
        preset: str | VOSPreset = "quality",
        keyframe_budget: int = 10,
        keyframe_gap: int = 30,
        refiner: Segmenter | None = None,
        refine_every: int = 10,
        refine_gate: float = GATE_IOU,
    ) -> None:
        if isinstance(preset, str):
            if preset not in PRESETS:
                raise ParameterError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
            preset = PRESETS[preset]
        if refine_every < 1:
            raise ParameterError(f"refine_every must be >= 1, got {refine_every!r}")
        self.preset = preset
        self.keyframe_budget = int(keyframe_budget)
        self.keyframe_gap = int(keyframe_gap)
        self.refiner = refiner
        self.refine_every = int(refine_every)
        self.gate = RefinementGate(tau=refine_gate)
        self._flow = FlowPropagator(scale=preset.flow_scale, dis_preset=preset.flow_preset)
        self._colour = ColourModel(bins=preset.bins)
        self._objects: list[_Object] = []
        self._prev: np.ndarray | None = None
        self._image: np.ndarray | None = None
        self._conf: np.ndarray | None = None  # flow confidence of the current frame
        self._frame_idx = -1
        self._dtype = np.dtype(np.uint8)
        self._counts = {"frames": 0, "colour_refined": 0, "lost": 0, "reacquired": 0}

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
        self._counts["frames"] += 1
        logger.debug("VOS started with %d objects", len(self._objects))

    def step(self, image: np.ndarray) -> np.ndarray:
        """Segment the next frame (``uint8[H, W, 3]`` RGB); return its labels (start's dtype)."""
        if self._prev is None:
            raise RuntimeError("call start(image, labels) before step(image)")
        if image.shape != self._prev.shape:
            raise ParameterError(f"frame shape {image.shape} != first frame's {self._prev.shape}")
        self._frame_idx += 1
        self._image = image
        flow = self._flow.flow(self._prev, image)
        maps = self._flow.maps(flow)  # once per frame, for every object
        self._conf = None
        if self.preset.refine and self.preset.fb_tol > 0:
            self._conf = self._flow_confidence(flow, self._flow.flow(image, self._prev), maps)
        idx = self._colour.index(image) if self.preset.refine else None
        grey = None
        if self.preset.refine and self.preset.guided_radius:
            grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
            grey = grey.astype(np.float32) / 255
        decisions = [self._segment_object(obj, flow, maps, idx, grey) for obj in self._objects]
        if self.refiner is not None and self._frame_idx % self.refine_every == 0:
            decisions = self._refine(image, decisions)
        labels = self._resolve(decisions, image.shape[:2])
        for obj, d in zip(self._objects, decisions, strict=True):
            obj.mask = labels == obj.obj_id
            self._track_visibility(obj)
            if idx is not None and not obj.lost:
                obj.bg_hist = self._update_background(obj, idx)
                self._remember(obj, idx, quality=d.quality)
        self._prev = image
        self._counts["frames"] += 1
        return labels

    def keyframes_kept(self) -> int:
        """Keyframes currently held, summed over objects (each object holds ≤ keyframe_budget)."""
        return sum(len(o.memory) for o in self._objects)

    def keyframes_per_object(self) -> dict[int, int]:
        """Keyframes currently held by each object id."""
        return {o.obj_id: len(o.memory) for o in self._objects}

    def descriptors(self) -> dict[int, np.ndarray]:
        """Each object's current appearance descriptor (``float32[bins**3]``, unit norm)."""
        return {o.obj_id: o.descriptor for o in self._objects if o.descriptor is not None}

    def stats(self) -> dict[str, float | int | None]:
        """Counters: frames, colour_refined (accepted colour refinements), lost, reacquired,
        refinements / refined_accepted / refine_acceptance (the refiner's IoU gate), evictions
        and keyframes (summed over objects)."""
        return {
            **self._counts,
            "refinements": self.gate.tried,
            "refined_accepted": self.gate.accepted,
            "refine_acceptance": self.gate.acceptance_rate,
            "evictions": sum(o.memory.evictions for o in self._objects),
            "keyframes": self.keyframes_kept(),
        }

    # --------------------------------------------------------------------------- internals

    def _segment_object(
        self, obj: _Object, flow: np.ndarray, maps: tuple[np.ndarray, np.ndarray],
        idx: np.ndarray | None, grey: np.ndarray | None,
    ) -> _Decision:  # fmt: skip
        """Warp one object's mask along ``flow`` (``maps``: its remap coordinates), then refine it
        by colour when ``idx`` is given."""
        soft = self._flow.warp(obj.mask, flow, maps=maps)
        coarse = soft > 0.5
        if idx is None:
            return _Decision(soft, coarse, 1.0)
        post = self._posterior(obj, soft, idx)
        if grey is not None:
            post = self._snap_to_edges(post, coarse, grey)
        refined = (post > 0.5).astype(np.uint8)
        if self.preset.median_px > 1:
            refined = cv2.medianBlur(refined, self.preset.median_px)
        refined = refined > 0
        if self.preset.cut_gamma > 0 and (coarse.any() or refined.any()):
            cut = self._cut(post, coarse | refined)
            if mask_iou(cut, refined) >= self.preset.cut_agree:
                refined = cut
        agree = mask_iou(refined, coarse)
        denied = coarse.any() and float(post[coarse].mean()) < VANISHED_POSTERIOR
        obj.denied = obj.denied + 1 if denied else 0
        vanished = obj.denied >= VANISHED_FRAMES
        if agree > self.preset.gate_iou or vanished or (obj.lost and refined.any()):
            self._counts["colour_refined"] += 1
            return _Decision(post, refined, agree)
        return _Decision(soft, coarse, agree)

    def _cut(self, post: np.ndarray, support: np.ndarray) -> np.ndarray:
        """Graph cut of ``post`` on the box of ``support`` grown by ``cut_margin``; 0 outside."""
        h, w = post.shape
        r = max(3, round(self.preset.cut_margin * float(np.hypot(h, w))))
        x0, y0, x1, y1 = (int(v) for v in bbox_of(support))
        y0, y1, x0, x1 = max(0, y0 - r), min(h, y1 + r + 1), max(0, x0 - r), min(w, x1 + r + 1)
        out = np.zeros((h, w), dtype=bool)
        out[y0:y1, x0:x1] = graph_cut(
            self._image[y0:y1, x0:x1], post[y0:y1, x0:x1], gamma=self.preset.cut_gamma
        )
        return out

    def _snap_to_edges(self, post: np.ndarray, coarse: np.ndarray, grey: np.ndarray) -> np.ndarray:
        """Guided-filter ``post`` by ``grey``, only in a band around the warped boundary.

        The filter aligns the boundary with image edges; limiting it to ``2 * guided_radius``
        pixels of the warped mask's boundary keeps it from moving or erasing small objects.
        """
        r = max(1, round(self.preset.guided_radius * float(np.hypot(*grey.shape))))
        snapped = guided_filter(grey, post, r, self.preset.guided_eps)
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4 * r + 1, 4 * r + 1))
        m = coarse.astype(np.uint8)
        band = cv2.dilate(m, k) != cv2.erode(m, k)
        return np.where(band, np.clip(snapped, 0, 1), post).astype(np.float32)

    def _refine(self, image: np.ndarray, decisions: list[_Decision]) -> list[_Decision]:
        """One refiner call with every visible object's box; each result passes the IoU gate."""
        visible = [i for i, d in enumerate(decisions) if d.mask.any()]
        if not visible:
            return decisions
        boxes = np.array([bbox_of(decisions[i].mask) for i in visible], dtype=np.float32)
        proposals = self.refiner.segment(image, boxes=boxes)
        out = list(decisions)
        for i, p in zip(visible, proposals, strict=True):
            mask, iou = self.gate(decisions[i].mask, p.mask)
            post = np.where(mask, np.maximum(decisions[i].post, 0.5), decisions[i].post)
            out[i] = _Decision(post.astype(np.float32), mask, iou)
        return out

    def _track_visibility(self, obj: _Object) -> None:
        """Log and count an object becoming lost, or being re-acquired after it was."""
        visible = np.count_nonzero(obj.mask) >= LOST_AREA_FRAC * obj.mask.size
        if obj.lost and visible:
            obj.lost = False
            self._counts["reacquired"] += 1
            logger.info("object %d re-acquired at frame %d", obj.obj_id, self._frame_idx)
        elif not obj.lost and not visible:
            obj.lost = True
            self._counts["lost"] += 1
            logger.info("object %d lost at frame %d", obj.obj_id, self._frame_idx)

    def _flow_confidence(
        self, back: np.ndarray, fwd: np.ndarray, maps: tuple[np.ndarray, np.ndarray]
    ) -> np.ndarray:
        """Forward-backward consistency of the flow, in [0, 1] per pixel of the new frame.

        Pixel x came from x + back(x); the forward flow there should bring it back:
        ``back(x) + fwd(x + back(x)) ~ 0``. Where it does not (occlusions, disocclusions,
        fast or non-rigid motion) the warped mask is not to be trusted. ``maps``: ``back``'s
        remap coordinates (:meth:`FlowPropagator.maps`).
        """
        h, w = back.shape[:2]
        f_at = cv2.remap(fwd, *maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        err2 = ((back + f_at) ** 2).sum(axis=2)
        mag2 = (back**2).sum(axis=2) + (f_at**2).sum(axis=2)
        tol2 = self.preset.fb_tol**2 + self.preset.fb_rel * mag2
        conf = np.exp(-err2 / (2 * tol2)).astype(np.float32)
        sigma = max(1.0, self.preset.fb_blur * float(np.hypot(h, w)))
        return cv2.GaussianBlur(conf, (0, 0), sigma)

    def _posterior(self, obj: _Object, soft: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Per-pixel ``P(object)`` from the blurred warped mask and the colour likelihoods.

        The prior never drops below ``prior_floor``, so pixels far from the warped mask whose
        colour is very typical of the object can still be claimed (recovery after flow failure).
        """
        sigma = max(MIN_PRIOR_SIGMA_PX, self.preset.prior_sigma * float(np.hypot(*soft.shape)))
        floor = self.preset.prior_floor
        prior = np.clip(cv2.GaussianBlur(soft, (0, 0), sigma), floor, 1 - floor)
        if self._conf is not None:
            prior = np.where(prior > 0.5, 0.5 + (prior - 0.5) * self._conf, prior)
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
