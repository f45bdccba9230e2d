"""The ingest benchmark's media: 10 min of 1280x720 30 fps H.264 + AAC with trigger sounds.

The video loops *Big Buck Bunny* (CC BY, ``../shared/data/videos``) scaled to 720p, keyframe every
2 s; the audio is a quiet ESC-50 background bed with trigger-class clips (glass breaking, knocks,
can opening) about twice a minute (:mod:`benchmarks.soundscapes`, held-out split). The file is
made once with Debian's ``ffmpeg`` and cached under ``$XDG_CACHE_HOME/eidetic/benchmarks``
(never in git). ESC-50 is CC BY-NC: the file is for non-commercial evaluation only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

logger = logging.getLogger(__name__)

TRIGGERS = ("glass_breaking", "door_wood_knock", "can_opening")
KEYFRAME_S = 2.0


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = root / "eidetic" / "benchmarks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_media(
    shared: Path,
    *,
    minutes: float = 10.0,
    width: int = 1280,
    height: int = 720,
    fps: int = 30,
    out: Path | None = None,
) -> tuple[Path, dict]:
    """The benchmark file (made once, then read from the cache) and its truth JSON."""
    from benchmarks.soundscapes import build_soundscape

    name = f"ingest_{int(minutes * 60)}s_{height}p{fps}"
    out = out or cache_dir() / f"{name}.mp4"
    truth_path = out.with_suffix(".json")
    if out.is_file() and truth_path.is_file():
        return out, json.loads(truth_path.read_text())
    if shutil.which("ffmpeg") is None:
        raise SystemExit(
            "the benchmark needs Debian's ffmpeg: apt-get install -y ffmpeg (make sysdeps)"
        )
    scape = build_soundscape(
        minutes=minutes, seed=4, trigger_rate=2.0, distractor_rate=0.0, triggers=TRIGGERS,
        snr_db=(10.0, 15.0, 20.0), bg_dbfs=(-48.0, -42.0), min_gap_s=8.0,
    )  # fmt: skip
    wav = out.with_suffix(".wav")
    sf.write(wav, scape.samples, scape.sample_rate, subtype="FLOAT")
    video = shared / "videos" / "big_buck_bunny.mp4"
    tmp = out.with_suffix(".part.mp4")
    gop = str(int(KEYFRAME_S * fps))
    cmd = [
        "ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(video), "-i", str(wav),
        "-map", "0:v", "-map", "1:a", "-t", str(minutes * 60),
        "-vf", f"scale={width}:{height},fps={fps}", "-c:v", "libx264", "-preset", "veryfast",
        "-g", gop, "-keyint_min", gop, "-sc_threshold", "0", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "96k", "-ar", "16000", "-ac", "1", "-movflags", "+faststart", str(tmp),
    ]  # fmt: skip
    logger.warning("making the benchmark file %s (once; a few minutes)", out)
    subprocess.run(cmd, check=True)
    tmp.rename(out)
    wav.unlink()
    events = [
        {"t_start": e.t_start, "t_end": e.t_end, "label": e.label, "snr_db": e.snr_db}
        for e in scape.events
    ]
    active = float(np.sum([e["t_end"] - e["t_start"] for e in events]))
    truth = {
        "duration_s": minutes * 60,
        "events": events,
        "event_fraction": active / (minutes * 60),
    }
    truth_path.write_text(json.dumps(truth, indent=1))
    return out, truth
