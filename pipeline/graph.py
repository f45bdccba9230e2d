"""Build the actor graph for a batch of sources, run it, and report per source."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.config import ServiceConfig
from pipeline.errors import IngestError
from pipeline.ingest import MediaInfo, is_url, probe

logger = logging.getLogger(__name__)

MEDIA_SUFFIXES = {
    ".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".ts", ".flv", ".mpg", ".mpeg", ".ogv",
    ".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus",
}
POLL_S = 0.25  # progress polling period

# hook(source, stage, done, total): called while a source is ingested (done/total in seconds)
ProgressHook = Callable[[str, str, float, float], None]


def expand_sources(sources: Sequence[str]) -> list[str]:
    """Directories become the media files inside them (recursively, sorted); others pass as-is."""
    out: list[str] = []
    for s in sources:
        p = Path(s)
        if not is_url(s) and p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in MEDIA_SUFFIXES)
            out.extend(found or [s])
        else:
            out.append(s)
    return out


def source_name(source: str) -> str:
    """The name a source is stored under: an absolute path for files, the URL for streams."""
    return source if is_url(source) else str(Path(source).resolve())


def _error_report(source: str, error: str) -> dict[str, Any]:
    return {
        "source": source, "duration_s": None, "frames_decoded": 0, "frames_processed": 0,
        "triggers": 0, "episodes": 0, "wall_s": 0.0, "error": error, "warnings": [], "gaps": [],
    }


def start_ray(cfg: ServiceConfig) -> bool:
    """Start (or connect to) Ray quietly; returns True if this call started it."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {
        "include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
    }
    if cfg.ray.address:
        ray.init(address=cfg.ray.address, **kwargs)
    else:
        ray.init(num_cpus=cfg.ray.num_cpus, num_gpus=0, **kwargs)
    return True


def probe_all(sources: Sequence[str], cfg: ServiceConfig) -> tuple[list[MediaInfo], list[dict]]:
    """Validate every source before Ray starts: (readable infos, error reports)."""
    infos, errors = [], []
    for s in expand_sources(sources):
        try:
            infos.append(probe(s, max_dimension=cfg.ingest.max_dimension))
        except IngestError as e:
            errors.append(_error_report(s, e.cause))
    return infos, errors


def run_ingest(
    sources: Sequence[str], cfg: ServiceConfig, *, hook: ProgressHook | None = None
) -> dict[str, Any]:
    """Ingest ``sources`` into ``cfg.store.path`` through the Ray actors.

    Returns ``{"sources": [...], "episodes_total": N}`` (the ``eidetic ingest --json`` shape).
    Bad sources are reported with their ``error`` and do not stop the others.
    """
    infos, reports = probe_all(sources, cfg)
    if infos:
        started = start_ray(cfg)
        try:
            reports.extend(_run_graph(infos, cfg, hook))
        finally:
            if started:
                import ray

                ray.shutdown()
    order = {s: i for i, s in enumerate(expand_sources(sources))}
    reports.sort(key=lambda r: order.get(r["source"], len(order)))
    return {"sources": reports, "episodes_total": sum(r["episodes"] for r in reports)}


def _run_graph(infos: list[MediaInfo], cfg: ServiceConfig, hook: ProgressHook | None) -> list[dict]:
    import ray

    from pipeline.actors.ingest_actor import IngestActor
    from pipeline.actors.memory_actor import MemoryActor
    from pipeline.actors.perception_actor import PerceptionActor
    from pipeline.actors.trigger_actor import TriggerActor

    cfg.store.path.mkdir(parents=True, exist_ok=True)
    memory = MemoryActor.remote(str(cfg.store.path.resolve()), cfg.memory, cfg.retention)
    perception = PerceptionActor.remote(cfg.perception, memory, cfg.ray.max_in_flight)
    reports = []
    for i, info in enumerate(infos):
        stream_id = f"{i}:{Path(info.source).name}"
        trigger = TriggerActor.remote(stream_id, cfg.trigger, str(cfg.store.path))
        named = dataclasses.replace(info, source=source_name(info.source))
        actor = IngestActor.remote(named, stream_id, cfg)
        t0 = time.perf_counter()
        try:
            result = _wait(actor, actor.run.remote(trigger, perception, memory), info.source, hook)
            reports.append({"source": info.source, "duration_s": info.duration_s, **result, "error": None})
        except ray.exceptions.RayError as e:
            logger.error("%s: ingest failed: %s", info.source, e)
            report = _error_report(info.source, f"ingest failed: {_cause(e)}")
            report["wall_s"] = round(time.perf_counter() - t0, 3)
            reports.append(report)
        finally:
            ray.kill(actor)
            ray.kill(trigger)
    ray.get(memory.close.remote())
    return reports


def _wait(actor, ref, source: str, hook: ProgressHook | None) -> dict:
    import ray

    while True:
        ready, _ = ray.wait([ref], timeout=POLL_S)
        if ready:
            return ray.get(ref)
        if hook is not None:
            stage, done, total = ray.get(actor.progress.remote())
            hook(source, stage, done, total)


def _cause(e: Exception) -> str:
    """The innermost message of a Ray error, on one line."""
    cause = getattr(e, "cause", None) or e
    return str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
