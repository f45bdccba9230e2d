"""Visual-change trigger: the capture gate for video without audio (a camera without a microphone).

Without a sound track the audio gate (DESIGN.md §2.2) has nothing to listen to, so a video-only
source is decoded once at a low rate (``fps=2``, longer side 160 px) and the frames that differ
from the one before start a trigger. The method, per sampled frame fed in time order:

1. **Thumbnail.** The RGB frame is area-resized to a fixed ``(w, h)`` whose longer side is
   ``size`` px (the first frame's aspect ratio; later frames of any other size are resized to the
   same shape, so a resolution change mid-stream compares like with like) and blurred with a
   3x3 Gaussian, which with the area averaging keeps sensor noise and codec grain out of the score.
2. **Score** in [0, 1] against the previous sampled frame: ``max(d_pix, d_area, d_hist)``, where
   ``d_pix`` is the mean absolute difference of the thumbnails (over pixels and RGB channels,
   / 255), ``d_area`` the fraction of thumbnail pixels that changed by more than
   :data:`PIXEL_DELTA` levels in some channel (a small object counts by its area, not diluted by
   its contrast), and ``d_hist`` is 1 − cosine of the two 64-bin RGB histograms (4 levels per
   channel), which catches a cut between scenes of similar layout but other colours. Colour, not
   grey, because an object of the background's luminance is invisible in luma. Sensor noise
   barely moves any of them: after area-resizing and blurring, Gaussian noise of sigma 15 levels
   on a 320x240 frame scores ~0.006, an object covering 8 % of it ~0.1, a cut ~0.9.
3. **Adaptive threshold**, like the audio gate's (:mod:`models.audio.energy`): a frame is active
   when ``score > max(min_change, median + k_mad * MAD)`` of the scores of the frames of the last
   ``background_s`` seconds *before* it (at most :data:`MAX_BACKGROUND` scores: bounded memory;
   ``min_change`` alone until :data:`MIN_BACKGROUND` scores are in, since a MAD of one or two
   scores is 0).
   Every score enters the background, so a scene that keeps moving for more than about half of
   ``background_s`` raises the threshold and only larger changes trigger after that.
4. **Changes.** Active frames closer than ``merge_gap_s`` merge into one change spanning from the
   previous sampled frame's time (the change happened in between) to the last active frame's
   time; its score is the peak. It is reported once the stream runs ``merge_gap_s`` past its last
   active frame (or at :meth:`VisualChangeDetector.flush`); changes shorter than ``min_event_s``
   are dropped.
5. **Initial view.** With ``initial=True`` the first frame is a change of score 1.0 spanning
   ``[t0, t1]`` (t1 the next sampled frame's time), so a static camera still yields one capture
   of what it sees.

Timestamps that jump (backwards, or forward by more than ``max(JUMP_STEPS * interval,
merge_gap_s)``, interval being the median recent sampling step) are a discontinuity: the open
change is closed, the background keeps only scores from the ``background_s`` before the new time,
and a change found on the jumped frame spans ``[t - interval, t]``.
:func:`visual_trigger_events` turns the changes into trigger events for
:func:`pipeline.triggers.capture_windows`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.errors import ConfigError
from pipeline.ingest import iter_video
from pipeline.types import FramePacket, TriggerEvent, TriggerState

logger = logging.getLogger(__name__)

LABEL = "visual_change"
BLUR_KSIZE = 3  # px, Gaussian blur of the thumbnail
PIXEL_DELTA = 24  # levels (of 255): a thumbnail pixel changed by more than this is "changed"
HIST_BITS = 2  # bits kept per RGB channel: 4 levels, 64 histogram bins
HIST_BINS = 1 << (3 * HIST_BITS)
MAX_BACKGROUND = 4096  # scores kept at most, whatever the frame rate (bounded memory)
MIN_BACKGROUND = 4  # scores needed before median + k_mad * MAD applies (min_change alone before)
STEPS_KEPT = 8  # recent sampling steps whose median is the typical interval
JUMP_STEPS = 4.0  # a step longer than this many typical intervals is a timestamp jump
INITIAL_SCORE = 1.0  # score of the first view: everything in it is new
EPS_S = 1e-6  # seconds: times closer than this are equal


@dataclass(frozen=True, slots=True)
class VisualChange:
    """A visual change: media seconds ``[t_start, t_end]`` and its peak score in [0, 1]."""

    t_start: float
    t_end: float
    score: float


@dataclass(slots=True)
class _Thumb:
    """A frame reduced for comparison: RGB ``uint8[h, w, 3]``, L2-normalised ``float32[64]``."""

    rgb: np.ndarray
    hist: np.ndarray


@dataclass(slots=True)
class _Open:
    """The change being built. ``first``: the initial view, whose end waits (``pending``) for
    the next frame's time."""

    t_start: float
    t_end: float
    score: float
    first: bool = False
    pending: bool = False


def thumbnail_shape(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) of the thumbnail of a ``width`` x ``height`` frame: longer side ``size`` px."""
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _thumbnail(image: np.ndarray, shape: tuple[int, int]) -> _Thumb:
    """Blurred thumbnail of an RGB ``uint8[H, W, 3]`` (or grey ``uint8[H, W]``) image."""
    if image.ndim == 2:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2RGB)
    small = cv2.resize(np.ascontiguousarray(image), shape, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (BLUR_KSIZE, BLUR_KSIZE), 0)
    q = (small >> (8 - HIST_BITS)).astype(np.intp)
    idx = (q[..., 0] << (2 * HIST_BITS)) | (q[..., 1] << HIST_BITS) | q[..., 2]
    hist = np.bincount(idx.ravel(), minlength=HIST_BINS).astype(np.float32)
    hist /= np.linalg.norm(hist)
    return _Thumb(small, hist)


def change_score(a: _Thumb, b: _Thumb) -> float:
    """``max(d_pix, d_area, d_hist)`` of two thumbnails, in [0, 1] (see the module docstring)."""
    diff = cv2.absdiff(a.rgb, b.rgb)  # uint8[h, w, 3]
    d_pix = float(diff.mean()) / 255.0
    d_area = float(np.count_nonzero(diff.max(axis=2) > PIXEL_DELTA)) / (diff.size // 3)
    d_hist = 1.0 - float(a.hist @ b.hist)
    return min(1.0, max(d_pix, d_area, d_hist, 0.0))


class VisualChangeDetector:
    """Streaming visual-change detector: feed sampled frames in time order (see module docstring).

    Parameters
    ----------
    k_mad : float
        Threshold = background median + ``k_mad`` * MAD of the change scores.
    min_change : float
        Scores at or below this never trigger (fraction of full scale, in [0, 1)).
    background_s : float
        Length of the running background of scores (s); memory is bounded by it and by
        :data:`MAX_BACKGROUND`.
    merge_gap_s : float
        Active frames closer than this (s) form one change; a change is reported once the stream
        has run this long past its last active frame, so the report lags by ~``merge_gap_s``.
    min_event_s : float
        Changes shorter than this (s) are dropped (never the initial one).
    size : int
        Longer side of the comparison thumbnail (px).
    initial : bool
        Report the first frame as a change (a static camera still yields one capture).

    Notes
    -----
    Memory held between calls: two thumbnails of ``size`` px and at most :data:`MAX_BACKGROUND`
    (time, score) pairs, whatever the stream length (:attr:`state_nbytes`).
    """

    def __init__(
        self,
        *,
        k_mad: float = 5.0,
        min_change: float = 0.02,
        background_s: float = 30.0,
        merge_gap_s: float = 2.0,
        min_event_s: float = 0.0,
        size: int = 64,
        initial: bool = True,
    ) -> None:
        for name, value, ok in (
            ("k_mad", k_mad, k_mad > 0),
            ("min_change", min_change, 0 <= min_change < 1),
            ("background_s", background_s, background_s > 0),
            ("merge_gap_s", merge_gap_s, merge_gap_s >= 0),
            ("min_event_s", min_event_s, min_event_s >= 0),
        ):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and ok):
                raise ConfigError(
                    f"visual trigger: bad {name}={value!r} (need k_mad > 0, background_s > 0, "
                    "0 <= min_change < 1, merge_gap_s >= 0, min_event_s >= 0)"
                )
        if not (isinstance(size, int) and 8 <= size <= 1024):
            raise ConfigError(f"visual trigger: size must be an int in [8, 1024] px, got {size!r}")
        self.k_mad = float(k_mad)
        self.min_change = float(min_change)
        self.background_s = float(background_s)
        self.merge_gap_s = float(merge_gap_s)
        self.min_event_s = float(min_event_s)
        self.size = size
        self.initial = bool(initial)
        self.n_frames = 0  # frames fed so far
        self._shape: tuple[int, int] | None = None  # thumbnail (w, h), fixed by the first frame
        self._prev: _Thumb | None = None
        self._t_prev = 0.0
        self._bg: deque[tuple[float, float]] = deque(maxlen=MAX_BACKGROUND)  # (t, score)
        self._steps: deque[float] = deque(maxlen=STEPS_KEPT)
        self._open: _Open | None = None

    @property
    def interval_s(self) -> float | None:
        """Typical sampling step (median of the recent ones, s); None before the second frame."""
        return float(np.median(self._steps)) if self._steps else None

    @property
    def state_nbytes(self) -> int:
        """Bytes of array state held between calls (bounded, whatever the stream length)."""
        thumb = 0 if self._prev is None else self._prev.rgb.nbytes + self._prev.hist.nbytes
        return thumb + 16 * len(self._bg) + 8 * len(self._steps)

    def feed(self, frame: FramePacket) -> list[VisualChange]:
        """Judge the next sampled frame; return the changes completed so far (in time order)."""
        t = float(frame.t)
        image = frame.image
        if not math.isfinite(t):
            raise ValueError(f"frame {frame.frame_idx} of {frame.stream_id!r} has time {t!r}")
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or image.size == 0 or (
            image.ndim == 3 and image.shape[2] != 3
        ):
            raise ValueError(
                f"frame {frame.frame_idx}: need an RGB uint8[H, W, 3] image, got "
                f"{image.dtype}{list(image.shape)}"
            )
        if self._shape is None:
            self._shape = thumbnail_shape(image.shape[1], image.shape[0], self.size)
        thumb = _thumbnail(image, self._shape)
        out: list[VisualChange] = []
        if self._prev is None:
            if self.initial:
                self._open = _Open(t, t, INITIAL_SCORE, first=True, pending=True)
        else:
            out = self._judge(t, change_score(self._prev, thumb))
        self._prev, self._t_prev = thumb, t
        self.n_frames += 1
        return out

    def flush(self) -> list[VisualChange]:
        """End of stream: report the open change. Frames fed afterwards continue the stream."""
        return self._close()

    def _judge(self, t: float, score: float) -> list[VisualChange]:
        """Threshold ``score`` of the frame at ``t`` against the background; update the change."""
        out: list[VisualChange] = []
        step, dt = t - self._t_prev, self.interval_s
        jump = step < -EPS_S or (dt is not None and step > max(JUMP_STEPS * dt, self.merge_gap_s))
        if jump:
            logger.debug("timestamp jump %.3f -> %.3f s: a new segment", self._t_prev, t)
            out += self._close()
            lo = t - self.background_s
            self._bg = deque(((s, x) for s, x in self._bg if lo <= s <= t), maxlen=MAX_BACKGROUND)
        elif step > EPS_S:
            self._steps.append(step)
        o = self._open
        if o is not None and o.pending:  # the first view lasts until this frame
            o.t_end, o.pending = max(o.t_end, t), False
        threshold = self._threshold(t)
        self._bg.append((t, score))
        if score > threshold:
            start = t - (dt or 0.0) if jump else self._t_prev
            if o is not None and (t - o.t_end < self.merge_gap_s or t <= o.t_end + EPS_S):
                o.t_end, o.score = t, max(o.score, score)
            else:
                out += self._close()
                self._open = _Open(start, t, score)
        elif o is not None and t - o.t_end >= self.merge_gap_s - EPS_S:
            out += self._close()
        return out

    def _threshold(self, t: float) -> float:
        """``max(min_change, median + k_mad * MAD)`` of the scores of ``[t - background_s, t]``."""
        while self._bg and self._bg[0][0] < t - self.background_s:
            self._bg.popleft()
        if len(self._bg) < MIN_BACKGROUND:
            return self.min_change
        x = np.fromiter((s for _, s in self._bg), dtype=np.float64, count=len(self._bg))
        med = float(np.median(x))
        mad = float(np.median(np.abs(x - med)))
        return max(self.min_change, med + self.k_mad * mad)

    def _close(self) -> list[VisualChange]:
        o, self._open = self._open, None
        if o is None:
            return []
        if not o.first and o.t_end - o.t_start < self.min_event_s - EPS_S:
            return []
        return [VisualChange(o.t_start, o.t_end, o.score)]


def visual_trigger_events(
    changes: Iterable[VisualChange], *, stream_id: str
) -> list[TriggerEvent]:
    """One accepted trigger per change: ``START`` (t = its start) then ``END`` (t = its end).

    Triggers are numbered 0..n-1 in time order, labelled :data:`LABEL`, carry the change's score
    and span; feed them to :func:`pipeline.triggers.capture_windows`.
    """
    out: list[TriggerEvent] = []
    for i, c in enumerate(sorted(changes, key=lambda c: (c.t_start, c.t_end))):
        for state, t in ((TriggerState.START, c.t_start), (TriggerState.END, c.t_end)):
            out.append(TriggerEvent(i, stream_id, state, LABEL, c.score, t, c.t_start, c.t_end))
    return out


def detect_visual_changes(
    source: str,
    *,
    stream_id: str = "visual",
    fps: float = 2.0,
    max_side: int = 160,
    **detector_kwargs: float | int | bool,
) -> tuple[list[VisualChange], float]:
    """Decode the whole video of ``source`` at ``fps`` (longer side ``max_side`` px); find changes.

    ``detector_kwargs`` go to :class:`VisualChangeDetector`. Returns the changes in time order and
    the duration seen (s): the end of the last sampled frame (its time plus the sampling step),
    0.0 when no frame decodes. Raises :class:`pipeline.errors.IngestError` for unreadable sources.
    """
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ConfigError(f"visual trigger: fps must be > 0, got {fps!r}")
    detector = VisualChangeDetector(**detector_kwargs)
    changes: list[VisualChange] = []
    t_max: float | None = None
    clock = time.perf_counter()
    for frame in iter_video(source, stream_id=stream_id, windows=None, fps=fps, max_side=max_side):
        changes += detector.feed(frame)
        t_max = frame.t if t_max is None else max(t_max, frame.t)
    changes += detector.flush()
    duration = 0.0 if t_max is None else t_max + (detector.interval_s or 1.0 / fps)
    wall = time.perf_counter() - clock
    logger.info(
        "%s: %d visual changes in %.1f s of video (%d frames sampled, %.2f s)",
        source, len(changes), duration, detector.n_frames, wall,
    )  # fmt: skip
    return changes, duration
