"""Short-term memory of one source and its compression into episodes (after IXC2.5-OmniLive).

A capture window's frames (:class:`~tracker.types.Perception`) and sounds enter a
:class:`ShortTermMemory`: a window bounded by item count and by seconds of media time. Items
leave it oldest first, folded into the open episode's :class:`~memory.episodes.EpisodeBuilder`
(running summaries: tracks, a few keyframes, vectors), so memory stays flat however long the
stream runs. :class:`EpisodeCompressor` decides where episodes begin and end:

- **trigger**: a capture window begins one; a sound that starts ``trigger_gap_s`` after the
  previous one ended (inside one long capture) begins another;
- **scene**: the cosine of consecutive frame descriptors drops to ``scene_cosine`` or below
  (IXC2.5-OL cuts its clips at cosine <= 0.9);
- **idle**: nothing happened (no sound, no new or moving object) for ``idle_s``: the episode
  ends at its last activity, the idle frames are dropped, and activity starts the next one;
- **length**: an episode is cut at ``max_episode_s``.

Scene and trigger cuts wait until the episode is ``min_episode_s`` long (no flicker episodes).
Plain Python (no Ray): the pipeline's MemoryActor holds one compressor per open capture.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from memory.episodes import EpisodeBuilder
from memory.errors import BuilderStateError, ParameterError
from memory.types import Episode, SoundRecord

if TYPE_CHECKING:
    from tracker.types import Perception

logger = logging.getLogger(__name__)

DESCRIPTOR_SIDE = 96  # frames are shrunk to this longer side before their scene descriptor
MOVE_FRACTION = 0.02  # a track whose box centre moved this fraction of the frame diagonal moves
AREA_CHANGE = 0.25  # ... or whose box area changed by this fraction
BOUNDARIES = ("trigger", "scene", "idle", "length", "end")


@dataclass(frozen=True, slots=True)
class BoundaryPolicy:
    """Where episodes are cut (see the module docstring); times in media seconds."""

    scene_cosine: float = 0.9
    idle_s: float = 10.0
    min_episode_s: float = 2.0
    max_episode_s: float = 120.0
    trigger_gap_s: float = 4.0

    def __post_init__(self) -> None:
        if not -1.0 <= self.scene_cosine <= 1.0:
            raise ParameterError(f"scene_cosine must be in [-1, 1], got {self.scene_cosine}")
        for name in ("idle_s", "max_episode_s", "trigger_gap_s"):
            if not getattr(self, name) > 0:
                raise ParameterError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.min_episode_s <= self.max_episode_s:
            raise ParameterError(f"min_episode_s must be in [0, max_episode_s], got "
                                 f"{self.min_episode_s}")  # fmt: skip


@dataclass(slots=True)
class Item:
    """One frame in the short-term window: its perception, scene descriptor, and (only for the
    first frame of an episode, a fallback keyframe) its image. ``episode`` is the sequence
    number of the episode it belongs to, or None for an idle frame (dropped)."""

    t: float
    perception: Perception | None
    episode: int | None
    image: np.ndarray | None = field(default=None, repr=False)
    frame_idx: int = 0


@dataclass(slots=True)
class PendingSound:
    sound: SoundRecord
    embedding: np.ndarray | None = field(default=None, repr=False)


class ShortTermMemory:
    """A window of one source's recent frames, bounded by ``max_items`` and ``max_s``.

    ``push`` returns the items that fell out (oldest first), for the caller to fold into
    long-term memory; ``take_until(seq)`` removes the items of episodes up to ``seq``.
    """

    def __init__(self, *, max_items: int = 120, max_s: float = 30.0) -> None:
        if int(max_items) < 1 or not max_s > 0:
            raise ParameterError(f"short-term window needs max_items >= 1 and max_s > 0, got "
                                 f"{max_items}, {max_s}")  # fmt: skip
        self.max_items, self.max_s = int(max_items), float(max_s)
        self.items: deque[Item] = deque()

    def __len__(self) -> int:
        return len(self.items)

    @property
    def span_s(self) -> float:
        return self.items[-1].t - self.items[0].t if self.items else 0.0

    def push(self, item: Item) -> list[Item]:
        self.items.append(item)
        out = []
        while len(self.items) > self.max_items or (
            len(self.items) > 1 and item.t - self.items[0].t > self.max_s
        ):
            out.append(self.items.popleft())
        return out

    def take_until(self, seq: int) -> list[Item]:
        """Remove and return the leading items of episodes ``<= seq`` (and idle items)."""
        out = []
        while self.items and (self.items[0].episode is None or self.items[0].episode <= seq):
            out.append(self.items.popleft())
        return out


class EpisodeCompressor:
    """Turns one capture's perceptions and sounds into episodes: ``begin`` → ``add`` … → ``end``.

    ``add`` and ``end`` return the episodes closed by then, as ``(episode, keyframe images,
    boundary)`` with boundary in :data:`BOUNDARIES` (why the episode ended). The caller stores
    them. Memory is bounded: the short-term window by its limits, each open episode by its
    builder's budgets and ``max_episode_s``.

    Parameters
    ----------
    source : str
        The stream the episodes belong to.
    policy : BoundaryPolicy
        Where episodes are cut.
    window : ShortTermMemory, optional
        The short-term window (default: 120 frames, 30 s).
    new_builder : callable, optional
        ``new_builder()`` → a fresh :class:`EpisodeBuilder` for ``source``.
    describe : callable, optional
        ``describe(image) → float32[d]`` L2-normalised frame descriptor for scene cuts (without
        it, scenes are never cut).
    """

    def __init__(
        self,
        source: str,
        policy: BoundaryPolicy | None = None,
        *,
        window: ShortTermMemory | None = None,
        new_builder: Callable[[], EpisodeBuilder] | None = None,
        describe: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.source = source
        self.policy = BoundaryPolicy() if policy is None else policy
        self.window = ShortTermMemory() if window is None else window
        self.new_builder = new_builder or (lambda: EpisodeBuilder(source))
        self.describe = describe
        self.builder: EpisodeBuilder | None = None
        self.seq = -1  # the open episode's sequence number (-1: none yet)
        self.open_t: float | None = None  # start of the open episode (None: idle / not begun)
        self.sounds: deque[PendingSound] = deque()  # not yet folded into an episode (by start)
        self.starts: list[SoundRecord] = []  # every sound of the capture, by start time
        self.cursor = 0  # sounds started by the last frame
        self.heard_until = -np.inf  # latest end of the sounds started so far
        self.labels: tuple[str, ...] = ()
        self.wall_start: float | None = None
        self.t0: float | None = None
        self.prev_t = 0.0
        self.last_active = 0.0
        self.first_pending = False  # the open episode has no frame yet (keep its image)
        self.prev_desc: np.ndarray | None = None
        self.prev_boxes: dict[int, tuple[float, float, float, float]] = {}
        self.done: list[tuple[Episode, list[np.ndarray], str]] = []

    # --- public ----------------------------------------------------------------------------

    def begin(
        self,
        t: float,
        *,
        labels: tuple[str, ...] = (),
        sounds: Sequence[SoundRecord] = (),
        audio_embeddings: Sequence[np.ndarray | None] | None = None,
        wall_start: float | None = None,
    ) -> None:
        """A capture (a trigger) begins at media time ``t``; ``sounds`` are the sounds heard in
        it (``audio_embeddings``: one optional vector per sound)."""
        if self.t0 is not None:
            raise BuilderStateError(f"capture of {self.source!r} already begun at {self.t0}")
        if audio_embeddings is not None and len(audio_embeddings) != len(sounds):
            raise ParameterError(f"{len(audio_embeddings)} audio embeddings for {len(sounds)} sounds")
        self.t0, self.labels, self.wall_start = float(t), tuple(labels), wall_start
        embs = list(audio_embeddings) if audio_embeddings is not None else [None] * len(sounds)
        pending = sorted(zip(sounds, embs), key=lambda p: p[0].t_start)
        self.sounds = deque(PendingSound(s, e) for s, e in pending)
        self.starts = [s for s, _ in pending]
        self.cursor, self.heard_until = 0, -np.inf
        self.prev_t = self.last_active = self.t0
        self._open(self.t0)

    def add(self, perception: Perception | None, image: np.ndarray | None = None, *,
            t: float | None = None, frame_idx: int = 0) -> list[tuple[Episode, list[np.ndarray], str]]:  # fmt: skip
        """One frame (its perception and/or image; ``t`` when there is no perception)."""
        if self.t0 is None:
            raise BuilderStateError(f"add() before begin() on the compressor of {self.source!r}")
        t = float(perception.t if perception is not None else t)  # type: ignore[arg-type]
        frame_idx = int(perception.frame_idx) if perception is not None else int(frame_idx)
        desc = self._descriptor(image)
        onset, heard = self._hear(t)
        cut, t_cut = self._cut_before(t, desc, onset)
        active = heard or self._moved(perception)
        if active:
            self.last_active = t
        if cut is not None:
            self._close(t_cut, cut)
            self._open(t_cut)
        elif self.open_t is not None and t - self.last_active >= self.policy.idle_s:
            self._close(self.last_active, "idle")  # the idle frames are not part of it
        elif self.open_t is None and active:
            self._open(t)  # activity after idle starts the next episode
        keep = self.open_t is not None and self.first_pending
        self.first_pending = self.first_pending and not keep
        item = Item(t, perception, self.seq if self.open_t is not None else None,
                    image if keep else None, frame_idx)  # fmt: skip
        self._fold(self.window.push(item))
        if desc is not None:
            self.prev_desc = desc
        self.prev_t = t
        return self._take_done()

    def end(self, t: float) -> list[tuple[Episode, list[np.ndarray], str]]:
        """The capture ends at ``t``: close the open episode and fold what is left."""
        if self.t0 is None:
            raise BuilderStateError(f"end() before begin() on the compressor of {self.source!r}")
        if self.open_t is not None:
            self._close(max(float(t), self.open_t), "end")
        self._fold(list(self.window.items))
        self.window.items.clear()
        self.t0 = None
        return self._take_done()

    # --- boundaries -------------------------------------------------------------------------

    def _hear(self, t: float) -> tuple[float | None, bool]:
        """Sounds that started by ``t``: the onset of the first one that came after a quiet gap
        of ``trigger_gap_s`` (a new trigger), and whether any was audible since the last frame."""
        onset = None
        while self.cursor < len(self.starts) and self.starts[self.cursor].t_start <= t:
            s = self.starts[self.cursor]
            if onset is None and s.t_start - self.heard_until >= self.policy.trigger_gap_s:
                onset = s.t_start
            self.heard_until = max(self.heard_until, s.t_end)
            self.cursor += 1
        return onset, self.heard_until >= self.prev_t

    def _cut_before(
        self, t: float, desc: np.ndarray | None, onset: float | None
    ) -> tuple[str | None, float]:
        """Why (and when) a new episode starts at this frame (None: the open one goes on)."""
        if self.open_t is None:
            return None, t
        age = t - self.open_t
        if age >= self.policy.max_episode_s:
            return "length", t
        if onset is not None and onset - self.open_t >= self.policy.min_episode_s:
            return "trigger", max(onset, self.prev_t)
        if age < self.policy.min_episode_s:
            return None, t
        if desc is not None and self.prev_desc is not None:
            if float(desc @ self.prev_desc) <= self.policy.scene_cosine:
                return "scene", t
        return None, t

    def _moved(self, perception: Perception | None) -> bool:
        """An object appeared or moved at this frame."""
        if perception is None:
            return False
        diag = float(np.hypot(perception.width, perception.height)) or 1.0
        moved = False
        boxes = {}
        for track in perception.tracks:
            if not track.visible:
                continue
            box = tuple(float(v) for v in track.bbox)
            boxes[track.track_id] = box
            prev = self.prev_boxes.get(track.track_id)
            moved = moved or prev is None or _box_moved(prev, box, diag)
        self.prev_boxes = boxes
        return moved

    # --- episodes ---------------------------------------------------------------------------

    def _open(self, t: float) -> None:
        self.seq += 1
        self.open_t = t
        self.first_pending = True
        self.builder = self.new_builder()
        labels = self.labels if self.seq == 0 else ()
        self.builder.begin(t, labels=labels, wall_start=self._wall(t))

    def _close(self, t: float, why: str) -> None:
        """Fold the open episode's frames and sounds up to ``t`` and finish it."""
        items = self.window.take_until(self.seq)
        self._fold([i for i in items if i.t <= t])  # later ones: the idle tail, dropped
        self._fold_sounds(until=t, final=why == "end", strict=why == "trigger")
        builder, self.builder = self.builder, None
        episode, images = builder.end(max(t, self.open_t))  # type: ignore[union-attr, type-var]
        self.open_t = None
        self.done.append((episode, images, why))

    def _fold(self, items: list[Item]) -> None:
        """Items leaving the window join their episode's builder (idle ones are dropped)."""
        for item in items:
            if item.episode is None or item.episode != self.seq or self.builder is None:
                continue  # idle, or an episode already closed (its items were folded then)
            self._fold_sounds(until=item.t, final=False)
            if item.perception is not None:
                self.builder.add(item.perception)
            if item.image is not None:
                self.builder.add_frame(item.image, item.t, item.frame_idx)

    def _fold_sounds(self, *, until: float, final: bool, strict: bool = False) -> None:
        """Sounds that started by ``until`` (before it when ``strict``; all of them when
        ``final``) join the open episode; one that started in an idle gap joins the next."""
        while self.sounds and (
            final or self.sounds[0].sound.t_start < until
            or (not strict and self.sounds[0].sound.t_start == until)
        ):
            p = self.sounds.popleft()
            if self.builder is not None:
                emb = None if p.embedding is None else [p.embedding]
                self.builder.add_sounds([p.sound], audio_embeddings=emb)

    def _descriptor(self, image: np.ndarray | None) -> np.ndarray | None:
        if image is None or self.describe is None:
            return None
        return np.asarray(self.describe(image), np.float32)

    def _wall(self, t: float) -> float | None:
        return None if self.wall_start is None else self.wall_start + (t - self.t0)  # type: ignore[operator]

    def _take_done(self) -> list[tuple[Episode, list[np.ndarray], str]]:
        out, self.done = self.done, []
        return out

def _box_moved(a: tuple[float, ...], b: tuple[float, ...], diag: float) -> bool:
    ca = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2)
    cb = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
    if np.hypot(ca[0] - cb[0], ca[1] - cb[1]) > MOVE_FRACTION * diag:
        return True
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    return abs(area_b - area_a) > AREA_CHANGE * max(area_a, 1.0)


def frame_descriptor(embedder: Any) -> Callable[[np.ndarray], np.ndarray]:
    """``describe(image)``: ``embedder``'s descriptor of the frame shrunk to DESCRIPTOR_SIDE."""
    import cv2

    def describe(image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        s = DESCRIPTOR_SIDE / max(h, w)
        if s < 1:
            size = (max(1, round(w * s)), max(1, round(h * s)))
            image = cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA)
        return np.asarray(embedder.embed_images([image])[0], np.float32)

    return describe
