"""Small helpers shared by the benchmarks: the code version a result came from, writing results,
muxing generated audio."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def git_state() -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the checkout (tracked files only), or None outside git."""

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip

    try:
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None


def write_json(path: str | Path, doc: dict[str, Any], *, default: Any = None) -> None:
    """Write a benchmark result as indented JSON, creating its folder; say where on stderr (stdout
    is the benchmark's table)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=default) + "\n", encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)


def mux_mono_audio(out: Any, stream: Any, audio: Any, sr: int, *, frame_samples: int = 1024) -> None:
    """Encode a mono float32 signal into ``stream`` of the open PyAV container ``out`` (pts in
    samples), then flush the encoder."""
    import av

    for k in range(0, len(audio), frame_samples):
        frame = av.AudioFrame.from_ndarray(audio[None, k : k + frame_samples], format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = sr, k, Fraction(1, sr)
        out.mux(stream.encode(frame))
    out.mux(stream.encode())
