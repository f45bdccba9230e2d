"""Ingest speed against a plain full decode, in one run, as ratios (issue 4, DESIGN.md §4).

    python -m benchmarks.ingest_speed [--media F] [--repeat 3] [--skip-live]

Measures on the same file, interleaved ``--repeat`` times (median and spread reported):

- ``ffmpeg``: ``ffmpeg -threads 2 -i F -f null -`` (Debian's ffmpeg), wall and CPU time;
- ``pyav_decode``: PyAV decoding every video frame (``thread_type="AUTO"``), nothing else;
- ``ingest_path``: what ingest does before perception, in one process: audio decode + trigger
  policy (default config) + video decoded only inside the capture windows, sampled at
  ``ingest.perception_fps`` (2 fps);
- ``every_frame``: ``iter_video`` with every frame decoded and converted (``--every-frame``);
- ``work_no_ray``: the ingest path plus what ``eidetic ingest`` does with its frames (segmenter +
  tracker per window, episodes, keyframes and clips stored in a temporary store), in one process
  without Ray: what the work itself costs, to set against ``eidetic_ingest``;
- ``eidetic_ingest``: the ``eidetic ingest F`` command end to end (Ray start, actors, perception,
  store), default config, in a fresh process. Its ``tree_cpu_s`` is the CPU time of the whole
  process tree (the driver, Ray's head processes and every worker, sampled from ``/proc`` every
  0.1 s, so a slight underestimate), split by process in ``tree_cpu_by``.

Ratios are ffmpeg's wall time over each one (higher is faster). The CPU is shared: ``uptime`` is
printed before and after, and CPU seconds (user + sys; children included for ffmpeg) are reported
next to wall seconds because they depend less on the other load (for ``eidetic_ingest``,
``cpu_s`` is the driver and the children it reaped; ``tree_cpu_s`` counts every process, and
``ffmpeg_cpu_over_eidetic_ingest_cpu`` compares it with ffmpeg's). ``--skip-live`` leaves out the
live-stream figures (:mod:`benchmarks.live_cost`). Writes ``benchmarks/results/ingest_speed.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import write_json

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "ingest_speed.json"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def timed(fn: Callable[[], dict | None]) -> dict:
    """Run ``fn``; its dict of facts plus wall_s and cpu_s (this process and its children)."""
    c0, t0 = _cpu(), time.perf_counter()
    facts = fn() or {}
    return {**facts, "wall_s": time.perf_counter() - t0, "cpu_s": _cpu() - c0}


def run_ffmpeg(media: Path) -> dict:
    subprocess.run(["ffmpeg", "-v", "error", "-threads", "2", "-i", str(media), "-f", "null", "-"], check=True)
    return {}


def run_pyav(media: Path) -> dict:
    import av

    n = 0
    with av.open(str(media)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in c.decode(stream):
            n += 1
    return {"frames": n}


def _trigger_windows(media: Path, cfg) -> tuple[list, float]:
    """The audio pass: the trigger policy over the file's audio; its capture windows and the end."""
    from pipeline.ingest import iter_audio
    from pipeline.triggers import TriggerPolicy

    policy = TriggerPolicy.from_config("bench", cfg.trigger)
    end = 0.0
    for chunk in iter_audio(str(media), stream_id="bench", chunk_s=cfg.ingest.chunk_s):
        policy.feed(chunk)
        end = chunk.t_end
    policy.flush()
    return policy.windows(end), end


def run_ingest_path(media: Path) -> dict:
    from pipeline.config import load_config
    from pipeline.ingest import DecodeCounter, iter_video

    cfg = load_config(environ={})
    windows, end = _trigger_windows(media, cfg)  # model load: part of the path
    log = DecodeCounter()
    frames = iter_video(
        str(media), stream_id="bench", windows=[(w.t_start, w.t_end) for w in windows],
        fps=cfg.ingest.perception_fps, max_side=cfg.ingest.max_side, counter=log,
        fast=cfg.ingest.fast_decode,
    )  # fmt: skip
    kept = sum(1 for _ in frames)
    captured = sum(w.t_end - w.t_start for w in windows)
    return {"windows": len(windows), "captured_s": round(captured, 1), "capture_fraction": round(captured / end, 3),
            "frames_decoded": log.decoded, "frames_kept": kept, "seeks": log.seeks}  # fmt: skip


def run_work_no_ray(media: Path) -> dict:
    from memory.episodes import EpisodeBuilder
    from memory.store import EpisodeStore
    from models import registry
    from pipeline.clips import clip_for_store
    from pipeline.config import load_config
    from pipeline.ingest import iter_video
    from pipeline.perception import build_segmenter, refinement_kwargs
    from tracker.tracker import Tracker

    cfg = load_config(environ={})
    windows, end = _trigger_windows(media, cfg)
    frames = list(iter_video(
        str(media), stream_id="bench", windows=[(w.t_start, w.t_end) for w in windows],
        fps=cfg.ingest.perception_fps, max_side=cfg.ingest.max_side, fast=cfg.ingest.fast_decode,
    ))  # fmt: skip
    p = cfg.perception
    segmenter, embedder = build_segmenter(p), registry.create(registry.EMBEDDERS, "classical")
    with tempfile.TemporaryDirectory(prefix="eidetic-bench-") as d:
        store = EpisodeStore(Path(d), jpeg_quality=cfg.memory.jpeg_quality, retention=cfg.retention.policy())
        for w in windows:
            tracker = Tracker(segmenter, embedder, stream_id="bench", max_objects=p.max_objects,
                              keyframe_budget=p.keyframe_budget, min_area_frac=p.min_object_area,
                              max_lost=p.max_objects, **refinement_kwargs(p, segmenter))  # fmt: skip
            builder = EpisodeBuilder(str(media), keyframes_per_episode=cfg.memory.keyframes_per_episode, embedder=embedder)
            builder.begin(w.t_start, labels=w.labels)
            for f in (f for f in frames if w.t_start <= f.t <= w.t_end):
                perception = tracker.step(f.image, f.t, frame_idx=f.frame_idx)
                builder.add(perception)
                builder.add_frame(f.image, perception.t, perception.frame_idx)
            episode, images = builder.end(w.t_end)
            if cfg.memory.clips:  # as the MemoryActor does
                clip = clip_for_store(str(media), w.t_start, w.t_end, store.path)
                episode = dataclasses.replace(episode, clip=str(clip)) if clip is not None else episode
            store.add(episode, images)
        store.close()
    return {"windows": len(windows), "frames_processed": len(frames)}


def run_every_frame(media: Path) -> dict:
    from pipeline.ingest import DecodeCounter, iter_video

    log = DecodeCounter()
    kept = sum(1 for _ in iter_video(str(media), stream_id="bench", fps=None, counter=log))
    return {"frames": kept}


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds so far) of a process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _role(pid: int, root: int) -> str | None:
    """What a process of the tree is: driver, a Ray actor/worker kind, or a Ray head process."""
    if pid == root:
        return "driver"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    if cmd.startswith("ray::"):
        return cmd[5:].split(".")[0].split()[0]  # ray::PerceptionActor.step -> PerceptionActor
    program = " ".join(Path(w).name for w in cmd.split()[:3])  # the executable or python script
    if "default_worker" in program:
        return "ray:worker starting"
    for name in ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor", "runtime_env"):
        if name in program:
            return f"ray:{name}"
    return None


def tree_cpu(cmd: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, dict[str, float]]:
    """Run ``cmd``; its result and the CPU seconds of every process it started, by role."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, **kwargs)
        seen: dict[int, tuple[str, float]] = {}  # pid -> (role, cpu)
        tree = {proc.pid}
        while proc.poll() is None:
            stats = {int(p): st for p in os.listdir("/proc") if p.isdigit() and (st := _stat(int(p)))}
            grew = True
            while grew:  # descendants: Ray's head processes, raylet's workers
                new = {p for p, (ppid, _) in stats.items() if ppid in tree and p not in tree}
                tree |= new
                grew = bool(new)
            for pid in tree & stats.keys():
                old = seen.get(pid, ("", 0.0))[0]
                settled = old and old not in ("IDLE", "ray:worker starting", "other")  # else look again
                role = old if settled else _role(pid, proc.pid) or old
                seen[pid] = (role or "other", stats[pid][1])
            time.sleep(0.1)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())
    by: dict[str, float] = {}
    for role, cpu in seen.values():
        by[role] = round(by.get(role, 0.0) + cpu, 2)
    return result, dict(sorted(by.items(), key=lambda kv: -kv[1]))


def run_eidetic(media: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="eidetic-bench-") as store:
        r, by = tree_cpu([sys.executable, "-m", "pipeline", "ingest", str(media), "--store", store, "--json"], cwd=REPO)
    if r.returncode != 0:
        raise RuntimeError(f"eidetic ingest failed ({r.returncode}): {r.stderr[-2000:]}")
    (src,) = json.loads(r.stdout)["sources"]
    facts = {k: src[k] for k in ("frames_decoded", "frames_processed", "triggers", "episodes")}
    return {**facts, "actor_wall_s": src["wall_s"],  # the ingest actor's own time, Ray start-up excluded
            "tree_cpu_s": round(sum(by.values()), 2), "tree_cpu_by": by}  # fmt: skip


def _warm() -> None:
    """Pay one-time process costs (librosa's JIT, model load) outside the timed ingest path."""
    from models.audio.features import warm_up

    warm_up()


def summarize(runs: list[dict]) -> dict:
    wall = [r["wall_s"] for r in runs]
    cpu = [r["cpu_s"] for r in runs]
    facts = {k: v for k, v in runs[-1].items() if k not in ("wall_s", "cpu_s", "tree_cpu_s")}
    if "tree_cpu_s" in runs[-1]:  # the whole process tree's CPU: median and spread like the others
        tree = [r["tree_cpu_s"] for r in runs]
        facts = {"tree_cpu_s": round(statistics.median(tree), 2),
                 "tree_cpu_min_max": [round(min(tree), 2), round(max(tree), 2)], **facts}  # fmt: skip
    return {
        "wall_s": round(statistics.median(wall), 2), "wall_min_max": [round(min(wall), 2), round(max(wall), 2)],
        "cpu_s": round(statistics.median(cpu), 2), "cpu_min_max": [round(min(cpu), 2), round(max(cpu), 2)],
        "runs": len(runs), **facts,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    from benchmarks.bench_media import make_media
    from tests.conftest import shared_data_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--media", type=Path, help="Use this file instead of the generated one.")
    ap.add_argument("--repeat", type=int, default=3, help="Interleaved repetitions (default 3).")
    ap.add_argument("--skip", nargs="*", default=[], help="Stages to leave out (e.g. every_frame).")
    ap.add_argument("--skip-live", action="store_true", help="Leave out the live-stream figures.")
    args = ap.parse_args(argv)
    media, truth = (args.media, {}) if args.media else make_media(shared_data_dir())
    print(f"media: {media}", file=sys.stderr)
    load_before = uptime()
    print(load_before, file=sys.stderr)
    _warm()
    stages = {
        "ffmpeg": run_ffmpeg, "pyav_decode": run_pyav, "ingest_path": run_ingest_path,
        "every_frame": run_every_frame, "work_no_ray": run_work_no_ray, "eidetic_ingest": run_eidetic,
    }  # fmt: skip
    stages = {k: v for k, v in stages.items() if k not in args.skip}
    runs: dict[str, list[dict]] = {k: [] for k in stages}
    for i in range(args.repeat):
        for name, fn in stages.items():
            runs[name].append(timed(lambda fn=fn: fn(media)))
            print(f"run {i + 1}/{args.repeat} {name}: {runs[name][-1]['wall_s']:.1f} s wall", file=sys.stderr)
    result = {name: summarize(r) for name, r in runs.items()}
    ff = result.get("ffmpeg", {}).get("wall_s")
    ratios = {f"ffmpeg_over_{k}": round(ff / v["wall_s"], 2) for k, v in result.items() if ff and k != "ffmpeg"}
    if ff and "tree_cpu_s" in result.get("eidetic_ingest", {}):  # CPU, all processes: less load-bound
        ratios["ffmpeg_cpu_over_eidetic_ingest_cpu"] = round(result["ffmpeg"]["cpu_s"] / result["eidetic_ingest"]["tree_cpu_s"], 2)
    if "every_frame" in result and "pyav_decode" in result:
        ratios["every_frame_over_pyav"] = round(result["every_frame"]["wall_s"] / result["pyav_decode"]["wall_s"], 2)
        ratios["every_frame_over_pyav_cpu"] = round(result["every_frame"]["cpu_s"] / result["pyav_decode"]["cpu_s"], 2)
    doc = {
        "media": str(media), "truth_event_fraction": truth.get("event_fraction"), "cpus": os.cpu_count(),
        "uptime_before": load_before, "uptime_after": uptime(), "stages": result, "ratios": ratios,
    }  # fmt: skip
    if not args.skip_live:
        from benchmarks.live_cost import live_figures

        doc["live"] = live_figures(media)
    write_json(RESULTS, doc)
    _table(doc)


def _table(doc: dict) -> None:
    print(f"{'stage':<16} {'wall s':>8} {'(min-max)':>15} {'cpu s':>8} {'ffmpeg/x':>9}")
    for name, r in doc["stages"].items():
        ratio = doc["ratios"].get(f"ffmpeg_over_{name}", 1.0 if name == "ffmpeg" else None)
        lo, hi = r["wall_min_max"]
        print(f"{name:<16} {r['wall_s']:>8.1f} {f'({lo:.1f}-{hi:.1f})':>15} {r['cpu_s']:>8.1f} "
              f"{'' if ratio is None else f'{ratio:.2f}x':>9}")  # fmt: skip
    for k, v in doc["ratios"].items():
        if k.startswith("every_frame") or "_cpu_over_" in k:
            print(f"{k}: {v}")
    e2e = doc["stages"].get("eidetic_ingest", {})
    if "tree_cpu_by" in e2e:
        print(f"eidetic_ingest CPU of all its processes: {e2e['tree_cpu_s']:.1f} s (last run: {e2e['tree_cpu_by']})")
    for k, v in (doc.get("live") or {}).items():
        print(f"live {k}: {v}")
    print(f"load before: {doc['uptime_before']}\nload after:  {doc['uptime_after']}")


if __name__ == "__main__":
    main()
