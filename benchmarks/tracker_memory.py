"""Tracker memory benchmark: a long synthetic stream fed at full speed must leave memory flat.

Run::

    python benchmarks/tracker_memory.py [--minutes 30] [--fps 2] [--vos-fps 10]
        [--size 160x120] [--out benchmarks/results/tracker_memory.json]

The stream: four coloured squares crossing a textured background, each leaving the frame and
coming back, hiding for a while on its own cycle, and slowly changing colour, so tracks are
dropped and re-acquired, keyframe memories fill and evict, and ids keep growing. ``--minutes``
of stream time are generated and fed as fast as the tracker goes (never sleeping):

- **service tracker** (:class:`tracker.tracker.Tracker`, classical segmenter every 8 frames, one
  capture window that never ends: the worst case) at ``--fps`` frames per stream second (the
  service samples capture windows at ``ingest.perception_fps`` = 2 by default);
- **VOS tracker** (:class:`tracker.vos.VOSTracker`, ``--preset fast``) at ``--vos-fps``.

Each runs in a fresh process. RSS (``VmRSS``) is sampled every stream minute and reported at 1,
10 and 30 minutes, with the keyframes held per object (never above the budget, 10) and the
tracks kept. The pass criterion: RSS at the end within ``FLAT_MB`` of RSS at minute 1.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.common import write_json  # noqa: E402

FLAT_MB = 32.0  # allowed growth of RSS from minute 1 to the end
COLOURS = ((220, 40, 40), (40, 200, 60), (40, 60, 220), (220, 200, 40))
REPORT_MIN = (1, 10, 30)


def rss_mb() -> float:
    """Resident set size of this process in MiB (``/proc/self/status``)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Stream:
    """Deterministic synthetic frames: ``frame(t)`` for a stream time ``t`` in seconds."""

    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        yy, xx = np.mgrid[:height, :width]
        tex = 90 + 20 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
        self.background = np.repeat(tex[..., None], 3, axis=2).astype(np.uint8)
        self.side = max(8, height // 8)

    def frame(self, t: float) -> np.ndarray:
        img = self.background.copy()
        s = self.side
        for k, colour in enumerate(COLOURS):
            if (t // (40 + 17 * k)) % 4 == 3:  # hidden for a quarter of its own cycle
                continue
            x = int((20 + 70 * k + (12 + 3 * k) * t) % (self.w + 2 * s)) - s  # leaves and returns
            y = int(0.1 * self.h + k * 0.22 * self.h)
            drift = int(30 * np.sin(t / (90 + 20 * k)))  # slow colour change
            c = np.clip(np.array(colour) + drift, 0, 255).astype(np.uint8)
            img[y : y + s, max(0, x) : max(0, x + s)] = c
        return img


def _objects_state(tracker: Any) -> dict[str, Any]:
    if hasattr(tracker, "keyframes_per_object"):  # VOSTracker
        per = tracker.keyframes_per_object()
        return {"objects": len(per), "keyframes_max": max(per.values(), default=0)}
    tracks = [*tracker._tracks, *tracker._lost]
    return {
        "objects": len(tracks),
        "keyframes_max": max((len(t.memory) for t in tracks), default=0),
    }


def run(kind: str, minutes: float, fps: float, size: tuple[int, int]) -> dict[str, Any]:
    """Feed ``minutes`` of stream to one tracker at full speed; RSS per stream minute."""
    from models.embedders.classical import ClassicalEmbedder
    from models.segmenters.classical import ClassicalSegmenter
    from tracker.tracker import Tracker
    from tracker.vos import VOSTracker

    stream = Stream(*size)
    n = int(minutes * 60 * fps)
    if kind == "tracker":
        tr = Tracker(ClassicalSegmenter(), ClassicalEmbedder(), stream_id="bench")
        step = lambda img, i: tr.step(img, i / fps, frame_idx=i)  # noqa: E731
    else:
        tr = VOSTracker(preset="fast")
        f0 = stream.frame(0.0)
        labels = np.zeros(f0.shape[:2], dtype=np.uint8)
        for k, c in enumerate(COLOURS):
            labels[np.all(f0 == np.array(c, dtype=np.uint8), axis=2)] = k + 1
        tr.start(f0, labels)
        step = lambda img, i: tr.step(img)  # noqa: E731
    samples, kf_max, t0 = [], 0, time.perf_counter()
    per_min = int(60 * fps)
    for i in range(1 if kind == "vos" else 0, n):
        step(stream.frame(i / fps), i)
        if (i + 1) % per_min == 0:
            st = _objects_state(tr)
            kf_max = max(kf_max, st["keyframes_max"])
            samples.append({"minute": (i + 1) // per_min, "rss_mb": rss_mb(), **st})
    wall = time.perf_counter() - t0
    at = {m: next((s["rss_mb"] for s in samples if s["minute"] == m), None) for m in REPORT_MIN}
    growth = samples[-1]["rss_mb"] - samples[0]["rss_mb"] if samples else None
    return {
        "kind": kind, "frames": n, "stream_fps": fps, "size": list(size), "wall_s": wall,
        "fps": n / wall, "rss_mb_at_minute": at, "rss_growth_mb": growth,
        "flat": growth is not None and growth <= FLAT_MB, "keyframes_max": kf_max,
        "stats": tr.stats(), "samples": samples, "load_avg_1min": os.getloadavg()[0],
    }  # fmt: skip


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="stream length (default 30)")
    p.add_argument("--fps", type=float, default=2.0, help="service tracker frames per second")
    p.add_argument("--vos-fps", type=float, default=10.0, help="VOS tracker frames per second")
    p.add_argument("--size", default="160x120", help="frame WIDTHxHEIGHT")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/tracker_memory.json")
    args = p.parse_args(argv)
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        p.error(f"--size must be WIDTHxHEIGHT, got {args.size!r}")
    if args.minutes < 1 or args.fps <= 0 or args.vos_fps <= 0 or w < 32 or h < 32:
        p.error("--minutes must be >= 1, fps positive, frames at least 32x32")
    args.size = (w, h)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    results = []
    for kind, fps in (("tracker", args.fps), ("vos", args.vos_fps)):
        with mp.get_context("spawn").Pool(1) as pool:
            results.append(pool.apply(run, (kind, args.minutes, fps, args.size)))
    print(f"Tracker memory: {args.minutes:g} min synthetic stream, {args.size[0]}x{args.size[1]}")
    print(f"{'tracker':9}{'fps in':>7}{'frames':>8}{'fed fps':>8}"
          + "".join(f"{'RSS@' + str(m) + 'm':>10}" for m in REPORT_MIN)
          + f"{'growth':>8}{'kf max':>7}{'flat':>6}{'load':>6}")  # fmt: skip
    for r in results:
        rss = "".join(
            f"{'-' if v is None else f'{v:.0f}':>10}" for v in r["rss_mb_at_minute"].values()
        )
        print(f"{r['kind']:9}{r['stream_fps']:>7g}{r['frames']:>8}{r['fps']:>8.1f}{rss}"
              f"{r['rss_growth_mb']:>8.1f}{r['keyframes_max']:>7}{str(r['flat']):>6}"
              f"{r['load_avg_1min']:>6.1f}")  # fmt: skip
    doc = {"command": " ".join(["python", *(sys.argv if argv is None else ["tracker_memory.py", *argv])]),
           "flat_mb": FLAT_MB, "results": results}  # fmt: skip
    write_json(args.out, doc)
    return 0 if all(r["flat"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
