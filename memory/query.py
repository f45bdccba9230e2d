"""QueryEngine: retrieval (FTS5 + FAISS + filters) and rule-based temporal reasoning → Answer.

Retrieval: the question's content words must all match an episode's summary/labels/source
(prefix match after normalisation; with 3+ words one may be missing), example vectors find the
nearest episodes above ``min_similarity``; rankings are combined by reciprocal-rank fusion.
Reasoning: first/last, count, how long, before/after an anchor episode, time windows. Every time
in an answer sentence is read from an episode cited in the evidence; nothing else is invented.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np

from memory.episodes import format_time, l2_normalize
from memory.errors import ParameterError
from memory.questions import Intent, Question, parse_question
from memory.text import tokenize
from memory.types import Answer, Episode, EpisodeHit, Query

if TYPE_CHECKING:
    from memory.store import EpisodeStore
    from models.embedders.base import Embedder

logger = logging.getLogger(__name__)

RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al. 2009)
MAX_CANDIDATES = 10_000  # episodes considered per retrieval (counts above this are capped)
MAX_EVIDENCE = 100  # evidence items returned for a count
NEAR_ANCHOR = 100  # extra episodes fetched around an anchor before exact before/after filtering


def _key(ep: Episode) -> tuple[float, int]:
    """Chronological sort key: wall clock when known, else media time; then id."""
    t = ep.wall_start if ep.wall_start is not None else ep.t_start
    return float(t), int(ep.episode_id or 0)


def describe(ep: Episode) -> str:
    """``"glass_breaking at 0:04.2 (episode 2: 0:03.2–0:06.0 on cam1)"`` (+ UTC for live sources).

    The first time is when the episode's first sound began (absent without sounds), the span is
    the episode's (pre- and post-roll included); file sources are named by their file name.
    """
    what = ", ".join(ep.labels) or "activity"
    heard = f" at {format_time(min(s.t_start for s in ep.sounds))}" if ep.sounds else ""
    wall = ""
    if ep.wall_start is not None:
        utc = datetime.fromtimestamp(ep.wall_start, tz=timezone.utc)
        wall = f", {utc:%Y-%m-%d %H:%M:%S} UTC"
    source = ep.source if "://" in ep.source else PurePath(ep.source).name
    span = f"{format_time(ep.t_start)}–{format_time(ep.t_end)}"
    return f"{what}{heard} (episode {ep.episode_id}: {span} on {source}{wall})"


def _topic(eps: Sequence[Episode], words: Sequence[str]) -> str:
    """The label of ``eps`` that the question's ``words`` name most often (or the words)."""
    counts: Counter[str] = Counter()
    for ep in eps:
        for label in ep.labels:
            toks = tokenize(label)
            if any(t.startswith(w) or w.startswith(t) for t in toks for w in words):
                counts[label] += 1
    return counts.most_common(1)[0][0] if counts else (" ".join(words) or "episodes")


def _rrf(rankings: Sequence[Sequence[int]]) -> dict[int, float]:
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, episode_id in enumerate(ranking):
            scores[episode_id] = scores.get(episode_id, 0.0) + 1.0 / (RRF_K + rank + 1)
    return scores


def _after(ep: Episode, anchor: Episode, relation: str) -> bool:
    """Is ``ep`` strictly after (or before) ``anchor`` on a comparable clock?"""
    if ep.episode_id == anchor.episode_id:
        return False
    if anchor.wall_start is not None and ep.wall_start is not None:
        later = _key(ep) > _key(anchor)
    elif ep.source == anchor.source:
        later = (ep.t_start, ep.episode_id or 0) > (anchor.t_start, anchor.episode_id or 0)
    else:
        return False  # media clocks of different sources are not comparable
    return later if relation == "after" else not later


class QueryEngine:
    """Answers :class:`Query` objects from an :class:`EpisodeStore` (read-only use).

    Parameters
    ----------
    store : EpisodeStore
        Usually opened with ``readonly=True``.
    embedder : Embedder, optional
        Lets :meth:`embed_image` turn an example image into ``Query.visual``.
    min_similarity : float
        Inner product below which an example-vector neighbour does not count as a match.
    """

    def __init__(
        self, store: EpisodeStore, *, embedder: Embedder | None = None, min_similarity: float = 0.5
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.min_similarity = float(min_similarity)

    def embed_image(self, image: np.ndarray) -> np.ndarray:
        """``uint8[H, W, 3]`` RGB → L2-normalised ``float32[d]`` for ``Query.visual``."""
        if self.embedder is None:
            raise ParameterError("QueryEngine has no embedder; pass embedder= to search by image")
        x = l2_normalize(np.asarray(self.embedder.embed_images([image]))[0])
        if x is None:
            raise ParameterError("the embedder returned a zero vector for this image")
        return x

    def to_json(self, answer: Answer, *, keyframe_url: KeyframeUrl | None = None) -> dict:
        """:func:`answer_to_json` with keyframe paths made absolute under this store."""
        return answer_to_json(answer, keyframe_url=keyframe_url, store_dir=self.store.path)

    # --- answer ------------------------------------------------------------------------------

    def answer(self, query: Query) -> Answer:
        """Answer ``query``: parse, retrieve, apply the temporal logic, cite the evidence.

        Parameters
        ----------
        query : Query
            Text (optional when ``visual``/``audio`` example vectors are given), filters, ``k``
            (how many episodes a sentence lists).

        Returns
        -------
        Answer
            ``answered=False`` with empty evidence when nothing matches. Otherwise a sentence
            whose times and episode ids all come from ``evidence``, which lists the cited
            episodes in the order cited (then the before/after anchor, score 0).
        """
        if query.k < 1:
            raise ParameterError(f"Query.k must be >= 1, got {query.k!r}")
        q = parse_question(query.text or "")
        filters = self._filters(query, q)
        anchor = None
        if q.relation and q.anchor:
            anchor = self._anchor(q, filters)
            if anchor is None:
                return _nothing(q.anchor_text or query.text)
        scored = self._retrieve(query, q, filters, anchor)
        if anchor is not None:
            scored = [(ep, s) for ep, s in scored if _after(ep, anchor, q.relation or "after")]
        if not scored:
            if anchor is None:
                return _nothing(query.text)
            return Answer(True, f"Nothing is remembered {q.relation} {describe(anchor)}.",
                          (EpisodeHit(anchor, 1.0),))  # fmt: skip
        logger.debug("question %r parsed as %s: %d candidates", query.text, q, len(scored))
        return self._reason(q, query.k, scored, anchor)

    def _filters(self, query: Query, q: Question) -> dict[str, Any]:
        since, until = query.since, query.until
        lo, hi = q.window if q.window is not None else (None, None)
        if q.anchor_time is not None:
            lo, hi = (q.anchor_time, hi) if q.relation == "after" else (lo, q.anchor_time)
        since = lo if since is None else (since if lo is None else max(since, lo))
        until = hi if until is None else (until if hi is None else min(until, hi))
        return {"source": query.source, "since": since, "until": until,
                "wall_since": query.wall_since, "wall_until": query.wall_until}  # fmt: skip

    def _text_matches(self, words: Sequence[str], filters: dict[str, Any]) -> list[int]:
        """Ids of the episodes matching ``words`` best (all of them; with 3+ words, all but one),
        by bm25; empty when too few words match anywhere."""
        per_word = [
            {i for i, _ in self.store.search_text(w, k=MAX_CANDIDATES, match="all", **filters)}
            for w in words
        ]
        coverage = Counter(i for ids in per_word for i in ids)
        need = len(words) if len(words) <= 2 else len(words) - 1
        if not coverage or max(coverage.values()) < need:
            return []
        best = max(coverage.values())
        bm25 = dict(self.store.search_text(" ".join(words), k=MAX_CANDIDATES, **filters))
        ids = [i for i, c in coverage.items() if c == best]
        return sorted(ids, key=lambda i: (-bm25.get(i, 0.0), i))

    def _anchor(self, q: Question, filters: dict[str, Any]) -> Episode | None:
        """The episode "X" in "after X" / "before X": the latest match, or the earliest for
        "after the first X"."""
        ids = self._text_matches(q.anchor, filters)
        eps = self.store.get_many(ids)
        if not eps:
            return None
        return min(eps, key=_key) if q.anchor_which == "first" else max(eps, key=_key)

    def _retrieve(
        self, query: Query, q: Question, filters: dict[str, Any], anchor: Episode | None
    ) -> list[tuple[Episode, float]]:
        """Candidate episodes with relevance scores (RRF), best first."""
        rankings: list[list[int]] = []
        if q.keywords:
            rankings.append(self._text_matches(q.keywords, filters))
        for modality in ("visual", "audio"):
            x = getattr(query, modality)
            if x is not None:
                hits = self.store.search_vectors(modality, x, k=max(query.k, 50), **filters)
                rankings.append([i for i, s in hits if s >= self.min_similarity])
        if rankings:
            scores = _rrf(rankings)
            ids = sorted(scores, key=lambda i: (-scores[i], i))
            eps = self.store.get_many(ids)
            return [(ep, scores[int(ep.episode_id or 0)]) for ep in eps]
        eps = self._listing(q, query.k, filters, anchor)
        return [(ep, 1.0 / (RRF_K + rank + 1)) for rank, ep in enumerate(eps)]

    def _listing(
        self, q: Question, k: int, filters: dict[str, Any], anchor: Episode | None
    ) -> list[Episode]:
        """Episodes by time when the question names nothing to search for."""
        if anchor is not None:
            after = q.relation == "after"
            f = dict(filters)
            if anchor.wall_start is not None:
                f["wall_since" if after else "wall_until"] = anchor.wall_start
            else:
                f["source"] = anchor.source
                f["since" if after else "until"] = anchor.t_start
            return self.store.episodes(**f, limit=k + NEAR_ANCHOR, order="asc" if after else "desc")
        if q.intent is Intent.WHAT:
            windowed = filters["since"] is not None or filters["until"] is not None
            return self.store.episodes(**filters, limit=k, order="asc" if windowed else "desc")
        return self.store.episodes(**filters, limit=MAX_CANDIDATES, order="asc")

    # --- reasoning ---------------------------------------------------------------------------

    def _reason(
        self, q: Question, k: int, scored: list[tuple[Episode, float]], anchor: Episode | None
    ) -> Answer:
        """Apply the question's temporal logic to the candidates and phrase the answer."""
        score = {ep.episode_id: s for ep, s in scored}
        chrono = sorted((ep for ep, _ in scored), key=_key)
        topic = _topic(chrono, q.keywords)
        rel = f" ({q.relation} {describe(anchor)})" if anchor is not None else ""

        def cite(chosen: Sequence[Episode]) -> tuple[EpisodeHit, ...]:
            hits = [EpisodeHit(ep, score[ep.episode_id]) for ep in chosen]
            return tuple(hits + ([EpisodeHit(anchor, 0.0)] if anchor is not None else []))

        if q.intent is Intent.COUNT:
            noun = "time" if len(chrono) == 1 else "times"
            text = f"{topic}: {len(chrono)} {noun}{rel}: {_listed(chrono, k)}."
            return Answer(True, text, cite(chrono[:MAX_EVIDENCE]))
        if q.intent is Intent.WHAT:
            if anchor is not None:
                near = chrono if q.relation == "after" else chrono[::-1]
                head = "After" if q.relation == "after" else "Before"
                text = f"{head} {describe(anchor)}: {_listed(near[:k], k)}."
                return Answer(True, text, cite(near[:k]))
            ranked = chrono if (q.window or not q.keywords) else [ep for ep, _ in scored]
            more = f" ({len(ranked)} matching in all)" if len(ranked) > k else ""
            return Answer(True, f"{_listed(ranked[:k], k)}{more}.", cite(ranked[:k]))
        chosen = _choose(q, chrono, k)
        if q.intent is Intent.DURATION:
            parts = [f"{topic} lasted {ep.t_end - ep.t_start:.1f} s ({describe(ep)})"
                     for ep in chosen]  # fmt: skip
            return Answer(True, "; ".join(parts) + rel + ".", cite(chosen))
        prefix = "Yes: " if q.intent is Intent.YESNO else ""
        more = len(chrono) - len(chosen) if q.which is None and q.relation is None else 0
        tail = f"; and {more} more" if more > 0 else ""
        return Answer(True, f"{prefix}{_listed(chosen, k)}{rel}{tail}.", cite(chosen))


def _choose(q: Question, chrono: list[Episode], k: int) -> list[Episode]:
    """first / last / nearest after or before the anchor / the first ``k`` (chronological)."""
    if q.which == "first":
        return chrono[:1]
    if q.which == "last":
        return chrono[-1:]
    if q.relation == "after":
        return chrono[:1]
    if q.relation == "before":
        return chrono[-1:]
    return chrono[:k]


def _listed(eps: Sequence[Episode], k: int) -> str:
    """``describe`` of the first ``k`` episodes, "; "-separated, with "and N more"."""
    text = "; ".join(describe(ep) for ep in eps[:k])
    return text + (f"; and {len(eps) - k} more" if len(eps) > k else "")


def _nothing(what: str | None) -> Answer:
    subject = repr(what) if what else "the example"
    return Answer(False, f"Nothing in memory matches {subject}.", ())


KeyframeUrl = Callable[[int, int], str]


def answer_to_json(
    answer: Answer, *, keyframe_url: KeyframeUrl | None = None, store_dir: str | Path | None = None
) -> dict:
    """The ``eidetic query --json`` / ``POST /v1/query`` document of ``answer``.

    ``{"answered": bool, "answer": str, "evidence": [{"episode_id", "source", "t_start", "t_end",
    "wall_start", "labels", "objects", "keyframes", "score"}]}``. ``objects`` is a list of
    ``{"track_id", "label", "t_first", "t_last", "n_frames", "bbox"}`` (bbox: XYXY pixels).
    ``keyframes``: ``keyframe_url(episode_id, n)`` when given; else absolute paths under
    ``store_dir``; else the store-relative paths.
    """
    return {
        "answered": bool(answer.answered),
        "answer": answer.answer,
        "evidence": [_evidence_json(h, keyframe_url, store_dir) for h in answer.evidence],
    }


def _evidence_json(
    hit: EpisodeHit, keyframe_url: KeyframeUrl | None, store_dir: str | Path | None
) -> dict:
    ep = hit.episode
    if keyframe_url is not None:
        keyframes = [keyframe_url(int(ep.episode_id or 0), n) for n in range(len(ep.keyframes))]
    elif store_dir is not None:
        keyframes = [str(Path(store_dir).resolve() / rel) for rel in ep.keyframes]
    else:
        keyframes = list(ep.keyframes)
    objects = [
        {"track_id": int(o.track_id), "label": o.label, "t_first": float(o.t_first),
         "t_last": float(o.t_last), "n_frames": int(o.n_frames), "bbox": [float(v) for v in o.bbox]}
        for o in ep.objects
    ]  # fmt: skip
    return {
        "episode_id": ep.episode_id,
        "source": ep.source,
        "t_start": float(ep.t_start),
        "t_end": float(ep.t_end),
        "wall_start": None if ep.wall_start is None else float(ep.wall_start),
        "labels": list(ep.labels),
        "objects": objects,
        "keyframes": keyframes,
        "score": float(hit.score),
    }
