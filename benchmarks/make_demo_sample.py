"""Rebuild ``pipeline/assets/demo.mp4``: Big Buck Bunny (CC BY) with CC0 ESC-50 sounds mixed in.

Run: ``python benchmarks/make_demo_sample.py [--data ../shared/data]``. Writes the video and
``pipeline/assets/demo.json`` (where each sound's active part lies, in seconds of the sample).
Only clips whose source recordings are CC0 are used (see ``esc50/ESC50_LICENSE.txt``).
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

from benchmarks.common import mux_mono_audio  # noqa: E402

SR = 16000
FPS = 12
SIZE = (320, 180)
VIDEO_START_S = 2.0  # offset into big_buck_bunny.mp4
DURATION_S = 24.0
BED_GAIN_DB = -18.0  # the film's own soundtrack, turned down under the events
# (ESC-50 file stem, label, where its active part should start in the sample, license)
EVENTS = [
    ("4-186518-A-30", "door_wood_knock", 4.0, "CC0"),
    ("4-204777-A-39", "glass_breaking", 11.0, "CC0"),
    ("4-179836-A-34", "can_opening", 18.0, "CC0"),
]


def active_span(y: np.ndarray, *, rel_db: float = -30.0) -> tuple[int, int]:
    """First and last sample of the clip's 10 ms frames within ``rel_db`` of its loudest frame."""
    frames = y[: len(y) // 160 * 160].reshape(-1, 160)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    on = np.flatnonzero(db > db.max() + rel_db)
    return int(on[0] * 160), int((on[-1] + 1) * 160)


def read_bed(video: Path) -> np.ndarray:
    with av.open(str(video)) as c:
        res = av.AudioResampler(format="flt", layout="mono", rate=SR)
        parts = [r.to_ndarray().reshape(-1) for f in c.decode(audio=0) for r in res.resample(f)]
    y = np.concatenate(parts)
    a = int(VIDEO_START_S * SR)
    return y[a : a + int(DURATION_S * SR)] * np.float32(10 ** (BED_GAIN_DB / 20))


def mix(data: Path) -> tuple[np.ndarray, list[dict]]:
    y = read_bed(data / "videos" / "big_buck_bunny.mp4").astype(np.float32)
    truth = []
    for stem, label, at, lic in EVENTS:
        clip, sr = sf.read(data / "esc50" / "audio" / f"{stem}.flac", dtype="float32")
        assert sr == SR, sr
        a, b = active_span(clip)
        start = int(at * SR) - a
        seg = clip[max(0, -start) :]
        y[max(0, start) : max(0, start) + len(seg)] += seg[: len(y) - max(0, start)]
        truth.append({"label": label, "t_start": round(at, 3), "t_end": round(at + (b - a) / SR, 3),
                      "esc50_clip": f"{stem}.wav", "license": lic})
    return np.clip(y, -1, 1), truth


def encode(data: Path, audio: np.ndarray, out: Path) -> None:
    with av.open(str(data / "videos" / "big_buck_bunny.mp4")) as src, av.open(str(out), "w") as dst:
        vs = dst.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        vs.options = {"crf": "30", "g": str(2 * FPS), "preset": "medium"}
        as_ = dst.add_stream("aac", rate=SR)
        as_.layout, as_.bit_rate = "mono", 32000
        n = 0
        for frame in src.decode(video=0):
            t = float(frame.pts * frame.time_base) - VIDEO_START_S
            if t < n / FPS - 1e-6:
                continue
            if n >= DURATION_S * FPS:
                break
            img = frame.to_ndarray(width=SIZE[0], height=SIZE[1], format="rgb24")
            out_frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            out_frame.pts, out_frame.time_base = n, Fraction(1, FPS)
            dst.mux(vs.encode(out_frame))
            n += 1
        dst.mux(vs.encode())
        mux_mono_audio(dst, as_, audio, SR)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=REPO / "pipeline" / "assets" / "demo.mp4")
    args = ap.parse_args()
    audio, truth = mix(args.data)
    encode(args.data, audio, args.out)
    meta = {"file": args.out.name, "duration_s": DURATION_S, "events": truth,
            "video": "Big Buck Bunny (c) 2008 Blender Foundation, www.bigbuckbunny.org, CC BY 3.0"}
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
