"""Live-stream figures for the ingest benchmark: CPU of a quiet 720p30 stream, RSS over an hour.

    python -m benchmarks.live_cost [--media F] [--quiet-s 60] [--hours 1]

- ``quiet_cpu_pct``: Debian's ffmpeg serves a quiet 720p30 H.264 + AAC stream (the benchmark
  file's video with low noise for audio) in real time as MPEG-TS over TCP on loopback; the live
  code path (:class:`pipeline.live.LiveCapture` with the default trigger in this process) reads it
  for ``quiet_s`` seconds. Reported: this process's CPU seconds / wall seconds, in % of one core
  (demux + audio decode + trigger; nothing triggers, so no video is decoded).
- ``rss``: the benchmark file looped to ``hours`` of stream, served *as fast as possible* (no
  ``-re``) through the same path with the default trigger (captures decoded at 2 fps and
  dropped after counting). RSS is sampled at 5 min of media time and at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import threading
import time
from pathlib import Path


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def quiet_media(media: Path, seconds: float) -> Path:
    """The first ``seconds`` of ``media``'s video (copied) with quiet noise as audio."""
    out = media.with_name(f"{media.stem}_quiet{int(seconds)}.mp4")
    if not out.exists():
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-i", str(media), "-f", "lavfi", "-i",
             "anoisesrc=color=pink:amplitude=0.0005:sample_rate=16000", "-map", "0:v", "-map", "1:a",
             "-t", str(seconds), "-c:v", "copy", "-c:a", "aac", "-ac", "1", str(out)],
            check=True,
        )  # fmt: skip
    return out


def _serve(media: Path, port: int, *, realtime: bool, loops: int = 0) -> subprocess.Popen:
    from tests.test_pipeline_live import _serving

    cmd = ["ffmpeg", "-v", "error"] + (["-re"] if realtime else []) + [
        "-stream_loop", str(loops), "-i", str(media), "-c", "copy", "-f", "mpegts",
        f"tcp://127.0.0.1:{port}?listen=1",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not _serving(port):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("ffmpeg did not start listening")
        time.sleep(0.02)
    return proc


def _capture(port: int):
    from pipeline.config import load_config
    from pipeline.live import LiveCapture
    from pipeline.sources import resolve

    cfg = load_config(environ={}, sources={"reconnect": False})
    spec = resolve(f"tcp://127.0.0.1:{port}", cfg.sources)
    ing, trig = cfg.ingest, cfg.trigger
    cap = LiveCapture(spec, stream_id="bench", chunk_s=ing.chunk_s, fps=ing.perception_fps,
                      max_side=ing.max_side, pre_roll_s=trig.pre_roll_s, post_roll_s=trig.post_roll_s,
                      max_window_s=trig.max_window_s, max_capture_s=trig.max_capture_s, ring_max_mb=cfg.sources.ring_max_mb,
                      max_pending_frames=cfg.sources.max_pending_frames, fast=ing.fast_decode)  # fmt: skip
    return cfg, cap


def _policy(cfg):
    from pipeline.triggers import TriggerPolicy

    return TriggerPolicy.from_config("bench", cfg.trigger)


def quiet_cpu(media: Path, seconds: float = 60.0) -> dict:
    from tests.test_pipeline_live import _free_port

    quiet = quiet_media(media, seconds)
    port = _free_port()
    cfg, cap = _capture(port)
    policy = _policy(cfg)  # model loaded before the clock starts
    server = _serve(quiet, port, realtime=True)
    windows = []
    try:
        c0, t0 = _cpu_s(), time.perf_counter()
        report = cap.run(policy.feed, lambda w, f: windows.append(len(f)), flush=policy.flush)
        wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
    finally:
        server.kill()
        server.wait()
    return {"seconds": round(wall, 1), "cpu_s": round(cpu, 2), "cpu_pct_of_one_core": round(100 * cpu / wall, 1),
            "frames_decoded": report["frames_decoded"], "captures": len(windows)}  # fmt: skip


def rss_over_stream(media: Path, hours: float = 1.0) -> dict:
    import av

    from tests.test_pipeline_live import _free_port

    with av.open(str(media)) as c:
        length = c.duration / av.time_base
    loops = max(0, int(round(hours * 3600 / length)) - 1)
    port = _free_port()
    cfg, cap = _capture(port)
    policy = _policy(cfg)
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.5):
            samples.append((cap.stats.t, _rss_mb()))

    server = _serve(media, port, realtime=False, loops=loops)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    frames = [0]
    try:
        t0 = time.perf_counter()
        report = cap.run(policy.feed, lambda w, f: frames.__setitem__(0, frames[0] + len(f)), flush=policy.flush)
        wall = time.perf_counter() - t0
    finally:
        done.set()
        server.kill()
        server.wait()
    at5 = next((r for t, r in samples if t >= 300.0), None)
    end = samples[-1][1] if samples else None
    return {
        "media_s": report["duration_s"], "wall_s": round(wall, 1), "rss_mb_at_5min": at5 and round(at5, 1),
        "rss_mb_end": end and round(end, 1), "rss_mb_max": round(max(r for _, r in samples), 1) if samples else None,
        "end_over_5min": round(end / at5, 3) if at5 and end else None, "captures": report["windows"],
        "frames_decoded": report["frames_decoded"], "frames_kept": frames[0],
        "ring_peak_mb": report["ring_peak_mb"], "frames_dropped": report["frames_dropped"],
    }  # fmt: skip


def live_figures(media: Path, *, quiet_s: float = 60.0, hours: float = 1.0) -> dict:
    if shutil.which("ffmpeg") is None:
        raise SystemExit("the live figures need Debian's ffmpeg (make sysdeps)")
    return {"quiet_720p30": quiet_cpu(media, quiet_s), "rss_hour_full_speed": rss_over_stream(media, hours)}


def main() -> None:
    from benchmarks.bench_media import make_media
    from tests.conftest import shared_data_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--media", type=Path)
    ap.add_argument("--quiet-s", type=float, default=60.0)
    ap.add_argument("--hours", type=float, default=1.0)
    args = ap.parse_args()
    media = args.media or make_media(shared_data_dir())[0]
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(json.dumps(live_figures(media, quiet_s=args.quiet_s, hours=args.hours), indent=1))
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
