"""VOS benchmark (DESIGN.md §4): DAVIS 2016 semi-supervised protocol for the tracker presets.

Run::

    python benchmarks/vos_eval.py [--presets quality,fast] [--sequences a,b] [--max-frames N]
        [--sam-frames 3] [--no-sam] [--tiny] [--out benchmarks/results/vos_eval.json]

For each preset and each sequence of ``../shared/data/davis2016`` (``$EIDETIC_SHARED_DATA``): the
first frame's ground-truth mask starts :class:`tracker.vos.VOSTracker`, every later frame is
segmented, and each prediction is scored against the truth with the standard DAVIS measures
(:mod:`tracker.metrics`): **J** (region IoU) and **F** (boundary F-measure, tolerance 0.008 of the
diagonal), averaged over the frames of a sequence **without its first and last frame** (as the
official DAVIS evaluation does); **J&F** = (J + F) / 2; the dataset means are means over sequences.

- **split**: the parameters of the presets were tuned on ``TUNE`` (every third sequence in
  alphabetical order) only; ``held_out`` means are over the other twelve, never tuned on.
- **fps**: frames / wall seconds of ``start`` + ``step`` only (frames are decoded beforehand;
  scoring is not timed), with OpenCV's default threads. The 1-minute load average is recorded
  next to it (the machine may be shared).
- **keyframes**: the most keyframes any object held at the end of a sequence (budget 10).
- **peak RSS**: each preset runs in its own fresh process; its ``ru_maxrss``.
- **SAM-HQ refinement** (unless ``--no-sam``): vit_tiny with *random* weights, saved to a
  temporary checkpoint and loaded through :class:`models.segmenters.sam_hq.SamHQSegmenter`, runs
  the gated refinement on ``--sam-frames`` frames of one sequence: it proves the path works end to
  end and measures its cost per frame (its J is meaningless with random weights).

Prints a table (stdout), writes JSON. DAVIS is CC BY-NC 4.0: results are for non-commercial use.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.common import git_state, write_json  # noqa: E402

logger = logging.getLogger("benchmarks.vos_eval")

SEQUENCES = (
    "bear", "blackswan", "boat", "bus", "car-shadow", "dog", "elephant", "hockey",
    "horsejump-high", "kite-surf", "libby", "mallard-fly", "rollerblade", "scooter-black",
    "soccerball", "surf", "swing", "tennis",
)  # fmt: skip
TUNE = SEQUENCES[::3]  # bear, bus, elephant, kite-surf, rollerblade, surf
HELD_OUT = tuple(s for s in SEQUENCES if s not in TUNE)
TARGETS = {
    "quality": {"jf_mean": 0.70, "fps": 2.0},
    "fast": {"jf_mean": 0.60, "fps": 10.0},
    "keyframes_per_object": 10,
}
TINY_SEQUENCES = ("blackswan", "car-shadow")
TINY_FRAMES = 6


def davis_root() -> Path:
    """``$EIDETIC_SHARED_DATA/davis2016`` or ``../shared/data/davis2016`` beside the checkout."""
    env = os.environ.get("EIDETIC_SHARED_DATA")
    return (Path(env) if env else REPO.parent / "shared" / "data") / "davis2016"


def load_sequence(
    root: Path, seq: str, max_frames: int | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames (``uint8[H, W, 3]`` RGB, read-only) and truth masks (``bool[H, W]``) of ``seq``."""
    names = sorted((root / "JPEGImages/480p" / seq).glob("*.jpg"))[:max_frames]
    if not names:
        raise FileNotFoundError(f"no frames for sequence {seq!r} under {root}")
    frames, masks = [], []
    for p in names:
        img = np.asarray(Image.open(p).convert("RGB"))
        img.setflags(write=False)
        frames.append(img)
        png = Image.open(root / "Annotations/480p" / seq / f"{p.stem}.png")
        masks.append(np.asarray(png.convert("L")) > 127)  # bear/00077 is LA
    return frames, masks


def score_sequence(preds: list[np.ndarray], truth: list[np.ndarray]) -> dict[str, float]:
    """DAVIS J, F and J&F of one sequence, first and last frames excluded (when there are > 2)."""
    from tracker.metrics import f_measure, jaccard

    pairs = list(zip(preds, truth, strict=True))
    pairs = pairs[1:-1] if len(pairs) > 2 else pairs[1:]
    j = float(np.mean([jaccard(p, g) for p, g in pairs]))
    f = float(np.mean([f_measure(p, g) for p, g in pairs]))
    return {"J": j, "F": f, "JF": (j + f) / 2, "scored_frames": len(pairs)}


def run_sequence(preset: str, frames: list[np.ndarray], truth: list[np.ndarray]) -> dict[str, Any]:
    """Track the first truth mask through ``frames`` with ``preset``; its scores and costs."""
    from tracker.vos import VOSTracker

    vos = VOSTracker(preset=preset)
    first = truth[0].astype(np.uint8) * 255
    t0 = time.perf_counter()
    vos.start(frames[0], first)
    preds = [first]
    for img in frames[1:]:
        preds.append(vos.step(img))
    wall = time.perf_counter() - t0
    doc = score_sequence([p == 255 for p in preds], truth)
    doc["zero_motion_J"] = score_sequence([truth[0]] * len(truth), truth)["J"]
    kept = vos.keyframes_per_object()
    doc.update(frames=len(frames), wall_s=wall, fps=len(frames) / wall,
               keyframes=max(kept.values(), default=0), stats=vos.stats() if hasattr(vos, "stats") else {})  # fmt: skip
    return doc


def summarise(per_seq: dict[str, dict[str, Any]], names: Sequence[str]) -> dict[str, Any] | None:
    """Means over the sequences ``names`` that were run (None if none was)."""
    rows = [per_seq[s] for s in names if s in per_seq]
    if not rows:
        return None
    frames = sum(r["frames"] for r in rows)
    wall = sum(r["wall_s"] for r in rows)
    return {
        "sequences": len(rows),
        "J": float(np.mean([r["J"] for r in rows])),
        "F": float(np.mean([r["F"] for r in rows])),
        "JF": float(np.mean([r["JF"] for r in rows])),
        "zero_motion_J": float(np.mean([r["zero_motion_J"] for r in rows])),
        "frames": frames,
        "fps": frames / wall if wall > 0 else None,
        "keyframes_max": max(r["keyframes"] for r in rows),
    }


def load_avg() -> float:
    """The 1-minute load average (``uptime``)."""
    return float(os.getloadavg()[0])


def run_preset(preset: str, sequences: Sequence[str], max_frames: int | None) -> dict[str, Any]:
    """Every sequence with one preset (meant to run in a fresh process, for its peak RSS)."""
    root = davis_root()
    per_seq: dict[str, dict[str, Any]] = {}
    load = [load_avg()]
    for seq in sequences:
        frames, truth = load_sequence(root, seq, max_frames)
        per_seq[seq] = run_sequence(preset, frames, truth)
        load.append(load_avg())
        logger.info("%s %s: J&F %.3f at %.1f fps", preset, seq, per_seq[seq]["JF"],
                    per_seq[seq]["fps"])  # fmt: skip
    return {
        "preset": preset,
        "mean": summarise(per_seq, sequences),
        "tune": summarise(per_seq, TUNE),
        "held_out": summarise(per_seq, HELD_OUT),
        "per_sequence": per_seq,
        "load_avg_1min": {"min": min(load), "max": max(load), "mean": float(np.mean(load))},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_sam_refinement(seq: str, n_frames: int, *, tmp: Path) -> dict[str, Any]:
    """vit_tiny SAM-HQ (random weights) as the gated refiner on ``n_frames`` frames of ``seq``."""
    try:
        from models.segmenters.sam_hq import SamHQSegmenter, save_random_checkpoint, sha256_of
    except ImportError as e:
        return {"available": False, "error": f"{type(e).__name__}: {e}"}
    from tracker.vos import VOSTracker

    ckpt = save_random_checkpoint("vit_tiny", tmp / "vit_tiny_random.pth", seed=0)
    t0 = time.perf_counter()
    sam = SamHQSegmenter(
        model_type="vit_tiny", checkpoint=ckpt, sha256=sha256_of(ckpt), device="cpu"
    )
    sam.load()
    load_s = time.perf_counter() - t0
    frames, truth = load_sequence(davis_root(), seq, n_frames + 1)
    vos = VOSTracker(preset="quality", refiner=sam, refine_every=1)
    vos.start(frames[0], truth[0].astype(np.uint8) * 255)
    preds, per_frame, load = [truth[0]], [], [load_avg()]
    for img in frames[1:]:
        t1 = time.perf_counter()
        preds.append(vos.step(img) == 255)
        per_frame.append(time.perf_counter() - t1)
        load.append(load_avg())
    stats = vos.stats()
    return {
        "available": True, "model_type": "vit_tiny", "weights": "random (seed 0)",
        "sequence": seq, "frames": len(per_frame), "load_s": load_s,
        "s_per_frame": {"median": float(np.median(per_frame)), "min": float(np.min(per_frame)),
                        "max": float(np.max(per_frame))},
        "refinements": stats.get("refinements"), "accepted": stats.get("refined_accepted"),
        "acceptance_rate": stats.get("refine_acceptance"),
        "J_random_weights": float(np.mean([_j(p, g) for p, g in zip(preds[1:], truth[1:],
                                                                      strict=True)])),
        "load_avg_1min": float(np.mean(load)),
    }  # fmt: skip


def _j(p: np.ndarray, g: np.ndarray) -> float:
    from tracker.metrics import jaccard

    return jaccard(p, g)


def _fmt(v: Any, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def format_table(results: dict[str, dict[str, Any]], sam: dict[str, Any] | None) -> str:
    """A plain-text table: per sequence J&F per preset, then the means and costs."""
    presets = list(results)
    lines = ["VOS benchmark: DAVIS 2016 (semi-supervised, first/last frames not scored)", ""]
    head = f"{'sequence':16}{'split':>9}" + "".join(f"{p + ' J&F':>14}{'fps':>7}" for p in presets)
    lines += [head, "-" * len(head)]
    seqs = next(iter(results.values()))["per_sequence"] if results else {}
    for seq in seqs:
        row = f"{seq:16}{'tune' if seq in TUNE else 'held-out':>9}"
        for p in presets:
            r = results[p]["per_sequence"][seq]
            row += f"{_fmt(r['JF']):>14}{_fmt(r['fps'], 1):>7}"
        lines.append(row)
    lines.append("")
    lines.append(f"{'preset':10}{'subset':>10}{'J':>7}{'F':>7}{'J&F':>7}{'zeroJ':>7}{'fps':>7}"
                 f"{'kf max':>8}{'RSS MB':>8}{'load':>7}")  # fmt: skip
    for p, res in results.items():
        for subset in ("mean", "tune", "held_out"):
            s = res[subset]
            if s is None:
                continue
            lines.append(
                f"{p:10}{subset:>10}{_fmt(s['J']):>7}{_fmt(s['F']):>7}{_fmt(s['JF']):>7}"
                f"{_fmt(s['zero_motion_J']):>7}{_fmt(s['fps'], 1):>7}{s['keyframes_max']:>8}"
                f"{res['peak_rss_mb']:>8.0f}{res['load_avg_1min']['mean']:>7.2f}"
            )
    if sam is not None:
        lines.append("")
        if sam.get("available"):
            lines.append(
                f"SAM-HQ vit_tiny (random weights) refinement on {sam['sequence']}: "
                f"{sam['frames']} frames, {_fmt(sam['s_per_frame']['median'], 2)} s/frame median "
                f"(load {sam['load_avg_1min']:.2f}), model load {_fmt(sam['load_s'], 1)} s, "
                f"gate accepted {sam['accepted']}/{sam['refinements']}"
            )
        else:
            lines.append(f"SAM-HQ refinement not run: {sam.get('error')}")
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="quality,fast", help="comma-separated presets")
    p.add_argument("--sequences", default=",".join(SEQUENCES), help="comma-separated sequences")
    p.add_argument("--max-frames", type=int, default=None, help="first N frames of each sequence")
    p.add_argument("--sam-frames", type=int, default=3, help="frames of the SAM-HQ run")
    p.add_argument("--sam-sequence", default="blackswan", help="sequence of the SAM-HQ run")
    p.add_argument("--no-sam", action="store_true", help="skip the SAM-HQ refinement run")
    p.add_argument(
        "--tiny",
        action="store_true",
        help=f"smoke mode: {', '.join(TINY_SEQUENCES)}, {TINY_FRAMES} frames each",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run presets in this process (peak RSS is then the process's)",
    )
    p.add_argument("--out", type=Path, default=REPO / "benchmarks/results/vos_eval.json")
    args = p.parse_args(argv)
    args.presets = [x.strip() for x in args.presets.split(",") if x.strip()]
    args.sequences = [x.strip() for x in args.sequences.split(",") if x.strip()]
    if args.tiny:
        args.sequences, args.max_frames = list(TINY_SEQUENCES), TINY_FRAMES
        args.sam_frames = min(args.sam_frames, 1)
    unknown = [s for s in args.presets if s not in ("quality", "fast")]
    if unknown or not args.presets or not args.sequences:
        p.error(f"--presets must name quality and/or fast (got {unknown}); --sequences non-empty")
    if args.max_frames is not None and args.max_frames < 2:
        p.error("--max-frames must be >= 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """The command; returns the exit code (2: bad arguments or missing data)."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)  # fmt: skip
    root = davis_root()
    missing = [s for s in args.sequences if not (root / "JPEGImages/480p" / s).is_dir()]
    if missing:
        print(f"error: DAVIS sequences not found under {root}: {', '.join(missing)} "
              "(set EIDETIC_SHARED_DATA)", file=sys.stderr)  # fmt: skip
        return 2
    results: dict[str, dict[str, Any]] = {}
    for preset in args.presets:
        if args.in_process:
            results[preset] = run_preset(preset, args.sequences, args.max_frames)
        else:
            with mp.get_context("spawn").Pool(1) as pool:
                results[preset] = pool.apply(run_preset, (preset, args.sequences, args.max_frames))
    sam = None
    if not args.no_sam:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                sam = run_sam_refinement(args.sam_sequence, args.sam_frames, tmp=Path(tmp))
            except Exception as e:  # noqa: BLE001 - report it with the preset results
                logger.exception("SAM-HQ refinement run failed")
                sam = {"available": False, "error": f"{type(e).__name__}: {e}"}
    print(format_table(results, sam))
    doc = {
        "command": " ".join(["python", *(sys.argv if argv is None else ["vos_eval.py", *argv])]),
        "git": git_state(), "cpu_count": os.cpu_count(), "targets": TARGETS,
        "split": {"tune": list(TUNE), "held_out": list(HELD_OUT)},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "presets": results, "sam_hq": sam,
    }  # fmt: skip
    write_json(args.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
