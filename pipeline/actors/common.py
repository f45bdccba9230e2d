"""Helpers shared by the actors: bounded in-flight submission and latency stats."""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import ray


class InFlight:
    """Caps the number of unfinished object refs (Ray's ``limit_pending_tasks`` pattern).

    ``add(ref)`` blocks when more than ``limit`` refs are pending, and re-raises the error of any
    finished task, so failures surface where they were submitted.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending: list[ray.ObjectRef] = []
        self.waits = 0  # times the producer had to wait (backpressure)

    def add(self, ref: ray.ObjectRef) -> None:
        self.pending.append(ref)
        if len(self.pending) > self.limit:
            self.waits += 1
            ready, self.pending = ray.wait(self.pending, num_returns=len(self.pending) - self.limit)
            ray.get(ready)

    def drain(self) -> list:
        """Wait for every pending ref and return their values in submission order."""
        values = ray.get(self.pending)
        self.pending = []
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
