"""IngestActor: one per source; audio first → triggers → video decoded only inside windows."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np
import ray

from pipeline.actors.common import InFlight
from pipeline.config import ServiceConfig
from pipeline.ingest import DecodeCounter, MediaInfo, iter_audio, iter_video
from pipeline.types import CaptureWindow, FramePacket

logger = logging.getLogger(__name__)

SILENT_PEAK = 10 ** (-90 / 20)  # audio never louder than -90 dBFS is a muted microphone


def continuous_windows(stream_id: str, duration_s: float, max_window_s: float) -> list[CaptureWindow]:
    """Fallback for video without audio: consecutive windows covering the whole video."""
    n = max(1, int(-(-duration_s // max_window_s)))
    return [
        CaptureWindow(stream_id, i * max_window_s, min(duration_s, (i + 1) * max_window_s), ("video",))
        for i in range(n)
    ]


@ray.remote(num_cpus=0, max_concurrency=2)
class IngestActor:
    """Decodes one file source; ``progress()`` answers while ``run()`` works (two threads)."""

    def __init__(self, info: MediaInfo, stream_id: str, cfg: ServiceConfig) -> None:
        self.info, self.stream_id, self.cfg = info, stream_id, cfg
        self.stage, self.done, self.total = "starting", 0.0, info.duration_s or 0.0
        self.report = {"frames_decoded": 0, "frames_processed": 0, "triggers": 0, "episodes": 0}
        self.log = DecodeCounter(warnings=list(info.warnings))  # damage seen while reading
        self.peak = 0.0  # loudest audio sample seen (a silent track falls back to video)

    def progress(self) -> tuple[str, float, float]:
        return self.stage, self.done, self.total

    def run(self, trigger, perception, memory) -> dict:
        """Ingest the whole source; returns the per-source report of ``eidetic ingest``."""
        t0 = time.perf_counter()
        windows, sounds = self._audio_pass(trigger) if self.info.has_audio else ([], [])
        if sounds:
            ray.get(memory.add_sounds.remote(self.info.source, sounds))
        if self.info.has_video and (not self.info.has_audio or self.peak < SILENT_PEAK):
            why = "has no audio" if not self.info.has_audio else "has a silent audio track"
            logger.warning("%s %s: using the visual-change trigger", self.info.source, why)
            windows = self._visual_pass()
        if self.cfg.ingest.every_frame and self.info.has_video:
            windows = continuous_windows(self.stream_id, self.total, self.cfg.trigger.max_window_s)
        self._video_pass(windows, sounds, perception)
        self.stage = "done"
        wall = round(time.perf_counter() - t0, 3)
        return {**self.report, "wall_s": wall, "warnings": list(self.log.warnings), "gaps": []}

    def _audio_pass(self, trigger) -> tuple[list[CaptureWindow], list]:
        self.stage = "audio"
        in_flight = InFlight(self.cfg.ray.max_in_flight)
        end = 0.0
        chunks = iter_audio(self.info.source, stream_id=self.stream_id, chunk_s=self.cfg.ingest.chunk_s, counter=self.log)
        for chunk in chunks:
            if chunk.samples.size:
                self.peak = max(self.peak, float(np.max(np.abs(chunk.samples))))
            in_flight.add(trigger.feed.remote(chunk))
            end = chunk.t_end
            self.done = end
        events = [e for batch in in_flight.drain() for e in batch]
        last, windows, sounds = ray.get(trigger.finish.remote(self.info.duration_s or end))
        ends = [e for e in events + last if e.state.value == "end"]
        self.report["triggers"] = sum(1 for e in ends if e.accepted)
        self.total = max(self.total, end)
        return windows, sounds

    def _visual_pass(self) -> list[CaptureWindow]:
        """Windows around visual changes (whole video decoded at ``trigger.visual_fps``)."""
        from pipeline.triggers import capture_windows
        from pipeline.visual_trigger import detect_visual_changes, visual_trigger_events

        self.stage, self.done = "visual", 0.0
        cfg = self.cfg.trigger
        changes, seen = detect_visual_changes(self.info.source, stream_id=self.stream_id, fps=cfg.visual_fps)
        self.total = max(self.total, seen)
        self.report["triggers"] = len(changes)
        return capture_windows(
            visual_trigger_events(changes, stream_id=self.stream_id), stream_id=self.stream_id,
            pre_roll_s=cfg.pre_roll_s, post_roll_s=cfg.post_roll_s, max_window_s=cfg.max_window_s,
            duration_s=self.total or None,
        )

    def _video_pass(self, windows: list[CaptureWindow], sounds: list, perception) -> None:
        """Decode video inside every window in one pass over the file (one open, one seek per
        window), feeding each window's frames between its perception begin/end."""
        self.stage, self.done = "video", 0.0
        self.total = sum(w.t_end - w.t_start for w in windows) or 1.0
        in_flight = InFlight(self.cfg.ray.max_in_flight)
        counter = self.log
        decoded_before = counter.decoded
        packets = self._packets(windows, counter)
        packet = next(packets, None)
        done_before = 0.0
        for window in windows:
            inside = [s for s in sounds if s.t_end >= window.t_start and s.t_start <= window.t_end]
            in_flight.add(perception.begin.remote(window, self.info.source, inside))
            pending_triggers = sorted(s.t_start for s in inside)
            while packet is not None and packet.t <= window.t_end:
                force = bool(pending_triggers) and packet.t >= pending_triggers[0]
                while pending_triggers and packet.t >= pending_triggers[0]:
                    pending_triggers.pop(0)
                in_flight.add(perception.step.remote(self.info.source, packet, force))
                self.report["frames_processed"] += 1
                self.report["frames_decoded"] = counter.decoded - decoded_before
                self.done = done_before + max(0.0, packet.t - window.t_start)
                packet = next(packets, None)
            in_flight.drain()
            self.report["frames_decoded"] = counter.decoded - decoded_before
            done_before += window.t_end - window.t_start
            if ray.get(perception.end.remote(self.info.source, window)) is not None:
                self.report["episodes"] += 1

    def _packets(self, windows: list[CaptureWindow], counter: DecodeCounter) -> Iterator[FramePacket]:
        if not self.info.has_video or not windows:
            return iter(())
        return iter_video(
            self.info.source,
            stream_id=self.stream_id,
            windows=[(w.t_start, w.t_end) for w in windows],
            fps=None if self.cfg.ingest.every_frame else self.cfg.ingest.perception_fps,
            max_side=self.cfg.ingest.max_side,
            counter=counter,
        )
