"""Object re-identification threshold for the store (issue 7), from DAVIS 2016 masks.

Run::

    python benchmarks/reid_eval.py [--segments 4] [--frames 5] [--out benchmarks/results/reid_eval.json]

Each DAVIS sequence (one annotated object) is cut into ``--segments`` stretches, as if seen in
separate episodes; an episode's object descriptor is the L2-normalised mean of the classical
embedder's descriptors (``models.embedders.classical``) of ``--frames`` frames of the stretch,
under the ground-truth mask, exactly as ``memory.episodes`` builds ``ObjectRecord.descriptor``.
Pairs of stretches of one sequence are the same identity; stretches of different sequences are
different identities. The threshold (cosine) is tuned on the even-indexed sequences (sorted by
name: highest balanced accuracy) and scored on the odd-indexed ones: true-match rate (same
object re-identified) and false-match rate (different objects merged).

DAVIS 2016 is CC BY-NC 4.0: figures are for non-commercial use.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.common import write_json  # noqa: E402

THRESHOLDS = np.round(np.arange(0.50, 0.99, 0.01), 2)


def data_dir() -> Path:
    env = os.environ.get("EIDETIC_SHARED_DATA")
    return (Path(env) if env else REPO.parent / "shared" / "data") / "davis2016"


def sequence_descriptors(seq: str, segments: int, frames: int) -> np.ndarray:
    """``float32[segments, d]``: one episode-style descriptor per stretch of ``seq``."""
    from models.embedders.classical import ClassicalEmbedder

    emb = ClassicalEmbedder()
    root = data_dir()
    names = sorted(p.stem for p in (root / "Annotations" / "480p" / seq).glob("*.png"))
    out = []
    for part in np.array_split(np.arange(len(names)), segments):
        picks = part[np.linspace(0, len(part) - 1, frames).round().astype(int)]
        descs = []
        for i in picks:
            img = np.asarray(
                Image.open(root / "JPEGImages" / "480p" / seq / f"{names[i]}.jpg").convert("RGB")
            )
            mask = (
                np.asarray(Image.open(root / "Annotations" / "480p" / seq / f"{names[i]}.png")) > 0
            )
            if mask.ndim == 3:
                mask = mask.any(axis=2)
            if mask.any():
                descs.append(emb.embed_one(img, mask))
        m = np.mean(descs, axis=0)
        out.append(m / np.linalg.norm(m))
    return np.stack(out).astype(np.float32)


def pairs(descs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Cosines of same-identity and of different-identity pairs of stretches."""
    names = sorted(descs)
    same, diff = [], []
    for a_i, a in enumerate(names):
        sims = descs[a] @ descs[a].T
        same += sims[np.triu_indices(len(sims), 1)].tolist()
        for b in names[a_i + 1 :]:
            diff += (descs[a] @ descs[b].T).ravel().tolist()
    return np.array(same), np.array(diff)


def rates(same: np.ndarray, diff: np.ndarray, thr: float) -> tuple[float, float]:
    return float((same >= thr).mean()), float((diff >= thr).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--segments", type=int, default=4)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "reid_eval.json"))
    args = ap.parse_args(argv)
    seqs = sorted(p.name for p in (data_dir() / "Annotations" / "480p").iterdir() if p.is_dir())
    descs = {s: sequence_descriptors(s, args.segments, args.frames) for s in seqs}
    tune = {s: descs[s] for s in seqs[0::2]}
    test = {s: descs[s] for s in seqs[1::2]}
    same_t, diff_t = pairs(tune)
    best = max(
        THRESHOLDS, key=lambda t: (rates(same_t, diff_t, t)[0] + 1 - rates(same_t, diff_t, t)[1], t)
    )
    same_s, diff_s = pairs(test)
    tmr, fmr = rates(same_s, diff_s, best)
    tmr_t, fmr_t = rates(same_t, diff_t, best)
    load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"threshold {best:.2f} (tuned on {len(tune)} sequences)")
    print(
        f"{'split':<6} {'sequences':>9} {'same pairs':>10} {'diff pairs':>10} {'true-match':>10} {'false-match':>11}"
    )
    print(
        f"{'tune':<6} {len(tune):>9} {same_t.size:>10} {diff_t.size:>10} {tmr_t:>10.3f} {fmr_t:>11.3f}"
    )
    print(
        f"{'test':<6} {len(test):>9} {same_s.size:>10} {diff_s.size:>10} {tmr:>10.3f} {fmr:>11.3f}"
    )
    doc = {
        "command": " ".join(["python benchmarks/reid_eval.py", *(argv or sys.argv[1:])]),
        "threshold": float(best), "segments": args.segments, "frames": args.frames,
        "tune": {"sequences": sorted(tune), "true_match_rate": tmr_t, "false_match_rate": fmr_t},
        "test": {"sequences": sorted(test), "true_match_rate": tmr, "false_match_rate": fmr,
                 "same_pairs": int(same_s.size), "diff_pairs": int(diff_s.size)},
        "uptime": load, "license": "DAVIS 2016: CC BY-NC 4.0 (non-commercial)",
    }  # fmt: skip
    write_json(args.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
