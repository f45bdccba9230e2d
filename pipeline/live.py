"""Live sources: demux forever, decode audio, keep video compressed, decode it only for captures.

:class:`LiveCapture` reads one live source (camera URL, device). Audio is decoded and cut into
chunks for the trigger; video stays *compressed* in a :class:`PacketRing` reaching back to the
last keyframe before the pre-roll, and is decoded only while a trigger is open (from that
keyframe on). A dropped or stalled connection is reopened with exponential backoff; the gap is
recorded (:class:`Gap`) and the media clock jumps by the wall time lost, so ``t`` stays monotonic
and one clock across reconnects. Decoded frames waiting for a trigger's verdict are bounded
(``max_pending_frames``): past that, frames are dropped and counted, never queued in RAM.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import av

from pipeline.clock import AudioChunker, Sampler
from pipeline.errors import IngestError
from pipeline.ingest import SAMPLE_RATE, _decoder, _open, target_size, to_packet
from pipeline.sources import Backoff, SourceSpec
from pipeline.types import AudioChunk, CaptureWindow, FramePacket, TriggerEvent, TriggerState

logger = logging.getLogger(__name__)

MB = 1024**2
TRIGGER_LATENCY_S = 4.0  # the ring also covers how late a START may come after its sound began

OnAudio = Callable[[AudioChunk], list[TriggerEvent]]  # chunk → the trigger changes it caused
OnWindow = Callable[[CaptureWindow, list[FramePacket]], None]  # a finished capture and its frames


@dataclass(slots=True)
class Gap:
    """A span without data: media time ``t`` where it began, wall times (UTC s), and why."""

    t: float
    wall_start: float
    wall_end: float | None
    cause: str

    def to_json(self) -> dict:
        return {"t": round(self.t, 3), "wall_start": self.wall_start, "wall_end": self.wall_end,
                "duration_s": None if self.wall_end is None else round(self.wall_end - self.wall_start, 3),
                "cause": self.cause}  # fmt: skip


class PacketRing:
    """Compressed video packets (``av.Packet``, with their ``stream``) covering at least the last
    ``keep_s`` seconds *and* back to the keyframe before that, capped at ``max_bytes``.

    ``since(t)`` returns the packets from the last keyframe at or before ``t``: enough to decode
    the frame at ``t``, or to remux the span without re-encoding.
    """

    def __init__(self, keep_s: float, max_bytes: int) -> None:
        self.keep_s, self.max_bytes = keep_s, max_bytes
        self.items: deque[tuple[float, av.Packet]] = deque()
        self.bytes = 0
        self.peak_bytes = 0
        self.evicted_early = 0  # packets dropped by the byte cap before their time

    def push(self, t: float, packet: av.Packet) -> None:
        self.items.append((t, packet))
        self.bytes += packet.size
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        horizon = t - self.keep_s
        while len(self.items) > 1:  # drop a whole GOP once the next keyframe is old enough
            nxt = next((i for i, (tk, p) in enumerate(self.items) if i > 0 and p.is_keyframe), None)
            if nxt is None or self.items[nxt][0] > horizon:
                break
            for _ in range(nxt):
                self._pop()
        while self.bytes > self.max_bytes and len(self.items) > 1:
            self._pop()
            self.evicted_early += 1

    def _pop(self) -> None:
        _, p = self.items.popleft()
        self.bytes -= p.size

    def since(self, t: float) -> list[tuple[float, av.Packet]]:
        """Packets from the last keyframe at or before ``t`` (or the oldest keyframe) to now."""
        items = list(self.items)
        keys = [i for i, (tk, p) in enumerate(items) if p.is_keyframe]
        if not keys:
            return []
        start = max((i for i in keys if items[i][0] <= t), default=keys[0])
        return items[start:]

    def clear(self) -> None:
        self.items.clear()
        self.bytes = 0


@dataclass(slots=True)
class _Capture:
    """Frames decoded for triggers: the open trigger's from ``t_from`` until it ends, decoded
    inside its padded ``extent`` (what the policy says it may still capture); accepted triggers'
    windows (built from their END's spans) wait in ``closing`` for the stream to pass them."""

    t_from: float | None = None
    extent: tuple[tuple[float, float], ...] = ()  # the open trigger's padded spans
    label: str = ""
    ends: list[TriggerEvent] = field(default_factory=list)  # accepted ENDs not all handed over
    handed_to: float = float("-inf")  # end of the last window handed over
    closing: list[CaptureWindow] = field(default_factory=list)
    frames: list[FramePacket] = field(default_factory=list)
    last_t: float = float("-inf")  # time of the newest frame held (decoding may restart earlier)

    @property
    def active(self) -> bool:
        return self.t_from is not None or bool(self.closing)

    @property
    def until(self) -> float:
        """An open trigger is decoded up to here."""
        return max((b for _, b in self.extent), default=float("-inf"))

    def inside(self, t: float) -> bool:
        """Whether a frame at ``t`` is held: from the open trigger's start to its extent's end
        (a sound may yet join it), or in an accepted window."""
        return (self.t_from is not None and self.t_from <= t <= self.until) or any(
            w.t_start <= t <= w.t_end for w in self.closing
        )


@dataclass(slots=True)
class LiveStats:
    packets: int = 0
    chunks: int = 0
    frames_decoded: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    windows: int = 0
    triggers: int = 0
    reconnects: int = 0
    t: float = 0.0


class LiveCapture:
    """Capture one live source until ``stop`` is set or it cannot be reopened.

    Parameters
    ----------
    spec : SourceSpec
        The source and its options (timeouts, reconnect backoff, frame size cap).
    stream_id : str
        Id carried by every chunk and frame.
    chunk_s, fps, max_side : float, float or None, int
        Audio chunk length; frames per second kept inside captures (None: all); frame size.
    pre_roll_s, post_roll_s, max_window_s : float
        Capture padding and longest window (a longer capture is cut into several).
    max_capture_s : float or None
        A trigger is captured at most this long from its start (the trigger config's
        ``max_capture_s``), so a sound that never ends neither decodes nor holds frames forever.
    ring_max_mb, max_pending_frames : float, int
        Memory bounds: compressed ring size, decoded frames held for an open trigger.
    """

    def __init__(
        self, spec: SourceSpec, *, stream_id: str, chunk_s: float = 0.96, fps: float | None = 2.0,
        max_side: int = 640, pre_roll_s: float = 0.5, post_roll_s: float = 0.5,
        max_window_s: float = 20.0, max_capture_s: float | None = 3.0, ring_max_mb: float = 64.0,
        max_pending_frames: int = 240, fast: bool = True, wall_clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.spec, self.stream_id = spec, stream_id
        self.chunk_s, self.fps, self.max_side, self.fast = chunk_s, fps, max_side, fast
        self.pre_roll_s, self.post_roll_s, self.max_window_s = pre_roll_s, post_roll_s, max_window_s
        self.max_capture_s = max_capture_s
        self.max_pending = max_pending_frames
        self.ring = PacketRing(pre_roll_s + TRIGGER_LATENCY_S, int(ring_max_mb * MB))
        self.wall_clock = wall_clock
        self.stats = LiveStats()
        self.gaps: list[Gap] = []
        self.status = "starting"
        self.warnings: list[str] = []
        self.stop = threading.Event()
        self._cap = _Capture()
        self._decoder_on = False
        self._dec_t = float("-inf")  # time of the newest frame decoded
        self._stopped_at = float("-inf")  # stream time when the decoder was last stopped
        self._t_last = 0.0  # media time of the newest packet
        self._base = 0.0  # media time where the current connection starts
        self._origin: float | None = None  # the connection's first packet time (its own clock)
        self._frame_idx = 0
        self._stream = None
        self._wall0, self._t0 = wall_clock(), 0.0

    # ------------------------------------------------------------------ the loop

    def run(self, on_audio: OnAudio, on_window: OnWindow,
            flush: Callable[[], list[TriggerEvent]] | None = None) -> dict:  # fmt: skip
        """Read until stopped or given up; returns the report (stats, gaps, status).

        ``on_audio(chunk)`` returns the trigger changes the chunk caused; ``on_window(window,
        frames)`` receives each finished capture; ``flush()`` (optional) ends the open trigger
        when the source ends.
        """
        container = self._connect(first=True)
        backoff = Backoff(self.spec.options.backoff_initial_s, self.spec.options.backoff_max_s,
                          limit=self.spec.options.max_reconnects)  # fmt: skip
        while container is not None:
            cause = self._read(container, on_audio, on_window)
            container.close()
            if self.stop.is_set():
                break
            gap = Gap(self._t_last, self.wall_clock(), None, cause)
            self.gaps.append(gap)
            logger.warning("%s: stream lost at t=%.2f s (%s); reconnecting", self.spec.name, gap.t, cause)
            container = self._reconnect(backoff, gap) if self.spec.options.reconnect else None
        if flush is not None:
            self._on_events(flush(), on_window)
        self._finish(on_window)
        return self.report()

    def _connect(self, *, first: bool) -> av.container.InputContainer | None:
        try:
            container = _open(self.spec.target, self.spec)
        except IngestError:
            if first:
                raise
            return None
        self.status = "live"
        self._origin = None
        return container

    def _reconnect(self, backoff: Backoff, gap: Gap) -> av.container.InputContainer | None:
        self.status = "reconnecting"
        while not self.stop.is_set():
            delay = backoff.next_delay()
            if delay is None:
                self.status = "gave up"
                self._warn(f"gave up after {backoff.failures} failed reconnects")
                return None
            if self.stop.wait(delay):
                return None
            container = self._connect(first=False)
            if container is not None:
                gap.wall_end = self.wall_clock()
                self.stats.reconnects += 1
                backoff.reset()
                self._base = self._t_last + (gap.wall_end - gap.wall_start)
                logger.warning("%s: reconnected after %.1f s", self.spec.name, gap.wall_end - gap.wall_start)
                return container
        return None

    def _read(self, container, on_audio: OnAudio, on_window: OnWindow) -> str:
        """Demux one connection; returns why it ended."""
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        video = video if video is not None and _decoder(video) else None
        audio = audio if audio is not None and _decoder(audio) else None
        streams = [s for s in (video, audio) if s is not None]
        if not streams:
            return "no decodable stream"
        if video is not None:
            video.thread_type = "AUTO"
            if self.fast:
                video.codec_context.options = {"skip_loop_filter": "all"}
            self._size = target_size(video.codec_context.width, video.codec_context.height, self.max_side)
        self._stream = video
        chunker = AudioChunker(self.stream_id, chunk_s=self.chunk_s, sample_rate=SAMPLE_RATE)
        self._sampler = Sampler(self.fps)
        self.ring.clear()
        self._decoder_on = False
        try:
            for packet in container.demux(streams):
                if self.stop.is_set():
                    return "stopped"
                if packet.pts is None and packet.dts is None:
                    continue  # flush packets
                t = self._time(packet)
                self.stats.packets += 1
                if packet.stream is audio:
                    for chunk in self._audio(packet, chunker, t):
                        self._on_events(on_audio(chunk), on_window)
                else:
                    self._video(packet, t, on_window)
        except av.FFmpegError as e:
            return f"read error: {e.strerror or e}"
        finally:
            for chunk in chunker.flush():
                self._on_events(on_audio(chunk), on_window)
        return "end of stream"

    def _time(self, packet: av.Packet) -> float:
        raw = packet.pts if packet.pts is not None else packet.dts
        pt = float(raw * packet.time_base)
        if self._origin is None:
            self._origin = pt
            self._wall0 = self.wall_clock()
            self._t0 = self._base
        t = max(self._base, pt - self._origin + self._base)
        self._t_last = max(self._t_last, t)
        self.stats.t = self._t_last
        return t

    def _wall(self, t: float) -> float:
        return self._wall0 + (t - self._t0)

    def _decoded(self, packet: av.Packet, kind: str) -> list:
        """The packet's frames; a damaged packet is skipped with a warning (no frames)."""
        try:
            return packet.decode()
        except av.FFmpegError as e:
            self._warn(f"damaged {kind} skipped ({e.strerror or e})")
            return []

    def _audio(self, packet: av.Packet, chunker: AudioChunker, t: float):
        for frame in self._decoded(packet, "audio"):
            for chunk in chunker.push(frame, t=t, wall=self._wall(t), warn=self._warn):
                self.stats.chunks += 1
                yield chunk

    # ------------------------------------------------------------------ video and captures

    def _video(self, packet: av.Packet, t: float, on_window: OnWindow) -> None:
        self.ring.push(t, packet)
        if self._decoder_on:
            self._decode(packet, t)
            self._close_due(on_window)

    def _wanted(self) -> bool:
        """Video must be decoded now: an open trigger within its capture extent, or an accepted
        window whose end the stream has not reached."""
        c = self._cap
        # while decoding: up to the newest frame out of the decoder (its threads lag the demuxer
        # by a few frames, at most 1 s), so the last wanted frames are not flushed away
        t = max(self._dec_t, self._t_last - 1.0) if self._decoder_on else self._t_last
        return (c.t_from is not None and t <= c.until) or any(w.t_end >= t for w in c.closing)

    def _resume_from(self) -> float | None:
        """Where decoding must (re)start: the earliest wanted time not held yet."""
        c = self._cap
        done = max(c.last_t, self._dec_t)  # frames up to here were decoded (and held if wanted)
        spans = [*c.extent, *((w.t_start, w.t_end) for w in c.closing)]
        # a span ending before the decoder last stopped was decoded as far as it got
        starts = [max(a, done) for a, b in spans if b > max(done, self._stopped_at)]
        return min(starts) if starts else None

    def _decode(self, packet: av.Packet, t_packet: float) -> None:
        for frame in self._decoded(packet, "video"):
            self.stats.frames_decoded += 1
            pts = frame.pts if frame.pts is not None else None
            t = t_packet if pts is None else max(self._base, float(pts * frame.time_base) - self._origin + self._base)
            self._dec_t = t
            if t <= self._cap.last_t or not self._cap.inside(t) or not self._sampler.keep(t):
                continue  # already held (decoding restarted from the ring), or not wanted
            self._cap.last_t = t
            if len(self._cap.frames) >= self.max_pending:
                self.stats.frames_dropped += 1
                continue
            self._cap.frames.append(to_packet(frame, stream_id=self.stream_id, frame_idx=self._frame_idx,
                                              t=t, size=self._size, wall=self._wall(t)))  # fmt: skip
            self._frame_idx += 1

    def _needed_from(self) -> float | None:
        starts = [w.t_start for w in self._cap.closing]
        if self._cap.t_from is not None:
            starts.append(self._cap.t_from)
        return min(starts) if starts else None

    def _start_decoding(self, t_from: float) -> None:
        if self._decoder_on:
            return
        self._decoder_on = True
        for t, packet in self.ring.since(t_from):
            self._decode(packet, t)

    def _stop_decoding(self) -> None:
        """Decoder off (its buffers dropped); pending frames stay while a verdict is awaited."""
        self._decoder_on = False
        self._stopped_at = self._t_last
        if not self._cap.active:
            self._cap.frames.clear()
        if self._stream is not None:
            try:
                self._stream.codec_context.flush_buffers()
            except av.FFmpegError as e:
                logger.debug("decoder flush: %s", e)

    def _on_events(self, events: list[TriggerEvent], on_window: OnWindow) -> None:
        c = self._cap
        for e in events:
            if e.state is TriggerState.START:
                c.extent = self._padded(e)
                c.t_from = min(e.t_start - self.pre_roll_s, *(a for a, _ in c.extent))
                c.label = e.label
                self._resume(c.t_from, rewind=True)
            elif e.state is TriggerState.UPDATE and c.t_from is not None:
                c.label = e.label
                if e.spans:  # the policy's capture extent moved (a sound joined, went on)
                    c.extent = self._padded(e)
                    t_from = min(c.t_from, *(a for a, _ in c.extent))
                    horizon = self._t_last - self.ring.keep_s  # no later sound reaches back past this
                    keep = [f for f in c.frames if f.t >= horizon or any(a <= f.t <= b for a, b in c.extent)
                            or any(w.t_start <= f.t <= w.t_end for w in c.closing)]  # fmt: skip
                    c.frames = keep
                    if t_from < c.t_from:  # a sound found before the trigger's start joined it
                        c.t_from = t_from
                        self._resume(t_from, rewind=True)
                    elif not self._decoder_on and self._wanted():
                        self._resume(self._resume_from())
            elif e.state is TriggerState.END:
                c.t_from, c.extent = None, ()
                if e.accepted:
                    self.stats.triggers += 1
                    c.ends.append(self._with_spans(e))
                    c.closing = self._windows()
                c.frames = [f for f in c.frames if c.inside(f.t)]  # a rejected END drops its frames
        self._close_due(on_window)

    def _with_spans(self, e: TriggerEvent) -> TriggerEvent:
        """``e`` with capture spans: its own, else (a producer that does not fill them) its span
        cut at ``max_capture_s`` from its start."""
        if e.spans:
            return e
        end = e.t_end if self.max_capture_s is None else min(e.t_end, e.t_start + self.max_capture_s)
        return dataclasses.replace(e, spans=((e.t_start, end),))

    def _padded(self, e: TriggerEvent) -> tuple[tuple[float, float], ...]:
        """The open trigger's capture extent with the rolls (without spans: ``max_capture_s``
        from its start)."""
        if e.spans:
            spans = e.spans
        else:
            cap_s = self.max_capture_s if self.max_capture_s is not None else float("inf")
            spans = ((e.t_start, e.t_start + cap_s),)
        return tuple((a - self.pre_roll_s, b + self.post_roll_s) for a, b in spans)

    def _windows(self) -> list[CaptureWindow]:
        """Windows of the accepted triggers not handed over yet: built from their END's spans
        exactly as a file's are (:func:`pipeline.triggers.capture_windows`: rolls, merge, split
        at ``max_window_s``), less what was already handed over."""
        from pipeline.triggers import capture_windows

        c = self._cap
        c.ends = [e for e in c.ends if max(b for _, b in e.spans) + self.post_roll_s > c.handed_to]
        out = []
        for w in capture_windows(c.ends, stream_id=self.stream_id, pre_roll_s=self.pre_roll_s,
                                 post_roll_s=self.post_roll_s, max_window_s=self.max_window_s):  # fmt: skip
            if w.t_end > c.handed_to + 1e-6:
                out.append(w if w.t_start >= c.handed_to else dataclasses.replace(w, t_start=c.handed_to))
        return out

    def _resume(self, t_from: float | None, *, rewind: bool = False) -> None:
        """Decode from the ring's keyframe at or before ``t_from`` on. If decoding already went
        past ``t_from`` (frames not wanted then, wanted now) and ``rewind``: frames held from
        ``t_from`` on are dropped and decoded again from the ring (at most its few seconds)."""
        if t_from is None:
            return
        c = self._cap
        if self._decoder_on:
            if not rewind or t_from >= self._dec_t:
                return
            self._stop_decoding()
        if rewind:
            self._dec_t = self._stopped_at = float("-inf")
            c.frames = [f for f in c.frames if f.t < t_from]
            c.last_t = c.frames[-1].t if c.frames else float("-inf")
            self._sampler.start(t_from)
        self._start_decoding(max(t_from, c.last_t))

    def _close_due(self, on_window: OnWindow, *, final: bool = False) -> None:
        """Hand over every closing window whose end the video has passed (all of them if final)."""
        c = self._cap
        while c.closing and (final or self._t_last > c.closing[0].t_end):
            w = c.closing.pop(0)
            frames = [f for f in c.frames if w.t_start <= f.t <= w.t_end]
            self.stats.windows += 1
            self.stats.frames_processed += len(frames)
            on_window(w, frames)
            c.handed_to = max(c.handed_to, w.t_end)
            lo = self._needed_from()
            c.frames = [] if lo is None else [f for f in c.frames if f.t > w.t_end and f.t >= lo]
        if self._decoder_on and not self._wanted():
            self._stop_decoding()
        elif not self._decoder_on and self._wanted():
            self._resume(self._resume_from())  # a window or an extent still to be filled

    def _finish(self, on_window: OnWindow) -> None:
        """End of the source: captures already decoded are handed over, not lost."""
        if self._cap.t_from is not None:  # still open: keep what was captured
            label = self._cap.label or "sound"
            a = max(self._cap.t_from, self._cap.handed_to)
            self._cap.closing.append(CaptureWindow(self.stream_id, a, min(self._t_last, self._cap.until), (label,)))
            self._cap.t_from, self._cap.extent = None, ()
        self._close_due(on_window, final=True)
        if self.status not in ("gave up",):
            self.status = "stopped" if self.stop.is_set() else "ended"

    def _warn(self, message: str) -> None:
        logger.warning("%s: %s", self.spec.name, message)
        if message not in self.warnings and len(self.warnings) < 20:
            self.warnings.append(message)

    def report(self) -> dict:
        s = self.stats
        return {
            "duration_s": round(s.t, 3), "frames_decoded": s.frames_decoded,
            "frames_processed": s.frames_processed, "frames_dropped": s.frames_dropped,
            "packets": s.packets, "chunks": s.chunks, "windows": s.windows, "triggers": s.triggers,
            "reconnects": s.reconnects, "status": self.status,
            "gaps": [g.to_json() for g in self.gaps], "warnings": list(self.warnings),
            "ring_peak_mb": round(self.ring.peak_bytes / MB, 2),
        }  # fmt: skip
