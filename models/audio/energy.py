"""Weight-free streaming "something happened" gate: frame dBFS and spectral flux over a background.

Per 10 ms frame (25 ms window, YAMNet framing, see :mod:`models.audio.features`) the gate computes
the level in dBFS (plain RMS: white noise of standard deviation ``10**(L/20)`` reads ``L`` dBFS) and
the spectral flux of the log-mel (mean positive rise over the 64 bands, in dB). The background is
the median and MAD of both over the last ``background_s`` seconds, refreshed every 0.1 s from the
frames *before* the current block, so decisions need no look-ahead. A frame is active when loud::

    dB > max(floor_dbfs, median + max(k_mad * MAD, min_rise_db))

or is a strong onset (flux over ``max(ONSET_MIN_DB, median + k_mad * MAD)`` of the flux, and dB over
``floor_dbfs``). Active runs closer than ``merge_gap_s`` merge; events shorter than ``min_event_s``
are dropped. The first 0.5 s of a stream are judged against the background of those 0.5 s (the only
look-ahead), so a sound at the very start of a file is still found.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from models.audio.base import AudioEvent
from models.audio.features import (
    HOP,
    HOP_S,
    N_MELS,
    SAMPLE_RATE,
    WIN,
    check_samples,
    log_mel,
    n_frames,
)
from models.errors import ParameterError

logger = logging.getLogger(__name__)

KEY = "energy"
LABEL = "sound"
BLOCK = 10  # frames between background refreshes (0.1 s)
WARM_S = 0.5  # seconds judged against their own background at the start of a stream
ONSET_MIN_DB = 6.0  # a strong onset raises the log-mel by at least this much, averaged over bands
MS_EPS = 1e-12  # mean-square floor: digital silence reads -120 dBFS
GAP_TOL_S = HOP_S  # a chunk starting further than this from the expected time starts a new segment
DB_PER_NEPER = 10.0 / math.log(10.0)  # natural log of power -> dB
EMBEDDING_DIM = 2 * N_MELS  # mean and std of the event's log-mel frames
DETECT_BLOCK_S = 10.0  # detect() feeds whole arrays in blocks of this length (bounded memory)
_SLOT_OFFSET = (WIN - HOP) / 2  # samples from a window's start to the 10 ms slot the frame owns


@dataclass(slots=True)
class _Frames:
    """A batch of consecutive frames: level (dBFS), flux (dB), log-mel, slot start (s), index."""

    db: np.ndarray  # float64[n]
    flux: np.ndarray  # float64[n]
    mel: np.ndarray  # float32[n, N_MELS]
    t: np.ndarray  # float64[n]
    k: np.ndarray  # int64[n], global frame index

    @staticmethod
    def concat(parts: list[_Frames]) -> _Frames:
        if len(parts) == 1:
            return parts[0]
        names = [f.name for f in fields(_Frames)]
        return _Frames(*(np.concatenate([getattr(p, n) for p in parts]) for n in names))


@dataclass(slots=True)
class _Open:
    """The event being built: first/last active frame, running log-mel sums, peak excess (dB)."""

    k_first: int
    k_last: int
    t_first: float
    t_last: float
    total: np.ndarray  # float64[N_MELS]
    total_sq: np.ndarray  # float64[N_MELS]
    n: int
    peak: float


def frame_dbfs(x: np.ndarray) -> np.ndarray:
    """Level (dBFS, plain RMS) of each 25 ms window at 10 ms hop: ``float64[n_frames(x.size)]``."""
    win = np.lib.stride_tricks.sliding_window_view(x, WIN)[::HOP]
    return 10.0 * np.log10(np.einsum("ij,ij->i", win, win, dtype=np.float64) / WIN + MS_EPS)


def _embedding(total: np.ndarray, total_sq: np.ndarray, n: int) -> np.ndarray:
    """L2-normalised ``float32[128]``: mean and std of n log-mel frames from their sums."""
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean * mean, 0.0))
    emb = np.concatenate([mean, std]).astype(np.float32)
    norm = float(np.linalg.norm(emb))
    return emb / norm if norm > 0 else emb


def _median(a: np.ndarray) -> np.ndarray:
    """``np.median(a, axis=-1)`` (same values: the middle element, or the mean of the two middle
    ones) by one partition, without ``np.median``'s generic overhead; ``a`` holds no NaN."""
    n = a.shape[-1]
    k = n // 2
    if n % 2:
        return np.partition(a, k, axis=-1)[..., k]
    part = np.partition(a, (k - 1, k), axis=-1)
    return (part[..., k - 1] + part[..., k]) / 2


def _mad_stats(win: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and MAD along the last axis of ``win`` (``float[..., w]``)."""
    med = _median(win)
    return med, _median(np.abs(win - med[..., None]))


def _window_stats(
    h: np.ndarray, lo: np.ndarray, hi: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Median and MAD of ``h[..., lo[j]:hi[j]]`` for each j (``h``: ``float[m, n]``, results
    ``float[m, j]``); full-width windows in one numpy call."""
    med = np.empty((h.shape[0], lo.size))
    mad = np.empty((h.shape[0], lo.size))
    full = (hi - lo) == width
    if full.any():
        rows = np.lib.stride_tricks.sliding_window_view(h, width, axis=-1)[:, lo[full]]
        med[:, full], mad[:, full] = _mad_stats(rows)
    for j in np.flatnonzero(~full):  # only while the background is still filling up
        med[:, j], mad[:, j] = _mad_stats(h[:, lo[j] : hi[j]])
    return med, mad


class EnergyDetector:
    """Streaming level + onset gate implementing :class:`models.audio.base.AudioEventDetector`.

    Parameters
    ----------
    sample_rate : int
        Must be 16000 Hz (audio is resampled once, at ingest).
    k_mad : float
        Threshold = background median + ``k_mad`` * MAD (of frame dB, and of flux for onsets).
    min_rise_db : float
        A loud frame is at least this many dB over the background median.
    floor_dbfs : float
        Frames quieter than this (dBFS) never trigger.
    background_s : float
        Length of the running background (s); memory is bounded by it.
    min_event_s : float
        Events shorter than this (s) are dropped.
    merge_gap_s : float
        Active runs separated by less than this (s) form one event; an event is reported once
        this much inactivity follows it, so the report lags its end by ~``merge_gap_s``.
    """

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        *,
        k_mad: float = 5.0,
        min_rise_db: float = 8.0,
        floor_dbfs: float = -55.0,
        background_s: float = 4.0,
        min_event_s: float = 0.08,
        merge_gap_s: float = 0.4,
    ) -> None:
        if sample_rate != SAMPLE_RATE:
            raise ParameterError(f"sample_rate must be {SAMPLE_RATE} Hz, got {sample_rate!r}")
        for name, value, ok in (
            ("k_mad", k_mad, k_mad > 0),
            ("min_rise_db", min_rise_db, min_rise_db >= 0),
            ("floor_dbfs", floor_dbfs, floor_dbfs <= 0),
            ("background_s", background_s, background_s > 0),
            ("min_event_s", min_event_s, min_event_s >= 0),
            ("merge_gap_s", merge_gap_s, merge_gap_s >= 0),
        ):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and ok):
                raise ParameterError(
                    f"bad {name}={value!r} (need k_mad > 0, floor_dbfs <= 0, the others >= 0)"
                )
        self.sample_rate = sample_rate
        self.k_mad = float(k_mad)
        self.min_rise_db = float(min_rise_db)
        self.floor_dbfs = float(floor_dbfs)
        self.background_s = float(background_s)
        self.min_event_s = float(min_event_s)
        self.merge_gap_s = float(merge_gap_s)
        self._bg = max(BLOCK, round(background_s / HOP_S))  # background frames
        self._warm = max(BLOCK, min(self._bg, round(WARM_S / HOP_S)) // BLOCK * BLOCK)
        self._gap = max(1, math.ceil(merge_gap_s / HOP_S - 1e-9))  # inactive frames ending an event
        self._min_frames = math.ceil(min_event_s / HOP_S - 1e-9)
        self._k = 0  # global index of the next frame
        self._hist_db = np.zeros(0)  # the last _bg + BLOCK frame levels (ring buffer)
        self._hist_fl = np.zeros(0)
        self._pending: list[_Frames] = []  # frames held back during the first WARM_S
        self._open: _Open | None = None
        self.frame_sink: Callable[[np.ndarray, np.ndarray, bool], None] | None = None
        """Called with ``(log_mel float32[n, 64], frame_start_s float64[n], new_segment)`` for each
        batch of frames as they are computed (a classifier reuses the gate's log-mel)."""
        self._new_segment()

    def _new_segment(self) -> None:
        """Forget the sample clock (at the start, after a gap or flush); keep the background."""
        self._carry = np.zeros(0, dtype=np.float32)  # samples not yet framed (< WIN)
        self._prev_mel: np.ndarray | None = None
        self._seg_t0: float | None = None
        self._seg_k0 = self._k
        self._seg_samples = 0

    @property
    def open_onset(self) -> float | None:
        """Start (s) of the sound being heard now, before it is complete; None when quiet."""
        return None if self._open is None else self._open.t_first

    @property
    def state_nbytes(self) -> int:
        """Bytes held between calls (bounded by ``background_s``, whatever the stream length)."""
        arrays = [self._carry, self._hist_db, self._hist_fl]
        arrays += [a for p in self._pending for a in (p.db, p.flux, p.mel, p.t, p.k)]
        if self._prev_mel is not None:
            arrays.append(self._prev_mel)
        if self._open is not None:
            arrays += [self._open.total, self._open.total_sq]
        return sum(a.nbytes for a in arrays)

    def feed(self, samples: np.ndarray, t_start: float) -> list[AudioEvent]:
        """Take the next block of the stream and return the events completed so far.

        Parameters
        ----------
        samples : np.ndarray
            ``float32[n]`` mono in [-1, 1] at 16 kHz, any length.
        t_start : float
            Media seconds of ``samples[0]``. A jump of more than 10 ms from where the previous
            block ended closes any open event and restarts the framing at ``t_start``.

        Returns
        -------
        list[AudioEvent]
            Label ``"sound"``, score in [0, 1], span in media seconds, ``float32[128]`` embedding.
        """
        x = check_samples(samples, sr=self.sample_rate)
        out: list[AudioEvent] = []
        if self._seg_t0 is not None:
            expected = self._seg_t0 + self._seg_samples / self.sample_rate
            if abs(t_start - expected) > GAP_TOL_S:
                logger.warning("audio gap: expected t=%.3f s, got %.3f s", expected, t_start)
                out += self._close(final=True)
                self._new_segment()
        if self._seg_t0 is None:
            self._seg_t0 = float(t_start)
        self._seg_samples += x.size
        frames = self._frames(x)
        if frames is not None:
            self._pending.append(frames)
        return out + self._close(final=False)

    def flush(self) -> list[AudioEvent]:
        """End of stream: decide held-back frames, close the open event, return what completes."""
        out = self._close(final=True)
        self._new_segment()
        return out

    def _frames(self, x: np.ndarray) -> _Frames | None:
        """Frame ``carry + x``: levels, log-mel, flux and slot times of every complete window."""
        buf = np.concatenate([self._carry, x]) if self._carry.size else x
        n = n_frames(buf.size)
        if n == 0:
            self._carry = buf.copy()
            return None
        used = buf[: (n - 1) * HOP + WIN]
        db = frame_dbfs(used)
        mel = log_mel(used)
        prev = mel[:1] if self._prev_mel is None else self._prev_mel[None]
        rise = np.diff(np.concatenate([prev, mel]), axis=0)
        flux = np.maximum(rise, 0.0).mean(axis=1, dtype=np.float64) * DB_PER_NEPER
        k = self._k + np.arange(n, dtype=np.int64)
        t = self._seg_t0 + ((k - self._seg_k0) * HOP + _SLOT_OFFSET) / self.sample_rate
        if self.frame_sink is not None:
            self.frame_sink(mel, t - _SLOT_OFFSET / self.sample_rate, self._prev_mel is None)
        self._prev_mel = mel[-1].copy()
        self._carry = buf[n * HOP :].copy()
        self._k += n
        return _Frames(db, flux, mel, t, k)

    def _close(self, *, final: bool) -> list[AudioEvent]:
        """Decide pending frames (after warm-up, or at the end) and report finished events."""
        out: list[AudioEvent] = []
        if self._pending and (final or self._k >= self._warm):
            batch = _Frames.concat(self._pending)
            self._pending = []
            out += self._track(batch, *self._decide(batch))
        if final and self._open is not None:
            out += self._emit(self._open)
            self._open = None
        return out

    def _decide(self, f: _Frames) -> tuple[np.ndarray, np.ndarray]:
        """Active mask ``bool[n]`` and excess over threshold (dB, ``float64[n]``) of each frame."""
        thr_db, thr_fl = self._thresholds(f.db, f.flux, int(f.k[0]))
        loud = f.db > thr_db
        onset = (f.flux > thr_fl) & (f.db > self.floor_dbfs)
        excess = np.maximum(f.db - thr_db, np.where(onset, f.flux - thr_fl, -np.inf))
        return loud | onset, excess

    def _thresholds(
        self, db: np.ndarray, flux: np.ndarray, k0: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame level and flux thresholds from the background before each frame's block."""
        h_db = np.concatenate([self._hist_db, db])
        h_fl = np.concatenate([self._hist_fl, flux])
        base = k0 - self._hist_db.size  # global index of h_*[0]
        k = k0 + np.arange(db.size)
        keys = np.where(k < self._warm, -1, k // BLOCK * BLOCK)
        uniq, inv = np.unique(keys, return_inverse=True)
        warm_hi = min(self._warm, base + h_db.size)
        lo = np.where(uniq < 0, 0, np.maximum(uniq - self._bg, 0)) - base
        hi = np.where(uniq < 0, warm_hi, uniq) - base
        (med_db, med_fl), (mad_db, mad_fl) = _window_stats(np.stack([h_db, h_fl]), lo, hi, self._bg)
        rise = np.maximum(self.k_mad * mad_db, self.min_rise_db)
        thr_db = np.maximum(self.floor_dbfs, med_db + rise)
        thr_fl = np.maximum(ONSET_MIN_DB, med_fl + self.k_mad * mad_fl)
        keep = self._bg + BLOCK
        self._hist_db, self._hist_fl = h_db[-keep:].copy(), h_fl[-keep:].copy()
        return thr_db[inv], thr_fl[inv]

    def _track(self, f: _Frames, active: np.ndarray, excess: np.ndarray) -> list[AudioEvent]:
        """Group active frames into events (numpy per batch, Python per event)."""
        out: list[AudioEvent] = []
        idx = np.flatnonzero(active)
        if idx.size:
            ka = f.k[idx]
            prev_k = self._open.k_last if self._open is not None else -(10**9)
            gaps = np.diff(ka, prepend=prev_k) - 1  # inactive frames before each active one
            extends = bool(gaps[0] < self._gap)  # the first group continues the open event
            new = gaps >= self._gap
            new[0] = True
            bounds = np.append(np.flatnonzero(new), idx.size)
            rows = f.mel[idx].astype(np.float64)
            sums = np.add.reduceat(rows, bounds[:-1], axis=0)
            sums_sq = np.add.reduceat(rows * rows, bounds[:-1], axis=0)
            peaks = np.maximum.reduceat(excess[idx], bounds[:-1])
            for g, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
                ia, ib = idx[a], idx[b - 1]
                if g == 0 and extends:
                    o = self._open
                    o.k_last, o.t_last = int(f.k[ib]), float(f.t[ib])
                    o.total += sums[g]
                    o.total_sq += sums_sq[g]
                    o.n += b - a
                    o.peak = max(o.peak, float(peaks[g]))
                    continue
                if self._open is not None:
                    out += self._emit(self._open)
                self._open = _Open(
                    int(f.k[ia]), int(f.k[ib]), float(f.t[ia]), float(f.t[ib]),
                    sums[g].copy(), sums_sq[g].copy(), int(b - a), float(peaks[g]),
                )  # fmt: skip
        if self._open is not None and int(f.k[-1]) - self._open.k_last >= self._gap:
            out += self._emit(self._open)
            self._open = None
        return out

    def _emit(self, o: _Open) -> list[AudioEvent]:
        """The finished event ``o`` as ``[AudioEvent]``, or ``[]`` if shorter than min_event_s."""
        n_span = o.k_last - o.k_first + 1
        t_end = o.t_last + HOP_S
        if n_span < self._min_frames:
            logger.debug("drop %.3f-%.3f s: under %.3f s", o.t_first, t_end, self.min_event_s)
            return []
        emb = _embedding(o.total, o.total_sq, o.n)
        score = float(np.clip(1.0 - 10.0 ** (-max(o.peak, 0.0) / 20.0), 0.0, 1.0))
        logger.debug("sound %.3f-%.3f s, score %.2f", o.t_first, t_end, score)
        return [AudioEvent(LABEL, score, o.t_first, t_end, embedding=emb)]


def detect(samples: np.ndarray, *, sr: int = SAMPLE_RATE, **kwargs: float) -> list[AudioEvent]:
    """Run an :class:`EnergyDetector` over a whole array (``float32[n]``, t = 0 at ``samples[0]``).

    ``kwargs`` are the detector's tunables. The array is fed in 10 s blocks, then flushed.
    """
    x = check_samples(samples, sr=sr)
    det = EnergyDetector(sr, **kwargs)
    block = int(DETECT_BLOCK_S * sr)
    events: list[AudioEvent] = []
    for i in range(0, x.size, block):
        events += det.feed(x[i : i + block], i / sr)
    return events + det.flush()


def embed_clip(samples: np.ndarray, *, sr: int = SAMPLE_RATE, top_db: float = 20.0) -> np.ndarray:
    """Embed an example sound (e.g. a query clip) like the events' embeddings.

    Parameters
    ----------
    samples : np.ndarray
        ``float32[n]`` mono at 16 kHz, at least 25 ms.
    top_db : float
        Frames more than this many dB under the clip's loudest frame (silence around the sound)
        are left out, as inactive frames are left out of an event's embedding.

    Returns
    -------
    np.ndarray
        ``float32[128]``, L2-normalised mean and std of the kept log-mel frames.
    """
    x = check_samples(samples, sr=sr)
    if x.size < WIN:
        raise ParameterError(f"clip too short to embed: {x.size} samples, need at least {WIN}")
    db = frame_dbfs(x)
    rows = log_mel(x)[db >= db.max() - top_db].astype(np.float64)
    return _embedding(rows.sum(axis=0), (rows * rows).sum(axis=0), rows.shape[0])
