"""PyAV ingest on real encoded media: probing errors, one clock, windowed decode, damage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import IngestError
from pipeline.ingest import SAMPLE_RATE, iter_audio, iter_video, merge_spans, probe
from tests.conftest import need
from tests.media import write_video


def _burst_onsets(chunks, *, thresh: float = 0.05) -> list[float]:
    """Media times where the audio envelope first crosses ``thresh`` after a quiet stretch."""
    y = np.concatenate([c.samples for c in chunks])
    loud = np.abs(y) > thresh
    onsets, last = [], -1e9
    for i in np.flatnonzero(loud):
        t = chunks[0].t_start + i / SAMPLE_RATE
        if t - last > 0.3:
            onsets.append(t)
        last = t
    return onsets


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, cause",
    [
        (lambda d: d / "missing.mp4", "no such file"),
        (lambda d: _write(d / "empty.mp4", b""), "empty"),
        (lambda d: _write(d / "notes.txt", b"hello\n" * 50), "not a media file"),
        (lambda d: d, "directory"),
        (lambda d: _write(d / "noise.mp4", np.random.default_rng(0).bytes(50_000)), "media"),
    ],
)
def test_probe_rejects_bad_input_with_cause(tmp_path, make, cause):
    path = make(tmp_path)
    with pytest.raises(IngestError) as e:
        probe(str(path))
    assert cause in str(e.value) and str(path) in str(e.value)
    assert e.value.exit_code == 3


def test_probe_absurd_dimensions(tiny_video):
    with pytest.raises(IngestError, match="over the 100 px limit"):
        probe(str(tiny_video), max_dimension=100)


def test_audio_clock_matches_burst_times(tiny_video):
    info = probe(str(tiny_video))
    assert info.has_audio and info.has_video and info.width == 160
    chunks = list(iter_audio(str(tiny_video), stream_id="s", chunk_s=0.5))
    assert all(c.sample_rate == SAMPLE_RATE and c.samples.dtype == np.float32 for c in chunks)
    assert all(abs(b.t_start - a.t_end) < 1e-6 for a, b in zip(chunks, chunks[1:]))  # contiguous
    onsets = _burst_onsets(chunks)
    assert len(onsets) == 2 and np.allclose(onsets, [0.8, 2.0], atol=0.02)


def test_late_audio_maps_to_the_right_frame(tmp_path):
    """Audio starting 0.5 s after video: a burst at 2.0 s must land on video frame 24 (12 fps)."""
    path = write_video(tmp_path / "late.mp4", duration_s=3.0, fps=12, clicks_at=[2.0], audio_delay_s=0.5)
    chunks = list(iter_audio(str(path), stream_id="s"))
    assert chunks[0].t_start >= 0.4  # audio really starts late
    (onset,) = _burst_onsets(chunks)
    frames = list(iter_video(str(path), stream_id="s", fps=None))
    nearest = min(frames, key=lambda f: abs(f.t - onset))
    assert abs(nearest.frame_idx - 24) <= 1


def test_windowed_decode_samples_inside_windows_only(tiny_video):
    frames = list(iter_video(str(tiny_video), stream_id="s", windows=[(2.0, 2.6), (0.5, 1.0)], fps=4))
    ts = [f.t for f in frames]
    assert ts == sorted(ts)
    assert all(0.5 - 1e-6 <= t <= 1.0 or 2.0 - 1e-6 <= t <= 2.6 for t in ts)
    assert 4 <= len(frames) <= 6
    for f in frames:
        assert not f.image.flags.writeable and f.image.dtype == np.uint8 and f.image.shape == (120, 160, 3)


def test_every_frame_and_downscale(tiny_video):
    frames = list(iter_video(str(tiny_video), stream_id="s", fps=None, max_side=80))
    assert len(frames) == 36
    assert frames[0].image.shape == (60, 80, 3)
    assert [f.frame_idx for f in frames] == list(range(36))


def test_merge_spans():
    assert merge_spans([(5, 6), (0, 1), (0.5, 2), (6, 7)]) == [(0.0, 2.0), (5.0, 7.0)]
    assert merge_spans([(0, 1), (1.2, 2)], gap=0.5) == [(0.0, 2.0)]


def test_truncated_file_is_read_as_far_as_possible(tmp_path, tiny_video):
    data = tiny_video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    try:
        info = probe(str(cut))
    except IngestError as e:  # an mp4 cut before its moov atom has no index: a clear error
        assert "cut.mp4" in str(e)
        return
    frames = list(iter_video(str(cut), stream_id="s", fps=None))
    assert info.has_video and 0 < len(frames) <= 36


@pytest.mark.parametrize("name", ["sintel.mp4", "big_buck_bunny_0_30.webm"])
def test_real_videos(shared_data, name):
    path = need(shared_data / "videos" / name)
    info = probe(str(path))
    assert info.has_audio and info.has_video and info.duration_s > 25
    chunks = list(iter_audio(str(path), stream_id="s"))
    assert abs(chunks[-1].t_end - info.duration_s) < 0.5
    frames = list(iter_video(str(path), stream_id="s", windows=[(10.0, 12.0)], fps=2, max_side=320))
    ts = np.array([f.t for f in frames])
    assert ts.min() >= 10.0 and ts.max() <= 12.0 and len(ts) in (4, 5)
    assert np.allclose(np.diff(ts), 0.5, atol=1 / 24 + 1e-3)
    assert max(frames[0].image.shape) == 320


def test_audio_only_file(tmp_path):
    path = write_video(tmp_path / "a.m4a", duration_s=2.0, clicks_at=[1.0], video=False)
    info = probe(str(path))
    assert info.has_audio and not info.has_video
    assert list(iter_video(str(path), stream_id="s")) == []
    assert _burst_onsets(list(iter_audio(str(path), stream_id="s"))) == pytest.approx([1.0], abs=0.02)
