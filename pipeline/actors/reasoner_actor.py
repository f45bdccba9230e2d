"""ReasonerActor: answers queries over the store (read-only) with evidence, optionally phrased by
the configured LLM."""

from __future__ import annotations

from pathlib import Path

import ray


@ray.remote(num_cpus=0)
class ReasonerActor:
    """Wraps :class:`memory.query.QueryEngine` on a read-only view of the store."""

    def __init__(self, store_path: str, llm_cfg=None) -> None:
        from memory.query import QueryEngine
        from memory.store import EpisodeStore

        self.store = EpisodeStore(Path(store_path), readonly=True)
        self.engine = QueryEngine(self.store)
        self.llm = None
        if llm_cfg is not None and llm_cfg.base_url:
            from pipeline.llm import LLMPhraser

            self.llm = LLMPhraser(llm_cfg)
        self.queries = 0

    def answer(self, query, question=None):
        """``Query`` (and optionally a parsed/structured ``Question``) → ``Answer``."""
        self.queries += 1
        answer = self.engine.answer(query, question=question)
        return self.llm.phrase(query.text, answer) if self.llm is not None else answer

    def stats(self) -> dict:
        out = {"queries": self.queries}
        if self.llm is not None:
            out["llm"] = dict(self.llm.outcomes)
        return out
