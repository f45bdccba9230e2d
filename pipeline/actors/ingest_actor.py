"""IngestActor: one per source; audio first → triggers → video decoded only inside windows."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator

import ray

from pipeline.actors.common import InFlight
from pipeline.config import ServiceConfig
from pipeline.errors import IngestError
from pipeline.ingest import DecodeCounter, MediaInfo, iter_video
from pipeline.journal import Journal, file_key
from pipeline.sources import SourceSpec
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


def plan_shards(duration_s: float | None, shard_s: float) -> list[tuple[float, float | None]]:
    """``[start, end)`` spans of ``shard_s`` covering a file (the last one open-ended)."""
    n = 1 if not duration_s else max(1, int(round(duration_s / shard_s)))
    return [(i * shard_s, None if i == n - 1 else (i + 1) * shard_s) for i in range(n)]


def audio_spans(info: MediaInfo, cfg: ServiceConfig) -> list[tuple[float, float | None]]:
    """The shards of a file's audio pass (one for ``every_frame``: windows cover everything)."""
    return plan_shards(info.duration_s, cfg.ingest.shard_s) if not cfg.ingest.every_frame else [(0.0, None)]


def journal_key(source: str, audio: str | None = None) -> str:
    """The journal's key of a file (and of the separate audio file paired with it)."""
    return file_key(source) + (f"+{file_key(audio)}" if audio else "")


def audio_scan_args(cfg: ServiceConfig, span: tuple[float, float | None]) -> dict:
    """Keyword arguments of :func:`~pipeline.actors.trigger_actor.scan_audio` for one shard."""
    return dict(
        chunk_s=cfg.ingest.chunk_s, store_path=str(cfg.store.path), start_s=span[0], end_s=span[1],
        warmup_s=cfg.ingest.shard_warmup_s, tail_s=cfg.trigger.max_window_s,
    )  # fmt: skip


_DRIVER = object()  # an audio shard the driver scans and hands over (give_scan)


@ray.remote(num_cpus=0, max_concurrency=2)
class IngestActor:
    """Ingests one file: shards' audio passes run as parallel Ray tasks, each shard's windows are
    decoded and perceived as soon as its audio is done, in order; the journal records every
    finished step. ``progress()`` answers while ``run()`` works (two threads)."""

    def __init__(self, info: MediaInfo, stream_id: str, cfg: ServiceConfig, audio: str | None = None) -> None:
        self.info, self.stream_id, self.cfg = info, stream_id, cfg
        self.audio = audio or info.source  # a separate audio file, on the same clock
        self.stage, self.done, self.total = "starting", 0.0, info.duration_s or 0.0
        self.report = {"frames_decoded": 0, "frames_processed": 0, "triggers": 0, "episodes": 0}
        self.log = DecodeCounter(warnings=list(info.warnings))  # damage seen while reading
        self.stopping = False
        self.journal = Journal(cfg.store.path)
        self.key = journal_key(info.source, audio)
        self.given: dict[int, dict | None] = {}  # audio shards scanned by the driver
        self.cond = threading.Condition()

    def progress(self) -> tuple[str, float, float]:
        return self.stage, self.done, self.total

    def stop(self) -> None:
        """Finish the window being stored, then stop (the journal knows what is left)."""
        self.stopping = True
        with self.cond:
            self.cond.notify_all()

    def give_scan(self, shard: int, scan: dict | None) -> None:
        """The audio pass of ``shard``, done by the driver (None: it could not, a task does it)."""
        with self.cond:
            self.given[shard] = scan
            self.cond.notify_all()

    def run(self, perception, memory, prescan: tuple[int, ...] = ()) -> dict:
        """Ingest the whole file; returns the per-source report of ``eidetic ingest``.

        ``prescan``: audio shards the driver scans itself and hands over with :meth:`give_scan`
        (while Ray started); the others run as Ray tasks."""
        t0 = time.perf_counter()
        self._memory = memory
        done = self.journal.get(self.key, "file")
        if done is not None:
            self.stage = "done"
            return {**done, "resumed": True}
        shards = self._shards(set(prescan))
        for k, (scan, windows) in enumerate(shards):
            if self.stopping:
                break
            if not self.journal.has(self.key, "shard", shard=k):
                self._video_pass(k, windows, scan["sounds"], perception)
            if not self.stopping:
                self.journal.put(self.key, "shard", shard=k)
        self.stage = "stopped" if self.stopping else "done"
        wall = round(time.perf_counter() - t0, 3)
        report = {**self.report, "wall_s": wall, "warnings": list(self.log.warnings), "gaps": []}
        if self.stopping:
            report["interrupted"] = True  # the journal keeps what was stored: run again to resume
        else:
            self.journal.put(self.key, "file", report)
        return report

    # ------------------------------------------------------------------ audio first

    def _shards(self, prescan: set[int]) -> Iterator[tuple[dict, list[CaptureWindow]]]:
        """Each shard's audio result and capture windows, in order (scans run ahead, in parallel)."""
        ing, info = self.cfg.ingest, self.info
        if not info.has_audio:
            yield from self._fallback("has no audio")
            return
        spans = audio_spans(info, self.cfg)
        refs = [
            None if self.journal.has(self.key, "audio", shard=k)
            else _DRIVER if k in prescan else self._scan_task(span)
            for k, span in enumerate(spans)
        ]  # fmt: skip
        peak = 0.0
        for k, ref in enumerate(refs):
            self.stage = f"audio {k + 1}/{len(refs)}"
            fresh = ref is not None  # not read back from the journal
            if ref is _DRIVER:
                scan = self._given(k)
                if scan is None and self.stopping:
                    return
                if scan is None:  # the driver could not: a Ray task does it (and reports why not)
                    scan = ray.get(self._scan_task(spans[k]))
            else:
                scan = self.journal.get(self.key, "audio", shard=k) if ref is None else ray.get(ref)
            if fresh:
                self.log.warnings += [w for w in scan["warnings"] if w not in self.log.warnings]
                if scan["sounds"]:
                    ray.get(self.memory_add_sounds(scan["sounds"]))
                scan["sounds_logged"] = True
                self.journal.put(self.key, "audio", scan, shard=k)
            peak = max(peak, scan["peak"])
            self.report["triggers"] += scan["triggers"]
            self.total = max(self.total, scan["end"])
            if k == len(refs) - 1 and info.has_video and peak < SILENT_PEAK:
                yield from self._fallback("has a silent audio track")
                return
            windows = scan["windows"]
            if ing.every_frame and info.has_video:
                windows = continuous_windows(self.stream_id, self.total, self.cfg.trigger.max_window_s)
            yield scan, windows

    def _scan_task(self, span: tuple[float, float | None]):
        from pipeline.actors.trigger_actor import scan_shard

        return scan_shard.remote(self.audio, self.stream_id, self.cfg.trigger, **audio_scan_args(self.cfg, span))

    def _given(self, shard: int) -> dict | None:
        """Wait for the driver's scan of ``shard`` (None if it could not, or when stopping)."""
        with self.cond:
            self.cond.wait_for(lambda: shard in self.given or self.stopping)
            return self.given.pop(shard, None)

    def memory_add_sounds(self, sounds: list):
        return self._memory.add_sounds.remote(self.info.source, sounds)

    def _fallback(self, why: str) -> Iterator[tuple[dict, list[CaptureWindow]]]:
        if not self.info.has_video:
            return
        logger.warning("%s %s: using the visual-change trigger", self.info.source, why)
        self.log.warn(self.info.source, f"{why}: visual-change trigger used")
        windows = self._visual_pass()
        if self.cfg.ingest.every_frame:
            windows = continuous_windows(self.stream_id, self.total, self.cfg.trigger.max_window_s)
        yield {"sounds": []}, windows

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

    # ------------------------------------------------------------------ video in windows

    def _video_pass(self, shard: int, windows: list[CaptureWindow], sounds: list, perception) -> None:
        """Decode the shard's windows in one pass (GOP-aware seeks) and feed each window's frames
        between its perception begin/end; every stored window is journaled. ``perception`` is one
        actor or a list of them: windows are dealt round-robin, so they are perceived in parallel
        while decoding goes on (each actor's calls run in order, one window at a time)."""
        self.stage = "video"
        todo = [(i, w) for i, w in enumerate(windows) if not self.journal.has(self.key, "window", shard=shard, item=i)]
        actors = list(perception) if isinstance(perception, (list, tuple)) else [perception]
        flights = [InFlight(self.cfg.ray.max_in_flight) for _ in actors]
        counter = self.log
        packets = self._packets([w for _, w in todo], counter)
        packet = next(packets, None)
        ends: list = []  # (window index, ref of its perception end), in order
        for n, (i, window) in enumerate(todo):
            if self.stopping:
                break
            actor, in_flight = actors[n % len(actors)], flights[n % len(actors)]
            inside = [s for s in sounds if s.t_end >= window.t_start and s.t_start <= window.t_end]
            in_flight.add(actor.begin.remote(window, self.info.source, inside))
            pending_triggers = sorted(s.t_start for s in inside)
            while packet is not None and packet.t <= window.t_end:
                if packet.t >= window.t_start:
                    force = bool(pending_triggers) and packet.t >= pending_triggers[0]
                    while pending_triggers and packet.t >= pending_triggers[0]:
                        pending_triggers.pop(0)
                    in_flight.add(actor.step.remote(self.info.source, packet, force))
                    self.report["frames_processed"] += 1
                self.done = max(self.done, packet.t)
                packet = next(packets, None)
            ends.append((i, actor.end.remote(self.info.source, window)))  # decoding goes on
            self._settle(shard, ends, block=False)
            self.report["frames_decoded"] = counter.decoded
        for in_flight in flights:
            in_flight.drain()  # a failed begin/step re-raises here
        self._settle(shard, ends, block=True)

    def _settle(self, shard: int, ends: list, *, block: bool) -> None:
        """Journal the windows whose episode is stored (all of them when ``block``)."""
        while ends:
            ready, _ = ray.wait([ends[0][1]], timeout=None if block else 0)
            if not ready:
                return
            i, ref = ends.pop(0)
            episodes = ray.get(ref)  # the ids of the episodes the window gave
            self.journal.put(self.key, "window", episodes, shard=shard, item=i)
            self.report["episodes"] += len(episodes or ())

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
            fast=self.cfg.ingest.fast_decode and not self.cfg.ingest.every_frame,
        )


class WindowSink:
    """Hands finished live captures to perception on a thread, through a queue bounded in frames:
    when perception falls behind, a new capture's frames are dropped (counted), never queued."""

    def __init__(self, source: str, trigger, perception, memory, *, max_frames: int) -> None:
        self.source, self.trigger, self.perception, self.memory = source, trigger, perception, memory
        self.max_frames = max_frames
        self.queue: queue.Queue = queue.Queue()
        self.queued_frames = 0
        self.lock = threading.Lock()
        self.episodes = self.frames_dropped = self.windows_dropped = 0
        self.thread = threading.Thread(target=self._work, name=f"sink-{source}", daemon=True)
        self.thread.start()

    def put(self, window: CaptureWindow, frames: list[FramePacket]) -> None:
        with self.lock:
            if self.queued_frames + len(frames) > self.max_frames:
                self.frames_dropped += len(frames)
                self.windows_dropped += 1
                logger.warning("%s: perception behind, capture %.1f-%.1f s dropped (%d frames)",
                               self.source, window.t_start, window.t_end, len(frames))  # fmt: skip
                frames = []
            self.queued_frames += len(frames)
        self.queue.put((window, frames))

    def close(self) -> None:
        """Drain: every queued capture is stored before this returns."""
        self.queue.put(None)
        self.thread.join()

    def _work(self) -> None:
        while (item := self.queue.get()) is not None:
            window, frames = item
            try:
                self._store(window, frames)
            except ray.exceptions.RayError as e:
                logger.error("%s: capture %.1f s not stored: %s", self.source, window.t_start, e)
            with self.lock:
                self.queued_frames -= len(frames)

    def _store(self, window: CaptureWindow, frames: list[FramePacket]) -> None:
        sounds = ray.get(self.trigger.sounds_between.remote(window.t_start, window.t_end))
        new = ray.get(self.trigger.take_sounds.remote())
        if new:
            self.memory.add_sounds.remote(self.source, new)
        wall = frames[0].wall_time - (frames[0].t - window.t_start) if frames and frames[0].wall_time else None
        in_flight = InFlight(8)
        in_flight.add(self.perception.begin.remote(window, self.source, sounds, wall))
        onsets = sorted(s.t_start for s in sounds)
        for f in frames:
            force = bool(onsets) and f.t >= onsets[0]
            onsets = [o for o in onsets if o > f.t]
            in_flight.add(self.perception.step.remote(self.source, f, force))
        in_flight.drain()
        self.episodes += len(ray.get(self.perception.end.remote(self.source, window)) or ())


@ray.remote(num_cpus=0, max_concurrency=2)
class LiveIngestActor:
    """Captures one live source until ``stop()``; ``progress()`` answers meanwhile."""

    def __init__(self, spec: SourceSpec, stream_id: str, cfg: ServiceConfig) -> None:
        from pipeline.live import LiveCapture

        ing, trig = cfg.ingest, cfg.trigger
        self.spec, self.cfg = spec, cfg
        self.capture = LiveCapture(
            spec, stream_id=stream_id, chunk_s=ing.chunk_s,
            fps=None if ing.every_frame else ing.perception_fps, max_side=ing.max_side,
            pre_roll_s=trig.pre_roll_s, post_roll_s=trig.post_roll_s, max_window_s=trig.max_window_s, max_capture_s=trig.max_capture_s,
            ring_max_mb=cfg.sources.ring_max_mb, max_pending_frames=cfg.sources.max_pending_frames,
            fast=ing.fast_decode and not ing.every_frame,
        )  # fmt: skip

    def progress(self) -> tuple[str, float, float]:
        return self.capture.status, self.capture.stats.t, 0.0

    def stats(self) -> dict:
        return self.capture.report()

    def stop(self) -> None:
        self.capture.stop.set()

    def run(self, trigger, perception, memory) -> dict:
        t0 = time.perf_counter()
        sink = WindowSink(self.spec.name, trigger, perception, memory,
                          max_frames=self.cfg.sources.max_pending_frames)  # fmt: skip
        try:
            report = self.capture.run(
                lambda chunk: ray.get(trigger.feed.remote(chunk)), sink.put,
                flush=lambda: ray.get(trigger.flush.remote()),
            )  # fmt: skip
        except IngestError as e:  # the first connection failed: a bad source, reported
            return {"error": e.cause, "episodes": 0, "frames_decoded": 0, "frames_processed": 0,
                    "triggers": 0, "wall_s": round(time.perf_counter() - t0, 3), "warnings": [], "gaps": []}
        finally:
            sink.close()
        rest = ray.get(trigger.take_sounds.remote())
        if rest:
            ray.get(memory.add_sounds.remote(self.spec.name, rest))
        return {
            "frames_decoded": report["frames_decoded"],
            "frames_processed": report["frames_processed"] - sink.frames_dropped,
            "triggers": report["triggers"], "episodes": sink.episodes,
            "wall_s": round(time.perf_counter() - t0, 3), "warnings": report["warnings"],
            "gaps": report["gaps"], "duration_s": report["duration_s"], "status": report["status"],
            "frames_dropped": report["frames_dropped"] + sink.frames_dropped,
        }  # fmt: skip
