"""Ingest jobs the HTTP service supervises, each an ``eidetic ingest`` subprocess (its own Ray,
its own crash domain; SIGTERM stops it cleanly). Live sources: :mod:`pipeline.serve_sources`.

The store has one writer at a time. A job that finds the store open for writing (by another
job, or by the live sources' process) waits in the queue. Jobs are saved in the store directory
(``jobs.json``) and survive restarts.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

JOBS_FILE = "jobs.json"
SOURCES_FILE = "sources.json"
MAX_JOBS_KEPT = 200
LOCKED_RETRY_S = 2.0
STOP_TIMEOUT_S = 15.0
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


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
