"""MemoryActor: the single writer of the store; builds one episode per capture window."""

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
    """Owns :class:`memory.store.EpisodeStore`; one :class:`EpisodeBuilder` per open episode.

    An open episode is keyed by ``slot`` (default: its source), so several perception actors can
    build episodes of one source at once (a file's capture windows in parallel)."""

    def __init__(self, store_path: str, cfg: MemoryConfig, retention: RetentionConfig | None = None) -> None:
        from memory.store import EpisodeStore
        from models import registry

        policy = (retention or RetentionConfig()).policy()
        self.store = EpisodeStore(Path(store_path), jpeg_quality=cfg.jpeg_quality, retention=policy)
        self.embedder = registry.create(registry.EMBEDDERS, "classical")
        self.cfg = cfg
        self.builders: dict = {}
        self.windows: dict = {}
        self.episodes = 0

    def add_sounds(self, source: str, events: list) -> int:
        """Log every detected sound of ``source`` (the audio event log); returns how many."""
        self.store.add_sounds(source, to_sound_records(events))
        return len(events)

    def begin(
        self, source: str, window: CaptureWindow, events: list, wall_start: float | None, slot=None
    ) -> None:
        from memory.episodes import EpisodeBuilder

        builder = EpisodeBuilder(source, keyframes_per_episode=self.cfg.keyframes_per_episode, embedder=self.embedder)
        embeddings = [e.embedding for e in events if e.embedding is not None]
        builder.begin(
            window.t_start,
            labels=window.labels,
            sounds=tuple(to_sound_records(events)),
            wall_start=wall_start,
            audio_embeddings=np.stack(embeddings) if embeddings else None,
        )
        key = source if slot is None else slot
        self.builders[key] = builder
        self.windows[key] = window

    def add(self, source: str, perception, image: np.ndarray | None = None, slot=None) -> None:
        builder = self.builders[source if slot is None else slot]
        builder.add(perception)
        if image is not None:
            builder.add_frame(image, perception.t, perception.frame_idx)

    def end(self, source: str, t_end: float, slot=None) -> int | None:
        key = source if slot is None else slot
        builder = self.builders.pop(key)
        window = self.windows.pop(key, None)
        episode, images = builder.end(t_end)
        if self.cfg.clips and window is not None:
            from pipeline.clips import clip_for_store

            clip = clip_for_store(source, window.t_start, t_end, self.store.path)
            if clip is not None:
                episode = dataclasses.replace(episode, clip=str(clip))
        stored = self.store.add(episode, images)
        self.episodes += 1
        logger.info("episode %s of %s: %.2f-%.2f s", stored.episode_id, source, stored.t_start, stored.t_end)
        return stored.episode_id

    def stats(self) -> dict:
        return {"episodes_written": self.episodes, "open": len(self.builders)}

    def close(self) -> None:
        self.store.close()
