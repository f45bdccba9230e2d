"""Memory compression benchmark (issue 7): store bytes per hour of input, vectors per episode.

Run::

    python benchmarks/memory_footprint.py [MEDIA ...] [--out benchmarks/results/memory_footprint.json]

Ingests the media (default: the bundled demo and the shared videos) with the default config
(``eidetic ingest``: audio triggers, perception inside capture windows, episodes with keyframes,
vectors and clips) into a new store, then reports the store's bytes by part (SQLite with WAL,
FAISS indexes, keyframe JPEGs, clips) per hour of input, and vectors per episode. The default
inputs are "busy": the demo has three trigger sounds in 24 s, the films a sound every few
seconds. Prints ``uptime``; writes JSON.
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


def part_bytes(store: Path) -> dict[str, int]:
    def size(paths) -> int:
        return sum(p.stat().st_size for p in paths if p.is_file())

    return {
        "sqlite": size(store.glob("eidetic.db*")),
        "indexes": size((store / "index").glob("*")),
        "keyframes": size((store / "keyframes").rglob("*")),
        "clips": size((store / "clips").glob("*")),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("media", nargs="*", default=DEFAULT_MEDIA)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "memory_footprint.json"))
    args = ap.parse_args(argv)
    from memory.store import EpisodeStore
    from pipeline.api import Eidetic

    with tempfile.TemporaryDirectory(prefix="footprint_") as tmp:
        store = Path(tmp) / "store"
        report = Eidetic(store).ingest(args.media)
        with EpisodeStore(store) as s:  # a writer: its close leaves the indexes saved
            s.save_indexes()
            stats = s.stats()
            clips = sum(1 for e in s.episodes(limit=10**6) if e.clip)
        (store / ".reserve").unlink(missing_ok=True)  # preallocated slack, not data
        parts = part_bytes(store)
    hours = sum(r["duration_s"] or 0.0 for r in report["sources"]) / HOUR_S
    episodes = stats["episodes"]
    vectors = sum(stats["vectors"].values())
    total = sum(parts.values())
    doc = {
        "command": " ".join(["python benchmarks/memory_footprint.py", *(argv or sys.argv[1:])]),
        "media": args.media, "input_hours": hours, "episodes": episodes, "clips": clips,
        "vectors": stats["vectors"], "vectors_per_episode": vectors / max(1, episodes),
        "bytes": parts, "bytes_total": total, "mb_per_input_hour": total / 1e6 / max(hours, 1e-9),
        "mb_per_input_hour_by_part": {k: v / 1e6 / max(hours, 1e-9) for k, v in parts.items()},
        "errors": [r for r in report["sources"] if r["error"]],
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    }  # fmt: skip
    print(f"input {hours * 60:.1f} min, {episodes} episodes ({clips} with clips), "
          f"{doc['vectors_per_episode']:.2f} vectors/episode")  # fmt: skip
    print(f"{'part':<10} {'bytes':>10} {'MB/hour of input':>17}")
    for k, v in parts.items():
        print(f"{k:<10} {v:>10} {doc['mb_per_input_hour_by_part'][k]:>17.1f}")
    print(f"{'total':<10} {total:>10} {doc['mb_per_input_hour']:>17.1f}")
    print(f"load: {doc['uptime']}")
    write_json(args.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
