"""Work the HTTP service supervises: ingest jobs and live sources, each an ``eidetic ingest``
subprocess (its own Ray, its own crash domain; SIGTERM stops it cleanly).

The store has one writer at a time. A job that finds the store open for writing waits in the
queue; a live source holds the writer while it runs (one live source per store until the
ingest layer can share a writer). Jobs and sources are saved in the store directory
(``jobs.json``, ``sources.json``) and survive restarts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

logger = logging.getLogger(__name__)

JOBS_FILE = "jobs.json"
SOURCES_FILE = "sources.json"
MAX_JOBS_KEPT = 200
LOCKED_RETRY_S = 2.0
STOP_TIMEOUT_S = 15.0
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEVICE_PREFIXES = ("v4l2:", "alsa:", "pulse:")


def _save(path: Path, doc: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        logger.error("cannot read %s (%s): starting without it", path, e)
        return None


def ingest_command(sources: list[str], store: Path, config_path: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline", "ingest", *sources, "--store", str(store), "--json"]
    return cmd + (["--config", config_path] if config_path else [])


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else "no output"
    return line.removeprefix("eidetic: error: ")


@dataclass
class Job:
    """An ingest job: ``state`` is queued, running, done, failed, cancelled or interrupted."""

    job_id: str
    sources: list[str]
    state: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    waiting: str | None = None


class JobQueue:
    """Runs ingest jobs one at a time, in submission order."""

    def __init__(self, store: Path, bus, *, config_path: str | None = None) -> None:
        self.store = store
        self.bus = bus
        self.config_path = config_path
        self.jobs: dict[str, Job] = {}
        self._cv = threading.Condition()
        self._proc: subprocess.Popen | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        for d in _load(store / JOBS_FILE) or []:
            job = Job(**d)
            if job.state in ("queued", "running"):  # the server stopped while it waited or ran
                job.state, job.error = "interrupted", "the server stopped before the job finished"
            self.jobs[job.job_id] = job

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ingest-jobs", daemon=True)
        self._thread.start()

    def submit(self, sources: list[str]) -> Job:
        job = Job(job_id=uuid.uuid4().hex[:12], sources=list(sources))
        with self._cv:
            self.jobs[job.job_id] = job
            for old in [j for j in self.jobs.values() if j.finished][:-MAX_JOBS_KEPT]:
                del self.jobs[old.job_id]
            self._changed(job)
            self._cv.notify_all()
        return job

    def cancel(self, job_id: str) -> Job:
        with self._cv:
            job = self.jobs[job_id]
            if job.state == "queued":
                job.state, job.finished = "cancelled", time.time()
                self._changed(job)
            elif job.state == "running" and self._proc is not None:
                self._proc.terminate()
            return job

    @property
    def depth(self) -> int:
        return sum(1 for j in self.jobs.values() if j.state == "queued")

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            if self._proc is not None:
                self._proc.terminate()
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT_S + 2)

    def _changed(self, job: Job) -> None:
        _save(self.store / JOBS_FILE, [asdict(j) for j in self.jobs.values()])
        self.bus.publish("job", **asdict(job))

    def _next(self) -> Job | None:
        with self._cv:
            while not self._stopping:
                queued = [j for j in self.jobs.values() if j.state == "queued"]
                if queued:
                    return queued[0]
                self._cv.wait(1.0)
        return None

    def _run(self) -> None:
        while (job := self._next()) is not None:
            self._execute(job)

    def _execute(self, job: Job) -> None:
        cmd = ingest_command(job.sources, self.store, self.config_path)
        while True:
            with self._cv:
                if self._stopping or job.state != "queued":
                    return
                self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              text=True, stdin=subprocess.DEVNULL)  # fmt: skip
                job.state, job.started, job.waiting = "running", time.time(), None
                self._changed(job)
            out, err = self._proc.communicate()
            code = self._proc.returncode
            with self._cv:
                self._proc = None
                if "already open for writing" in err and not self._stopping:
                    job.state, job.waiting = "queued", "the store is open for writing elsewhere"
                    self._changed(job)
                    self._cv.wait(LOCKED_RETRY_S)
                    continue
                self._finish(job, code, out, err)
                return

    def _finish(self, job: Job, code: int, out: str, err: str) -> None:
        try:
            job.report = json.loads(out) if out.strip() else None
        except ValueError:
            job.report = None
        if code in (0, 3) and job.report and "sources" in job.report:
            job.state = "done"  # 3: some inputs were bad; the report says which
        elif self._stopping or code < 0:
            job.state, job.error = "interrupted", "stopped before it finished"
        else:
            job.state, job.error = "failed", _last_line(err)
        job.finished = time.time()
        self._changed(job)


@dataclass
class Source:
    """A live source registered over the API (persisted); the status fields are not saved."""

    name: str
    url: str
    added: float = field(default_factory=time.time)
    state: str = "starting"
    error: str | None = None
    pid: int | None = None
    restarts: int = 0
    since: float | None = None

    def saved(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "added": self.added}


class SourceRegistry:
    """Live sources: kept in ``sources.json``, each supervised as an ingest subprocess that is
    restarted with backoff when it stops."""

    def __init__(self, store: Path, bus, *, config_path: str | None = None) -> None:
        self.store = store
        self.bus = bus
        self.config_path = config_path
        self.sources: dict[str, Source] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._retry_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for d in _load(store / SOURCES_FILE) or []:
            self.sources[d["name"]] = Source(**d)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="live-sources", daemon=True)
        self._thread.start()

    def add(self, url: str, name: str | None = None) -> Source:
        from pipeline.ingest import is_url

        url = url.strip()
        if not (is_url(url) or url.lower().startswith(DEVICE_PREFIXES)):
            raise ConfigError(f"not a live source URL: {url!r} (rtsp://, rtmp://, http(s)://, "
                              "tcp://, udp://, v4l2:, alsa:, pulse:); submit files to /v1/ingest")  # fmt: skip
        name = name or re.sub(r"[^A-Za-z0-9_.-]+", "_", url.split("://")[-1]).strip("_.-")[:64]
        if not NAME.match(name or ""):
            raise ConfigError(f"bad source name {name!r}: 1-64 letters, digits, '_', '.', '-'")
        with self._lock:
            if name in self.sources:
                raise ConfigError(f"a source named {name!r} exists; remove it first")
            src = self.sources[name] = Source(name=name, url=url)
            self._save()
        self.bus.publish("source", **self.status(src))
        return src

    def remove(self, name: str) -> Source:
        with self._lock:
            src = self.sources.pop(name)
            self._save()
            proc = self._procs.pop(name, None)
        if proc is not None:
            _terminate(proc)
        src.state = "removed"
        self.bus.publish("source", **self.status(src))
        return src

    def status(self, src: Source) -> dict[str, Any]:
        return asdict(src)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            procs = list(self._procs.values())
            self._procs.clear()
        for proc in procs:
            _terminate(proc)

    def _log(self, src: Source, suffix: str = ".log") -> Path:
        return self.store / "logs" / f"source-{src.name}{suffix}"

    def _why(self, src: Source, ok: bool) -> str | None:
        """The ingest's error: from its JSON report on stdout, else its last stderr line."""
        try:
            report = json.loads(self._log(src, ".json").read_text(encoding="utf-8"))
            errors = [r["error"] for r in report.get("sources", []) if r.get("error")]
            if errors or report.get("error"):
                return f"{src.url}: {errors[0]}" if errors else str(report["error"])
        except (OSError, ValueError, TypeError, KeyError):
            pass
        if ok:
            return None
        return _last_line(self._log(src).read_text(encoding="utf-8", errors="replace"))

    def _save(self) -> None:
        _save(self.store / SOURCES_FILE, [s.saved() for s in self.sources.values()])

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                for src in list(self.sources.values()):
                    self._supervise(src)

    def _supervise(self, src: Source) -> None:
        from pipeline import ingest

        proc = self._procs.get(src.name)
        if proc is not None and proc.poll() is None:
            return
        if proc is not None:  # it stopped: record why, retry later
            self._procs.pop(src.name)
            ok = proc.returncode == 0
            src.state, src.error, src.pid = ("finished" if ok else "error"), self._why(src, ok), None
            src.restarts += 1
            delay = BACKOFF_S[min(src.restarts - 1, len(BACKOFF_S) - 1)]
            self._retry_at[src.name] = time.monotonic() + delay
            self.bus.publish("source", **self.status(src))
            return
        if src.url.lower().startswith(DEVICE_PREFIXES) and not getattr(ingest, "DEVICE_PREFIXES", ()):
            if src.state != "unsupported":
                src.state, src.error = "unsupported", "capture devices are not supported by this build"
                self.bus.publish("source", **self.status(src))
            return
        if time.monotonic() < self._retry_at.get(src.name, 0.0):
            return
        cmd = ingest_command([src.url], self.store, self.config_path)
        self._log(src).parent.mkdir(parents=True, exist_ok=True)
        with (open(self._log(src), "w", encoding="utf-8") as log,  # the child keeps its handles
              open(self._log(src, ".json"), "w", encoding="utf-8") as out):  # fmt: skip
            proc = subprocess.Popen(cmd, stdout=out, stderr=log, text=True, stdin=subprocess.DEVNULL)
        self._procs[src.name] = proc
        src.state, src.pid, src.since = "running", proc.pid, time.time()
        self.bus.publish("source", **self.status(src))


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM (the ingest flushes and exits), then SIGKILL after STOP_TIMEOUT_S."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
