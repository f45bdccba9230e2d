"""Episode clips: compressed packets remuxed (stream copy, no re-encode) into a small media file.

Two entry points share one remuxer:

- :func:`cut_clip` cuts ``[t0, t1]`` out of a file source: it seeks to the video keyframe at or
  before ``t0`` (a clip can only start on a keyframe without re-encoding) and copies the video
  and audio packets up to ``t1``;
- :func:`write_clip` writes packets a live source kept (a ring buffer of ``av.Packet`` from its
  demuxer) with the input streams they came from.

Timestamps are shifted so the clip starts at 0 with audio and video still in step. The output is
MP4 (``faststart``, plays in browsers) when the codecs fit, else QuickTime, else Matroska.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import av

from pipeline.errors import IngestError

logger = logging.getLogger(__name__)

MP4_OPTIONS = {"movflags": "+faststart"}
OUTPUTS = (("mp4", ".mp4", MP4_OPTIONS), ("mov", ".mov", MP4_OPTIONS), ("matroska", ".mkv", {}))
TAIL_S = 0.5  # packets are read this far past t1 (B-frames decode late)


@dataclass(frozen=True, slots=True)
class ClipInfo:
    """A written clip: its path, span in the source's media time, size and packet counts."""

    path: Path
    t_start: float  # media time of its first packet (the keyframe at or before the asked t0)
    t_end: float
    bytes: int
    video_packets: int
    audio_packets: int


class _Remuxer:
    """Copies packets of the given input streams into ``dst`` (one output stream each)."""

    def __init__(self, dst: Path, streams: Sequence[av.stream.Stream]) -> None:
        self.dst = dst
        self.streams = [s for s in streams if s.type in ("video", "audio")]
        if not self.streams:
            raise IngestError(str(dst), "no video or audio stream to put in a clip")
        self.out, self.path = _open_output(dst, self.streams)
        self.map = {s.index: o for s, o in zip(self.streams, self.out.streams)}
        self.offset_s: float | None = None
        self.counts = {"video": 0, "audio": 0}
        self.t_end = 0.0

    def mux(self, packet: av.Packet) -> None:
        """Copy one packet; the first video keyframe (or first packet without video) sets t=0."""
        stream = packet.stream
        if packet.dts is None or stream.index not in self.map or packet.size == 0:
            return
        tb = stream.time_base
        t = float(packet.dts * tb)
        if self.offset_s is None:
            has_video = any(s.type == "video" for s in self.streams)
            if has_video and (stream.type != "video" or not packet.is_keyframe):
                return  # a clip starts on a video keyframe
            self.offset_s = t
        if t < self.offset_s:
            return
        shift = int(round(self.offset_s / tb))
        packet.dts -= shift
        if packet.pts is not None:
            packet.pts -= shift
        packet.stream = self.map[stream.index]
        self.out.mux(packet)
        self.counts[stream.type] += 1
        self.t_end = max(self.t_end, t + float((packet.duration or 0) * tb))

    def close(self) -> ClipInfo | None:
        self.out.close()
        if self.offset_s is None or not any(self.counts.values()):
            self.path.unlink(missing_ok=True)
            return None
        return ClipInfo(self.path, self.offset_s, self.t_end, self.path.stat().st_size,
                        self.counts["video"], self.counts["audio"])  # fmt: skip


def _open_output(
    dst: Path, streams: Sequence[av.stream.Stream]
) -> tuple[av.container.OutputContainer, Path]:
    """The first of MP4, QuickTime, Matroska that takes every codec (``dst``'s suffix follows)."""
    for fmt, suffix, options in OUTPUTS:
        path = dst.with_suffix(suffix)
        out = av.open(str(path), "w", format=fmt, options=options)
        try:
            for s in streams:
                out.add_stream_from_template(s)
            out.start_encoding()  # writes the header: fails here if a codec does not fit
        except (av.error.FFmpegError, ValueError) as e:
            out.close()
            path.unlink(missing_ok=True)
            logger.debug(
                "cannot remux %s into %s: %s", [s.codec_context.name for s in streams], fmt, e
            )
            continue
        return out, path
    raise IngestError(str(dst), "no container accepts these codecs for a stream copy")


def cut_clip(src: str | Path, t0: float, t1: float, dst: str | Path) -> ClipInfo | None:
    """Copy ``[t0, t1]`` (media seconds) of the file ``src`` into ``dst`` without re-encoding.

    The clip starts at the video keyframe at or before ``t0`` (so it may start earlier) and
    holds the first video and audio streams. Returns None when nothing lies in the range.
    Raises ``IngestError`` when the source cannot be read or remuxed.
    """
    if not t1 >= t0:
        raise ValueError(f"clip ends before it starts: [{t0}, {t1}]")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        with av.open(str(src)) as inp:
            streams = [s for s in (_first(inp, "video"), _first(inp, "audio")) if s is not None]
            remux = _Remuxer(dst, streams)
            anchor = streams[0]
            start = max(0.0, t0)
            if anchor.time_base is not None:
                inp.seek(
                    int(start / anchor.time_base), stream=anchor, backward=True, any_frame=False
                )
            done: set[int] = set()
            inside = 0  # packets that start inside [t0, t1]
            for packet in inp.demux(*streams):
                if packet.dts is None:
                    continue
                t = float(packet.dts * packet.stream.time_base)
                if t > t1 + TAIL_S:
                    done.add(packet.stream.index)
                    if len(done) == len(streams):
                        break
                    continue
                inside += t0 <= t <= t1
                remux.mux(packet)
            info = remux.close()
    except av.error.FFmpegError as e:
        raise IngestError(str(src), f"cannot cut a clip: {e}") from e
    if info is not None and not inside:  # the range lies past the end of the media
        info.path.unlink(missing_ok=True)
        return None
    return info


def write_clip(
    packets: Iterable[av.Packet], streams: Sequence[av.stream.Stream], dst: str | Path
) -> ClipInfo | None:
    """Write ``packets`` (demuxed from ``streams``, in demux order, e.g. a live source's ring
    buffer) into ``dst`` by stream copy. Packets before the first video keyframe are skipped;
    timestamps start at 0. Returns None when no packet could be written."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        remux = _Remuxer(dst, streams)
        for packet in packets:
            remux.mux(packet)
        return remux.close()
    except av.error.FFmpegError as e:
        raise IngestError(str(dst), f"cannot write a clip: {e}") from e


def _first(container: av.container.InputContainer, kind: str) -> av.stream.Stream | None:
    streams = getattr(container.streams, kind)
    return streams[0] if streams else None


def clip_for_store(source: str, t0: float, t1: float, store_path: str | Path) -> Path | None:
    """Cut ``[t0, t1]`` of the file ``source`` into a temp file inside ``<store>/clips`` (same
    file system, so the store adopts it by a rename). None, with a warning, when the source is
    not a local file or the cut fails: an episode is never lost for want of a clip."""
    import uuid

    if "://" in source or not Path(source).is_file():
        return None
    dst = Path(store_path) / "clips" / f".incoming-{uuid.uuid4().hex}.mp4"
    try:
        info = cut_clip(source, t0, t1, dst)
    except (IngestError, OSError, ValueError) as e:
        logger.warning("no clip for %s [%.2f, %.2f]: %s", source, t0, t1, e)
        dst.unlink(missing_ok=True)
        return None
    return None if info is None else info.path
