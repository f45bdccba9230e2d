"""One clock for a source: media time of video frames and audio samples, chunking and sampling.

``t`` is ``pts * time_base`` minus the container start (media seconds); live sources add the wall
time (UTC) of the same instant. :class:`Clock` keeps a stream's frame times monotonic (missing
PTS extrapolated, resets rebased, variable frame rate kept); :class:`AudioChunker` turns decoded
audio into contiguous 16 kHz mono chunks whose ``t_start`` follows the PTS (gaps filled with
silence); :class:`Sampler` keeps at most ``fps`` frames per second of media time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import av
import numpy as np

from pipeline.types import AudioChunk

SAMPLE_RATE = 16000  # Hz, mono float32, once, at ingest
REBASE_S = 1.0  # a timestamp this far behind the previous one is a reset, not jitter


class Clock:
    """Media time of one stream's frames, monotonic, in seconds from the container start.

    ``t = pts * time_base - origin`` while timestamps behave (variable frame rate keeps its true
    times). A frame without PTS gets the previous time plus one frame duration (``1 / rate``); a
    timestamp more than :data:`REBASE_S` behind the previous one (a reset: concatenated or
    restarted streams) is rebased to continue after it, and so are its successors.
    """

    def __init__(self, origin: float = 0.0, rate: float | None = None) -> None:
        self.origin = origin
        self.step = 1.0 / rate if rate and rate > 0 else 1.0 / 25
        self.offset = 0.0
        self.last: float | None = None
        self.missing = 0
        self.rebased = 0

    def time(self, pts: int | None, time_base) -> float:
        if pts is None or time_base is None:
            self.missing += 1
            t = 0.0 if self.last is None else self.last + self.step
        else:
            t = float(pts * time_base) - self.origin + self.offset
            if self.last is not None and t < self.last - REBASE_S:
                self.rebased += 1
                self.offset += self.last + self.step - t
                t = self.last + self.step
            elif self.last is not None and t <= self.last:  # jitter/duplicate: keep order
                t = self.last + 1e-6
        self.last = t
        return t


class AudioChunker:
    """Resamples decoded audio frames to mono float32 and cuts contiguous chunks on one clock.

    ``wall`` (UTC seconds of the chunk's first sample) is set on chunks when ``push`` is given a
    wall time (live sources).
    """

    def __init__(
        self, stream_id: str, *, chunk_s: float, sample_rate: int = SAMPLE_RATE, origin: float = 0.0
    ) -> None:
        self.stream_id, self.sr, self.origin = stream_id, sample_rate, origin
        self.block = max(1, int(round(chunk_s * sample_rate)))
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        self.pending: list[np.ndarray] = []
        self.n_pending = 0
        self.t0: float | None = None  # media time of the first pending sample
        self.wall0: float | None = None

    @property
    def t_end(self) -> float:
        return (self.t0 or 0.0) + self.n_pending / self.sr

    def push(
        self, frame, *, t: float | None = None, wall: float | None = None, warn=None
    ) -> Iterator[AudioChunk]:
        """Add one decoded frame (its media time ``t``, default from its PTS)."""
        if t is None and frame.pts is not None and frame.time_base is not None:
            t = float(frame.pts * frame.time_base) - self.origin
        if t is not None:
            if self.t0 is None:
                self.t0 = max(0.0, t)
                self.wall0 = wall
            gap = int(round((t - self.t_end) * self.sr))
            if gap > 0.05 * self.sr:
                if warn is not None:
                    warn(
                        f"{gap / self.sr:.2f} s audio gap at {self.t_end:.2f} s, filled with silence"
                    )
                self._add(np.zeros(gap, dtype=np.float32))
        elif self.t0 is None:
            self.t0, self.wall0 = 0.0, wall
        for out in self.resampler.resample(frame):
            self._add(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
        yield from self._cut(final=False)

    def restart(self, t: float, wall: float | None = None) -> Iterator[AudioChunk]:
        """Flush what is pending and continue at media time ``t`` (after a gap)."""
        yield from self.flush()
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sr)
        self.pending, self.n_pending, self.t0, self.wall0 = [], 0, t, wall

    def flush(self) -> Iterator[AudioChunk]:
        for out in self.resampler.resample(None):
            self._add(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
        yield from self._cut(final=True)

    def _add(self, samples: np.ndarray) -> None:
        self.pending.append(samples)
        self.n_pending += samples.size

    def _cut(self, *, final: bool) -> Iterator[AudioChunk]:
        if not self.pending or (self.n_pending < self.block and not final):
            return
        buf = np.concatenate(self.pending)
        k = 0
        while buf.size - k >= self.block or (final and k < buf.size):
            samples = np.clip(buf[k : k + self.block], -1.0, 1.0)
            samples.setflags(write=False)
            t = (self.t0 or 0.0) + k / self.sr
            wall = None if self.wall0 is None else self.wall0 + k / self.sr
            yield AudioChunk(self.stream_id, t, self.sr, samples, wall_time=wall)
            k += samples.size
        rest = buf[k:]
        self.t0 = (self.t0 or 0.0) + k / self.sr
        self.wall0 = None if self.wall0 is None else self.wall0 + k / self.sr
        self.pending, self.n_pending = ([rest] if rest.size else []), rest.size


class Sampler:
    """Keeps frames at most ``fps`` per second (None: every frame) on the media clock."""

    def __init__(self, fps: float | None) -> None:
        self.fps, self.next_t = fps, -math.inf

    def keep(self, t: float) -> bool:
        if self.fps is None:
            return True
        if t + 1e-6 < self.next_t:
            return False
        self.next_t = max(self.next_t + 1.0 / self.fps, t + 0.5 / self.fps)
        return True

    def start(self, t: float) -> None:
        self.next_t = t
