"""TriggerActor: audio chunks of one source → trigger events and capture windows."""

from __future__ import annotations

import logging
import time

import ray

from pipeline.actors.common import Latency
from pipeline.config import TriggerConfig
from pipeline.types import AudioChunk, CaptureWindow, TriggerEvent

logger = logging.getLogger(__name__)


@ray.remote(num_cpus=0)
class TriggerActor:
    """Wraps :class:`pipeline.triggers.TriggerPolicy` for one stream."""

    def __init__(self, stream_id: str, cfg: TriggerConfig, store_path: str | None = None) -> None:
        from models.audio.features import warm_up
        from pipeline.triggers import TriggerPolicy

        warm_up()  # pay librosa's JIT once, at start-up
        self.policy = TriggerPolicy.from_config(stream_id, cfg, store_path=store_path)
        self.chunks = 0
        self.latency = Latency()

    def feed(self, chunk: AudioChunk) -> list[TriggerEvent]:
        t0 = time.perf_counter()
        events = self.policy.feed(chunk)
        self.chunks += 1
        self.latency.time(t0)
        return events

    def finish(self, duration_s: float | None) -> tuple[list[TriggerEvent], list[CaptureWindow], list]:
        """Close open events; return (last trigger events, capture windows, every detected sound)."""
        last = self.policy.flush()
        return last, self.policy.windows(duration_s), list(self.policy.events)

    def stats(self) -> dict:
        return {"chunks_in": self.chunks, "sounds": len(self.policy.events), **self.latency.summary()}
