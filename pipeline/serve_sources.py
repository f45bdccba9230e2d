"""Live sources registered over the API: kept in ``sources.json``, all run by one child process
(:mod:`pipeline.serve_live`: one Ray, one store writer shared by every source), each restarted
with backoff when its capture stops, the child restarted with backoff if it dies.

While the child runs it holds the store's writer, so ingest jobs submitted meanwhile are handed to
it (:meth:`SourceRegistry.submit_job`) and run there through the same writer, alongside the
cameras; it is stopped when the last live source is removed and no job runs in it. A job in
flight when the child dies is reported lost (the job queue fails it with the reason), never left
waiting.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from pipeline.errors import ConfigError
from pipeline.serve_jobs import STOP_TIMEOUT_S, _last_line, _load, _save
from pipeline.sources import device_kind

logger = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEVICES_SUPPORTED = False  # the live process captures URLs; devices: `eidetic ingest v4l2:...`
SOURCES_FILE = "sources.json"
BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
GROUP_LOG = "live.log"
BUSY_RETRY_S = 10.0  # the store held by another writer (an ingest job): try again this much later


def _backoff(failures: int) -> float:
    """Seconds before the next try after ``failures`` failures in a row."""
    return BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]


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


def live_command(store: Path, config_path: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline.serve_live", "--store", str(store)]
    return cmd + (["--config", config_path] if config_path else [])


class SourceRegistry:
    """Live sources, supervised through one :mod:`pipeline.serve_live` child process."""

    def __init__(self, store: Path, bus, *, config_path: str | None = None) -> None:
        self.store = store
        self.bus = bus
        self.config_path = config_path
        self.sources: dict[str, Source] = {}
        self._retry_at: dict[str, float] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._group: subprocess.Popen | None = None
        self._ready = False
        self._added: set[str] = set()  # sources the running child captures (or was asked to)
        self._fatal: str | None = None
        self._group_fails = 0
        self._group_retry_at = 0.0
        self._jobs: dict[str, tuple[subprocess.Popen, Callable[[dict], None]]] = {}  # in the child
        self._reader: threading.Thread | None = None
        self._writer_pid: int | None = None  # the child's MemoryActor process
        self._cleanup: list[threading.Thread] = []  # after a crash: ending what the child left
        # True while an ingest job's own process holds the writer (asking it to hand the job over
        # to the child, :meth:`JobQueue.hand_over`); None: nothing else writes
        self.writer_busy: Callable[[], bool] | None = None
        for d in _load(store / SOURCES_FILE) or []:
            self.sources[d["name"]] = Source(**d)

    # --- API -------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="live-sources", daemon=True)
        self._thread.start()

    def add(self, url: str, name: str | None = None) -> Source:
        from pipeline.ingest import is_url

        url = url.strip()
        if not (is_url(url) or device_kind(url)):
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
            self._retry_at.pop(name, None)
            if name in self._added:
                self._send({"op": "remove", "name": name})
        src.state, src.pid = "removed", None
        self.bus.publish("source", **self.status(src))
        return src

    def job_runner(self) -> str:
        """Where an ingest job would run now: ``"live"`` (the child is up and takes jobs),
        ``"starting"`` (it is coming up: wait a moment), ``"off"`` (no child: a process of its own)."""
        with self._lock:
            if self._group is not None and self._group.poll() is None:
                return "live" if self._ready else "starting"
            return "off"

    def submit_job(self, job_id: str, sources: list[str], on_event: Callable[[dict], None]) -> bool:
        """Hand job ``job_id`` to the running child; False when it cannot take it now.

        ``on_event`` gets the child's ``job_progress`` and ``job_end`` events of this job, or one
        ``{"event": "job_lost", "error"}`` if the child goes away first. It is called from the
        registry's threads with its lock held: it must not block (e.g. ``queue.Queue.put``)."""
        with self._lock:
            group = self._group
            if group is None or not self._ready or group.poll() is not None:
                return False
            self._jobs[job_id] = (group, on_event)
            if not self._send({"op": "ingest", "job": job_id, "sources": list(sources)}):
                del self._jobs[job_id]
                return False
            return True

    def cancel_job(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._jobs and self._jobs[job_id][0] is self._group:
                self._send({"op": "cancel", "job": job_id})

    def has_job(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._jobs

    def _lose_jobs(self, group: subprocess.Popen | None, why: str) -> None:
        """The jobs ``group`` ran (every job: None) end without a word from it: report them lost."""
        with self._lock:  # told before it is forgotten: has_job() False means its end is told
            for k in [k for k, (g, _) in self._jobs.items() if group is None or g is group]:
                self._jobs.pop(k)[1]({"event": "job_lost", "job": k, "error": why})

    def status(self, src: Source) -> dict[str, Any]:
        return asdict(src)

    def stop(self) -> None:
        """Stop the child: every capture stores what it holds first (bounded by a timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            group, self._group = self._group, None
        for t in self._cleanup:
            t.join(timeout=10)
        if group is not None:
            _close_group(group)
            if self._reader is not None:  # its last words: the reports of the jobs it stopped
                self._reader.join(timeout=5)
        self._lose_jobs(None, "the server stopped before the job finished")

    # --- supervision -----------------------------------------------------------------------

    def _save(self) -> None:
        _save(self.store / SOURCES_FILE, [s.saved() for s in self.sources.values()])

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                self._supervise()

    def _wanted(self) -> list[Source]:
        """The sources that should be captured (devices this build cannot open are marked)."""
        out = []
        for src in self.sources.values():
            if device_kind(src.url) and not DEVICES_SUPPORTED:
                if src.state != "unsupported":
                    src.state, src.error = "unsupported", "capture devices are not supported by this build"
                    self.bus.publish("source", **self.status(src))
                continue
            out.append(src)
        return out

    def _supervise(self) -> None:
        wanted = self._wanted()
        if self._group is not None and self._group.poll() is not None:
            self._group_exited()
        if self._group is None:
            if wanted and time.monotonic() >= self._group_retry_at and not any(t.is_alive() for t in self._cleanup):
                if self.writer_busy is not None and self.writer_busy():  # an ingest job's process holds
                    return  # the writer: it was asked to hand its job over; start once it is gone
                self._start_group()
            return
        if not self._ready:
            return
        if not self.sources and not self._added and not self._jobs:  # nothing left: release the writer
            group, self._group = self._group, None
            threading.Thread(target=_close_group, args=(group,), daemon=True).start()
            return
        now = time.monotonic()
        for src in wanted:
            if src.name not in self._added and now >= self._retry_at.get(src.name, 0.0):
                if self._send({"op": "add", "name": src.name, "url": src.url}):
                    self._added.add(src.name)

    def _start_group(self) -> None:
        log = self.store / "logs" / GROUP_LOG
        log.parent.mkdir(parents=True, exist_ok=True)
        # the child keeps its log's handle; its own session holds its Ray processes (_end_session)
        with open(log, "a", encoding="utf-8") as err:
            self._group = subprocess.Popen(live_command(self.store, self.config_path), stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, stderr=err, text=True,
                                           start_new_session=True)  # fmt: skip
        self._ready, self._fatal, self._added, self._writer_pid = False, None, set(), None
        self._reader = threading.Thread(target=self._read, args=(self._group,), name="live-events", daemon=True)
        self._reader.start()

    def _group_exited(self) -> None:
        """The child stopped on its own: its sources failed with it; retry it with backoff."""
        group, self._group = self._group, None
        assert group is not None
        code = group.returncode
        busy = self._fatal is not None and "already open for writing" in self._fatal
        why = self._fatal or f"the live capture process exited ({code}): {self._log_tail()}"
        delay = BUSY_RETRY_S if busy else _backoff(self._group_fails)
        self._group_fails += 0 if busy else 1
        self._group_retry_at = time.monotonic() + delay
        lost, writer = f"the live process stopped while the job ran: {why}", self._writer_pid

        def after() -> None:  # what it started must not outlive it, its writer least of all (the
            self._lose_jobs(group, lost)  # restarted child could not open the store): the restart
            _end_writer(writer)  # waits for this
            _end_session(group)

        self._cleanup = [t for t in self._cleanup if t.is_alive()]
        self._cleanup.append(threading.Thread(target=after, daemon=True))
        self._cleanup[-1].start()
        for src in self._wanted():
            if busy:
                src.state, src.error = "waiting", "the store is open for writing elsewhere"
            elif src.name in self._added or src.state == "starting":
                src.state, src.error, src.pid = "error", why, None
                src.restarts += 1
            else:
                continue
            self.bus.publish("source", **self.status(src))
        self._added = set()

    def _log_tail(self) -> str:
        try:
            return _last_line((self.store / "logs" / GROUP_LOG).read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return "no output"

    def _send(self, cmd: dict[str, Any]) -> bool:
        group = self._group
        if group is None or group.stdin is None:
            return False
        try:
            group.stdin.write(json.dumps(cmd) + "\n")
            group.stdin.flush()
            return True
        except (OSError, ValueError):  # it is exiting: noticed by the next _supervise
            return False

    def _read(self, group: subprocess.Popen) -> None:
        """The child's events (JSON lines on its stdout) → source states."""
        assert group.stdout is not None
        for line in group.stdout:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if str(doc.get("event", "")).startswith("job_"):
                self._job_event(group, doc)
                continue
            with self._lock:
                if group is self._group:
                    self._event(group, doc)
        try:  # its output ended: it exited (or is exiting); jobs it did not finish are lost
            code = group.wait(timeout=STOP_TIMEOUT_S + 10)
        except subprocess.TimeoutExpired:
            code = None
        why = "the server stopped before the job finished" if self._stop.is_set() else (
            f"the live process exited ({code}) while the job ran: {self._log_tail()}")  # fmt: skip
        self._lose_jobs(group, why)

    def _job_event(self, group: subprocess.Popen, doc: dict[str, Any]) -> None:
        job_id = str(doc.get("job"))
        with self._lock:
            entry = self._jobs.get(job_id)
            if entry is None or entry[0] is not group:
                return
            entry[1](doc)
            if doc["event"] == "job_end":
                del self._jobs[job_id]

    def _event(self, group: subprocess.Popen, doc: dict[str, Any]) -> None:
        event, src = doc.get("event"), self.sources.get(str(doc.get("name")))
        if event == "ready":
            self._ready, self._group_fails = True, 0
            self._writer_pid = doc.get("writer_pid")
        elif event == "fatal":
            self._fatal = str(doc.get("error"))
        elif event == "running" and src is not None:
            src.state, src.error, src.pid, src.since = "running", None, group.pid, time.time()
            self.bus.publish("source", **self.status(src))
        elif event == "ended":
            self._added.discard(str(doc.get("name")))
            if src is None:  # removed meanwhile
                return
            error = (doc.get("report") or {}).get("error")
            src.state, src.error, src.pid = ("error" if error else "finished"), error, None
            if error and src.url not in error:
                src.error = f"{src.url}: {error}"
            src.restarts += 1
            self._retry_at[src.name] = time.monotonic() + _backoff(src.restarts - 1)
            self.bus.publish("source", **self.status(src))


def _close_group(group: subprocess.Popen) -> None:
    """End of input (the child stops its captures, stores them, exits); SIGTERM, then SIGKILL."""
    stdin: IO[str] | None = group.stdin
    try:
        if stdin is not None:
            stdin.close()
    except OSError:
        pass
    for step in (lambda: None, group.terminate, group.kill):
        step()
        try:
            group.wait(timeout=STOP_TIMEOUT_S + 10)
            break
        except subprocess.TimeoutExpired:
            continue
    _end_session(group)


def _end_writer(pid: int | None, grace_s: float = 3.0) -> None:
    """SIGTERM, then SIGKILL, to the crashed child's MemoryActor, if it is still that process. A
    Ray worker runs in a session of its own and only notices, after a while, that its node died
    with the child; until it exits it holds the store's writer lock (its writes are atomic:
    SQLite transactions, files replaced whole)."""
    if not pid:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _is_writer(pid):
            return
        try:
            os.kill(pid, sig)
        except OSError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _is_writer(pid):
            time.sleep(0.1)


def _is_writer(pid: int) -> bool:
    """``pid`` is a live MemoryActor process (not exited, not a reused pid)."""
    try:
        return b"MemoryActor" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _end_session(group: subprocess.Popen, grace_s: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``, to what the exited child left in its session (its
    own, ``start_new_session``): Ray's processes that do not exit with it (its dashboard and
    runtime-env agents stay for minutes; Ray's workers have sessions of their own: _end_writer)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + grace_s
        try:
            os.killpg(group.pid, sig)
            while time.monotonic() < deadline:
                time.sleep(0.1)
                os.killpg(group.pid, 0)  # ProcessLookupError once none is left
        except (ProcessLookupError, PermissionError):
            return
