"""ReasonerActor: answers queries over the store (read-only) with evidence."""

from __future__ import annotations

from pathlib import Path

import ray


@ray.remote(num_cpus=0)
class ReasonerActor:
    """Wraps :class:`memory.query.QueryEngine` on a read-only view of the store."""

    def __init__(self, store_path: str) -> None:
        from memory.query import QueryEngine
        from memory.store import EpisodeStore

        self.store = EpisodeStore(Path(store_path), readonly=True)
        self.engine = QueryEngine(self.store)
        self.queries = 0

    def answer(self, query):
        self.queries += 1
        return self.engine.answer(query)

    def stats(self) -> dict:
        return {"queries": self.queries}
