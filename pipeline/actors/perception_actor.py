"""PerceptionActor: frames inside capture windows → tracks and keyframes → MemoryActor."""

from __future__ import annotations

import logging
import time

import ray

from pipeline.actors.common import InFlight, Latency
from pipeline.config import PerceptionConfig
from pipeline.perception import build_segmenter, refinement_kwargs
from pipeline.types import CaptureWindow, FramePacket

logger = logging.getLogger(__name__)


@ray.remote(num_cpus=0)
class PerceptionActor:
    """Runs the segmenter + tracker on each capture window and forwards Perceptions in order."""

    def __init__(
        self, cfg: PerceptionConfig, memory: ray.actor.ActorHandle, max_in_flight: int = 8
    ):
        from models import registry

        self.cfg = cfg
        self.memory = memory
        self.segmenter = build_segmenter(cfg)
        self.embedder = registry.create(registry.EMBEDDERS, "classical")
        self.tracker = None
        self.slot = None  # the open episode's key in the MemoryActor
        self.in_flight = InFlight(max_in_flight)
        self.frames = 0
        self.latency = Latency()

    def begin(
        self, window: CaptureWindow, source: str, sounds: list, wall_start: float | None = None
    ) -> None:
        from tracker.tracker import Tracker

        self.tracker = Tracker(
            self.segmenter,
            self.embedder,
            stream_id=window.stream_id,
            max_objects=self.cfg.max_objects,
            keyframe_budget=self.cfg.keyframe_budget,
            min_area_frac=self.cfg.min_object_area,
            max_lost=self.cfg.max_objects,
            **refinement_kwargs(self.cfg, self.segmenter),
        )
        self.slot = (source, window.stream_id, window.t_start)  # unique per open window
        self.in_flight.add(self.memory.begin.remote(source, window, sounds, wall_start, self.slot))

    def step(self, source: str, packet: FramePacket, force_keyframe: bool = False) -> None:
        t0 = time.perf_counter()
        perception = self.tracker.step(
            packet.image, packet.t, frame_idx=packet.frame_idx, force_keyframe=force_keyframe
        )
        self.in_flight.add(self.memory.add.remote(source, perception, packet.image, self.slot))
        self.frames += 1
        self.latency.time(t0)

    def end(self, source: str, window: CaptureWindow) -> list[int]:
        """Close the window; returns the ids of the episodes it gave."""
        self.in_flight.drain()
        self.tracker, slot, self.slot = None, self.slot, None
        return ray.get(self.memory.end.remote(source, window.t_end, slot))

    def stats(self) -> dict:
        return {
            "frames_in": self.frames,
            "backpressure_waits": self.in_flight.waits,
            **self.latency.summary(),
        }
