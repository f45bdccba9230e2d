"""Episode clips by stream copy (PyAV): cut from a file, written from packets, owned by the store."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from memory.store import EpisodeStore
from memory.types import Episode
from pipeline.clips import clip_for_store, cut_clip, write_clip
from pipeline.errors import IngestError
from tests.media import moving_squares, write_video


def packet_hashes(path: Path, kind: str) -> list[str]:
    with av.open(str(path)) as c:
        s = getattr(c.streams, kind)[0]
        return [hashlib.sha1(bytes(p)).hexdigest() for p in c.demux(s) if p.size]


def frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """6 s, 12 fps, a keyframe every 1 s (gop 12), AAC audio."""
    return write_video(tmp_path / "src.mp4", duration_s=6.0, gop=12, clicks_at=[2.5])


def test_cut_clip_copies_packets_from_the_keyframe_before(video: Path, tmp_path: Path) -> None:
    info = cut_clip(video, 2.4, 3.5, tmp_path / "clip.mp4")
    assert info is not None and info.path.suffix == ".mp4"
    assert info.t_start == pytest.approx(2.0, abs=1e-6)  # the keyframe at or before 2.4 s
    assert info.t_end >= 3.5 and info.video_packets >= 18 and info.audio_packets > 0
    # stream copy: every clip packet is byte-identical to a source packet (no re-encode)
    assert set(packet_hashes(info.path, "video")) <= set(packet_hashes(video, "video"))
    assert set(packet_hashes(info.path, "audio")) <= set(packet_hashes(video, "audio"))
    src, clip = frames(video), frames(info.path)
    np.testing.assert_array_equal(clip[0], src[24])  # decodes from its first frame: frame 2.0 s
    with av.open(str(info.path)) as c:  # timestamps start at 0, audio and video in step
        v, a = c.streams.video[0], c.streams.audio[0]
        first_v = next(p for p in c.demux(v) if p.pts is not None)
        assert float(first_v.pts * v.time_base) == pytest.approx(0.0, abs=0.1)
        assert a.codec_context.name == "aac" and v.codec_context.name == "h264"
    assert info.bytes < video.stat().st_size / 2


def test_cut_clip_edges_and_errors(video: Path, tmp_path: Path) -> None:
    assert cut_clip(video, 50.0, 60.0, tmp_path / "late.mp4") is None  # past the end
    assert not (tmp_path / "late.mp4").exists()
    whole = cut_clip(video, 0.0, 100.0, tmp_path / "all.mp4")
    assert whole.video_packets == 72
    with pytest.raises(ValueError, match="ends before"):
        cut_clip(video, 3.0, 2.0, tmp_path / "x.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not media" * 100)
    with pytest.raises(IngestError, match="bad.mp4"):
        cut_clip(bad, 0.0, 1.0, tmp_path / "y.mp4")
    assert clip_for_store(str(bad), 0.0, 1.0, tmp_path / "store") is None  # warns, no clip
    assert clip_for_store("rtsp://cam/stream", 0.0, 1.0, tmp_path / "store") is None


def test_write_clip_from_a_ring_buffer_of_packets(video: Path, tmp_path: Path) -> None:
    with av.open(str(video)) as inp:
        streams = [inp.streams.video[0], inp.streams.audio[0]]
        ring = [p for p in inp.demux(*streams) if p.dts is not None]
        ring = ring[len(ring) // 3 :]  # a live buffer starts anywhere, maybe mid-GOP
        info = write_clip(ring, streams, tmp_path / "live.mp4")
    assert info is not None and info.video_packets > 0 and info.audio_packets > 0
    clip = frames(info.path)
    src = frames(video)
    i0 = int(round(info.t_start * 12))
    assert i0 % 12 == 0  # starts on a keyframe
    np.testing.assert_array_equal(clip[0], src[i0])
    assert len(clip) == len(src) - i0


def test_codecs_mp4_cannot_hold_fall_back(tmp_path: Path) -> None:
    src = tmp_path / "src.avi"  # MPEG-4 video + mu-law audio: MP4 refuses mu-law
    with av.open(str(src), "w") as out:
        vs = out.add_stream("mpeg4", rate=10)
        vs.width, vs.height, vs.pix_fmt = 160, 120, "yuv420p"
        aus = out.add_stream("pcm_mulaw", rate=16000)
        aus.layout = "mono"
        for i, img in enumerate(moving_squares(30)):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 10)
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        for k in range(0, 48000, 1600):
            a = av.AudioFrame.from_ndarray(
                np.zeros((1, 1600), np.int16), format="s16", layout="mono"
            )
            a.sample_rate, a.pts, a.time_base = 16000, k, Fraction(1, 16000)
            for p in aus.encode(a):
                out.mux(p)
    info = cut_clip(src, 1.0, 2.0, tmp_path / "clip.mp4")
    assert info is not None and info.path.suffix == ".mov" and info.audio_packets > 0
    assert not (tmp_path / "clip.mp4").exists()
    assert len(frames(info.path)) >= 10


def test_store_owns_the_clip(video: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    with EpisodeStore(store_dir) as s:
        clip = clip_for_store(str(video), 2.4, 3.5, store_dir)
        assert clip is not None and clip.parent == store_dir / "clips"
        ep = Episode(source=str(video), t_start=2.4, t_end=3.5, labels=("knock",), summary="k",
                     clip=str(clip))  # fmt: skip
        stored = s.add(ep)
        assert stored.clip == f"clips/{stored.episode_id}.mp4" and not clip.exists()
        assert s.get(stored.episode_id).clip == stored.clip
        row = s._conn.execute("SELECT bytes FROM episodes").fetchone()
        assert row[0] == (store_dir / stored.clip).stat().st_size > 0
        assert s.check()["ok"]
        (store_dir / stored.clip).rename(tmp_path / "away.mp4")
        assert any("clip missing" in p for p in s.check()["problems"])
        (tmp_path / "away.mp4").rename(store_dir / stored.clip)
        s.forget(stored.episode_id)
        assert not (store_dir / stored.clip).exists() and s.check()["ok"]
        leftover = store_dir / "clips" / ".incoming-dead.mp4"
        leftover.write_bytes(b"x")  # a killed writer's half-cut clip
    with EpisodeStore(store_dir) as s:
        assert not leftover.exists()
