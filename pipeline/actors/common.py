"""Helpers shared by the actors: bounded in-flight submission and latency stats."""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import ray


class InFlight:
    """Caps the number of unfinished object refs (Ray's ``limit_pending_tasks`` pattern).

    ``add(ref)`` blocks on the oldest ref while more than ``limit`` are pending (calls from one
    caller to one actor run in order, so the oldest finishes first) and keeps its value;
    ``drain()`` returns every value in submission order. A failed task re-raises where it was
    submitted.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending: list[ray.ObjectRef] = []
        self.results: list = []
        self.waits = 0  # times the producer had to wait (backpressure)

    def add(self, ref: ray.ObjectRef) -> None:
        self.pending.append(ref)
        while len(self.pending) > self.limit:
            self.waits += 1
            self.results.append(ray.get(self.pending.pop(0)))

    def drain(self) -> list:
        """Wait for every pending ref; return all values since the last drain, in order."""
        self.results.extend(ray.get(self.pending))
        values, self.pending, self.results = self.results, [], []
        return values


class Latency:
    """Rolling p50/p95 of the last ``n`` call durations, in milliseconds."""

    def __init__(self, n: int = 512) -> None:
        self.samples: deque[float] = deque(maxlen=n)

    def time(self, t0: float) -> None:
        self.samples.append((time.perf_counter() - t0) * 1000.0)

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {"p50_ms": 0.0, "p95_ms": 0.0}
        a = np.fromiter(self.samples, dtype=float)
        return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95))}
