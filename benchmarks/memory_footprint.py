"""Memory compression benchmark (issue 7): store bytes per hour of input, vectors per episode.

Run::

    python benchmarks/memory_footprint.py [MEDIA ...] [--out benchmarks/results/memory_footprint.json]
    python benchmarks/memory_footprint.py --long        # + the 10-min 720p ingest benchmark file

Ingests the media (default: the bundled demo and the shared videos; ``--long`` adds the 10-min
1280x720 H.264 file of benchmarks/bench_media.py, a trigger sound about twice a minute) with the
default config (``eidetic ingest``: audio triggers, perception inside capture windows, episodes
with keyframes, vectors and clips) into a new store, twice: with the **default** clip budget
(``retention.clip_mb_per_hour``) and with **clips unlimited** (``clip_mb_per_hour: null``).
Reports the store's bytes by part (SQLite with WAL, FAISS indexes, keyframe JPEGs, clips, other: the ingest journal) per
hour of input, episodes, clips kept, and vectors per episode, for each input set and policy.
The inputs are "busy": the demo has three trigger sounds in 24 s, the films a sound every few
seconds, the long file one every ~30 s. Prints ``uptime``; writes JSON.
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
import tempfile  # noqa: E402

from benchmarks.common import write_json  # noqa: E402

DEFAULT_MEDIA = [
    str(REPO / "pipeline" / "assets" / "demo.mp4"),
    *(str(p) for p in sorted((Path(os.environ.get("EIDETIC_SHARED_DATA", REPO.parent / "shared" / "data")) / "videos").glob("*"))),
]  # fmt: skip
HOUR_S = 3600.0
PARTS = ("sqlite", "indexes", "keyframes", "clips", "other")


def part_bytes(store: Path) -> dict[str, int]:
    def size(paths) -> int:
        return sum(p.stat().st_size for p in paths if p.is_file())

    parts = {
        "sqlite": size(store.glob("eidetic.db*")),
        "indexes": size((store / "index").glob("*")),
        "keyframes": size((store / "keyframes").rglob("*")),
        "clips": size((store / "clips").glob("*")),
    }
    everything = size(p for p in store.rglob("*") if p.name not in (".reserve", ".writer.lock"))
    parts["other"] = everything - sum(parts.values())  # the ingest journal
    return parts


POLICIES = {"default": "default", "clips unlimited": None}


def measure(media: list[str], clip_mb_per_hour) -> dict:
    """Ingest ``media`` into a new store; its bytes by part, episodes, clips and vectors."""
    from memory.store import EpisodeStore
    from pipeline.api import Eidetic
    from pipeline.config import load_config

    cfg = load_config()
    if clip_mb_per_hour != "default":
        cfg = cfg.model_copy(update={"retention": cfg.retention.model_copy(
            update={"clip_mb_per_hour": clip_mb_per_hour})})  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="footprint_") as tmp:
        store = Path(tmp) / "store"
        report = Eidetic(store, config=cfg).ingest(media)
        with EpisodeStore(store) as s:  # a writer: its close leaves the indexes saved
            s.save_indexes()
            stats = s.stats()
        (store / ".reserve").unlink(missing_ok=True)  # preallocated slack, not data
        parts = part_bytes(store)
    hours = sum(r["duration_s"] or 0.0 for r in report["sources"]) / HOUR_S
    episodes = stats["episodes"]
    total = sum(parts.values())
    return {
        "clip_mb_per_hour": cfg.retention.clip_mb_per_hour, "input_hours": hours,
        "episodes": episodes, "episodes_per_input_hour": episodes / max(hours, 1e-9),
        "clips": stats["clips"]["episodes"], "clips_dropped": stats["clips"]["dropped"],
        "vectors": stats["vectors"], "vectors_per_episode": sum(stats["vectors"].values()) / max(1, episodes),
        "bytes": parts, "bytes_total": total, "mb_per_input_hour": total / 1e6 / max(hours, 1e-9),
        "mb_per_input_hour_by_part": {k: v / 1e6 / max(hours, 1e-9) for k, v in parts.items()},
        "errors": [r for r in report["sources"] if r["error"]],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("media", nargs="*", default=DEFAULT_MEDIA)
    ap.add_argument("--long", action="store_true", help="also the 10-min 720p benchmark file")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "memory_footprint.json"))
    args = ap.parse_args(argv)
    inputs = {"short": list(args.media)}
    if args.long:
        from benchmarks.bench_media import make_media

        shared = Path(os.environ.get("EIDETIC_SHARED_DATA", REPO.parent / "shared" / "data"))
        inputs["long"] = [str(make_media(shared)[0])]
    runs = []
    for name, media in inputs.items():
        for policy, value in POLICIES.items():
            up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
            run = {"input": name, "media": media, "policy": policy, **measure(media, value), "uptime": up}
            runs.append(run)
            print(f"{name} input ({run['input_hours'] * 60:.1f} min), {policy} "
                  f"(clip_mb_per_hour={run['clip_mb_per_hour']}): {run['episodes']} episodes "
                  f"({run['episodes_per_input_hour']:.0f}/h), {run['clips']} with clips, "
                  f"{run['vectors_per_episode']:.2f} vectors/episode")  # fmt: skip
    print(f"\n{'input':<6} {'policy':<16} " + " ".join(f"{k:>9}" for k in PARTS) + f" {'total':>9}  (MB per hour of input)")
    for r in runs:
        by = r["mb_per_input_hour_by_part"]
        print(f"{r['input']:<6} {r['policy']:<16} " + " ".join(f"{by[k]:>9.1f}" for k in PARTS)
              + f" {r['mb_per_input_hour']:>9.1f}")  # fmt: skip
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"load: {up}")
    doc = {"command": " ".join(["python benchmarks/memory_footprint.py", *(argv or sys.argv[1:])]),
           "target_mb_per_input_hour": 50.0, "runs": runs, "uptime": up}  # fmt: skip
    write_json(args.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
