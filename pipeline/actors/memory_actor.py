"""MemoryActor: the single writer of the store; compresses each capture into episodes."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import ray

from pipeline.config import MemoryConfig, RetentionConfig
from pipeline.types import CaptureWindow

logger = logging.getLogger(__name__)


def to_sound_records(events: list) -> list:
    """models.audio AudioEvent → memory SoundRecord."""
    from memory.types import SoundRecord

    return [SoundRecord(e.label, float(e.score), float(e.t_start), float(e.t_end)) for e in events]


@ray.remote(num_cpus=0)
class MemoryActor:
    """Owns :class:`memory.store.EpisodeStore`; one :class:`memory.shortterm.EpisodeCompressor`
    (a bounded short-term window + episode boundaries) per open capture.

    An open capture is keyed by ``slot`` (default: its source), so several perception actors can
    feed captures of one source at once (a file's capture windows in parallel). A capture gives
    one episode or more (cut at scene changes, idle time, new triggers; memory/shortterm.py),
    each stored as soon as it closes."""

    def __init__(self, store_path: str, cfg: MemoryConfig, retention: RetentionConfig | None = None) -> None:
        from memory.shortterm import frame_descriptor
        from memory.store import EpisodeStore
        from models import registry

        policy = (retention or RetentionConfig()).policy()
        self.store = EpisodeStore(Path(store_path), jpeg_quality=cfg.jpeg_quality, retention=policy,
                                  keyframe_max_side=cfg.keyframe_max_side)  # fmt: skip
        self.embedder = registry.create(registry.EMBEDDERS, "classical")
        self.cfg = cfg
        self.boundary_policy = cfg.boundary_policy()  # one per actor: config only
        self.describe = frame_descriptor(self.embedder)
        self.compressors: dict = {}
        self.stored: dict = {}  # slot -> ids of the episodes its capture gave so far
        self.episodes = 0
        self.boundaries: dict[str, int] = {}

    def add_sounds(self, source: str, events: list) -> int:
        """Log every detected sound of ``source`` (the audio event log); returns how many."""
        self.store.add_sounds(source, to_sound_records(events))
        return len(events)

    def begin(
        self, source: str, window: CaptureWindow, events: list, wall_start: float | None, slot=None
    ) -> None:
        key = source if slot is None else slot
        compressor = self._compressor(source)
        compressor.begin(
            window.t_start, labels=window.labels, sounds=to_sound_records(events),
            audio_embeddings=[e.embedding for e in events], wall_start=wall_start,
        )  # fmt: skip
        self.compressors[key] = compressor
        self.stored[key] = []

    def _compressor(self, source: str):
        from memory.episodes import EpisodeBuilder
        from memory.shortterm import EpisodeCompressor, ShortTermMemory

        cfg = self.cfg
        return EpisodeCompressor(
            source, self.boundary_policy,
            window=ShortTermMemory(max_items=cfg.short_term_items, max_s=cfg.short_term_s),
            new_builder=lambda: EpisodeBuilder(
                source, keyframes_per_episode=cfg.keyframes_per_episode, embedder=self.embedder
            ),
            describe=self.describe,
        )  # fmt: skip

    def add(self, source: str, perception, image: np.ndarray | None = None, slot=None) -> None:
        key = source if slot is None else slot
        self._store(source, key, self.compressors[key].add(perception, image))

    def end(self, source: str, t_end: float, slot=None) -> list[int]:
        """Close the capture; returns the ids of the episodes it gave (in time order)."""
        key = source if slot is None else slot
        self._store(source, key, self.compressors.pop(key).end(t_end))
        return self.stored.pop(key)

    def _store(self, source: str, key, done: list) -> None:
        for episode, images, why in done:
            if self.cfg.clips:
                from pipeline.clips import clip_for_store

                clip = clip_for_store(source, episode.t_start, episode.t_end, self.store.path)
                if clip is not None:
                    episode = dataclasses.replace(episode, clip=str(clip))
            stored = self.store.add(episode, images)
            self.stored[key].append(stored.episode_id)
            self.episodes += 1
            self.boundaries[why] = self.boundaries.get(why, 0) + 1
            logger.info("episode %s of %s: %.2f-%.2f s (ended by %s)", stored.episode_id, source,
                        stored.t_start, stored.t_end, why)  # fmt: skip

    def stats(self) -> dict:
        return {"episodes_written": self.episodes, "open": len(self.compressors),
                "ended_by": dict(self.boundaries)}  # fmt: skip

    def close(self) -> None:
        self.store.close()
