"""QueryEngine: retrieval (FTS5 + FAISS + filters) and rule-based temporal reasoning → Answer.

Retrieval (:mod:`memory.retrieval`): every content word of the question must match an episode's
summary/labels/source (prefix match after normalisation, sound words expanded: "bark" finds
"dog"; with 3+ words one may be missing); example vectors (an image, a sound, or "like episode
N") find the nearest episodes above ``min_similarity``; time spans, sources, labels, objects
and before/after anchors are SQL conditions. Reasoning (:mod:`memory.reasoning`): first/last,
count, how long, last seen, before/after, time windows, ranked by relevance or similarity. Only
the episodes cited are decoded, so a question over 10⁵ episodes costs a few SQL queries.
Every time in an answer sentence is read from an episode cited in the evidence.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from memory import happenings
from memory.episodes import l2_normalize
from memory.errors import EpisodeNotFound, ParameterError
from memory.questions import (
    STOPWORDS,
    Intent,
    Question,
    QuestionError,
    TimeSpan,
    parse_question,
)
from memory.reasoning import Anchor, Reasoner, describe, nothing
from memory.retrieval import (
    Ref,
    Where,
    has_files,
    has_identities,
    has_live,
    max_span_s,
    object_exists,
    object_ids_named,
    object_names,
    refs,
    refs_of,
    sighted,
)
from memory.text import tokenize
from memory.types import Answer, EpisodeHit, Query

if TYPE_CHECKING:
    from memory.store import EpisodeStore
    from models.embedders.base import Embedder

__all__ = ["QueryEngine", "answer_to_json", "describe"]

logger = logging.getLogger(__name__)

_nothing = nothing


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

    def answer(
        self, query: Query, *, question: Question | None = None, now: datetime | None = None
    ) -> Answer:
        """Answer ``query``: parse, retrieve, apply the temporal logic, cite the evidence.

        Parameters
        ----------
        query : Query
            Text (optional when ``visual``/``audio`` example vectors are given), filters, ``k``
            (how many episodes a sentence lists).
        question : Question, optional
            An already parsed (or structured) question; ``query.text`` is then only quoted.
        now : datetime, optional
            "Now" for relative times in the text (default: the local clock).

        Returns
        -------
        Answer
            ``answered=False`` with empty evidence when nothing matches. Otherwise a sentence
            whose times and episode ids all come from ``evidence``, which lists the cited
            episodes in the order cited (then the before/after anchor, score 0).

        Raises
        ------
        QuestionError
            The question cannot be understood as given (a bad time, "like this image" without
            an image, an unknown episode in "after episode N"...).
        """
        if query.k < 1:
            raise ParameterError(f"Query.k must be >= 1, got {query.k!r}")
        q = question if question is not None else parse_question(query.text or "", now=now)
        self._check_example(q, query)
        flt, clock = self._filters(query, q)
        base = Where().filters(**flt).labels(q.labels).bounds(flt, max_span_s(self.store))
        if clock is not None:
            base.clock(clock, max_span_s(self.store))
        # the audio event log keeps media times only: not with wall-clock filters
        log = clock is None and flt["wall_since"] is None and flt["wall_until"] is None
        sound_flt = {"source": flt["source"], "since": flt["since"], "until": flt["until"]}
        anchor = None
        if q.relation and (q.anchor or q.anchor_episode is not None):
            anchor = self._anchor(q, base, sound_flt, log)
            if anchor is None:
                return _nothing(q.anchor_text or query.text)
        cand = base.copy()
        if anchor is not None:
            cand.beyond(anchor.ref, q.relation or "after")
        scores: dict[int, float] = {}
        words = q.keywords
        if q.object_id is not None or q.object_name:
            ids = self._object_ids(q)
            if ids is None:
                what = q.object_name or f"object {q.object_id}"
                return Answer(False, f"Nothing in memory matches {what!r}: this store keeps no "
                                     "object identities to look it up by.", ())  # fmt: skip
            if not ids:
                return _nothing(q.object_name or f"object {q.object_id}")
            if q.object_id is None and len(ids) == 1:
                q = dataclasses.replace(q, object_id=ids[0])
            sighted(cand, ids)
        elif q.intent is Intent.SEEN and (named := self._named(query.text or "")):
            name, oid = named  # "where was my mug last seen?" (an object named "mug")
            q = dataclasses.replace(q, object_name=name, object_id=oid)
            sighted(cand, [oid])
            words = ()
        if words:
            cand = self._match_words(cand, words)
        examples = self._examples(query, q)
        if examples:
            scores = self._similar(examples, flt, query.k, exclude=q.similar_to)
            cand.ids(list(scores))
        logger.debug("question %r parsed as %s", query.text, q)
        objects = q.object_id is not None or q.object_name is not None
        sounds = None if objects or examples else {"flt": sound_flt, "log": log}
        return Reasoner(self.store).answer(q, query.k, cand, anchor, scores, query.text,
                                           sounds=sounds)  # fmt: skip

    def _check_example(self, q: Question, query: Query) -> None:
        need = {"image": query.visual is None, "sound": query.audio is None,
                "any": query.visual is None and query.audio is None}  # fmt: skip
        if q.example and need[q.example] and q.similar_to is None:
            what = {"image": "an image", "sound": "a sound", "any": "an image or a sound"}
            raise QuestionError(f"the question asks about an example: attach {what[q.example]} "
                                "(--image/--audio, or \"image\"/\"audio\" over HTTP)")  # fmt: skip

    def _filters(self, query: Query, q: Question) -> tuple[dict[str, Any], TimeSpan | None]:
        """Store filters: the query's, intersected with the question's time span; plus a clock
        span ("at 14:05") to apply both ways when the store holds live and file episodes."""
        flt: dict[str, Any] = {
            "source": query.source,
            "since": query.since,
            "until": query.until,
            "wall_since": query.wall_since,
            "wall_until": query.wall_until,
        }
        span = q.span
        if span is None:
            return flt, None
        if span.kind == "clock":  # a time of day for live sources, media time for files
            where = Where().filters(source=query.source)
            live, files = has_live(self.store, where), has_files(self.store, where)
            if live and files:
                return flt, span
            span = span.resolve(live)
        lo, hi = ("since", "until") if span.kind == "media" else ("wall_since", "wall_until")
        if span.lo is not None:
            flt[lo] = span.lo if flt[lo] is None else max(flt[lo], span.lo)
        if span.hi is not None:
            flt[hi] = span.hi if flt[hi] is None else min(flt[hi], span.hi)
        return flt, None

    def _anchor(self, q: Question, base: Where, flt: dict[str, Any], log: bool) -> Anchor | None:
        """The X in "after X": its latest happening (the earliest for "after the first X"),
        ending where its chain of sounds ends; else the latest (earliest) episode matching X;
        or the episode named by id."""
        if q.anchor_episode is not None:
            found = refs_of(self.store, [q.anchor_episode])
            eps = self.store.get_many([q.anchor_episode])
            return Anchor(found[0], eps[0]) if found and eps else None
        where = self._match_words(base.copy(), q.anchor)
        which = "first" if q.anchor_which == "first" else "last"
        heard = happenings.find(self.store, where, q.anchor, flt=flt, log=log, which=which)
        if heard:
            h = heard[0] if q.anchor_which == "first" else heard[-1]
            eps = self.store.get_many([h.episode_id]) if h.episode_id is not None else []
            end = happenings.chain_end(self.store, h)
            if not eps:
                return Anchor(h.as_ref(end), h.as_episode(), h.sound.t_start)
            ep = eps[0]  # its episode orders it among episodes; the chain's end bounds "after"
            ref = Ref(int(ep.episode_id or 0), ep.source, ep.t_start, end, ep.wall_start)
            return Anchor(ref, ep, h.sound.t_start)
        got = refs(self.store, where, order="asc" if q.anchor_which == "first" else "desc", limit=1)
        eps = self.store.get_many([got[0].episode_id]) if got else []
        return Anchor(got[0], eps[0]) if eps else None

    def _match_words(self, where: Where, words: Sequence[str]) -> Where:
        """All ``words`` must match; with 3+ words, all but one if no episode has them all."""
        every = where.copy().words(words)
        if len(words) < 3 or refs(self.store, every, limit=1):
            return every
        alternatives = []
        for i in range(len(words)):
            w = Where(conds=[]).words([*words[:i], *words[i + 1 :]])
            alternatives.append((" AND ".join(w.conds), w.params))
        sql = " OR ".join(f"({c})" for c, _ in alternatives)
        return where.copy().add(f"({sql})", *[p for _, ps in alternatives for p in ps])

    def _object_ids(self, q: Question) -> list[int] | None:
        """Object identities asked for; None when the store keeps none (memory/objects.py)."""
        if not has_identities(self.store):
            return None
        if q.object_name:
            return object_ids_named(self.store, q.object_name)
        ok = q.object_id is not None and object_exists(self.store, q.object_id)
        return [int(q.object_id)] if ok else []  # type: ignore[arg-type]

    def _named(self, text: str) -> tuple[str, int] | None:
        """The named object the question mentions: every content word of its name (all of its
        words when it has none: "it") is in ``text``; the longest such name wins."""
        said = set(tokenize(text))
        best: tuple[int, str, int] | None = None
        for object_id, name in object_names(self.store):
            words = tokenize(name)
            content = [w for w in words if w not in STOPWORDS] or words
            if content and set(content) <= said and (best is None or len(content) > best[0]):
                best = (len(content), name, object_id)
        return None if best is None else (best[1], best[2])

    def _examples(self, query: Query, q: Question) -> list[tuple[str, np.ndarray]]:
        out = [(m, getattr(query, m)) for m in ("visual", "audio") if getattr(query, m) is not None]
        if q.similar_to is not None:
            try:
                ep = self.store.get(q.similar_to, vectors=True)
            except EpisodeNotFound:
                raise QuestionError(f"no episode {q.similar_to} to compare with") from None
            out += [(m, getattr(ep, m)) for m in ("visual", "audio") if getattr(ep, m) is not None]
            if not out:
                raise QuestionError(f"episode {q.similar_to} has no vectors to compare with")
        return out

    def _similar(
        self,
        examples: list[tuple[str, np.ndarray]],
        flt: dict[str, Any],
        k: int,
        exclude: int | None,
    ) -> dict[int, float]:
        """Episodes near the example vectors (best similarity per episode, above the minimum)."""
        best: dict[int, float] = {}
        for modality, x in examples:
            for i, s in self.store.search_vectors(modality, x, k=max(k, 50), **flt):
                if s >= self.min_similarity and i != exclude:
                    best[i] = max(best.get(i, s), s)
        return best


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
