"""Soundscapes for the trigger benchmark: ESC-50 events at known times over a continuous background.

A soundscape (DESIGN.md §4) is ``minutes`` of 16 kHz mono audio built from held-out ESC-50 clips
(the ``test`` part of :func:`models.audio.esc50.split`, so no recording the classifier was trained
or tuned on is scored):

- **Background bed**: clips of :data:`~models.audio.esc50.BACKGROUND` classes, each trimmed to its
  active part (:data:`BED_REL_DB`, which drops ESC-50's digital-silence padding), normalised to the
  segment's RMS level and joined with :data:`CROSSFADE_S` linear crossfades. The class changes
  every ``segment_s`` seconds (never twice the same class in a row); each segment's level is drawn
  uniformly from ``bg_dbfs``.
- **Events**: ``trigger_rate`` clips per minute of trigger classes and ``distractor_rate`` per
  minute of distractor classes, shuffled, placed at random times with at least ``min_gap_s``
  seconds of background between one event's truth span and the next (and at both ends), so events
  never overlap. Each is mixed at an SNR drawn from ``snr_db``.

Definitions
-----------
Active part of a clip
    Frames of 25 ms every 10 ms (YAMNet framing, frame ``i`` = samples ``[160 i, 160 i + 400)``),
    level = 10 log10(mean square) in dBFS. Active frames are those within :data:`ACTIVE_REL_DB`
    (30 dB) of the clip's loudest frame; the active part runs from the first sample of the first
    active frame to the last sample of the last active frame (quiet gaps between, e.g. knocks,
    stay inside), capped at :data:`MAX_EVENT_S`. Only the active part is mixed in (with
    :data:`FADE_S` fades at its edges), so an event's **truth span** is exactly where its samples
    lie in the soundscape. The threshold is relative, hence the same before and after any gain.
SNR
    ``20 log10(event RMS / background RMS)``: event RMS over the clip's active *frames* only
    (root of their mean mean-square, so pauses between knocks do not dilute it), background RMS
    over the bed samples under the event's truth span.
No clipping
    After mixing, if the peak exceeds :data:`PEAK_MAX` the whole soundscape is scaled by one gain
    (``Soundscape.gain_db`` <= 0, every SNR preserved; the segment levels reported are after it).

ESC-50 is CC BY-NC 3.0: soundscapes built from it are for non-commercial evaluation only.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from models.audio.esc50 import BACKGROUND, DEFAULT_TRIGGERS, DISTRACTORS, Clip, read_meta, split

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz
FRAME = 400  # samples per level frame (25 ms)
HOP = 160  # samples between level frames (10 ms)
ACTIVE_REL_DB = -30.0  # dB under the loudest frame: still active
BED_REL_DB = -50.0  # background clips: trim only what is this far under their loudest frame
MAX_EVENT_S = 5.0  # longest active part mixed in (s)
FADE_S = 0.005  # linear fade at the edges of an event's active part (s)
CROSSFADE_S = 0.1  # linear crossfade between background clips (s)
PEAK_MAX = 0.99  # the mix is scaled down when its peak exceeds this
MS_EPS = 1e-12  # mean-square floor (-120 dBFS)


@dataclass(frozen=True, slots=True)
class TruthEvent:
    """An event placed in a soundscape: truth span (s), ESC-50 class, kind ("trigger" or
    "distractor"), SNR over the background (dB), clip file name and its source recording."""

    t_start: float
    t_end: float
    label: str
    kind: str
    snr_db: float
    clip: str
    src_file: str


@dataclass(frozen=True, slots=True)
class BackgroundSegment:
    """A stretch of one background class at one RMS level (dBFS, after the mix gain)."""

    t_start: float
    t_end: float
    label: str
    level_dbfs: float
    clips: tuple[str, ...]
    src_files: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Soundscape:
    """A built soundscape. samples: ``float32[n]`` mono 16 kHz in [-PEAK_MAX, PEAK_MAX]; events
    sorted by time; background: the class schedule; gain_db: the anti-clipping gain applied."""

    samples: np.ndarray = field(repr=False, compare=False)
    events: tuple[TruthEvent, ...]
    background: tuple[BackgroundSegment, ...]
    seed: tuple[int, ...]
    gain_db: float
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate


def frame_db(y: np.ndarray) -> np.ndarray:
    """Level of 25 ms frames every 10 ms: ``float64[1 + (n - 400) // 160]`` dBFS (mean square)."""
    if len(y) < FRAME:
        return np.full(1, 10 * np.log10(np.mean(np.square(y, dtype=np.float64)) + MS_EPS))
    frames = np.lib.stride_tricks.sliding_window_view(y, FRAME)[::HOP]
    return 10 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + MS_EPS)


def active_span(y: np.ndarray, *, rel_db: float = ACTIVE_REL_DB) -> tuple[int, int]:
    """Samples ``[a, b)`` from the first to the last frame within ``rel_db`` of the loudest."""
    db = frame_db(y)
    on = np.flatnonzero(db >= db.max() + rel_db)
    return int(on[0] * HOP), int(min(len(y), on[-1] * HOP + FRAME))


def active_rms_db(y: np.ndarray, *, rel_db: float = ACTIVE_REL_DB) -> float:
    """RMS level (dBFS) of the frames within ``rel_db`` of the loudest frame."""
    db = frame_db(y)
    on = db[db >= db.max() + rel_db]
    return float(10 * np.log10(np.mean(10 ** (on / 10))))


def rms_db(y: np.ndarray) -> float:
    """Plain RMS level of ``y`` in dBFS."""
    return float(10 * np.log10(np.mean(np.square(y, dtype=np.float64)) + MS_EPS))


@functools.lru_cache(maxsize=512)
def load_clip(path: Path) -> np.ndarray:
    """A clip as read-only ``float32[n]`` mono at 16 kHz (resampled with soxr if needed)."""
    y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr != SAMPLE_RATE:
        import soxr

        y = soxr.resample(y, sr, SAMPLE_RATE).astype(np.float32)
    y.setflags(write=False)
    return y


def held_out_clips() -> list[Clip]:
    """The held-out clips: ``split(read_meta())["test"]``."""
    return split(read_meta())["test"]


def _by_class(clips: Sequence[Clip], classes: Sequence[str]) -> dict[str, list[Clip]]:
    out = {c: [x for x in clips if x.category == c] for c in classes}
    out = {c: xs for c, xs in out.items() if xs}
    if not out:
        raise ValueError(
            f"no clips of any of the classes {list(classes)}; pass the ESC-50 test split"
        )
    return out


def _pick(rng: np.random.Generator, groups: dict[str, list[Clip]]) -> Clip:
    """A class uniformly, then one of its clips uniformly."""
    names = sorted(groups)
    clips = groups[names[rng.integers(len(names))]]
    return clips[rng.integers(len(clips))]


def _bed_piece(clip: Clip, level_dbfs: float) -> np.ndarray:
    y = load_clip(clip.path)
    a, b = active_span(y, rel_db=BED_REL_DB)
    y = y[a:b].astype(np.float64)
    return y * 10 ** ((level_dbfs - rms_db(y)) / 20)


def _crossfade(parts: list[np.ndarray], n_fade: int) -> np.ndarray:
    """Join pieces with linear crossfades of ``n_fade`` samples (shorter if a piece is short)."""
    out = parts[0]
    for p in parts[1:]:
        n = min(n_fade, len(out) // 2, len(p) // 2)
        ramp = np.linspace(0.0, 1.0, n, endpoint=False) if n else np.zeros(0)
        mid = out[len(out) - n :] * (1 - ramp) + p[:n] * ramp
        out = np.concatenate([out[: len(out) - n], mid, p[n:]])
    return out


def build_bed(
    rng: np.random.Generator, clips: Sequence[Clip], n: int, *,
    segment_s: float, bg_dbfs: tuple[float, float], classes: Sequence[str] = BACKGROUND,
) -> tuple[np.ndarray, list[BackgroundSegment]]:  # fmt: skip
    """A background bed of ``n`` samples and its class schedule (levels before any mix gain)."""
    groups = _by_class(clips, classes)
    names = sorted(groups)
    parts: list[np.ndarray] = []
    schedule: list[BackgroundSegment] = []
    total, fade, last = 0, int(CROSSFADE_S * SAMPLE_RATE), None
    while total < n:
        label = str(rng.choice([c for c in names if c != last] or names))
        level = float(rng.uniform(*bg_dbfs))
        seg_start, used = total, []
        while total < n and total - seg_start < segment_s * SAMPLE_RATE:
            clip = groups[label][rng.integers(len(groups[label]))]
            piece = _bed_piece(clip, level)
            parts.append(piece)
            used.append(clip)
            total += len(piece) - (min(fade, total // 2, len(piece) // 2) if total else 0)
        schedule.append(BackgroundSegment(
            seg_start / SAMPLE_RATE, min(total, n) / SAMPLE_RATE, label, level,
            tuple(c.path.name for c in used), tuple(c.src_file for c in used),
        ))  # fmt: skip
        last = label
    return _crossfade(parts, fade)[:n], schedule


def _event_piece(clip: Clip) -> tuple[np.ndarray, float]:
    """The clip's active part (capped, edges faded, float64) and its active RMS level (dBFS)."""
    y = load_clip(clip.path)
    a, b = active_span(y)
    b = min(b, a + int(MAX_EVENT_S * SAMPLE_RATE))
    piece = y[a:b].astype(np.float64)
    nf = min(int(FADE_S * SAMPLE_RATE), len(piece) // 2)
    if nf:
        ramp = np.linspace(0.0, 1.0, nf, endpoint=False)
        piece[:nf] *= ramp
        piece[len(piece) - nf :] *= ramp[::-1]
    return piece, active_rms_db(y[a:b])


def _place(rng: np.random.Generator, lengths: list[int], n: int, gap: int) -> list[int] | None:
    """Random start samples for pieces in the given order, no closer than ``gap`` to each other or
    the ends; None if they do not fit. The free samples are split at sorted uniform cut points."""
    slack = n - sum(lengths) - (len(lengths) + 1) * gap
    if slack < 0:
        return None
    cuts = np.sort(rng.integers(0, slack + 1, size=len(lengths)))
    starts, pos = [], gap
    for i, length in enumerate(lengths):
        starts.append(pos + int(cuts[i]))
        pos += length + gap
    return starts


def build_soundscape(
    clips: Sequence[Clip] | None = None,
    *,
    minutes: float = 3.0,
    seed: int | Sequence[int] = 0,
    snr_db: Sequence[float] = (0.0, 5.0, 10.0, 20.0),
    trigger_rate: float = 5.0,
    distractor_rate: float = 2.0,
    min_gap_s: float = 3.0,
    segment_s: float = 60.0,
    bg_dbfs: tuple[float, float] = (-35.0, -25.0),
    triggers: Sequence[str] = DEFAULT_TRIGGERS,
    distractors: Sequence[str] = DISTRACTORS,
) -> Soundscape:
    """Build one deterministic soundscape (see the module docstring for every definition).

    Parameters
    ----------
    clips : Sequence[Clip] or None
        Clips to draw from; None: the held-out ESC-50 test split (:func:`held_out_clips`).
    minutes : float
        Length of the soundscape.
    seed : int or Sequence[int]
        Seed of the numpy generator (e.g. ``(seed, index)`` for the index-th of a batch).
    snr_db : Sequence[float]
        Each event's SNR is drawn uniformly from these values (dB).
    trigger_rate, distractor_rate : float
        Events per minute of trigger and distractor classes (rounded to a count).
    min_gap_s : float
        Background-only seconds between consecutive truth spans and at both ends. If the events
        do not fit, the last ones drawn are dropped (with a warning).
    segment_s : float
        The background class changes after about this many seconds.
    bg_dbfs : tuple[float, float]
        Range of the background segments' RMS levels (dBFS, before the anti-clipping gain).

    Returns
    -------
    Soundscape
    """
    if minutes <= 0 or not snr_db:
        raise ValueError(f"need minutes > 0 and at least one SNR, got {minutes!r}, {snr_db!r}")
    clips = held_out_clips() if clips is None else list(clips)
    rng = np.random.default_rng(seed)
    n = int(round(minutes * 60 * SAMPLE_RATE))
    bed, schedule = build_bed(rng, clips, n, segment_s=segment_s, bg_dbfs=bg_dbfs)
    trig, dist = _by_class(clips, triggers), _by_class(clips, distractors)
    kinds = ["trigger"] * round(trigger_rate * minutes) + ["distractor"] * round(
        distractor_rate * minutes
    )
    rng.shuffle(kinds)
    chosen = [(k, _pick(rng, trig if k == "trigger" else dist)) for k in kinds]
    pieces = [_event_piece(c) for _, c in chosen]
    gap = int(min_gap_s * SAMPLE_RATE)
    starts = _place(rng, [len(p) for p, _ in pieces], n, gap)
    while starts is None:
        logger.warning("%d events do not fit in %.1f min; dropping one", len(chosen), minutes)
        chosen, pieces = chosen[:-1], pieces[:-1]
        starts = _place(rng, [len(p) for p, _ in pieces], n, gap)
    mix = bed.copy()
    events = []
    for (kind, clip), (piece, level), s in zip(chosen, pieces, starts):
        snr = float(snr_db[rng.integers(len(snr_db))])
        bg = rms_db(bed[s : s + len(piece)])
        mix[s : s + len(piece)] += piece * 10 ** ((snr + bg - level) / 20)
        events.append(TruthEvent(
            s / SAMPLE_RATE, (s + len(piece)) / SAMPLE_RATE, clip.category, kind, snr,
            clip.path.name, clip.src_file,
        ))  # fmt: skip
    peak = float(np.max(np.abs(mix))) if n else 0.0
    gain = min(1.0, PEAK_MAX / peak) if peak > 0 else 1.0
    gain_db = 20 * float(np.log10(gain))
    schedule = [
        BackgroundSegment(b.t_start, b.t_end, b.label, b.level_dbfs + gain_db, b.clips, b.src_files)
        for b in schedule
    ]
    seed_t = tuple(int(x) for x in np.atleast_1d(seed))
    samples = (mix * gain).astype(np.float32)
    return Soundscape(samples, tuple(events), tuple(schedule), seed_t, gain_db)
