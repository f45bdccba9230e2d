"""Bad and damaged input built from real media: one clear cause each, nothing hangs, damage is read
as far as it goes; and the one clock (A/V offset, missing PTS, timestamp resets, VFR)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.errors import IngestError
from pipeline.ingest import DecodeCounter, iter_audio, iter_video, probe
from pipeline.sources import resolve
from tests.media import (
    cut_moov,
    flip_bytes,
    patch_codecs,
    shows_frame,
    truncate,
    write_frames,
    write_video,
    write_wide_video,
)

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mute(d: Path) -> Path:
    return write_video(d / "mute.mp4", duration_s=2.0, audio=False)


@pytest.fixture
def mp4(tmp_path) -> Path:
    return write_video(tmp_path / "ok.mp4", duration_s=4.0, clicks_at=[1.0, 3.0])


@pytest.mark.parametrize(
    "make, cause",
    [
        (lambda d, v: cut_moov(v, d / "nomoov.mp4"), "header without index"),
        (lambda d, v: patch_codecs(_mute(d), d / "codec.mp4", {b"avc1": b"zzzz"}), "unsupported codec"),
        (lambda d, v: write_wide_video(d / "wide.mkv"), "20000x16, over the 16384 px limit"),
        (lambda d, v: truncate(v, d / "stub.mp4", 0.002), "header without index"),
        (lambda d, v: _write(d / "x.mkv", b"\x1a\x45\xdf\xa3" + bytes(3000)), "not a media file"),
    ],
)  # fmt: skip
def test_bad_files_fail_with_their_cause(tmp_path, mp4, make, cause):
    path = make(tmp_path, mp4)
    with pytest.raises(IngestError) as e:
        probe(str(path))
    assert cause in e.value.cause and e.value.source == str(path) and e.value.exit_code == 3


def test_one_unsupported_stream_is_dropped_with_a_warning(tmp_path, mp4):
    path = patch_codecs(mp4, tmp_path / "v.mp4", {b"avc1": b"zzzz"})
    info = probe(str(path))
    assert info.has_audio and not info.has_video
    assert any("unsupported video codec" in w for w in info.warnings)
    assert list(iter_video(str(path), stream_id="s")) == []


def test_truncated_faststart_mp4_is_read_as_far_as_it_goes(tmp_path):
    full = write_video(tmp_path / "fs.mp4", duration_s=6.0, clicks_at=[1.0], faststart=True)
    cut = truncate(full, tmp_path / "cut.mp4", 0.5)
    info = probe(str(cut))
    assert info.has_video and info.has_audio
    log = DecodeCounter()
    chunks = list(iter_audio(str(cut), stream_id="s", counter=log))
    frames = list(iter_video(str(cut), stream_id="s", fps=None, counter=log))
    assert 0 < len(frames) < 72 and 0 < chunks[-1].t_end < 5.5  # a part, not all, not nothing
    assert any("truncated" in w or "ends early" in w for w in log.warnings)


@pytest.mark.parametrize("suffix", [".mkv", ".ts"])
def test_truncated_stream_containers(tmp_path, suffix):
    full = write_video(tmp_path / f"full{suffix}", duration_s=6.0, clicks_at=[1.0])
    cut = truncate(full, tmp_path / f"cut{suffix}", 0.5)
    probe(str(cut))
    frames = list(iter_video(str(cut), stream_id="s", fps=None))
    assert 10 < len(frames) < 72
    assert [f.t for f in frames] == sorted(f.t for f in frames)


def test_bit_flips_are_skipped_with_a_warning(tmp_path, mp4):
    bad = flip_bytes(mp4, tmp_path / "flip.mp4", n=60)
    probe(str(bad))
    log = DecodeCounter()
    chunks = list(iter_audio(str(bad), stream_id="s", counter=log))
    frames = list(iter_video(str(bad), stream_id="s", fps=None, counter=log))
    assert abs(chunks[-1].t_end - 4.0) < 0.2  # the clock survives the damage
    assert len(frames) >= 40 and log.damaged > 0 and log.warnings


def _silent_server(conns: list) -> tuple[socket.socket, int]:
    """A TCP server that accepts (keeping the sockets in ``conns``) and never sends a byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def accept() -> None:
        while True:
            try:
                conns.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return srv, srv.getsockname()[1]


def test_unreachable_and_stalled_urls_time_out(tmp_path):
    cfg = load_config(environ={}, sources={"open_timeout_s": 1.0, "read_timeout_s": 1.0}).sources
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    with pytest.raises(IngestError, match="unreachable"):
        probe(f"tcp://127.0.0.1:{port}", spec=resolve(f"tcp://127.0.0.1:{port}", cfg))
    conns: list = []
    srv, port = _silent_server(conns)
    for url in (f"tcp://127.0.0.1:{port}", f"http://127.0.0.1:{port}/live.ts"):
        t0 = time.monotonic()
        with pytest.raises(IngestError, match="stalled"):
            probe(url, spec=resolve(url, cfg))
        assert time.monotonic() - t0 < 5
    srv.close()
    for c in conns:
        c.close()


# ---------------------------------------------------------------- one clock


@pytest.mark.parametrize(
    "suffix, audio_delay, video_delay",
    [(".mp4", 0.5, 0.0), (".mkv", 0.7, 0.0), (".ts", 0.5, 0.0), (".mp4", 0.0, 0.6)],
)
def test_audio_events_land_on_the_right_frames(tmp_path, suffix, audio_delay, video_delay):
    """A sound at media time T is captured with the frame shown at T (±1 frame, 12 fps), read
    back from the picture itself, whichever stream starts late and whatever the container."""
    from models.audio.energy import EnergyDetector

    fps, clicks = 12, [2.0, 4.5]
    path = write_video(tmp_path / f"av{suffix}", duration_s=6.0, fps=fps, clicks_at=clicks,
                       audio_delay_s=audio_delay, video_delay_s=video_delay)  # fmt: skip
    detector = EnergyDetector()
    events = []
    for chunk in iter_audio(str(path), stream_id="s"):
        events += detector.feed(chunk.samples, chunk.t_start)
    events += detector.flush()
    onsets = sorted(e.t_start for e in events)
    assert np.allclose(onsets, clicks, atol=0.05), onsets
    for onset in onsets:
        frames = list(
            iter_video(str(path), stream_id="s", windows=[(onset - 0.3, onset + 0.3)], fps=None)
        )
        nearest = min(frames, key=lambda f: abs(f.t - onset))
        assert abs(nearest.t - onset) <= 0.5 / fps
        # the picture itself (frame index = time since the video started x fps), ±1 frame
        assert shows_frame(np.asarray(nearest.image), (onset - video_delay) * fps), (onset, nearest.t)


def test_missing_pts_are_extrapolated(tmp_path):
    path = write_frames(tmp_path / "raw.h264", [i / 12 for i in range(24)], fmt="h264")
    frames = list(iter_video(str(path), stream_id="s", fps=None))
    assert len(frames) == 24
    assert np.allclose(
        np.diff([f.t for f in frames]), 1 / 25
    )  # FFmpeg's guessed rate for raw H.264


def test_variable_frame_rate_keeps_true_times(tmp_path):
    times = [0.0, 0.1, 0.15, 0.5, 0.52, 0.9, 1.5, 1.55, 1.6, 2.0]
    path = write_frames(tmp_path / "vfr.mkv", times)
    frames = list(iter_video(str(path), stream_id="s", fps=None))
    assert np.allclose([f.t for f in frames], times, atol=1e-3)
    assert all(shows_frame(np.asarray(f.image), i, tolerance=0) for i, f in enumerate(frames))


def test_timestamp_reset_is_rebased_monotonic(tmp_path):
    """Two MPEG-TS recordings concatenated: the second restarts its clock at zero."""
    one = write_video(tmp_path / "one.ts", duration_s=2.0, clicks_at=[1.0])
    cat = tmp_path / "cat.ts"
    cat.write_bytes(one.read_bytes() * 2)
    ts = [f.t for f in iter_video(str(cat), stream_id="s", fps=None)]
    assert len(ts) == 48 and all(b > a for a, b in zip(ts, ts[1:]))
    assert 3.8 < ts[-1] < 4.3
    chunks = list(iter_audio(str(cat), stream_id="s"))
    assert 3.8 < chunks[-1].t_end < 4.3


# ---------------------------------------------------------------- the command


def test_cli_reports_each_bad_source_in_one_line(tmp_path, mp4):
    bad = [
        cut_moov(mp4, tmp_path / "nomoov.mp4"),
        patch_codecs(_mute(tmp_path), tmp_path / "codec.mp4", {b"avc1": b"zzzz"}),
        write_wide_video(tmp_path / "wide.mkv"),
        tmp_path / "missing.mp4",
    ]
    (tmp_path / "empty.mp4").write_bytes(b"")
    bad.append(tmp_path / "empty.mp4")
    r = subprocess.run(
        [sys.executable, "-m", "pipeline", "ingest", *map(str, bad), "--store", str(tmp_path / "s"), "--json"],
        capture_output=True, text=True, timeout=120, env={**os.environ},
    )  # fmt: skip
    assert r.returncode == 3 and "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    assert [s["source"] for s in doc["sources"]] == list(map(str, bad))
    assert all(s["error"] for s in doc["sources"])
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("eidetic: error:")]
    assert len(lines) == len(bad) and all(str(p) in ln for p, ln in zip(bad, lines))
