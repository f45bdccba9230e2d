"""The AudioEventDetector seam and the AudioEvent it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, slots=True)
class AudioEvent:
    """A detected sound: label, score in [0, 1], span in seconds of the detector's input clock.

    embedding: optional ``float32[d]`` L2-normalised description of the sound (for audio search).
    """

    label: str
    score: float
    t_start: float
    t_end: float
    embedding: np.ndarray | None = field(default=None, compare=False)


@runtime_checkable
class AudioEventDetector(Protocol):
    """Streaming detector over mono float32 samples at ``sample_rate``.

    ``feed(samples, t_start)`` takes the next contiguous block (``float32[n]`` in [-1, 1]) whose first
    sample is at ``t_start`` seconds and returns the events that are complete so far (bounded
    look-ahead: an event is returned at most a few hundred ms after it ends). ``flush()`` closes
    any open event at the end of the stream and returns it.
    """

    sample_rate: int

    def feed(self, samples: np.ndarray, t_start: float) -> list[AudioEvent]: ...

    def flush(self) -> list[AudioEvent]: ...
