"""EpisodeBuilder: accumulates one trigger's sounds, tracks and keyframes into an Episode."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from memory.errors import BuilderStateError, ParameterError
from memory.types import Episode, ObjectRecord, SoundRecord

if TYPE_CHECKING:
    from models.embedders.base import Embedder
    from tracker.types import Perception, TrackState

logger = logging.getLogger(__name__)

MAX_OBJECTS_IN_SUMMARY = 5


def format_time(t: float) -> str:
    """Media seconds as ``M:SS.s`` or ``H:MM:SS.s``: 4.2 → "0:04.2", 3723.5 → "1:02:03.5"."""
    sign = "-" if t < 0 else ""
    tenths = int(round(abs(float(t)) * 10))
    h, rem = divmod(tenths, 36000)
    m, rem = divmod(rem, 600)
    s, d = divmod(rem, 10)
    if h:
        return f"{sign}{h}:{m:02d}:{s:02d}.{d}"
    return f"{sign}{m}:{s:02d}.{d}"


def l2_normalize(x: np.ndarray) -> np.ndarray | None:
    """``x / ||x||`` as float32, or None when the norm is zero or not finite."""
    x = np.asarray(x, dtype=np.float32)
    norm = float(np.linalg.norm(x))
    if not np.isfinite(norm) or norm == 0.0:
        return None
    return (x / norm).astype(np.float32)


@dataclass(slots=True)
class _Track:
    """Running summary of one track inside the episode."""

    label: str
    t_first: float
    t_last: float
    n_frames: int = 0
    bbox: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    desc_sum: np.ndarray | None = None

    def update(self, track: TrackState, t: float) -> None:
        self.t_last = max(self.t_last, t)
        if not track.visible:
            return
        self.n_frames += 1
        self.bbox = tuple(float(v) for v in track.bbox)  # type: ignore[assignment]
        self.label = track.label or self.label
        if track.descriptor is not None:
            d = np.asarray(track.descriptor, dtype=np.float32)
            self.desc_sum = d.copy() if self.desc_sum is None else self.desc_sum + d


@dataclass(slots=True)
class _Frame:
    t: float
    frame_idx: int
    image: np.ndarray = field(repr=False)


def spread_keep(times: Sequence[float], budget: int) -> int | None:
    """Which index to drop so ``times`` (sorted) fits ``budget``: never the first or the last;
    the interior one whose neighbours are closest (the densest spot). None if it already fits."""
    if len(times) <= budget:
        return None
    if len(times) < 3:
        return len(times) - 1
    gaps = [times[i + 1] - times[i - 1] for i in range(1, len(times) - 1)]
    return 1 + int(np.argmin(gaps))


class EpisodeBuilder:
    """Builds one Episode at a time for ``source``: ``begin`` → ``add``/``add_frame`` → ``end``.

    Parameters
    ----------
    source : str
        The stream id the episodes belong to.
    keyframes_per_episode : int
        At most this many keyframes are kept, spread over time (the first is always kept).
    embedder : Embedder, optional
        Gives the episode's visual vector (mean of the keyframe embeddings, L2-normalised);
        without it the mean of the object descriptors is used, if any.
    """

    def __init__(
        self, source: str, *, keyframes_per_episode: int = 4, embedder: Embedder | None = None
    ) -> None:
        if int(keyframes_per_episode) < 1:
            raise ParameterError(
                f"keyframes_per_episode must be >= 1, got {keyframes_per_episode!r}"
            )
        self.source = source
        self.keyframes_per_episode = int(keyframes_per_episode)
        self.embedder = embedder
        self._t0: float | None = None
        self._reset()

    def _reset(self) -> None:
        self._t0 = None
        self._wall_start: float | None = None
        self._labels: list[str] = []
        self._sounds: list[SoundRecord] = []
        self._audio: list[np.ndarray] = []
        self._tracks: dict[int, _Track] = {}
        self._keyframes: list[_Frame] = []
        self._fallback: _Frame | None = None

    @property
    def active(self) -> bool:
        """True between ``begin`` and ``end``."""
        return self._t0 is not None

    def begin(
        self,
        t: float,
        *,
        labels: tuple[str, ...] = (),
        sounds: tuple[SoundRecord, ...] = (),
        wall_start: float | None = None,
        audio_embeddings: Sequence[np.ndarray] | np.ndarray | None = None,
    ) -> None:
        """Start an episode at media time ``t`` (s); ``labels`` are the trigger labels.

        audio_embeddings: one ``float32[d]`` per sound (or any number of rows ``[n, d]``) whose
        L2-normalised mean becomes the episode's audio vector.
        """
        if self.active:
            raise BuilderStateError(f"episode of {self.source!r} already begun at {self._t0}; "
                                    "call end() first")  # fmt: skip
        self._reset()
        self._t0 = float(t)
        self._wall_start = wall_start
        self._labels = list(labels)
        self.add_sounds(sounds, audio_embeddings=audio_embeddings)

    def add_sounds(
        self,
        sounds: Sequence[SoundRecord],
        *,
        audio_embeddings: Sequence[np.ndarray] | np.ndarray | None = None,
    ) -> None:
        """Add sounds heard during the episode (e.g. on a trigger UPDATE)."""
        self._require_active("add_sounds")
        self._sounds.extend(sounds)
        if audio_embeddings is not None:
            rows = np.atleast_2d(np.asarray(audio_embeddings, dtype=np.float32))
            self._audio.extend(rows)

    def add(self, perception: Perception) -> None:
        """Fold one frame's tracks (and its keyframe, if any) into the episode."""
        self._require_active("add")
        t = float(perception.t)
        for track in perception.tracks:
            acc = self._tracks.get(track.track_id)
            if acc is None:
                acc = self._tracks[track.track_id] = _Track(track.label, t_first=t, t_last=t)
            acc.update(track, t)
        kf = perception.keyframe
        if kf is not None:
            image = kf.image if kf.image is not None else _read_image(kf.path)
            if image is not None:
                self._keep_keyframe(_Frame(float(kf.t), int(kf.frame_idx), image))

    def add_frame(self, image: np.ndarray, t: float, frame_idx: int) -> None:
        """Offer a plain frame: the one nearest the episode start is kept as a fallback keyframe,
        used only if the episode gets no keyframe from the tracker. The image is not copied."""
        self._require_active("add_frame")
        best = self._fallback
        if best is None or abs(t - self._t0) < abs(best.t - self._t0):  # type: ignore[operator]
            self._fallback = _Frame(float(t), int(frame_idx), image)

    def _keep_keyframe(self, frame: _Frame) -> None:
        self._keyframes.append(frame)
        self._keyframes.sort(key=lambda f: f.t)
        drop = spread_keep([f.t for f in self._keyframes], self.keyframes_per_episode)
        if drop is not None:
            del self._keyframes[drop]

    def _require_active(self, what: str) -> None:
        if not self.active:
            raise BuilderStateError(f"{what}() called before begin() on the builder of "
                                    f"{self.source!r}")  # fmt: skip

    def end(self, t: float) -> tuple[Episode, list[np.ndarray]]:
        """Close the episode at media time ``t``; returns it (no id yet) and its keyframe images.

        Pass both to :meth:`memory.store.EpisodeStore.add`.
        """
        self._require_active("end")
        t0 = self._t0
        if float(t) < t0:  # type: ignore[operator]
            raise ParameterError(f"episode ends at {t} before it began at {t0}")
        frames = self._keyframes or ([self._fallback] if self._fallback is not None else [])
        objects = tuple(self._objects())
        labels = tuple(sorted({*self._labels, *(s.label for s in self._sounds)}))
        episode = Episode(
            source=self.source,
            t_start=float(t0),  # type: ignore[arg-type]
            t_end=float(t),
            labels=labels,
            summary=summarize(labels, tuple(self._sounds), objects),
            sounds=tuple(self._sounds),
            objects=objects,
            keyframe_times=tuple(f.t for f in frames),
            wall_start=self._wall_start,
            visual=self._visual_vector([f.image for f in frames], objects),
            audio=l2_normalize(np.mean(self._audio, axis=0)) if self._audio else None,
        )
        images = [f.image for f in frames]
        self._reset()
        return episode, images

    def _objects(self) -> list[ObjectRecord]:
        out = []
        for track_id, acc in sorted(self._tracks.items()):
            desc = None if acc.desc_sum is None else l2_normalize(acc.desc_sum)
            out.append(ObjectRecord(track_id=track_id, label=acc.label, t_first=acc.t_first,
                                    t_last=acc.t_last, n_frames=acc.n_frames, bbox=acc.bbox,
                                    descriptor=desc))  # fmt: skip
        return out

    def _visual_vector(
        self, images: list[np.ndarray], objects: tuple[ObjectRecord, ...]
    ) -> np.ndarray | None:
        if self.embedder is not None and images:
            return l2_normalize(np.asarray(self.embedder.embed_images(images)).mean(axis=0))
        descs = [o.descriptor for o in objects if o.descriptor is not None]
        return l2_normalize(np.mean(descs, axis=0)) if descs else None


def summarize(
    labels: tuple[str, ...], sounds: tuple[SoundRecord, ...], objects: tuple[ObjectRecord, ...]
) -> str:
    """The searchable text of an episode, e.g. ``"glass_breaking at 0:04.2–0:04.9 (score 0.82);
    2 objects tracked: object#1 for 3.0 s, object#2 for 1.2 s"``."""
    parts = [
        f"{s.label} at {format_time(s.t_start)}–{format_time(s.t_end)} (score {s.score:.2f})"
        for s in sorted(sounds, key=lambda s: s.t_start)
    ]
    heard = {s.label for s in sounds}
    parts += [f"{label} (trigger)" for label in labels if label not in heard]
    if objects:
        ranked = sorted(objects, key=lambda o: o.t_last - o.t_first, reverse=True)
        shown = ", ".join(f"{o.label or 'object'}#{o.track_id} for {o.t_last - o.t_first:.1f} s"
                          for o in ranked[:MAX_OBJECTS_IN_SUMMARY])  # fmt: skip
        more = len(objects) - MAX_OBJECTS_IN_SUMMARY
        noun = "object" if len(objects) == 1 else "objects"
        tail = f", +{more} more" if more > 0 else ""
        parts.append(f"{len(objects)} {noun} tracked: {shown}{tail}")
    return "; ".join(parts) if parts else "no audio events or tracked objects"


def _read_image(path: str | None) -> np.ndarray | None:
    """A keyframe written to disk by the tracker (RGB uint8), or None if unreadable."""
    if not path:
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        logger.warning("cannot read keyframe %s: %s", path, e)
        return None
