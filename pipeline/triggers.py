"""TriggerPolicy: a detector's audio events become START/UPDATE/END triggers and capture windows."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from models.audio.base import AudioEvent, AudioEventDetector
from pipeline.errors import ConfigError
from pipeline.types import AudioChunk, CaptureWindow, TriggerEvent, TriggerState

if TYPE_CHECKING:
    from pipeline.config import TriggerConfig

logger = logging.getLogger(__name__)

EPS_S = 1e-6  # seconds: spans closer than this touch


@dataclass(slots=True)
class _Trigger:
    """The open trigger: its id, best label and score so far, and the span of its sounds."""

    trigger_id: int
    label: str
    score: float
    t_start: float
    t_end: float


def _check_tunables(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ConfigError(f"trigger {name} must be a finite number >= 0, got {value!r}")
    if values.get("max_window_s", 1.0) <= 0:
        raise ConfigError(f"trigger max_window_s must be > 0, got {values['max_window_s']!r}")


def _split(
    start: float, end: float, members: list[tuple[float, float, TriggerEvent]], *,
    stream_id: str, max_window_s: float,
) -> list[CaptureWindow]:  # fmt: skip
    """``[start, end]`` cut into equal windows of at most ``max_window_s``, each naming the
    triggers whose padded span ``members[i][:2]`` overlaps it."""
    n = max(1, math.ceil((end - start) / max_window_s - 1e-9))
    step = (end - start) / n
    out = []
    for i in range(n):
        a = start + i * step
        b = end if i == n - 1 else start + (i + 1) * step
        inside = [e for s, t, e in members if n == 1 or (s < b - EPS_S and t > a + EPS_S)]
        labels = tuple(dict.fromkeys(e.label for e in inside))
        ids = tuple(dict.fromkeys(e.trigger_id for e in inside))
        out.append(CaptureWindow(stream_id, a, b, labels=labels, trigger_ids=ids))
    return out


def capture_windows(
    events: Iterable[TriggerEvent],
    *,
    stream_id: str,
    pre_roll_s: float,
    post_roll_s: float,
    max_window_s: float,
    duration_s: float | None = None,
) -> list[CaptureWindow]:
    """Capture windows of the accepted triggers.

    Parameters
    ----------
    events : Iterable[TriggerEvent]
        Trigger events; only accepted ``END`` events count (each carries its sound's span).
    stream_id : str
        Stream the windows belong to.
    pre_roll_s, post_roll_s : float
        Seconds captured before each sound's start and after its end.
    max_window_s : float
        Longer merged windows are cut into equal parts no longer than this (s).
    duration_s : float or None
        Media length (s); windows are clipped to ``[0, duration_s]`` (to ``[0, inf)`` if None).

    Returns
    -------
    list[CaptureWindow]
        Sorted by time, non-overlapping: overlapping or touching padded spans merged; labels and
        trigger_ids in order of first appearance.
    """
    _check_tunables(pre_roll_s=pre_roll_s, post_roll_s=post_roll_s, max_window_s=max_window_s)
    hi = math.inf if duration_s is None else float(duration_s)
    spans = []
    for e in events:
        if e.state is not TriggerState.END or not e.accepted:
            continue
        s, t = max(0.0, e.t_start - pre_roll_s), min(hi, e.t_end + post_roll_s)
        if t > s + EPS_S:
            spans.append((s, t, e))
    spans.sort(key=lambda x: (x[0], x[1]))
    groups: list[list[tuple[float, float, TriggerEvent]]] = []
    for span in spans:
        if groups and span[0] <= max(t for _, t, _ in groups[-1]) + EPS_S:
            groups[-1].append(span)
        else:
            groups.append([span])
    out: list[CaptureWindow] = []
    for g in groups:
        start, end = g[0][0], max(t for _, t, _ in g)
        out += _split(start, end, g, stream_id=stream_id, max_window_s=max_window_s)
    return out


class TriggerPolicy:
    """Pure (thread-free) policy turning a detector's events on one stream into triggers.

    Each detected sound starts a trigger (``START``, as soon as the detector reports it); sounds
    starting less than ``merge_gap_s`` after the open trigger's end join it (``UPDATE`` when the
    best label or score changes); the trigger ends (``END``, accepted) once the stream has run
    ``merge_gap_s`` past its last sound. With the energy gate, which itself reports a sound
    ``merge_gap_s`` after it ends, START and END come out of the same :meth:`feed`.

    Parameters
    ----------
    stream_id : str
        Stream whose chunks are fed.
    detector : AudioEventDetector
        Streaming detector (``feed(samples, t_start)`` / ``flush()``).
    pre_roll_s, post_roll_s : float
        Capture this long before a sound's start and after its end (s).
    max_window_s : float
        Longest capture window (s); longer activity is split.
    merge_gap_s : float
        Sounds closer than this (s) belong to one trigger.

    Notes
    -----
    :attr:`events` and the accepted triggers behind :meth:`windows` are kept for the life of the
    policy (a few hundred bytes per sound); a long-running actor should forward them as they come.
    """

    def __init__(
        self,
        stream_id: str,
        detector: AudioEventDetector,
        *,
        pre_roll_s: float = 1.0,
        post_roll_s: float = 1.0,
        max_window_s: float = 20.0,
        merge_gap_s: float = 0.4,
    ) -> None:
        _check_tunables(
            pre_roll_s=pre_roll_s, post_roll_s=post_roll_s,
            max_window_s=max_window_s, merge_gap_s=merge_gap_s,
        )  # fmt: skip
        self.stream_id = stream_id
        self.detector = detector
        self.pre_roll_s = float(pre_roll_s)
        self.post_roll_s = float(post_roll_s)
        self.max_window_s = float(max_window_s)
        self.merge_gap_s = float(merge_gap_s)
        self._events: list[AudioEvent] = []
        self._ended: list[TriggerEvent] = []
        self._open: _Trigger | None = None
        self._next_id = 0

    @classmethod
    def from_config(cls, stream_id: str, cfg: TriggerConfig) -> TriggerPolicy:
        """Build the configured detector (``cfg.detector``, e.g. ``"energy"``) and the policy."""
        from models.registry import AUDIO_DETECTORS, create

        detector = create(
            AUDIO_DETECTORS,
            cfg.detector,
            k_mad=cfg.k_mad,
            min_rise_db=cfg.min_rise_db,
            floor_dbfs=cfg.floor_dbfs,
            background_s=cfg.background_s,
            min_event_s=cfg.min_event_s,
            merge_gap_s=cfg.merge_gap_s,
        )
        return cls(
            stream_id, detector, pre_roll_s=cfg.pre_roll_s, post_roll_s=cfg.post_roll_s,
            max_window_s=cfg.max_window_s, merge_gap_s=cfg.merge_gap_s,
        )  # fmt: skip

    @property
    def events(self) -> list[AudioEvent]:
        """Every sound detected so far, triggering or not (a copy, in detection order)."""
        return list(self._events)

    def feed(self, chunk: AudioChunk) -> list[TriggerEvent]:
        """Feed the next contiguous chunk of this stream; return the trigger changes it caused."""
        if chunk.sample_rate != self.detector.sample_rate:
            raise ValueError(
                f"chunk sample_rate {chunk.sample_rate!r} != detector's "
                f"{self.detector.sample_rate!r}; resample at ingest"
            )
        if chunk.stream_id != self.stream_id:
            raise ValueError(
                f"chunk of stream {chunk.stream_id!r} fed to the policy of {self.stream_id!r}"
            )
        found = self.detector.feed(chunk.samples, chunk.t_start)
        return self._handle(found, now=chunk.t_end)

    def flush(self) -> list[TriggerEvent]:
        """End of stream: let the detector close its last sound and end the open trigger."""
        return self._handle(self.detector.flush(), now=math.inf)

    def windows(self, duration_s: float | None = None) -> list[CaptureWindow]:
        """Capture windows of the accepted triggers so far (see :func:`capture_windows`)."""
        return capture_windows(
            self._ended, stream_id=self.stream_id, pre_roll_s=self.pre_roll_s,
            post_roll_s=self.post_roll_s, max_window_s=self.max_window_s, duration_s=duration_s,
        )  # fmt: skip

    def _handle(self, found: list[AudioEvent], *, now: float) -> list[TriggerEvent]:
        out: list[TriggerEvent] = []
        for ev in sorted(found, key=lambda e: e.t_start):
            self._events.append(ev)
            o = self._open
            if o is not None and ev.t_start - o.t_end < self.merge_gap_s:
                o.t_end = max(o.t_end, ev.t_end)
                if ev.score > o.score:  # a better-scored sound names the trigger
                    o.label, o.score = ev.label, ev.score
                    out.append(self._message(TriggerState.UPDATE, ev.t_start))
                continue
            if o is not None:
                out.append(self._end())
            self._open = _Trigger(self._next_id, ev.label, ev.score, ev.t_start, ev.t_end)
            self._next_id += 1
            out.append(self._message(TriggerState.START, ev.t_start))
        if self._open is not None and now >= self._open.t_end + self.merge_gap_s - EPS_S:
            out.append(self._end())
        return out

    def _message(self, state: TriggerState, t: float) -> TriggerEvent:
        o = self._open
        assert o is not None
        return TriggerEvent(
            o.trigger_id, self.stream_id, state, o.label, o.score, t, o.t_start, o.t_end
        )

    def _end(self) -> TriggerEvent:
        assert self._open is not None
        end = self._message(TriggerState.END, self._open.t_end)
        logger.debug(
            "stream %s trigger %d: %s %.3f-%.3f s (score %.2f)",
            self.stream_id, end.trigger_id, end.label, end.t_start, end.t_end, end.score,
        )  # fmt: skip
        self._ended.append(end)
        self._open = None
        return end
