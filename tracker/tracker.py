"""Automatic-mode multi-object tracker for the service (Cutie-shaped ``step``)."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from models.embedders.base import Embedder
from models.errors import ParameterError
from models.segmenters.base import MaskProposal, Segmenter, bbox_of
from tracker.keyframes import KeyframeMemory
from tracker.propagate import FlowPropagator
from tracker.refine import GATE_IOU, RefinementGate
from tracker.types import RLE, Keyframe, KeyframeReason, Perception, TrackState

logger = logging.getLogger(__name__)

__all__ = ["Tracker"]

LABEL = "object"
DUPLICATE_FRAC = 0.5  # an unmatched proposal mostly inside a live track is not a new object


@dataclass
class _Track:
    """Mutable state of one track (the tracker's own bookkeeping, never sent anywhere)."""

    track_id: int
    mask: np.ndarray  # bool[H, W]
    score: float
    born: int  # step index of creation
    memory: KeyframeMemory
    missed: int = 0
    descriptor: np.ndarray | None = field(default=None, repr=False)


class Tracker:
    """Segments, propagates and associates objects frame by frame, with bounded keyframe memory.

    On the first frame after :meth:`reset`, every ``segment_every`` steps, and whenever
    ``proposals`` are passed to :meth:`step`, proposals (from the segmenter's automatic mode
    unless given) are matched to the tracks by mask IoU (Hungarian assignment); in between, every
    track's mask is carried forward by dense optical flow. Unmatched proposals start new tracks
    (up to ``max_objects``); a track unmatched on more than ``max_missed`` segmentation frames (or
    whose mask vanished that often) is dropped. Each track owns a
    :class:`~tracker.keyframes.KeyframeMemory`; a frame admitted by any of them, or forced,
    comes back as :attr:`Perception.keyframe`.

    Parameters
    ----------
    segmenter : Segmenter
        Proposal source (automatic mode: ``segment(image)``).
    embedder : Embedder
        Describes each track's masked object (``TrackState.descriptor``, keyframe novelty).
    stream_id : str, keyword-only
        Copied into every Perception and Keyframe.
    max_objects : int, keyword-only
        Most tracks alive at once.
    keyframe_budget : int, keyword-only
        Keyframes kept per track (reference included).
    segment_every : int, keyword-only
        Steps between two segmenter runs.
    iou_match : float, keyword-only
        Least mask IoU for a proposal to continue a track.
    max_missed : int, keyword-only
        Misses tolerated before a track is dropped.
    min_area_frac : float, keyword-only
        Proposals and masks smaller than this fraction of the frame are ignored / count as lost.
    keyframe_gap : int, keyword-only
        Least frames between two keyframes of one track.
    flow_scale : float, keyword-only
        Resolution factor of the optical flow.
    refiner : Segmenter, optional, keyword-only
        Box-prompted segmenter (SAM-HQ) refining every track's mask each ``refine_every`` steps
        (one batched call); a refined mask is kept only if its IoU with the propagated one
        exceeds ``refine_gate`` (HQ-SMem's tau).
    reid_similarity : float, keyword-only
        A new proposal whose descriptor has at least this cosine to a keyframe of a recently
        dropped track re-acquires that track (same id) instead of starting a new one.
    max_lost : int, keyword-only
        Dropped tracks remembered for re-acquisition (oldest forgotten first).
    """

    def __init__(
        self,
        segmenter: Segmenter,
        embedder: Embedder,
        *,
        stream_id: str,
        max_objects: int = 6,
        keyframe_budget: int = 10,
        segment_every: int = 8,
        iou_match: float = 0.3,
        max_missed: int = 4,
        min_area_frac: float = 0.002,
        keyframe_gap: int = 30,
        flow_scale: float = 0.5,
        refiner: Segmenter | None = None,
        refine_every: int = 10,
        refine_gate: float = GATE_IOU,
        reid_similarity: float = 0.9,
        max_lost: int = 6,
    ) -> None:
        if max_objects < 1 or segment_every < 1 or max_missed < 0:
            raise ParameterError(
                f"need max_objects >= 1, segment_every >= 1, max_missed >= 0; got "
                f"{max_objects!r}, {segment_every!r}, {max_missed!r}"
            )
        self.segmenter = segmenter
        self.embedder = embedder
        self.stream_id = stream_id
        self.max_objects = int(max_objects)
        self.keyframe_budget = int(keyframe_budget)
        self.segment_every = int(segment_every)
        self.iou_match = float(iou_match)
        self.max_missed = int(max_missed)
        self.min_area_frac = float(min_area_frac)
        self.keyframe_gap = int(keyframe_gap)
        if refine_every < 1 or max_lost < 0:
            raise ParameterError(
                f"need refine_every >= 1 and max_lost >= 0; got {refine_every!r}, {max_lost!r}"
            )
        self.refiner = refiner
        self.refine_every = int(refine_every)
        self.gate = RefinementGate(tau=refine_gate)
        self.reid_similarity = float(reid_similarity)
        self.max_lost = int(max_lost)
        self._flow = FlowPropagator(scale=flow_scale)
        self._counts = dict.fromkeys(
            (
                "frames",
                "segmentations",
                "proposals",
                "tracks_created",
                "tracks_dropped",
                "reacquired",
                "keyframes",
            ),
            0,
        )
        self._next_id = 1
        self.reset()

    def reset(self) -> None:
        """Forget every track and the previous frame (between capture windows); ids keep growing."""
        self._tracks: list[_Track] = []
        self._lost: deque[_Track] = deque(maxlen=self.max_lost)
        self._prev: np.ndarray | None = None
        self._steps = 0
        self._since_segment = 0

    def stats(self) -> dict[str, float | int | None]:
        """Counters since construction: frames, segmentations, proposals, tracks_created,
        tracks_dropped, reacquired, keyframes, refinements, refined_accepted,
        refine_acceptance (gate acceptance rate), evictions; plus tracks_alive and lost_kept now."""
        return {
            **self._counts,
            "refinements": self.gate.tried,
            "refined_accepted": self.gate.accepted,
            "refine_acceptance": self.gate.acceptance_rate,
            "evictions": sum(tr.memory.evictions for tr in (*self._tracks, *self._lost)),
            "tracks_alive": len(self._tracks),
            "lost_kept": len(self._lost),
        }

    def step(
        self,
        image: np.ndarray,
        t: float,
        *,
        frame_idx: int,
        proposals: list[MaskProposal] | None = None,
        force_keyframe: bool = False,
    ) -> Perception:
        """Track objects in one frame.

        Parameters
        ----------
        image : np.ndarray
            ``uint8[H, W, 3]`` RGB frame; may be read-only, never written.
        t : float
            Media time of the frame, seconds.
        frame_idx : int, keyword-only
            Index of the frame in its stream.
        proposals : list of MaskProposal, optional, keyword-only
            Masks to associate now instead of running the segmenter.
        force_keyframe : bool, keyword-only
            Make this frame a keyframe (reason TRIGGER), e.g. nearest an audio trigger.
        """
        h, w = image.shape[:2]
        if self._prev is not None and self._prev.shape[:2] != (h, w):
            logger.warning("frame size changed to %dx%d: resetting tracks", w, h)
            self.reset()
        first = self._steps == 0
        self._propagate(image)
        new: list[_Track] = []
        if first or proposals is not None or self._since_segment >= self.segment_every:
            if proposals is None:
                proposals = self.segmenter.segment(image)
                self._counts["segmentations"] += 1
            new = self._associate(image, self._usable(proposals, h * w))
            self._since_segment = 0
        elif self.refiner is not None and self._tracks and self._steps % self.refine_every == 0:
            self._refine(image)
        self._drop_lost(h * w)
        self._describe(image)
        keyframe = self._keyframe(image, t, frame_idx, new, first=first, force=force_keyframe)
        tracks = tuple(self._state(tr) for tr in self._tracks)
        self._prev = image
        self._steps += 1
        self._since_segment += 1
        self._counts["frames"] += 1
        return Perception(self.stream_id, int(frame_idx), float(t), w, h, tracks, keyframe)

    # --------------------------------------------------------------------------- internals

    def _propagate(self, image: np.ndarray) -> None:
        if self._prev is None or not self._tracks:
            return
        flow = self._flow.flow(self._prev, image)
        maps = self._flow.maps(flow)  # once for every track
        for tr in self._tracks:
            tr.mask = self._flow.warp(tr.mask, flow, maps=maps) > 0.5

    def _usable(self, proposals: list[MaskProposal], n_pixels: int) -> list[MaskProposal]:
        keep = [p for p in proposals if p.area >= self.min_area_frac * n_pixels]
        self._counts["proposals"] += len(keep)
        return sorted(keep, key=lambda p: -(p.predicted_iou * p.stability_score))

    def _refine(self, image: np.ndarray) -> None:
        """Refine every visible track's mask from its box (one call); keep it if the gate agrees."""
        live = [tr for tr in self._tracks if tr.mask.any()]
        if not live:
            return
        boxes = np.array([bbox_of(tr.mask) for tr in live], dtype=np.float32)
        for tr, p in zip(live, self.refiner.segment(image, boxes=boxes), strict=True):
            tr.mask, _ = self.gate(tr.mask, p.mask)

    def _reacquire(self, image: np.ndarray, p: MaskProposal) -> _Track | None:
        """The recently dropped track this proposal looks like (by keyframe descriptors), if any."""
        if not self._lost:
            return None
        d = self.embedder.embed_images([image], [p.mask])[0]
        sims = [float(tr.memory.similarities(d).max(initial=-1.0)) for tr in self._lost]
        best = int(np.argmax(sims))
        if sims[best] < self.reid_similarity:
            return None
        tr = self._lost[best]
        del self._lost[best]
        tr.mask, tr.score, tr.missed = p.mask.copy(), _quality(p), 0
        self._counts["reacquired"] += 1
        logger.info("re-acquired track %d (cosine %.3f)", tr.track_id, sims[best])
        return tr

    def _associate(self, image: np.ndarray, proposals: list[MaskProposal]) -> list[_Track]:
        """Match proposals to tracks by mask IoU; start tracks for the rest; return the new ones."""
        matched_t: set[int] = set()
        matched_p: set[int] = set()
        if self._tracks and proposals:
            iou = _iou_matrix([tr.mask for tr in self._tracks], [p.mask for p in proposals])
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols, strict=True):
                if iou[r, c] >= self.iou_match:
                    tr, p = self._tracks[r], proposals[c]
                    tr.mask, tr.score, tr.missed = p.mask.copy(), _quality(p), 0
                    matched_t.add(r)
                    matched_p.add(c)
        for r, tr in enumerate(self._tracks):
            if r not in matched_t:
                tr.missed += 1
        new = []
        for c, p in enumerate(proposals):
            if c in matched_p or len(self._tracks) >= self.max_objects or self._duplicate(p):
                continue
            back = self._reacquire(image, p)
            if back is not None:
                self._tracks.append(back)
                continue
            tr = _Track(self._next_id, p.mask.copy(), _quality(p), self._steps, self._memory())
            self._next_id += 1
            self._tracks.append(tr)
            new.append(tr)
            self._counts["tracks_created"] += 1
            logger.debug("new track %d at %s", tr.track_id, bbox_of(tr.mask))
        return new

    def _duplicate(self, p: MaskProposal) -> bool:
        inside = max((np.count_nonzero(p.mask & tr.mask) for tr in self._tracks), default=0)
        return inside > DUPLICATE_FRAC * max(1, p.area)

    def _memory(self) -> KeyframeMemory:
        return KeyframeMemory(budget=self.keyframe_budget, min_gap=self.keyframe_gap)

    def _drop_lost(self, n_pixels: int) -> None:
        min_area = self.min_area_frac * n_pixels
        alive = []
        for tr in self._tracks:
            if np.count_nonzero(tr.mask) < min_area and tr.missed == 0:
                tr.missed = 1  # vanished between segmentations
            if tr.missed > self.max_missed or not tr.mask.any():
                self._counts["tracks_dropped"] += 1
                logger.info("lost track %d after %d misses", tr.track_id, tr.missed)
                if self.max_lost and len(tr.memory):
                    self._lost.append(tr)
                continue
            alive.append(tr)
        self._tracks = alive

    def _describe(self, image: np.ndarray) -> None:
        if not self._tracks:
            return
        x = self.embedder.embed_images(
            [image] * len(self._tracks), [tr.mask for tr in self._tracks]
        )
        for tr, d in zip(self._tracks, x, strict=True):
            n = float(np.linalg.norm(d))
            tr.descriptor = (d / n).astype(np.float32) if n > 0 else None

    def _keyframe(
        self,
        image: np.ndarray,
        t: float,
        frame_idx: int,
        new: list[_Track],
        *,
        first: bool,
        force: bool,
    ) -> Keyframe | None:
        """Offer the frame to every visible track's memory; build the Keyframe if any admits it."""
        admitted = []
        for tr in self._tracks:
            if tr.descriptor is None or tr.missed:
                continue
            if tr.memory.offer(frame_idx, tr.descriptor, tr.score, force=force or tr in new):
                admitted.append(tr.track_id)
        if force:
            reason = KeyframeReason.TRIGGER
        elif not admitted:
            return None
        elif first:
            reason = KeyframeReason.REFERENCE
        elif new:
            reason = KeyframeReason.NEW_TRACK
        else:
            reason = KeyframeReason.PERIODIC
        self._counts["keyframes"] += 1
        visible = [tr.track_id for tr in self._tracks if not tr.missed]
        ids = tuple(admitted or visible)
        return Keyframe(self.stream_id, int(frame_idx), float(t), ids, reason, image=image)

    def _state(self, tr: _Track) -> TrackState:
        visible = tr.missed == 0 and bool(tr.mask.any())
        return TrackState(
            track_id=tr.track_id,
            label=LABEL,
            bbox=bbox_of(tr.mask),
            mask_rle=RLE.encode(tr.mask),
            score=float(tr.score),
            age=self._steps - tr.born,
            visible=visible,
            descriptor=tr.descriptor,
        )


def _quality(p: MaskProposal) -> float:
    return float(np.clip(0.5 * (p.predicted_iou + p.stability_score), 0.0, 1.0))


def _iou_matrix(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    """``float64[len(a), len(b)]`` mask IoUs (flattened boolean matmul)."""
    fa = np.stack([m.ravel() for m in a]).astype(np.float32)
    fb = np.stack([m.ravel() for m in b]).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float64)
