"""The live sources of one ``eidetic serve``, run in one process through one store writer.

The store has one writer. ``eidetic serve`` therefore runs all of its live sources in one child
process (``python -m pipeline.serve_live --store DIR``): one Ray, one :class:`MemoryActor` that
every source writes through, and per source the actors ``eidetic ingest URL`` would start
(capture, trigger, perception). Sources come and go without disturbing the others. The child is
its own crash domain: if it dies, the server restarts it and its sources.

The server also hands it the ingest jobs submitted while it runs (the store has one writer, and
it is this process's): each job runs in a thread of its own, through the same writer, so files
are ingested while the cameras go on capturing; a bad file fails only its own job.

Protocol (JSON lines). stdin: ``{"op": "add", "name", "url"}``, ``{"op": "remove", "name"}``,
``{"op": "ingest", "job", "sources"}``, ``{"op": "cancel", "job"}``; end of input or SIGTERM
stops every capture (open captures are stored) and every job (files stop after their current
window: the journal resumes them) and exits. stdout: ``{"event": "ready"}`` once Ray and the
writer are up, ``{"event": "running", "name"}``, ``{"event": "ended", "name", "report"}`` (the
``eidetic ingest --json`` report of that source: ``report["error"]`` says why it stopped, None
when it was asked to), ``{"event": "job_progress", "job", "progress"}`` (at most every
:data:`PROGRESS_S`), ``{"event": "job_end", "job", "report", "error", "stopped"}`` (``report``:
the ``eidetic ingest --json`` document, None when the job failed as a whole, with ``error``
saying why; ``stopped``: it was cancelled or stopped before it finished). Logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import ServiceConfig, load_config
from pipeline.errors import EideticError

logger = logging.getLogger(__name__)

POLL_S = 0.25
STOP_TIMEOUT_S = 30.0  # how long stopped captures may take to store what they hold
PROGRESS_S = 1.0  # a job's progress is reported at most this often

_emit_lock = threading.Lock()  # events come from the main loop and the jobs' threads


class StoreBusy(EideticError):
    """The store could not be opened for writing (another process holds it)."""


@dataclass
class _Running:
    name: str
    url: str
    actors: tuple
    ref: Any
    t0: float


@dataclass
class _IngestJob:
    job_id: str
    stop: threading.Event
    thread: threading.Thread


def _emit(event: str, **fields: Any) -> None:
    """One event line to the server (gone: ignored; the captures still store what they hold)."""
    line = json.dumps({"event": event, **fields}, default=str) + "\n"
    with _emit_lock:
        try:
            sys.stdout.write(line)
            sys.stdout.flush()
        except (OSError, ValueError):
            pass


def _failed(url: str, error: str) -> dict[str, Any]:
    from pipeline.graph import _error_report

    return _error_report(url, error)


class LiveGroup:
    """Live sources sharing one :class:`MemoryActor` (the store's single writer)."""

    def __init__(self, cfg: ServiceConfig) -> None:
        from pipeline.actors.memory_actor import MemoryActor

        self.cfg = cfg
        cfg.store.path.mkdir(parents=True, exist_ok=True)
        self.memory = MemoryActor.remote(str(cfg.store.path.resolve()), cfg.memory, cfg.retention)
        self.running: dict[str, _Running] = {}
        self.index = 0
        self.jobs: dict[str, _IngestJob] = {}
        self.jobs_lock = threading.Lock()

    def check(self) -> None:
        """Raise StoreBusy when the writer could not open the store (held elsewhere)."""
        import ray

        from pipeline.graph import _cause

        try:
            ray.get(self.memory.stats.remote())
            self.writer_pid = ray.get(self.memory.__ray_call__.remote(lambda _actor: os.getpid()))
        except ray.exceptions.RayError as e:
            raise StoreBusy(_cause(e)) from None

    def add(self, name: str, url: str) -> None:
        """Start capturing ``url`` as source ``name`` (stored under ``url``)."""
        from pipeline.actors.ingest_actor import LiveIngestActor
        from pipeline.actors.perception_actor import PerceptionActor
        from pipeline.actors.trigger_actor import TriggerActor
        from pipeline.sources import resolve

        if name in self.running:
            return
        try:
            spec = resolve(url, self.cfg.sources)
            if not spec.live or spec.audio is not None:
                raise EideticError(f"{url}: not a live source with its own audio")
        except EideticError as e:
            _emit("ended", name=name, report=_failed(url, str(e)))
            return
        stream_id = f"{self.index}:{name}"
        self.index += 1
        cfg = self.cfg
        perception = PerceptionActor.remote(cfg.perception, self.memory, cfg.ray.max_in_flight)
        trigger = TriggerActor.remote(stream_id, cfg.trigger, str(cfg.store.path))
        actor = LiveIngestActor.remote(spec, stream_id, cfg)
        ref = actor.run.remote(trigger, perception, self.memory)
        self.running[name] = _Running(name, url, (actor, trigger, perception), ref, time.perf_counter())
        _emit("running", name=name)

    def remove(self, name: str) -> None:
        """Ask ``name``'s capture to stop; it is reported ``ended`` once its captures are stored."""
        run = self.running.get(name)
        if run is not None:
            run.actors[0].stop.remote()

    def ingest(self, job_id: str, sources: list[str]) -> None:
        """Start ingest job ``job_id`` (files) in a thread of its own, through the shared writer."""
        stop = threading.Event()
        thread = threading.Thread(target=self._ingest, args=(job_id, sources, stop), name=f"job-{job_id}",
                                  daemon=True)  # fmt: skip
        with self.jobs_lock:
            if job_id in self.jobs:
                return
            self.jobs[job_id] = _IngestJob(job_id, stop, thread)
        thread.start()

    def cancel(self, job_id: str) -> None:
        """Stop job ``job_id``: its files stop after their current window (reported ``job_end``)."""
        with self.jobs_lock:
            job = self.jobs.get(job_id)
        if job is not None:
            job.stop.set()

    def _ingest(self, job_id: str, sources: list[str], stop: threading.Event) -> None:
        from pipeline.graph import expand_sources, one_line, run_ingest
        from pipeline.sources import resolve

        progress: dict[str, Any] = {}
        last = [0.0]

        def hook(source: str, stage: str, done: float, total: float) -> None:
            if source == "":
                progress.update(files_done=int(done), files=int(total))
            else:
                progress.update(source=source, stage=stage, done_s=round(done, 1), total_s=round(total, 1))
            if time.monotonic() - last[0] >= PROGRESS_S:
                last[0] = time.monotonic()
                _emit("job_progress", job=job_id, progress=dict(progress))

        report, error = None, None
        try:
            files, refused = [], []
            for s in expand_sources(sources):
                if resolve(s, self.cfg.sources).live:  # would run for ever: live sources are added
                    refused.append(_failed(s, f"{s} is a stream: add it as a live source"))
                else:
                    files.append(s)
            report = run_ingest(files, self.cfg, hook=hook, stop=stop, memory=self.memory)
            report["sources"].extend(refused)
        except Exception as e:  # noqa: BLE001 - a job's failure is its own: the live sources go on
            logger.exception("ingest job %s failed", job_id)
            error = one_line(e)
        finally:
            with self.jobs_lock:
                self.jobs.pop(job_id, None)
        _emit("job_end", job=job_id, report=report, error=error, stopped=stop.is_set())

    def poll(self, timeout: float) -> None:
        """Report the sources whose capture ended (stopped, failed, or gave up reconnecting)."""
        import ray

        if not self.running:
            time.sleep(timeout)
            return
        refs = [r.ref for r in self.running.values()]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        for run in [r for r in self.running.values() if r.ref in ready]:
            self._ended(run)

    def _ended(self, run: _Running) -> None:
        import ray

        from pipeline.graph import _cause

        del self.running[run.name]
        try:
            report = {"source": run.url, **ray.get(run.ref)}
            report.setdefault("error", None)
        except ray.exceptions.RayError as e:
            report = _failed(run.url, _cause(e))
        report["wall_s"] = round(time.perf_counter() - run.t0, 3)
        for actor in run.actors:
            ray.kill(actor)
        _emit("ended", name=run.name, report=report)

    def close(self) -> None:
        """Stop every capture and job, wait for what they hold to be stored, close the writer."""
        import ray

        for name in list(self.running):
            self.remove(name)
        with self.jobs_lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.stop.set()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self.running and time.monotonic() < deadline:
            self.poll(POLL_S)
        for job in jobs:  # each reports its own end (stopped), or is reported here
            job.thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if job.thread.is_alive():
                _emit("job_end", job=job.job_id, report=None, error="did not stop in time", stopped=True)
        for run in list(self.running.values()):  # stuck: reported, not waited for
            for actor in run.actors:
                ray.kill(actor)
            _emit("ended", name=run.name, report=_failed(run.url, "did not stop in time"))
        self.running.clear()
        ray.get(self.memory.close.remote())


def _read_commands(q: queue.Queue) -> None:
    """stdin lines → ``q`` (None at end of input)."""
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            q.put(json.loads(line))
        except ValueError:
            logger.error("ignoring a bad command line: %r", line[:200])
    q.put(None)


def serve_live(cfg: ServiceConfig, stop: threading.Event) -> None:
    """Run live sources as commanded on stdin until end of input or ``stop``."""
    from pipeline.graph import start_ray, stop_ray

    commands: queue.Queue = queue.Queue()
    threading.Thread(target=_read_commands, args=(commands,), name="commands", daemon=True).start()
    started = start_ray(cfg)
    try:
        group = LiveGroup(cfg)
        group.check()
        _emit("ready", writer_pid=group.writer_pid)
        try:
            while not stop.is_set():
                while True:
                    try:
                        cmd = commands.get_nowait()
                    except queue.Empty:
                        break
                    if cmd is None:
                        stop.set()
                        break
                    if cmd.get("op") == "add":
                        group.add(str(cmd["name"]), str(cmd["url"]))
                    elif cmd.get("op") == "remove":
                        group.remove(str(cmd["name"]))
                    elif cmd.get("op") == "ingest":
                        group.ingest(str(cmd["job"]), [str(s) for s in cmd["sources"]])
                    elif cmd.get("op") == "cancel":
                        group.cancel(str(cmd["job"]))
                group.poll(POLL_S)
        finally:
            group.close()
    finally:
        if started:
            stop_ray()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.serve_live", description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--config")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        cfg = load_config(args.config)
        cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"path": Path(args.store)})})
    except EideticError as e:
        print(f"eidetic: error: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve_live(cfg, stop)
    except EideticError as e:
        _emit("fatal", error=str(e))
        print(f"eidetic: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
