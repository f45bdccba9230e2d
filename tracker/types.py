"""Messages produced by the tracker: RLE masks, track states, keyframes, perceptions."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np


@dataclass(frozen=True, slots=True)
class RLE:
    """COCO-style uncompressed run-length mask: column-major runs, starting with a 0-run.

    size: ``(H, W)``; counts: alternating run lengths of 0s and 1s over the Fortran-ordered mask.
    """

    size: tuple[int, int]
    counts: tuple[int, ...]

    @classmethod
    def encode(cls, mask: np.ndarray) -> RLE:
        """Encode a ``bool[H, W]`` mask."""
        h, w = mask.shape
        flat = np.asarray(mask, dtype=bool).ravel(order="F")
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        bounds = np.concatenate(([0], change, [flat.size]))
        runs = np.diff(bounds).tolist()
        if flat.size and flat[0]:
            runs = [0, *runs]
        return cls(size=(int(h), int(w)), counts=tuple(int(r) for r in runs))

    def decode(self) -> np.ndarray:
        """Return the ``bool[H, W]`` mask."""
        h, w = self.size
        values = np.zeros(len(self.counts), dtype=bool)
        values[1::2] = True
        flat = np.repeat(values, self.counts)
        if flat.size != h * w:
            raise ValueError(f"RLE counts sum to {flat.size}, expected {h}*{w}={h * w}")
        return flat.reshape((h, w), order="F")

    @property
    def area(self) -> int:
        """Foreground pixel count."""
        return int(sum(self.counts[1::2]))

    def to_json(self) -> dict:
        """The COCO JSON form ``{"size": [H, W], "counts": [...]}``."""
        return {"size": list(self.size), "counts": list(self.counts)}

    @classmethod
    def from_json(cls, d: dict) -> RLE:
        """Inverse of :meth:`to_json`."""
        return cls(size=(int(d["size"][0]), int(d["size"][1])), counts=tuple(int(c) for c in d["counts"]))


class KeyframeReason(str, Enum):
    """Why a frame was kept as a keyframe."""

    REFERENCE = "reference"  # first frame of a track / the given first mask; never evicted
    TRIGGER = "trigger"  # the frame nearest an audio trigger
    NEW_TRACK = "new_track"
    PERIODIC = "periodic"
    NOVEL = "novel"  # appearance changed enough to be informative


@dataclass(frozen=True, slots=True)
class TrackState:
    """One object in one frame. bbox: XYXY pixels; score in [0, 1]; age: frames since creation.

    descriptor: optional L2-normalised ``float32[d]`` appearance vector (for re-identification).
    """

    track_id: int
    label: str
    bbox: tuple[float, float, float, float]
    mask_rle: RLE
    score: float
    age: int
    visible: bool = True
    descriptor: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Keyframe:
    """A frame kept because it is informative. image: ``uint8[H, W, 3]`` RGB (read-only; may be None
    once written to disk, then ``path`` says where)."""

    stream_id: str
    frame_idx: int
    t: float
    track_ids: tuple[int, ...]
    reason: KeyframeReason
    image: np.ndarray | None = field(default=None, compare=False)
    path: str | None = None


@dataclass(frozen=True, slots=True)
class Perception:
    """What the tracker made of one frame: every track, plus the frame if it became a keyframe."""

    stream_id: str
    frame_idx: int
    t: float
    width: int
    height: int
    tracks: tuple[TrackState, ...]
    keyframe: Keyframe | None = None
