"""Build the actor graph for a batch of sources, run it, and report per source."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.config import ServiceConfig
from pipeline.errors import ConfigError, IngestError
from pipeline.ingest import MediaInfo, is_url, probe
from pipeline.sources import SourceSpec, device_kind, resolve

logger = logging.getLogger(__name__)

MEDIA_SUFFIXES = {
    ".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".ts", ".flv", ".mpg", ".mpeg", ".ogv",
    ".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus",
}
POLL_S = 0.25  # progress polling period
STOP_GRACE_S = 0.1  # Ray's processes get this long after SIGTERM, then SIGKILL (see stop_ray)
CLOSE_WAIT_S = 5.0  # how long the end of a run waits for the driver's audio scan to finish

# hook(source, stage, done, total): called while a source is ingested (done/total in seconds)
ProgressHook = Callable[[str, str, float, float], None]


def expand_sources(sources: Sequence[str]) -> list[str]:
    """Directories become the media files inside them (recursively, sorted); others pass as-is."""
    out: list[str] = []
    for s in sources:
        p = Path(s)
        if not is_url(s) and not device_kind(s) and p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in MEDIA_SUFFIXES)
            out.extend(found or [s])
        else:
            out.append(s)
    return out


def source_name(source: str) -> str:
    """The name a source is stored under: an absolute path for files, the URL for streams."""
    return source if is_url(source) else str(Path(source).resolve())


def _error_report(source: str, error: str | None) -> dict[str, Any]:
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
    main = threading.current_thread() is threading.main_thread()
    held = (signal.SIGINT, signal.SIGTERM)
    mine = {sig: signal.getsignal(sig) for sig in held}
    if main:  # a stop request during start-up waits for our handlers, not Ray's
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        if cfg.ray.address:
            ray.init(address=cfg.ray.address, **kwargs)
        else:  # no idle task workers started in advance: ingest runs actors (each its own worker),
            # and the two Ray would prestart cost ~1 CPU s at the busiest moment, Ray's start-up
            ray.init(num_cpus=cfg.ray.num_cpus, num_gpus=0, **kwargs,
                     _system_config={"prestart_worker_first_driver": False, "enable_worker_prestart": False})
    finally:
        if main:  # Ray installs its own SIGTERM handler (exit at once): put the caller's back
            for sig, handler in mine.items():
                if handler is not None:
                    signal.signal(sig, handler)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
    return True


def stop_ray() -> None:
    """``ray.shutdown()``, with the Ray processes this driver started stopped all at once.

    Ray stops its head processes one after the other, giving each one second to exit after
    SIGTERM: about 5 s of every ``eidetic ingest`` on a loaded box. Here they all get SIGTERM
    together, then SIGKILL after :data:`STOP_GRACE_S`: measured with Ray 2.60, none of the GCS
    server, raylet, monitor, dashboard or log monitor exits within 5 s of SIGTERM, so a longer
    grace only waits. The store and the journal are closed or committed before this is called,
    so nothing is lost.
    """
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    if node is None or not node.is_head() or not hasattr(node, "all_processes"):
        ray.shutdown()
        return

    def kill_all(*_args, **_kwargs) -> None:
        procs = [i.process for infos in node.all_processes.values() for i in infos]
        procs = [p for p in procs if p.poll() is None]
        agents = _ray_agents({p.pid for p in procs})
        for p in procs:
            p.terminate()
        for pid in agents:  # else they linger a minute or two after their raylet
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)  # they ignore SIGTERM (Ray 2.60)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: killed below
                p.kill()
        for p in procs:
            try:
                p.wait(timeout=5.0)
            except Exception:  # noqa: BLE001 - stuck in the kernel: abandoned, as Ray does
                logger.warning("Ray process %s did not exit", p.pid)
        node.all_processes.clear()

    node.kill_all_processes = kill_all  # called by ray.shutdown() once the driver disconnected
    ray.shutdown()


def _ray_agents(parents: set[int]) -> list[int]:
    """Ids of the Ray agent processes (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) whose
    parent is in ``parents``, from /proc ([] elsewhere). Worker processes are left alone: they
    exit by themselves when their raylet is gone."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid in parents and b"Agent" in (stat.parent / "cmdline").read_bytes().split(b"\0")[0]:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def probe_all(sources: Sequence[str], cfg: ServiceConfig) -> tuple[list[Job], list[dict]]:
    """Validate every source before Ray starts: (jobs, error reports). Files are probed here;
    live sources are only resolved (opening one would use up a one-client server): their
    connection errors come back from their actor. Bad config raises ConfigError (exit 2)."""
    jobs, errors = [], []
    for s in expand_sources(sources):
        spec = resolve(s, cfg.sources)
        if spec.live:
            if spec.audio is not None:
                raise ConfigError(f"{s}: a separate audio source is supported for files only so far "
                                  "(live sources need audio in the same stream)")  # fmt: skip
            jobs.append(Job(s, spec, None))
            continue
        try:
            cap = spec.options.max_dimension or cfg.ingest.max_dimension
            info = probe(spec.target, max_dimension=cap, spec=spec)
            if spec.audio is not None:  # a separate audio file: same clock, both from 0
                sound = probe(spec.audio.target, spec=spec.audio)
                if not sound.has_audio:
                    raise IngestError(spec.audio.target, "has no audio stream to pair")
                info = dataclasses.replace(info, has_audio=True, warnings=info.warnings + sound.warnings)
        except IngestError as e:
            errors.append(_error_report(s, f"{e.source}: {e.cause}" if e.source != spec.target else e.cause))
            continue
        jobs.append(Job(s, spec, info))
    return jobs, errors


@dataclasses.dataclass
class Job:
    """One source to ingest: its name as given, its spec, and (files) what probe found."""

    name: str
    spec: SourceSpec
    info: MediaInfo | None
    actors: tuple = ()
    ref: Any = None
    t0: float = 0.0


def run_ingest(
    sources: Sequence[str], cfg: ServiceConfig, *, hook: ProgressHook | None = None,
    stop: threading.Event | None = None, memory: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """Ingest ``sources`` into ``cfg.store.path`` through the Ray actors.

    Returns ``{"sources": [...], "episodes_total": N}`` (the ``eidetic ingest --json`` shape).
    Bad sources are reported with their ``error`` and do not stop the others. Files run
    ``cfg.ingest.parallel`` at a time (their shards' audio passes in parallel too); live sources
    all at once, until ``stop`` is set (then every source drains: open captures are stored, and
    files stop after their current window; the journal lets the next run resume).

    ``memory``: a running :class:`MemoryActor` (the store's single writer) to write through, in
    the Ray this process is connected to, left open (``eidetic serve``'s live process runs its
    ingest jobs so); without it the run opens the store's writer and closes it at the end.
    """
    jobs, reports = probe_all(sources, cfg)
    stop = stop or threading.Event()
    if jobs:
        prescan = AudioPrescan.start(jobs, cfg, stop)  # audio goes on while Ray starts
        started = False
        try:
            started = start_ray(cfg)
            reports.extend(Runner(jobs, cfg, hook, stop, prescan, memory=memory).run())
        finally:
            if prescan is not None:
                prescan.close()
            if started:
                stop_ray()
    order = {s: i for i, s in enumerate(expand_sources(sources))}
    reports.sort(key=lambda r: order.get(r["source"], len(order)))
    return {"sources": reports, "episodes_total": sum(r["episodes"] for r in reports)}


def stream_id_of(job: Job, index: int) -> str:
    """The stream id of the ``index``-th source started (live sources first, then files)."""
    return f"{index}:{Path(job.name).name or job.name}"


class AudioPrescan:
    """The audio pass of the first file, run in this (driver) process while Ray starts.

    A local Ray takes seconds to start on a small machine, and the audio pass needs no Ray: a
    thread here scans the file's audio shards in order, with the very function the Ray tasks run
    (same shards, same arguments, same results), and each result goes to the file's IngestActor
    (``give_scan``) as soon as that actor exists, so its video pass starts as soon as Ray is up
    while the later shards are still being scanned here. One process also loads the audio model
    once instead of once per task worker. Shards already in the journal are not scanned.
    """

    def __init__(self, job: Job, stream_id: str, cfg: ServiceConfig, stop: threading.Event) -> None:
        from pipeline.actors.ingest_actor import audio_spans, journal_key
        from pipeline.journal import Journal

        self.job, self.stream_id, self.cfg, self.stop = job, stream_id, cfg, stop
        named = source_name(job.spec.target)
        audio = source_name(job.spec.audio.target) if job.spec.audio is not None else None
        self.source = audio or named
        self.spans = audio_spans(job.info, cfg)
        key = journal_key(named, audio)
        journal = Journal(cfg.store.path)
        try:
            done = journal.has(key, "file")
            self.shards = () if done else tuple(
                k for k in range(len(self.spans)) if not journal.has(key, "audio", shard=k)
            )  # fmt: skip
        finally:
            journal.close()
        self.lock = threading.Lock()
        self.pending: dict[int, dict | None] = {}
        self.actor: Any = None
        self.closed = False
        self.thread = threading.Thread(target=self._work, name="audio-prescan", daemon=True)

    @classmethod
    def start(cls, jobs: list[Job], cfg: ServiceConfig, stop: threading.Event) -> AudioPrescan | None:
        """A running prescan of the first file with audio, when this process is about to start
        a local Ray (a running or remote Ray has no start-up to hide); else None."""
        import ray

        if cfg.ray.address or ray.is_initialized():
            return None
        n_live = sum(1 for j in jobs if j.spec.live)
        files = [j for j in jobs if not j.spec.live]
        if not files or files[0].info is None or not files[0].info.has_audio:
            return None
        prescan = cls(files[0], stream_id_of(files[0], n_live), cfg, stop)
        if not prescan.shards:
            return None
        logger.info("%s: audio shards %s scanned in this process while Ray starts",
                    files[0].name, list(prescan.shards))  # fmt: skip
        prescan.thread.start()
        return prescan

    def attach(self, actor: Any) -> None:
        """Hand the shards scanned so far to the file's actor, and the later ones as they come."""
        with self.lock:
            self.actor = actor
            for k, scan in sorted(self.pending.items()):
                actor.give_scan.remote(k, scan)
            self.pending.clear()

    def close(self) -> None:
        """Stop scanning and hand nothing more over (the shard being scanned is dropped)."""
        with self.lock:
            self.closed = True
        if self.thread.is_alive():  # a long shard is not waited for: its result goes nowhere
            self.thread.join(timeout=CLOSE_WAIT_S)

    def _work(self) -> None:
        from pipeline.actors.ingest_actor import audio_scan_args
        from pipeline.actors.trigger_actor import scan_audio

        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})  # main thread's
        for k in self.shards:
            scan = None
            if not (self.closed or self.stop.is_set()):
                try:
                    scan = scan_audio(self.source, self.stream_id, self.cfg.trigger,
                                      **audio_scan_args(self.cfg, self.spans[k]))  # fmt: skip
                except Exception as e:  # noqa: BLE001 - a Ray task retries it and reports the cause
                    logger.debug("%s: audio shard %d not scanned here: %s", self.job.name, k, e)
            self._deliver(k, scan)

    def _deliver(self, shard: int, scan: dict | None) -> None:
        with self.lock:
            if self.closed:
                return
            if self.actor is None:
                self.pending[shard] = scan
                return
            try:
                self.actor.give_scan.remote(shard, scan)
            except Exception as e:  # noqa: BLE001 - the actor is gone (stopped or failed)
                logger.debug("%s: audio shard %d not handed over: %s", self.job.name, shard, e)


class Runner:
    """Runs the jobs on the actors: bounded file parallelism, live sources alongside, progress."""

    def __init__(self, jobs: list[Job], cfg: ServiceConfig, hook: ProgressHook | None, stop: threading.Event,
                 prescan: AudioPrescan | None = None, memory: Any = None) -> None:  # fmt: skip
        import ray

        from pipeline.actors.memory_actor import MemoryActor

        self.cfg, self.hook, self.stop, self.prescan = cfg, hook, stop, prescan
        self.files = [j for j in jobs if not j.spec.live]
        self.live = [j for j in jobs if j.spec.live]
        self.own_memory = memory is None  # a shared writer is left open for its owner
        if memory is None:
            cfg.store.path.mkdir(parents=True, exist_ok=True)
            memory = MemoryActor.remote(str(cfg.store.path.resolve()), cfg.memory, cfg.retention)
        self.memory = memory
        self.cpus = max(1, int(ray.available_resources().get("CPU", 1)) or 1)
        self.parallel = cfg.ingest.parallel or self.cpus
        self.reports: list[dict] = []
        self.stopped = False

    def run(self) -> list[dict]:
        import ray

        waiting = list(self.files)
        running = [self._start(j, i) for i, j in enumerate(self.live)]
        n_files, index = len(self.files), len(self.live)
        while waiting or running:
            if self.stop.is_set() and not self.stopped:
                self._stop_all(running)
                for job in waiting:  # never started: the next run does them
                    self.reports.append({**_error_report(job.name, None), "interrupted": True,
                                         "duration_s": job.info.duration_s if job.info else None})  # fmt: skip
                waiting = []
            while waiting and sum(1 for j in running if not j.spec.live) < self.parallel:
                running.append(self._start(waiting.pop(0), index))
                index += 1
            ready, _ = ray.wait([j.ref for j in running], num_returns=1, timeout=POLL_S)
            for job in [j for j in running if j.ref in ready]:
                running.remove(job)
                self._finish(job)
            self._progress(running, n_files)
        if self.own_memory:
            ray.get(self.memory.close.remote())
        return self.reports

    def _start(self, job: Job, index: int) -> Job:
        from pipeline.actors.ingest_actor import IngestActor, LiveIngestActor
        from pipeline.actors.perception_actor import PerceptionActor
        from pipeline.actors.trigger_actor import TriggerActor

        stream_id = stream_id_of(job, index)
        job.t0 = time.perf_counter()
        if job.spec.live:
            perception = PerceptionActor.remote(self.cfg.perception, self.memory, self.cfg.ray.max_in_flight)
            trigger = TriggerActor.remote(stream_id, self.cfg.trigger, str(self.cfg.store.path))
            actor = LiveIngestActor.remote(job.spec, stream_id, self.cfg)
            job.actors = (actor, trigger, perception)
            job.ref = actor.run.remote(trigger, perception, self.memory)
        else:
            named = dataclasses.replace(job.info, source=source_name(job.spec.target))
            audio = source_name(job.spec.audio.target) if job.spec.audio is not None else None
            actor = IngestActor.remote(named, stream_id, self.cfg, audio)
            perceptions = [
                PerceptionActor.remote(self.cfg.perception, self.memory, self.cfg.ray.max_in_flight)
                for _ in range(self.cfg.ingest.perception_actors or max(1, self.cpus - 1))
            ]  # windows are independent: perceived in parallel (decoding keeps a core busy)
            job.actors = (actor, *perceptions)
            prescan = self.prescan if self.prescan is not None and self.prescan.job is job else None
            if prescan is not None and prescan.stream_id != stream_id:  # not what it scanned for
                prescan.close()
                prescan = self.prescan = None
            job.ref = actor.run.remote(perceptions, self.memory, prescan.shards if prescan else ())
            if prescan is not None:
                prescan.attach(actor)
        return job

    def _finish(self, job: Job) -> None:
        import ray

        try:
            result = ray.get(job.ref)
            duration = result.pop("duration_s", None) or (job.info.duration_s if job.info else None)
            error = result.pop("error", None)
            self.reports.append({"source": job.name, "duration_s": duration, **result, "error": error})
        except ray.exceptions.RayError as e:
            cause = _cause(e)
            logger.error("%s: ingest failed: %s", job.name, cause)
            report = _error_report(job.name, cause if job.spec.live else f"ingest failed: {cause}")
            report["wall_s"] = round(time.perf_counter() - job.t0, 3)
            self.reports.append(report)
        finally:
            for actor in job.actors:
                ray.kill(actor)

    def _stop_all(self, running: list[Job]) -> None:
        self.stopped = True
        logger.warning("stopping: live captures are flushed, files stop after their current window")
        for job in running:
            job.actors[0].stop.remote()

    def _progress(self, running: list[Job], n_files: int) -> None:
        import ray

        if self.hook is None:
            return
        for job in running:
            try:
                stage, done, total = ray.get(job.actors[0].progress.remote(), timeout=POLL_S)
            except ray.exceptions.RayError:
                continue
            self.hook(job.name, stage, done, total)
        finished = sum(1 for r in self.reports if r["source"] in {j.name for j in self.files})
        self.hook("", "overall", float(finished), float(n_files))


def _cause(e: Exception) -> str:
    """The innermost message of a Ray error, on one line."""
    cause = getattr(e, "cause", None) or e
    if isinstance(cause, IngestError):
        return cause.cause
    return one_line(cause)


def one_line(e: BaseException) -> str:
    """The last line of ``e``'s message (its type's name when it has none)."""
    text = str(e).strip()
    return text.splitlines()[-1] if text else type(e).__name__
