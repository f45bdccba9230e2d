"""Prometheus metrics of the HTTP service: queries, HTTP latency, store size, per-source ingest
figures (fps, triggers, capture fraction), job queue depth, live sources, events.

Store-wide figures (sizes, per-source sums) cost a scan, so a background thread refreshes them
every ``REFRESH_S``; a scrape only formats the latest sample.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter as Tally
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from pipeline.serve import Service

logger = logging.getLogger(__name__)

REFRESH_S = 15.0
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Counters updated by the routes plus a collector over the latest store sample."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.registry = CollectorRegistry()
        r = self.registry
        self.queries = Counter("eidetic_queries_total", "Queries answered", ["answered"], registry=r)
        self.query_seconds = Histogram("eidetic_query_seconds", "Query answer latency",
                                       buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.http = Histogram("eidetic_http_request_seconds", "HTTP request latency",
                              ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.sample: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        r.register(_Collector(self))

    def observe_http(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http.labels(route=route, method=method, status=str(status)).observe(seconds)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:
            try:
                self.sample = self.refresh()
            except Exception as e:  # noqa: BLE001 - a busy or missing store: keep the last sample
                logger.debug("metrics refresh failed: %s", e)
            if self._stop.wait(REFRESH_S):
                return

    def refresh(self) -> dict[str, Any]:
        from memory.blobs import disk_bytes

        store = self.svc.eidetic.store
        with store._lock:
            c = store._conn
            rows = c.execute("SELECT source, COUNT(*), SUM(t_end - t_start) FROM episodes "
                             "GROUP BY source").fetchall()  # fmt: skip
            sounds = int(c.execute("SELECT COUNT(*) FROM sounds").fetchone()[0])
        return {
            "episodes": {r[0]: int(r[1]) for r in rows},
            "captured_s": {r[0]: float(r[2] or 0.0) for r in rows},
            "sounds": sounds,
            "bytes": disk_bytes(store.path),
        }

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Collector:
    def __init__(self, m: Metrics) -> None:
        self.m = m

    def collect(self):
        svc, s = self.m.svc, self.m.sample
        yield _gauge("eidetic_store_episodes", "Episodes in the store", sum(s.get("episodes", {}).values()))
        yield _gauge("eidetic_store_sounds", "Rows of the audio event log", s.get("sounds", 0))
        yield _gauge("eidetic_store_bytes", "Bytes of the store on disk", s.get("bytes", 0))
        yield _labelled("eidetic_source_episodes", "Episodes per source", s.get("episodes", {}))
        yield _labelled("eidetic_source_captured_seconds", "Captured (episode) time per source",
                        s.get("captured_s", {}))  # fmt: skip
        fps, triggers, fraction = {}, {}, {}
        for job in svc.jobs.jobs.values():
            for r in (job.report or {}).get("sources", []):
                if r.get("error") or not r.get("wall_s"):
                    continue
                name = r["source"]
                fps[name] = r["frames_decoded"] / r["wall_s"]
                triggers[name] = r["triggers"]
                if r.get("duration_s"):
                    fraction[name] = s.get("captured_s", {}).get(_stored(name), 0.0) / r["duration_s"]
        yield _labelled("eidetic_source_fps", "Frames decoded per wall second (last ingest)", fps)
        yield _labelled("eidetic_source_triggers", "Triggers in the last ingest", triggers)
        yield _labelled("eidetic_source_capture_fraction", "Captured time / media time", fraction)
        yield _gauge("eidetic_ingest_queue_depth", "Ingest jobs waiting", svc.jobs.depth)
        states = Tally(j.state for j in svc.jobs.jobs.values())
        yield _labelled("eidetic_ingest_jobs", "Ingest jobs by state", dict(states), label="state")
        live = Tally(src.state for src in svc.sources.sources.values())
        yield _labelled("eidetic_live_sources", "Live sources by state", dict(live), label="state")
        yield _gauge("eidetic_events_published", "Events published", svc.bus.published)
        yield _gauge("eidetic_event_stream_clients", "Connected event-stream clients", svc.bus.clients)
        yield _labelled("eidetic_llm_answers", "LLM phrasing of answers by outcome",
                        dict(svc.eidetic.llm.outcomes), label="outcome")  # fmt: skip
        wh = svc.webhooks
        yield _labelled("eidetic_webhook_deliveries", "Webhook deliveries",
                        {"sent": wh.sent, "failed": wh.failed, "dropped": wh.dropped}, label="outcome")  # fmt: skip


def _stored(source: str) -> str:
    from pipeline.graph import source_name

    return source_name(source)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _labelled(name: str, doc: str, values: dict[str, float], *, label: str = "source") -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in values.items():
        g.add_metric([str(key)], float(value))
    return g
