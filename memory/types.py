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
    clip_note: why an episode has no clip (e.g. dropped by the clip budget), else None.
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
    clip_note: str | None = None


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


@dataclass(frozen=True, slots=True)
class Sighting:
    """One episode in which a persistent object identity was seen (one track of that episode).

    t_first/t_last: media seconds of the track; wall_first: UTC epoch seconds (live sources);
    similarity: cosine of the track's descriptor to the identity when it was matched (1.0 for
    the sighting that created the identity).
    """

    object_id: int
    episode_id: int
    track_id: int
    source: str
    t_first: float
    t_last: float
    wall_first: float | None
    similarity: float


@dataclass(frozen=True, slots=True)
class ObjectIdentity:
    """An object re-identified across episodes and sources; name: given by the user (or None).

    first_seen/last_seen: its first and latest sightings (by episode id, i.e. ingest order).
    """

    object_id: int
    name: str | None
    label: str
    n_sightings: int
    sources: tuple[str, ...]
    first_seen: Sighting | None
    last_seen: Sighting | None
