"""Synthetic media for tests: real files encoded with PyAV (moving squares + audio with bursts)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SR = 16000


def tone_with_clicks(
    duration_s: float,
    clicks_at: list[float],
    *,
    sr: int = SR,
    burst_s: float = 0.25,
    noise_db: float = -50.0,
    burst_db: float = -12.0,
    seed: int = 0,
) -> np.ndarray:
    """Quiet noise floor with loud broadband bursts starting at ``clicks_at`` (seconds).

    Returns ``float32[n]`` mono in [-1, 1]; bursts decay exponentially over ``burst_s``.
    """
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * sr))
    y = rng.standard_normal(n).astype(np.float32) * np.float32(10 ** (noise_db / 20))
    m = int(burst_s * sr)
    env = np.exp(-np.linspace(0, 6, m)).astype(np.float32)
    for t in clicks_at:
        i = int(t * sr)
        seg = rng.standard_normal(m).astype(np.float32) * env * np.float32(10 ** (burst_db / 20))
        j = min(n, i + m)
        y[i:j] += seg[: j - i]
    return np.clip(y, -1, 1)


def square_masks(i: int, *, width: int = 160, height: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth of :func:`moving_squares` frame ``i``: (red, green) squares as ``bool[H, W]``."""
    red = np.zeros((height, width), dtype=bool)
    x = 10 + (i * 3) % (width - 50)
    red[30:60, x : x + 30] = True
    green = np.zeros((height, width), dtype=bool)
    y = 20 + (i * 2) % (height - 45)
    green[y : y + 25, width - 50 : width - 25] = True
    return red, green


def moving_squares(n_frames: int, *, width: int = 160, height: int = 120) -> list[np.ndarray]:
    """``n_frames`` RGB frames (``uint8[H, W, 3]``) with two coloured squares moving on grey."""
    frames = []
    for i in range(n_frames):
        img = np.full((height, width, 3), 90, dtype=np.uint8)
        red, green = square_masks(i, width=width, height=height)
        img[red] = (220, 40, 40)
        img[green] = (40, 200, 60)
        frames.append(img)
    return frames


def write_video(
    path: Path,
    *,
    duration_s: float = 3.0,
    fps: int = 12,
    width: int = 160,
    height: int = 120,
    clicks_at: list[float] | None = None,
    audio: bool = True,
    video: bool = True,
    audio_delay_s: float = 0.0,
    gop: int = 12,
    faststart: bool = False,
    video_delay_s: float = 0.0,
) -> Path:
    """Encode an H.264/AAC MP4 (or M4A when ``video`` is False) with bursts at ``clicks_at``.

    ``audio_delay_s`` makes the audio stream start later than the video (A/V offset),
    ``video_delay_s`` the video later than the audio; ``faststart`` puts the MP4 index first.
    The container follows the suffix (``.mp4``, ``.mkv``, ``.ts``, ``.m4a``).
    """
    clicks_at = [] if clicks_at is None else clicks_at
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        vs = as_ = None
        if video:
            vs = out.add_stream("libx264", rate=fps)
            vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
            vs.options = {"g": str(gop), "preset": "ultrafast"}
        if audio:
            as_ = out.add_stream("aac", rate=SR)
            as_.layout = "mono"
        if vs is not None:
            v0 = int(round(video_delay_s * fps))
            n_video = int(round((duration_s - video_delay_s) * fps))
            for i, img in enumerate(moving_squares(n_video, width=width, height=height)):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = v0 + i
                frame.time_base = Fraction(1, fps)
                for pkt in vs.encode(frame):
                    out.mux(pkt)
            for pkt in vs.encode():
                out.mux(pkt)
        if as_ is not None:
            y = tone_with_clicks(duration_s - audio_delay_s, [t - audio_delay_s for t in clicks_at])
            block = 1024
            start = int(round(audio_delay_s * SR))
            for k in range(0, len(y), block):
                chunk = y[k : k + block]
                frame = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
                frame.sample_rate = SR
                frame.pts = start + k
                frame.time_base = Fraction(1, SR)
                for pkt in as_.encode(frame):
                    out.mux(pkt)
            for pkt in as_.encode():
                out.mux(pkt)
    return path


# ---------------------------------------------------------------- damaged and odd media


def mp4_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """Top-level MP4 boxes of ``data``: ``(type, offset, size)``."""
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        if size == 1:
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        boxes.append((data[pos + 4 : pos + 8], pos, size))
        if size < 8:
            break
        pos += size
    return boxes


def cut_moov(src: Path, dst: Path) -> Path:
    """``src`` without its ``moov`` box: media data with no index (an unfinished recording)."""
    data = src.read_bytes()
    keep = [data[o : o + n] for t, o, n in mp4_boxes(data) if t != b"moov"]
    dst.write_bytes(b"".join(keep))
    return dst


def truncate(src: Path, dst: Path, fraction: float) -> Path:
    """The first ``fraction`` of ``src``'s bytes (a copy cut short)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def flip_bytes(src: Path, dst: Path, *, n: int = 40, start: float = 0.1, seed: int = 0) -> Path:
    """``src`` with ``n`` random bytes inverted past ``start`` (fraction) of its media data."""
    data = bytearray(src.read_bytes())
    boxes = {t: (o, size) for t, o, size in mp4_boxes(bytes(data))}
    lo, hi = boxes.get(b"mdat", (0, len(data)))
    lo, hi = lo + 16 + int(start * (hi - 16)), lo + hi - 16
    for k in np.random.default_rng(seed).integers(lo, hi, n):
        data[k] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


def patch_codecs(src: Path, dst: Path, tags: dict[bytes, bytes]) -> Path:
    """``src`` with sample-entry fourccs replaced (e.g. ``avc1`` → ``zzzz``: no decoder)."""
    data = src.read_bytes()
    for old, new in tags.items():
        data = data.replace(old, new)
    dst.write_bytes(data)
    return dst


def write_wide_video(path: Path, *, width: int = 20000, height: int = 16, n: int = 3) -> Path:
    """A real FFV1 video of absurd dimensions (``width`` x ``height``) in Matroska."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("ffv1", rate=5)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
            frame.pts = i
            for pkt in vs.encode(frame.reformat(format="yuv420p")):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
    return path


def write_frames(path: Path, times: list[float], *, fmt: str | None = None, width: int = 160, height: int = 120) -> Path:
    """H.264 video whose frame ``i`` shows square position ``i`` at media time ``times[i]``
    (millisecond time base: variable frame rate). ``fmt="h264"`` writes a raw Annex B stream,
    which carries no timestamps at all."""
    with av.open(str(path), "w", format=fmt) as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"preset": "ultrafast", "g": "30"}
        vs.codec_context.time_base = Fraction(1, 1000)
        for i, (img, t) in enumerate(zip(moving_squares(len(times), width=width, height=height), times)):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = int(round(t * 1000))
            frame.time_base = Fraction(1, 1000)
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
    return path


def square_offset(image: np.ndarray, i: int, *, width: int = 160, height: int = 120) -> float:
    """How far (px, red x + green y centres) ``image`` is from :func:`moving_squares` frame ``i``.

    Below 1 px means ``image`` is frame ``i``: frames 37 apart differ by 1 px in both (2 px in
    all), any other pair by more.
    """
    rgb = image.astype(int)
    red = (rgb[..., 0] > 150) & (rgb[..., 1] < 100) & (rgb[..., 2] < 100)
    green = (rgb[..., 1] > 140) & (rgb[..., 0] < 100) & (rgb[..., 2] < 110)
    want_red, want_green = square_masks(i, width=width, height=height)
    x = np.flatnonzero(red.sum(axis=0) > red.shape[0] // 8).mean()
    y = np.flatnonzero(green.sum(axis=1) > green.shape[1] // 16).mean()
    return float(abs(x - want_red.any(axis=0).nonzero()[0].mean()) + abs(y - want_green.any(axis=1).nonzero()[0].mean()))


def shows_frame(image: np.ndarray, i: float, *, tolerance: int = 1) -> bool:
    """True when ``image`` is :func:`moving_squares` frame ``round(i)`` ± ``tolerance`` frames."""
    k = int(round(i))
    return min(square_offset(image, j) for j in range(max(0, k - tolerance), k + tolerance + 1)) < 1.0
