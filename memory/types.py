"""Episodes, queries and answers (frozen dataclasses over numpy arrays and primitives)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class SoundRecord:
    """A sound heard in an episode (or in the audio event log). Times: media seconds."""

    label: str
    score: float
    t_start: float
    t_end: float


@dataclass(frozen=True, slots=True)
class ObjectRecord:
    """A tracked object summarised over an episode. bbox: XYXY pixels where last seen."""

    track_id: int
    label: str
    t_first: float
    t_last: float
    n_frames: int
    bbox: tuple[float, float, float, float]
    descriptor: np.ndarray | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Episode:
    """One remembered happening of one source.

    episode_id is None until the store assigns it. t_start/t_end: media seconds; wall_start: UTC
    epoch seconds of t_start for live sources (None for files). keyframes: paths relative to the
    store directory (filled by the store). visual/audio: L2-normalised ``float32[d]`` or None.
    clip: the episode's media (video + audio remuxed, no re-encode), relative to the store
    directory once stored; give the store an absolute path to a file it will move in.
    """

    source: str
    t_start: float
    t_end: float
    labels: tuple[str, ...]
    summary: str
    sounds: tuple[SoundRecord, ...] = ()
    objects: tuple[ObjectRecord, ...] = ()
    keyframes: tuple[str, ...] = ()
    keyframe_times: tuple[float, ...] = ()
    wall_start: float | None = None
    visual: np.ndarray | None = field(default=None, compare=False)
    audio: np.ndarray | None = field(default=None, compare=False)
    episode_id: int | None = None
    clip: str | None = None


@dataclass(frozen=True, slots=True)
class Query:
    """A question to the memory. since/until: media seconds; wall_since/wall_until: UTC epoch s.

    visual/audio: optional example vectors (``float32[d]``, L2-normalised) to search by.
    """

    text: str | None = None
    visual: np.ndarray | None = field(default=None, compare=False)
    audio: np.ndarray | None = field(default=None, compare=False)
    source: str | None = None
    since: float | None = None
    until: float | None = None
    wall_since: float | None = None
    wall_until: float | None = None
    k: int = 5


@dataclass(frozen=True, slots=True)
class EpisodeHit:
    """An episode retrieved for a query, with its relevance score (higher is better)."""

    episode: Episode
    score: float


@dataclass(frozen=True, slots=True)
class Answer:
    """The reply to a Query: a sentence plus the evidence it rests on (empty when not answered)."""

    answered: bool
    answer: str
    evidence: tuple[EpisodeHit, ...] = ()
