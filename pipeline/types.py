"""Messages between pipeline stages: decoded frames, audio chunks, trigger events, windows."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np


@dataclass(frozen=True, slots=True)
class FramePacket:
    """One decoded video frame. image: ``uint8[H, W, 3]`` RGB, read-only; t = pts * time_base
    (media seconds); wall_time: UTC epoch seconds for live sources, else None."""

    stream_id: str
    frame_idx: int
    pts: int | None
    time_base: float
    t: float
    image: np.ndarray = field(compare=False)
    is_keyframe: bool = False
    wall_time: float | None = None


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Contiguous mono audio. samples: ``float32[n]`` in [-1, 1] at ``sample_rate`` (16 kHz);
    t_start: media seconds of the first sample."""

    stream_id: str
    t_start: float
    sample_rate: int
    samples: np.ndarray = field(compare=False)
    wall_time: float | None = None

    @property
    def t_end(self) -> float:
        """Media seconds just past the last sample."""
        return self.t_start + len(self.samples) / self.sample_rate


class TriggerState(str, Enum):
    """Life cycle of a trigger (like frigate's EventStateEnum)."""

    START = "start"
    UPDATE = "update"
    END = "end"


@dataclass(frozen=True, slots=True)
class TriggerEvent:
    """A trigger's state change. t: media seconds of the change; t_start/t_end: the sound's span
    so far; accepted is meaningful on END (False drops the capture window).

    spans: the trigger's capture spans (media seconds, before pre/post-roll, sorted). On an
    accepted END: exactly the spans its capture windows are built from (one per kept sound, after
    the ``max_capture_s`` cap and the rate limit); on START/UPDATE: the most they may still reach
    while the trigger is open (a live source decodes video for them); empty from producers that
    do not fill it (a rejected END, the visual trigger): then ``[t_start, t_end]`` is captured.
    """

    trigger_id: int
    stream_id: str
    state: TriggerState
    label: str
    score: float
    t: float
    t_start: float
    t_end: float
    accepted: bool = True
    spans: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True, slots=True)
class CaptureWindow:
    """A span of media time whose frames are captured (pre- and post-roll included)."""

    stream_id: str
    t_start: float
    t_end: float
    labels: tuple[str, ...] = ()
    trigger_ids: tuple[int, ...] = ()
