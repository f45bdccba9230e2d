"""Push notifications of the HTTP service: an event bus feeding server-sent events and webhooks,
and a watcher that turns new store rows (episodes, sounds) into events.

The ingest runs in other processes (jobs, live sources); the store is the channel between them
and the server, so the watcher polls it (two indexed ``MAX(id)`` lookups per period).
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

CLIENT_QUEUE = 256  # events buffered per SSE client; a slow client loses the oldest
WEBHOOK_QUEUE = 1024  # events waiting for webhook delivery; more are dropped (counted)
WEBHOOK_TIMEOUT_S = 5.0
WEBHOOK_RETRIES = 3
KEEPALIVE_S = 15.0


class EventBus:
    """Fan-out of events (``{"type", "time", ...}``) to SSE clients and webhook delivery.

    ``publish`` is thread-safe and never blocks: each subscriber has a bounded queue.
    """

    def __init__(self) -> None:
        self._subs: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = set()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self.published = 0

    def listen(self, fn: Callable[[dict[str, Any]], None]) -> None:
        """Call ``fn(event)`` (from the publishing thread) for every event."""
        self._listeners.append(fn)

    def publish(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "time": time.time(), **fields}
        self.published += 1
        with self._lock:
            subs = list(self._subs)
        for loop, q in subs:
            loop.call_soon_threadsafe(_put_latest, q, event)
        for fn in self._listeners:
            fn(event)
        return event

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(CLIENT_QUEUE)
        with self._lock:
            self._subs.add((asyncio.get_running_loop(), q))
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        with self._lock:
            self._subs = {(lp, s) for lp, s in self._subs if s is not q}

    def close(self) -> None:
        """End every event stream (server shutdown)."""
        with self._lock:
            subs = list(self._subs)
        for loop, q in subs:
            loop.call_soon_threadsafe(_put_latest, q, None)

    @property
    def clients(self) -> int:
        return len(self._subs)


def _put_latest(q: asyncio.Queue, event: dict[str, Any]) -> None:
    if q.full():
        q.get_nowait()
    q.put_nowait(event)


async def sse_stream(bus: EventBus, types: set[str] | None, stop: asyncio.Event):
    """Server-sent events: ``event: TYPE`` / ``data: JSON``, a comment every KEEPALIVE_S."""
    q = bus.subscribe()
    try:
        yield ": connected\n\n"
        while not stop.is_set():
            try:
                event = await asyncio.wait_for(q.get(), timeout=KEEPALIVE_S)
            except asyncio.TimeoutError:
                yield ": keepalive\n\n"
                continue
            if event is None:
                return
            if types is None or event["type"] in types:
                yield f"event: {event['type']}\ndata: {json.dumps(event, default=str)}\n\n"
    finally:
        bus.unsubscribe(q)


class Webhooks:
    """POSTs each event as JSON to every URL (a background thread; retries with backoff)."""

    def __init__(self, urls: Iterable[str], *, types: Iterable[str] = (), token: str | None = None):
        self.urls = list(urls)
        self.types = set(types)
        self.token = token
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._q: queue.Queue = queue.Queue(WEBHOOK_QUEUE)
        self._thread: threading.Thread | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.urls or (self.types and event["type"] not in self.types):
            return
        try:
            self._q.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def start(self) -> None:
        if self.urls and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout=WEBHOOK_TIMEOUT_S + 1)
            self._thread = None

    def _run(self) -> None:
        while (event := self._q.get()) is not None:
            body = json.dumps(event, default=str).encode()
            for url in self.urls:
                if self._deliver(url, body):
                    self.sent += 1
                else:
                    self.failed += 1

    def _deliver(self, url: str, body: bytes) -> bool:
        headers = {"Content-Type": "application/json", "User-Agent": "eidetic-webhook"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(WEBHOOK_RETRIES):
            try:
                req = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=WEBHOOK_TIMEOUT_S) as r:  # noqa: S310
                    if 200 <= r.status < 300:
                        return True
            except OSError as e:
                logger.warning("webhook %s failed (attempt %d): %s", url, attempt + 1, e)
            time.sleep(0.2 * 2**attempt)
        return False


class StoreWatcher:
    """Publishes ``episode`` events for new episode rows and ``sound``/``trigger`` events for
    new rows of the audio event log (``trigger`` when the label is a trigger class)."""

    def __init__(self, store_fn: Callable[[], Any], bus: EventBus, *, triggers: Iterable[str],
                 period_s: float = 0.5) -> None:  # fmt: skip
        self.store_fn = store_fn
        self.bus = bus
        self.triggers = set(triggers)
        self.period_s = period_s
        self._last: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="store-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.poll()
            except Exception as e:  # noqa: BLE001 - the store may be missing or busy for a while
                logger.debug("store watcher: %s", e)

    def poll(self) -> None:
        store = self.store_fn()
        with store._lock:
            c = store._conn
            top = (int(c.execute("SELECT COALESCE(MAX(id), 0) FROM episodes").fetchone()[0]),
                   int(c.execute("SELECT COALESCE(MAX(id), 0) FROM sounds").fetchone()[0]))  # fmt: skip
            if self._last is None:
                self._last = top
                return
            sounds = c.execute("SELECT id, source, label, score, t_start, t_end FROM sounds "
                               "WHERE id > ? ORDER BY id LIMIT 500", (self._last[1],)).fetchall()  # fmt: skip
        new_eps = _new_episodes(store, self._last[0])
        last_ep = max([self._last[0], *(int(e.episode_id) for e in new_eps)])
        last_sound = int(sounds[-1][0]) if sounds else self._last[1]
        self._last = (last_ep, last_sound)
        for r in sounds:
            kind = "trigger" if r[2] in self.triggers else "sound"
            self.bus.publish(kind, source=r[1], label=r[2], score=float(r[3]),
                             t_start=float(r[4]), t_end=float(r[5]))  # fmt: skip
        for ep in new_eps:
            self.bus.publish("episode", episode_id=ep.episode_id, source=ep.source,
                             t_start=ep.t_start, t_end=ep.t_end, wall_start=ep.wall_start,
                             labels=list(ep.labels), summary=ep.summary)  # fmt: skip


def _new_episodes(store: Any, after_id: int) -> list[Any]:
    with store._lock:
        rows = store._conn.execute(
            "SELECT id FROM episodes WHERE id > ? ORDER BY id LIMIT 500", (after_id,)
        ).fetchall()
    return store.get_many([int(r[0]) for r in rows])
