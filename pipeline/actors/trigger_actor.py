"""TriggerActor: audio chunks of one source → trigger events and capture windows."""

from __future__ import annotations

import logging
import math
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
        self.taken = 0  # sounds handed out by take_sounds()
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

    def flush(self) -> list[TriggerEvent]:
        """End of a live stream: close the open trigger (its END says whether it is kept)."""
        return self.policy.flush()

    def sounds_between(self, t0: float, t1: float) -> list:
        """Every sound heard overlapping ``[t0, t1]`` (media seconds)."""
        return [e for e in self.policy.events if e.t_end >= t0 and e.t_start <= t1]

    def take_sounds(self) -> list:
        """Sounds heard since the last call (a live stream logs them as it goes)."""
        events = self.policy.events
        new, self.taken = events[self.taken :], len(events)
        return new

    def stats(self) -> dict:
        return {"chunks_in": self.chunks, "sounds": len(self.policy.events), **self.latency.summary()}


_CLASSIFIERS: dict = {}  # per worker process: the audio classifier, loaded once


def _classifier(cfg: TriggerConfig):
    from models.audio.features import warm_up
    from pipeline.triggers import load_classifier

    key = str(cfg.weights)
    if key not in _CLASSIFIERS:
        warm_up()  # librosa's JIT, once per process
        _CLASSIFIERS[key] = load_classifier(cfg)
    return _CLASSIFIERS[key]


def scan_audio(
    source: str, stream_id: str, cfg: TriggerConfig, *, chunk_s: float, store_path: str | None,
    start_s: float, end_s: float | None, warmup_s: float, tail_s: float,
) -> dict:  # fmt: skip
    """Audio pass of one shard ``[start_s, end_s)`` of a file: the trigger runs over it (from
    ``warmup_s`` before, so its running background is settled, to ``tail_s`` after, so triggers
    started inside end), and keeps the windows and sounds that start inside the shard. Plain
    Python: run as a Ray task (:func:`scan_shard`) or in the driver while Ray starts."""
    import numpy as np

    from pipeline.ingest import DecodeCounter, iter_audio
    from pipeline.triggers import TriggerPolicy

    classifier = _classifier(cfg) if cfg.detector == "cnn" else None
    policy = TriggerPolicy.from_config(stream_id, cfg, classifier=classifier, store_path=store_path)
    log, peak, end = DecodeCounter(), 0.0, start_s
    chunks = iter_audio(
        source, stream_id=stream_id, chunk_s=chunk_s, counter=log,
        start_s=max(0.0, start_s - warmup_s), end_s=None if end_s is None else end_s + tail_s,
    )  # fmt: skip
    for chunk in chunks:
        if chunk.samples.size:
            peak = max(peak, float(np.max(np.abs(chunk.samples))))
        policy.feed(chunk)
        end = chunk.t_end
    policy.flush()
    hi = math.inf if end_s is None else end_s

    def inside(t: float) -> bool:
        return start_s <= t < hi

    return {
        "windows": [w for w in policy.windows(end) if inside(w.t_start + cfg.pre_roll_s)],
        "sounds": [e for e in policy.events if inside(e.t_start)],
        "triggers": sum(1 for e in policy.triggers if e.accepted and inside(e.t_start)),
        "end": end, "peak": peak, "warnings": log.warnings,
    }  # fmt: skip


scan_shard = ray.remote(num_cpus=1)(scan_audio)  # the audio pass of one shard as a Ray task
