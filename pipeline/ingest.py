"""PyAV decoding: probe a source, decode its audio (16 kHz mono), decode video inside windows.

Files are processed audio first (DESIGN.md §2.1): :func:`iter_audio` demuxes and decodes only the
audio; :func:`iter_video` then seeks to each capture window's preceding keyframe and decodes only
there. Every timestamp is media time in seconds from the container's start (``pts * time_base``
minus the container start), so audio and video share one clock.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from pipeline.errors import IngestError
from pipeline.types import AudioChunk, FramePacket

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Hz, mono float32, once, at ingest
OPEN_TIMEOUT_S = 10.0  # network sources: open/read timeout
URL_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://", "tcp://", "udp://")


@dataclass(slots=True)
class DecodeCounter:
    """Mutable tally filled by :func:`iter_video`: frames decoded (sampled or not)."""

    decoded: int = 0


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What :func:`probe` found. duration_s is None when the container does not say."""

    source: str
    duration_s: float | None
    has_video: bool
    has_audio: bool
    width: int = 0
    height: int = 0
    fps: float | None = None
    video_codec: str | None = None
    audio_codec: str | None = None


def is_url(source: str) -> bool:
    """True for a network source (``rtsp://``, ``http(s)://``, ...)."""
    return source.lower().startswith(URL_SCHEMES)


def _open(source: str) -> av.container.InputContainer:
    """Open ``source`` for reading, translating FFmpeg errors into :class:`IngestError`."""
    if not is_url(source):
        path = Path(source)
        if not path.exists():
            raise IngestError(source, "no such file")
        if path.is_dir():
            raise IngestError(source, "is a directory, not a media file")
        if path.stat().st_size == 0:
            raise IngestError(source, "file is empty (0 bytes)")
        if not os.access(path, os.R_OK):
            raise IngestError(source, "permission denied")
    options = {"rw_timeout": str(int(OPEN_TIMEOUT_S * 1e6))} if is_url(source) else {}
    try:
        return av.open(source, "r", options=options, timeout=OPEN_TIMEOUT_S)
    except av.FFmpegError as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise IngestError(source, f"not a media file FFmpeg can read ({reason})") from e


def _origin(container: av.container.InputContainer) -> float:
    """Media time of the container's start, subtracted from every timestamp."""
    start = container.start_time
    return float(start) / av.time_base if start is not None else 0.0


def probe(source: str, *, max_dimension: int = 16384) -> MediaInfo:
    """Open ``source``, check it has a decodable audio or video stream, and describe it.

    Raises :class:`IngestError` (exit code 3) naming the source and the cause for a missing
    file, a file that is not media, a container without audio/video, absurd video dimensions,
    or streams of which not a single frame decodes.
    """
    with _open(source) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise IngestError(source, "not a media file: no audio or video stream")
        if video is not None:
            w, h = video.codec_context.width, video.codec_context.height
            if w > max_dimension or h > max_dimension:
                raise IngestError(source, f"video is {w}x{h}, over the {max_dimension} px limit")
        usable_video = video is not None and _decodes_one(container, video)
        usable_audio = audio is not None and _decodes_one(container, audio)
        if not (usable_video or usable_audio):
            raise IngestError(source, "no frame of its streams could be decoded")
        duration = container.duration / av.time_base if container.duration else None
        rate = video.average_rate if video is not None else None
        return MediaInfo(
            source=source,
            duration_s=duration,
            has_video=usable_video,
            has_audio=usable_audio,
            width=video.codec_context.width if usable_video else 0,
            height=video.codec_context.height if usable_video else 0,
            fps=float(rate) if rate else None,
            video_codec=video.codec_context.name if usable_video else None,
            audio_codec=audio.codec_context.name if usable_audio else None,
        )


def _decodes_one(container: av.container.InputContainer, stream: av.stream.Stream) -> bool:
    """True when at least one frame of ``stream`` decodes (seeks back to the start after)."""
    try:
        for packet in container.demux(stream):
            for _ in packet.decode():
                return True
        return False
    except av.FFmpegError as e:
        logger.warning("%s: %s stream does not decode: %s", container.name, stream.type, e)
        return False
    finally:
        try:
            container.seek(0)
        except av.FFmpegError:
            pass


def iter_audio(
    source: str, *, stream_id: str, chunk_s: float = 0.96, sample_rate: int = SAMPLE_RATE
) -> Iterator[AudioChunk]:
    """Decode only the audio of ``source`` into contiguous mono float32 chunks of ``chunk_s``.

    The chunk clock follows the stream's PTS: a gap in the audio longer than 50 ms is filled with
    silence (logged) so that ``t_start`` stays on the media clock. Damaged packets are skipped with
    a warning; decoding stops at the first unrecoverable error, keeping what was read.
    """
    block = max(1, int(round(chunk_s * sample_rate)))
    with _open(source) as container:
        if not container.streams.audio:
            return
        stream = container.streams.audio[0]
        stream.thread_type = "AUTO"
        origin = _origin(container)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        pending: list[np.ndarray] = []
        n_pending = 0
        t0: float | None = None  # media time of pending[0]'s first sample
        emitted = 0  # samples emitted since t0
        for frame in _decode_tolerant(container, stream, source):
            if frame.pts is not None and frame.time_base is not None:
                t_frame = float(frame.pts * frame.time_base) - origin
                if t0 is None:
                    t0 = max(0.0, t_frame)
                expected = t0 + (emitted + n_pending) / sample_rate
                gap = int(round((t_frame - expected) * sample_rate))
                if gap > 0.05 * sample_rate:
                    logger.warning("%s: %.2f s audio gap at %.2f s, filled with silence", source, gap / sample_rate, expected)
                    pending.append(np.zeros(gap, dtype=np.float32))
                    n_pending += gap
            elif t0 is None:
                t0 = 0.0
            for out in resampler.resample(frame):
                samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                pending.append(samples)
                n_pending += samples.size
            while n_pending >= block:
                buf = np.concatenate(pending)
                yield _chunk(stream_id, t0 or 0.0, emitted, sample_rate, buf[:block])
                emitted += block
                pending, n_pending = [buf[block:]], buf.size - block
        for out in resampler.resample(None):
            pending.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
        if pending:
            buf = np.concatenate(pending)
            for k in range(0, buf.size, block):
                yield _chunk(stream_id, t0 or 0.0, emitted + k, sample_rate, buf[k : k + block])


def _chunk(stream_id: str, t0: float, offset: int, sr: int, samples: np.ndarray) -> AudioChunk:
    samples = np.clip(samples, -1.0, 1.0)
    samples.setflags(write=False)
    return AudioChunk(stream_id=stream_id, t_start=t0 + offset / sr, sample_rate=sr, samples=samples)


def _decode_tolerant(container, stream, source: str) -> Iterator[av.frame.Frame]:
    """Decode ``stream``, skipping packets that fail; stop after 50 consecutive failures."""
    failures = 0
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError as e:
                failures += 1
                logger.warning("%s: skipped a damaged %s packet: %s", source, stream.type, e)
                if failures >= 50:
                    logger.warning("%s: too many damaged packets, stopping here", source)
                    return
                continue
            failures = 0
            yield from frames
    except av.FFmpegError as e:
        logger.warning("%s: %s demux stopped early: %s", source, stream.type, e)


def _target_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) scaled so the longer side is at most ``max_side``, both even."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def iter_video(
    source: str,
    *,
    stream_id: str,
    windows: Sequence[tuple[float, float]] | None = None,
    fps: float | None = 2.0,
    max_side: int = 640,
    counter: DecodeCounter | None = None,
) -> Iterator[FramePacket]:
    """Decode video frames of ``source`` inside ``windows`` (media seconds), sampled at ``fps``.

    windows None decodes the whole stream; fps None keeps every decoded frame. For each window
    the demuxer seeks to the keyframe at or before its start (GOP-aware), frames before the start
    are decoded but dropped, and decoding stops past the end. Windows are merged first.
    Yields read-only RGB ``uint8[H, W, 3]`` frames scaled to ``max_side``; ``counter.decoded``
    counts every decoded frame, kept or not.
    """
    counter = counter if counter is not None else DecodeCounter()
    spans = merge_spans(windows) if windows is not None else [(0.0, math.inf)]
    with _open(source) as container:
        if not container.streams.video:
            return
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        origin = _origin(container)
        size = _target_size(stream.codec_context.width, stream.codec_context.height, max_side)
        frame_idx = 0
        for t_start, t_end in spans:
            if t_start > 0:
                _seek(container, stream, t_start + origin)
            next_t = t_start
            for frame in _decode_tolerant(container, stream, source):
                counter.decoded += 1
                t = _frame_time(frame, origin)
                if t is None or t < t_start - 1e-6:
                    continue
                if t > t_end:
                    break
                if fps is not None and t + 1e-6 < next_t:
                    continue
                if fps is not None:
                    next_t = max(next_t + 1.0 / fps, t + 0.5 / fps)
                image = frame.to_ndarray(width=size[0], height=size[1], format="rgb24")
                image.setflags(write=False)
                yield FramePacket(
                    stream_id=stream_id,
                    frame_idx=frame_idx,
                    pts=frame.pts,
                    time_base=float(frame.time_base) if frame.time_base else 0.0,
                    t=t,
                    image=image,
                    is_keyframe=bool(frame.key_frame),
                )
                frame_idx += 1


def _frame_time(frame: av.VideoFrame, origin: float) -> float | None:
    if frame.pts is None or frame.time_base is None:
        return None
    return float(frame.pts * frame.time_base) - origin


def _seek(container, stream, t: float) -> None:
    """Seek to the keyframe at or before media time ``t`` (seconds, container clock)."""
    try:
        container.seek(int(t / stream.time_base), stream=stream, backward=True, any_frame=False)
    except av.FFmpegError as e:
        logger.warning("%s: seek to %.2f s failed (%s); decoding from the start", container.name, t, e)
        container.seek(0)


def merge_spans(spans: Sequence[tuple[float, float]], *, gap: float = 0.0) -> list[tuple[float, float]]:
    """Sort spans and merge those that overlap or are closer than ``gap`` seconds."""
    merged: list[tuple[float, float]] = []
    for a, b in sorted((float(a), float(b)) for a, b in spans if b >= a):
        if merged and a <= merged[-1][1] + gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged
