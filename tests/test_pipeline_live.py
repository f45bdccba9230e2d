"""Live capture against a real stream server on loopback (Debian's ffmpeg serving MPEG-TS over
TCP): compressed ring buffer, captures decoded from the keyframe, one clock, and a server killed
and restarted mid-stream (reconnect with backoff, gap recorded, nothing captured lost)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.errors import IngestError
from pipeline.live import LiveCapture, PacketRing
from pipeline.sources import resolve
from pipeline.triggers import TriggerPolicy
from tests.conftest import IN_CI
from tests.media import shows_frame, write_video

FPS = 12


def _need_ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        msg = "Debian's ffmpeg is missing (make sysdeps)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serving(port: int) -> bool:
    """True when some process listens on 127.0.0.1:``port`` *or already serves a client there*
    (read from /proc, not by connecting: a connection would use up the one-client server). A
    one-client server stops listening the moment a reconnecting client gets in, which can be
    before the first look: listening alone would then never be seen (and the server, once done,
    would look like one that failed to start and be started a second time)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state in ("0A", "01") and int(local.split(":")[1], 16) == port:  # LISTEN, ESTABLISHED
            return True
    return False


def serve(media: Path, port: int) -> subprocess.Popen:
    """``ffmpeg -re`` replaying ``media`` in real time as MPEG-TS to one TCP client."""
    cmd = [_need_ffmpeg(), "-v", "error", "-re", "-i", str(media), "-c", "copy", "-f", "mpegts",
           f"tcp://127.0.0.1:{port}?listen=1"]  # fmt: skip
    # A restart on the same port can find it still held for a moment by the killed server's
    # socket: ffmpeg then exits at once, and is started again (bounded by the deadline).
    deadline = time.monotonic() + 30
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not _serving(port):
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("ffmpeg did not start listening")
        if proc.poll() is not None:
            time.sleep(0.2)
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.02)
    return proc


class Recorder:
    """Collects what a LiveCapture hands over; the trigger is the weight-free energy gate."""

    def __init__(self) -> None:
        cfg = load_config(environ={}, trigger={"detector": "energy"}).trigger
        self.policy = TriggerPolicy.from_config("cam", cfg)
        self.chunks, self.windows = [], []

    def on_audio(self, chunk):
        self.chunks.append(chunk)
        return self.policy.feed(chunk)

    def on_window(self, window, frames):
        self.windows.append((window, frames))


def _capture(url: str, **options) -> LiveCapture:
    cfg = load_config(environ={}, sources={"open_timeout_s": 5, "read_timeout_s": 2, **options}).sources
    return LiveCapture(resolve(url, cfg), stream_id="cam", fps=None, pre_roll_s=0.5, post_roll_s=0.5)


def test_packet_ring_keeps_a_keyframe_before_the_pre_roll():
    class P:  # stands in for av.Packet: size and keyframe flag are all the ring reads
        def __init__(self, key):
            self.size, self.is_keyframe = 1000, key

    ring = PacketRing(keep_s=1.0, max_bytes=10**6)
    for i in range(300):  # 10 s at 30 fps, keyframe every 2 s
        ring.push(i / 30, P(i % 60 == 0))
    ts = [t for t, _ in ring.items]
    assert ts[0] == 8.0 and ring.items[0][1].is_keyframe  # the last keyframe before 10 - 1 s
    assert ring.since(9.5)[0][0] == 8.0 and len(ring.since(9.5)) == len(ts)
    small = PacketRing(keep_s=100.0, max_bytes=50_000)
    for i in range(300):
        small.push(i / 30, P(i % 60 == 0))
    assert small.bytes <= 50_000 and small.evicted_early > 0


def test_live_tcp_stream_captures_on_one_clock(tmp_path):
    # two triggers: the clicks are further apart than the refractory time (3 s)
    media = write_video(tmp_path / "cam.mp4", duration_s=11.0, fps=FPS, clicks_at=[1.0, 6.0], gop=FPS)
    port = _free_port()
    server = serve(media, port)
    rec, cap = Recorder(), _capture(f"tcp://127.0.0.1:{port}", reconnect=False)
    try:
        report = cap.run(rec.on_audio, rec.on_window, flush=rec.policy.flush)
    finally:
        server.kill()
        server.wait()
    assert report["status"] == "ended" and report["gaps"][0]["cause"] == "end of stream"
    assert all(abs(b.t_start - a.t_end) < 1e-6 for a, b in zip(rec.chunks, rec.chunks[1:]))
    assert len(rec.windows) == 2
    for (window, frames), click in zip(rec.windows, [1.0, 6.0]):
        assert window.t_start <= click <= window.t_end
        assert frames and all(window.t_start <= f.t <= window.t_end for f in frames)
        assert all(f.wall_time is not None for f in frames)
        for f in frames:  # the picture shown at t is the frame encoded at t (±1 frame)
            assert shows_frame(np.asarray(f.image), f.t * FPS)
    # video was decoded only around the captures, not all 132 frames
    assert report["frames_decoded"] < 110 and report["ring_peak_mb"] < 1


def test_unreachable_live_source_fails_at_once():
    cap = _capture(f"tcp://127.0.0.1:{_free_port()}")
    with pytest.raises(IngestError, match="unreachable"):
        cap.run(lambda c: [], lambda w, f: None)


@pytest.mark.slow
def test_server_killed_and_restarted_mid_stream(tmp_path):
    first = write_video(tmp_path / "a.mp4", duration_s=8.0, fps=FPS, clicks_at=[2.0], gop=FPS)
    second = write_video(tmp_path / "b.mp4", duration_s=5.0, fps=FPS, clicks_at=[2.0], gop=FPS)
    port = _free_port()
    server = serve(first, port)
    rec = Recorder()
    cap = _capture(f"tcp://127.0.0.1:{port}", backoff_initial_s=0.2, backoff_max_s=0.5, max_reconnects=4)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(cap.run(rec.on_audio, rec.on_window, flush=rec.policy.flush)))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while cap.stats.t < 5.4 and time.monotonic() < deadline:  # past the first click's capture (5.15 s)
            time.sleep(0.05)
        server.send_signal(signal.SIGKILL)
        server.wait()
        time.sleep(1.0)  # the server is down: the client backs off and retries
        server = serve(second, port)
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        cap.stop.set()
        server.kill()
        server.wait()
    gaps = result["gaps"]
    assert result["reconnects"] >= 1 and len(gaps) >= 2
    lost = gaps[0]
    assert lost["wall_end"] is not None and lost["duration_s"] >= 0.9 and 5.2 < lost["t"] < 7.5
    assert len(rec.windows) == 2  # the click before the kill and the one after the restart
    (w1, f1), (w2, f2) = rec.windows
    assert w1.t_start <= 2.0 <= w1.t_end and len(f1) >= (w1.t_end - w1.t_start) * FPS - 2
    click2 = lost["t"] + lost["duration_s"] + 2.0  # one clock: media time runs on through the gap
    assert w2.t_start <= click2 + 0.5 and w2.t_end >= click2 - 0.3 and f2
    ts = [f.t for f in f1 + f2]
    assert ts == sorted(ts)
    starts = [c.t_start for c in rec.chunks]
    assert starts == sorted(starts)


def test_live_windows_match_the_file_windows_of_a_trigger_longer_than_max_capture(tmp_path):
    """Clicks 2.5 s apart (closer than the refractory time, 3 s) make one trigger 7.5 s long,
    longer than max_capture_s (3 s): its capture spans (first sound, then runs of later ones)
    come on its END, and the live windows are the ones ``eidetic events`` computes for the same
    file (the old live path captured its first 3 s only)."""
    from pipeline.api import Eidetic

    clicks, duration = [1.0, 3.5, 6.0, 8.5], 10.5
    media = write_video(tmp_path / "cam.mp4", duration_s=duration, fps=FPS, clicks_at=clicks, gop=FPS)
    cfg = load_config(environ={}, trigger={"detector": "energy"},
                      sources={"open_timeout_s": 5, "read_timeout_s": 2, "reconnect": False})  # fmt: skip
    doc = Eidetic(tmp_path / "store", config=cfg).events(str(media))
    want = [(w["t_start"], w["t_end"]) for w in doc["capture_windows"]]
    trig = cfg.trigger
    assert trig.refractory_s > 2.0 and clicks[-1] - clicks[0] > trig.max_capture_s
    assert len(want) >= 3 and want[-1][0] > clicks[0] + trig.max_capture_s  # spread past the cap

    port = _free_port()
    server = serve(media, port)
    policy = TriggerPolicy.from_config("cam", trig)
    got, msgs = [], []

    def feed(chunk):
        out = policy.feed(chunk)
        msgs.extend(out)
        return out

    def flush():
        out = policy.flush()
        msgs.extend(out)
        return out

    cap = LiveCapture(resolve(f"tcp://127.0.0.1:{port}", cfg.sources), stream_id="cam", fps=None,
                      pre_roll_s=trig.pre_roll_s, post_roll_s=trig.post_roll_s,
                      max_window_s=trig.max_window_s, max_capture_s=trig.max_capture_s)  # fmt: skip
    try:
        report = cap.run(feed, lambda w, f: got.append((w, f)), flush=flush)
    finally:
        server.kill()
        server.wait()
    ends = [m for m in msgs if m.state.value == "end"]
    assert len(ends) == 1 and ends[0].accepted and len(ends[0].spans) >= 3  # one trigger, its spans
    live = [(w.t_start, w.t_end) for w, _ in got]
    assert len(live) == len(want)
    # ±1 frame: the MPEG-TS copy the server sends loses the MP4's AAC priming edit (1024
    # samples, 64 ms), so its audio, and every sound heard live, is that much later
    for (a, b), (c, d) in zip(live, want):
        assert abs(a - c) <= 1 / FPS and abs(b - d) <= 1 / FPS, (live, want)
        assert abs((b - a) - (d - c)) <= 0.01  # same lengths: the same spans, rolls and caps
    for w, frames in got:  # every frame of each window is delivered (12 fps, ±1 at the edges)
        assert all(w.t_start <= f.t <= w.t_end for f in frames)
        assert len(frames) >= (w.t_end - w.t_start) * FPS - 2
        for f in frames:
            assert shows_frame(np.asarray(f.image), f.t * FPS)
    ts = [f.t for _, fs in got for f in fs]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert report["frames_decoded"] < (duration - 1) * FPS  # gaps between spans not all decoded
