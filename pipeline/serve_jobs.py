"""Ingest jobs the HTTP service supervises, each an ``eidetic ingest`` subprocess (its own Ray,
its own crash domain; SIGTERM stops it cleanly). Live sources: :mod:`pipeline.serve_sources`.

The store has one writer at a time. While the live sources' process runs (it holds the writer)
jobs are handed to it and run there, through the same writer, alongside the cameras
(``runner: "live"``); otherwise each job is a process of its own (``runner: "process"``). A
camera added while such a process runs does not wait for it: the process is stopped (SIGTERM:
files stop after their current window, the journal keeps what is done) and the job goes on in
the live process, which resumes it (:meth:`JobQueue.hand_over`). A job that finds the store open
for writing elsewhere waits in the queue. Jobs are saved in the store directory (``jobs.json``)
and survive restarts.
"""

from __future__ import annotations

import json
import logging
import os
import queue
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
MAX_JOBS_KEPT = 200
LOCKED_RETRY_S = 2.0
STOP_TIMEOUT_S = 15.0
HANDOVER_WAIT_S = 60.0  # a job handed to the live process waits this long for it before running alone
MOVED = "moved to the live sources' process (a camera was added): it resumes there"


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
    """An ingest job: ``state`` is queued, running, done, failed, cancelled or interrupted;
    ``runner`` where it ran (``live``: in the live sources' process, ``process``: its own);
    ``progress`` (jobs run in the live process): the file being ingested, its stage, seconds done
    of its total, files done of all."""

    job_id: str
    sources: list[str]
    state: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    waiting: str | None = None
    runner: str | None = None
    progress: dict[str, Any] | None = None


class JobQueue:
    """Runs ingest jobs one at a time, in submission order."""

    def __init__(self, store: Path, bus, *, config_path: str | None = None) -> None:
        self.store = store
        self.live = None  # the SourceRegistry whose live process takes jobs while it runs (set by the server)
        self.bus = bus
        self.config_path = config_path
        self.jobs: dict[str, Job] = {}
        self._cv = threading.Condition()
        self._proc: subprocess.Popen | None = None
        self._stopping = False
        self._in_live: str | None = None  # the job running in the live process
        self._proc_job: str | None = None  # the job running in a process of its own
        self._handover: str | None = None  # that job, asked to move to the live process
        self._cancelled: set[str] = set()
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
            elif job.state == "running":
                self._cancelled.add(job_id)
                if self._proc is not None:
                    self._proc.terminate()
                elif self._in_live == job_id and self.live is not None:
                    self.live.cancel_job(job_id)
            return job

    def hand_over(self) -> bool:
        """The live sources' process needs the store's writer (a camera was added): the job
        running in a process of its own is stopped (SIGTERM: it stops after its current window
        and the journal keeps what is done) and goes on in the live process, which resumes it.
        True while that process still runs (the live process must wait for its writer to go).
        Takes no lock: the source registry calls it holding its own."""
        proc, job_id = self._proc, self._proc_job
        if proc is None or job_id is None or proc.poll() is not None:
            return False
        if self._handover != job_id and not self._stopping and job_id not in self._cancelled:
            self._handover = job_id
            logger.info("job %s: stopping its process to resume it in the live sources' process", job_id)
            proc.terminate()
        return True

    @property
    def depth(self) -> int:
        return sum(1 for j in self.jobs.values() if j.state == "queued")

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            if self._proc is not None:
                self._proc.terminate()
            elif self._in_live is not None and self.live is not None:
                self.live.cancel_job(self._in_live)
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
        moved_at = None  # when the job was handed to the live process (it waits for that process)
        while True:
            runner = self.live.job_runner() if self.live is not None else "off"
            if runner == "live" and self._execute_live(job):
                return
            with self._cv:
                if self._stopping or job.state != "queued":
                    return
                handing = moved_at is not None and time.monotonic() - moved_at < HANDOVER_WAIT_S
                if runner == "starting" or (runner == "off" and handing):  # the live process is about
                    if job.waiting is None:  # to hold the writer: wait for it
                        job.waiting = "the live sources' process is starting"
                        self._changed(job)
                    self._cv.wait(LOCKED_RETRY_S / 4)
                    continue
                self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              text=True, stdin=subprocess.DEVNULL)  # fmt: skip
                self._proc_job = job.job_id
                job.state, job.started, job.waiting, job.runner = "running", time.time(), None, "process"
                self._changed(job)
            out, err = self._proc.communicate()
            code = self._proc.returncode
            with self._cv:
                self._proc, self._proc_job = None, None
                moved = self._handover == job.job_id
                self._handover = None
                if moved and not self._stopping and job.job_id not in self._cancelled:
                    job.state, job.waiting, moved_at = "queued", MOVED, time.monotonic()
                    self._changed(job)
                    continue
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
        elif job.job_id in self._cancelled:
            job.state, job.error = "cancelled", "cancelled while it ran"
        elif self._stopping or code < 0:
            job.state, job.error = "interrupted", "stopped before it finished"
        else:
            job.state, job.error = "failed", _last_line(err)
        job.finished = time.time()
        self._changed(job)

    def _execute_live(self, job: Job) -> bool:
        """Run ``job`` in the live sources' process; False if it could not take the job."""
        events: queue.Queue = queue.Queue()
        with self._cv:
            if self._stopping or job.state != "queued":
                return True
            if not self.live.submit_job(job.job_id, job.sources, events.put):
                return False
            job.state, job.started, job.waiting, job.runner = "running", time.time(), None, "live"
            self._in_live = job.job_id
            self._changed(job)
        while True:
            try:
                doc = events.get(timeout=1.0)
            except queue.Empty:
                if self.live.has_job(job.job_id) or not events.empty():
                    continue
                doc = {"event": "job_lost", "error": "the live process forgot the job"}  # never waits for ever
            if doc["event"] == "job_progress":  # polled (GET /v1/ingest/{id}); not an event: webhooks
                job.progress = doc.get("progress")
                continue
            with self._cv:
                self._in_live = None
                self._finish_live(job, doc)
            return True

    def _finish_live(self, job: Job, doc: dict[str, Any]) -> None:
        report = doc.get("report")
        job.report = report if isinstance(report, dict) else None
        if doc["event"] == "job_lost":
            job.state, job.error = ("interrupted" if self._stopping else "failed"), str(doc.get("error"))
        elif doc.get("error"):
            job.state, job.error = "failed", str(doc["error"])
        elif job.job_id in self._cancelled:
            job.state, job.error = "cancelled", "cancelled while it ran"
        elif doc.get("stopped") or any(s.get("interrupted") for s in (job.report or {}).get("sources", ())):
            job.state, job.error = "interrupted", "stopped before it finished"
        else:
            job.state = "done"  # bad inputs too: the report says which
        job.finished = time.time()
        self._changed(job)
