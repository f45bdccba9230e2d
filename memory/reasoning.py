"""Rule-based temporal reasoning over retrieved candidates → an answer sentence with evidence.

Input: the parsed :class:`Question` and a :class:`Where` of candidate episodes (filters, words,
anchor, objects, examples already applied). Output: an :class:`Answer` whose every time and
episode id is read from an episode cited in its evidence; nothing is invented.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Literal

from memory.episodes import format_time
from memory.happenings import Happening, beyond, find
from memory.questions import Intent, Question
from memory.retrieval import Ref, Where, concept, count, ranked_by_text, refs, sightings
from memory.text import tokenize
from memory.types import Answer, Episode, EpisodeHit, ObjectRecord

if TYPE_CHECKING:
    from memory.reader import StoreReader

logger = logging.getLogger(__name__)

MAX_EVIDENCE = 100  # evidence items returned for a count
# the episode's first sound began inside it (not a sound continuing from the previous window)
STARTS_HERE = ("COALESCE((SELECT MIN(json_extract(s.value, '$.t_start')) FROM json_each(e.sounds) s),"
               " e.t_start) >= e.t_start")  # fmt: skip


def matches(label: str, words: Sequence[str]) -> bool:
    """Does a label (``glass_breaking``) name what ``words`` ask about (concepts, prefixes)?"""
    alts = {a for w in words for a in concept(w)}
    return any(t.startswith(a) or a.startswith(t) for t in tokenize(label) for a in alts)


def describe(ep: Episode, words: Sequence[str] = (), *, at: float | None = None) -> str:
    """``"glass_breaking at 0:04.2 (episode 2: 0:03.2–0:06.0 on cam1)"`` (+ UTC for live sources).

    The first time is ``at`` (a happening's onset) when given, else when the episode's first
    sound the question's ``words`` name began (else its first sound; absent without sounds); the
    span is the episode's (pre- and post-roll included); file sources are named by their file
    name. A sound-only item (no episode: heard, not captured) reads
    ``"dog at 0:25.0 (heard on cam1, not captured)"``.
    """
    what = ", ".join(ep.labels) or "activity"
    named = [s for s in ep.sounds if words and matches(s.label, words)] or ep.sounds
    if at is None and named:
        at = min(s.t_start for s in named)
    heard = f" at {format_time(at)}" if at is not None else ""
    wall = ""
    if ep.wall_start is not None:
        utc = datetime.fromtimestamp(ep.wall_start, tz=timezone.utc)
        wall = f", {utc:%Y-%m-%d %H:%M:%S} UTC"
    source = ep.source if "://" in ep.source else PurePath(ep.source).name
    if ep.episode_id is None:
        return f"{what}{heard} (heard on {source}{wall}, not captured)"
    span = f"{format_time(ep.t_start)}–{format_time(ep.t_end)}"
    return f"{what}{heard} (episode {ep.episode_id}: {span} on {source}{wall})"


def topic(eps: Sequence[Episode], words: Sequence[str]) -> str:
    """The label of ``eps`` that the question's ``words`` name most often (or the words)."""
    counts: Counter[str] = Counter()
    for ep in eps:
        for label in ep.labels:
            if matches(label, words):
                counts[label] += 1
    return counts.most_common(1)[0][0] if counts else (" ".join(words) or "episodes")


def listed(
    eps: Sequence[Episode], k: int, total: int | None = None, words: Sequence[str] = ()
) -> str:
    """``describe`` of the first ``k`` episodes, "; "-separated, with "and N more"."""
    total = len(eps) if total is None else total
    text = "; ".join(describe(ep, words) for ep in eps[:k])
    shown = min(k, len(eps))
    return text + (f"; and {total - shown} more" if total > shown else "")


def _words(q: Question) -> tuple[str, ...]:
    """The words naming what is asked about (a structured query's labels count too)."""
    return q.keywords or tuple(w for label in q.labels for w in tokenize(label))


def _stated(ep: Episode, h: Happening) -> str:
    """``describe`` of a happening's item; a sound heard inside another happening names it:
    ``"pouring_water at 0:19.7 within can_opening from 0:18.0 (episode 4: ...)"``."""
    if h.within is None:
        return describe(ep, at=h.sound.t_start)
    text = describe(dataclasses.replace(ep, labels=(h.sound.label,)), at=h.sound.t_start)
    head, _, tail = text.partition(" (")
    return f"{head} within {h.within.label} from {format_time(h.within.t_start)} ({tail}"


@dataclass(frozen=True, slots=True)
class Anchor:
    """The X of "after X": where it is for SQL (``ref``; ``t_end`` is where its happening ends),
    the episode (or sound-only item) to cite, and the onset to state."""

    ref: Ref
    episode: Episode
    at: float | None = None

    def describe(self) -> str:
        return describe(self.episode, at=self.at)


def _pick(q: Question) -> Literal["first", "last"] | None:
    """Which single occurrence a when-question wants: "first", "the first after X" → first;
    "last", "the last before X" → last; else None (all of them, or a count)."""
    if q.intent is Intent.COUNT:
        return None
    if q.which == "first" or (q.which is None and q.relation == "after"):
        return "first"
    if q.which == "last" or (q.which is None and q.relation == "before"):
        return "last"
    return None


def nothing(what: str | None) -> Answer:
    subject = repr(what) if what else "the example"
    return Answer(False, f"Nothing in memory matches {subject}.", ())


class Reasoner:
    """Applies a question's temporal logic to candidate episodes of ``store``."""

    def __init__(self, store: StoreReader) -> None:
        self.store = store

    def _episodes(self, rs: Sequence[Ref]) -> list[Episode]:
        return self.store.get_many([r.episode_id for r in rs])

    def answer(
        self,
        q: Question,
        k: int,
        cand: Where,
        anchor: Anchor | None,
        scores: dict[int, float],
        text: str | None,
        *,
        sounds: dict[str, Any] | None = None,
    ) -> Answer:
        """The answer to ``q`` over the candidates ``cand`` (``scores``: example similarity).

        ``sounds``: answer when/how-many from happenings (:mod:`memory.happenings`) with these
        keywords of :func:`memory.happenings.find` (``flt``, ``log``); None: from episodes only.
        """
        anchor_ep = anchor.episode if anchor is not None else None
        rel = f" ({q.relation} {anchor.describe()})" if anchor is not None else ""

        def cite(chosen: Sequence[Episode], score: dict[int, float] | None = None) -> tuple:
            hits = [EpisodeHit(ep, (score or scores).get(ep.episode_id, 1.0)) for ep in chosen]
            return tuple(hits + ([EpisodeHit(anchor_ep, 0.0)] if anchor_ep is not None else []))

        if q.intent is Intent.WHAT or q.intent is Intent.SIMILAR:
            chosen, score, total = self._what(q, k, cand, anchor, scores)
            if not chosen:
                return self._empty(q, anchor, text)
            if anchor is not None:
                head = "After" if q.relation == "after" else "Before"
                return Answer(True, f"{head} {anchor.describe()}: {listed(chosen, k)}.",
                              cite(chosen, score))  # fmt: skip
            more = f" ({total} matching in all)" if total > len(chosen) else ""
            prefix = "Similar: " if q.intent is Intent.SIMILAR else ""
            return Answer(True, f"{prefix}{listed(chosen, k)}{more}.", cite(chosen, score))
        words = _words(q)
        if sounds is not None and q.intent in (Intent.WHEN, Intent.YESNO, Intent.COUNT):
            keep = None
            if anchor is not None and q.relation:
                ref, relation, at = anchor.ref, q.relation, anchor.at
                keep = lambda found: beyond(found, ref, relation, at)  # noqa: E731
            found = find(self.store, cand, words, labels=q.labels, which=_pick(q), keep=keep,
                         **sounds)  # fmt: skip
            if found is not None:
                return self._happened(q, k, found, anchor, rel, text)
        if q.intent is Intent.COUNT:
            found_refs, n = self._occurrences(cand, words)
            if n == 0:
                return self._empty(q, anchor, text)
            chrono = self._episodes(found_refs[:MAX_EVIDENCE])
            noun = "time" if n == 1 else "times"
            what = topic(chrono, words) if words else "episodes"
            sentence = f"{what}: {n} {noun}{rel}: {listed(chrono, k, n, words)}."
            return Answer(True, sentence, cite(chrono))
        chosen, total = self._when(q, k, cand, anchor.ref if anchor is not None else None)
        if not chosen:
            return self._empty(q, anchor, text)
        if q.intent is Intent.DURATION:
            what = topic(chosen, q.keywords)
            parts = [f"{what} lasted {ep.t_end - ep.t_start:.1f} s ({describe(ep)})"
                     for ep in chosen]  # fmt: skip
            return Answer(True, "; ".join(parts) + rel + ".", cite(chosen))
        if q.intent is Intent.SEEN:
            parts = [self._seen(q, ep) for ep in chosen]
            return Answer(True, "; ".join(parts) + rel + ".", cite(chosen))
        prefix = "Yes: " if q.intent is Intent.YESNO else ""
        return Answer(True, f"{prefix}{listed(chosen, k, total, words)}{rel}.", cite(chosen))

    def _happened(
        self,
        q: Question,
        k: int,
        found: list[Happening],
        anchor: Anchor | None,
        rel: str,
        text: str | None,
    ) -> Answer:
        """When / how many, from happenings: each cited by its episode (or as a sound only)."""
        if not found:
            return self._empty(q, anchor, text)
        total = len(found)
        if _pick(q) == "first":
            found, total = found[:1], 1
        elif _pick(q) == "last":
            found, total = found[-1:], 1
        shown = found[: MAX_EVIDENCE if q.intent is Intent.COUNT else k]
        eps = {e.episode_id: e for e in self.store.get_many([h.episode_id for h in shown if h.episode_id])}
        items = [(eps[h.episode_id] if h.episode_id in eps else h.as_episode(), h) for h in shown]
        text_ = "; ".join(_stated(ep, h) for ep, h in items[:k])
        if total > min(k, len(items)):
            text_ += f"; and {total - min(k, len(items))} more"
        hits = [EpisodeHit(ep, round(h.sound.score, 4)) for ep, h in items]
        if anchor is not None:
            hits.append(EpisodeHit(anchor.episode, 0.0))
        if found[0].within is not None:  # heard only inside other happenings: never hidden
            label, noun = found[0].sound.label, "time" if total == 1 else "times"
            head = (f"{label}: 0 times on its own{rel}; heard {total} {noun} as part of other sounds"
                    if q.intent is Intent.COUNT else
                    f"{label} was heard only as part of other sounds, never on its own{rel}")  # fmt: skip
            return Answer(True, f"{head}: {text_}.", tuple(hits))
        if q.intent is Intent.COUNT:
            what = Counter(h.sound.label for h in found).most_common(1)[0][0]
            noun = "time" if total == 1 else "times"
            return Answer(True, f"{what}: {total} {noun}{rel}: {text_}.", tuple(hits))
        prefix = "Yes: " if q.intent is Intent.YESNO else ""
        return Answer(True, f"{prefix}{text_}{rel}.", tuple(hits))

    def _empty(self, q: Question, anchor: Anchor | None, text: str | None) -> Answer:
        if anchor is None:
            return nothing(text)
        return Answer(True, f"Nothing is remembered {q.relation} {anchor.describe()}.",
                      (EpisodeHit(anchor.episode, 1.0),))  # fmt: skip

    def _when(
        self, q: Question, k: int, cand: Where, anchor: Ref | None
    ) -> tuple[list[Episode], int]:
        """first / last / nearest after or before the anchor / the first ``k`` (chronological)."""
        after = q.relation == "after"
        if q.which == "first" or (q.which is None and q.relation and after):
            return self._episodes(refs(self.store, cand, order="asc", limit=1)), 1
        if q.which == "last" or (q.which is None and q.relation and not after):
            return self._episodes(refs(self.store, cand, order="desc", limit=1)), 1
        found, total = self._occurrences(cand, _words(q))
        return self._episodes(found[:k]), total

    def _occurrences(self, cand: Where, words: Sequence[str]) -> tuple[list[Ref], int]:
        """Matching episodes in time order, one per happening, and how many happenings.

        A sound split over two capture windows is one happening: an episode whose first sound
        began before the episode itself (the rest of the previous window's sound) is not counted
        again (its sound is cited by the previous episode).
        """
        where = cand.copy().add(STARTS_HERE)
        return refs(self.store, where, order="asc", limit=MAX_EVIDENCE), count(self.store, where)

    def _what(
        self, q: Question, k: int, cand: Where, anchor: Anchor | None, scores: dict[int, float]
    ) -> tuple[list[Episode], dict[int, float], int]:
        """Episodes for "what happened ...": nearest the anchor, most similar, most relevant to
        the words, in the time window, or the most recent."""
        if anchor is not None:  # an episode continuing the previous one's sound is not listed
            order = "asc" if q.relation == "after" else "desc"
            where = cand.copy().add(STARTS_HERE)
            return self._episodes(refs(self.store, where, order=order, limit=k)), {}, 0
        if scores:
            ids = [r.episode_id for r in refs(self.store, cand, limit=len(scores))]
            ranked = sorted(ids, key=lambda i: (-scores[i], i))
            return self.store.get_many(ranked[:k]), scores, len(ranked)
        total = count(self.store, cand)
        if q.keywords and q.span is None and not q.relation:
            hits = ranked_by_text(self.store, q.keywords, cand, limit=k)
            return self.store.get_many([i for i, _ in hits]), dict(hits), total
        windowed = q.span is not None or q.relation is not None
        chosen = refs(self.store, cand, order="asc" if windowed else "desc", limit=k)
        return self._episodes(chosen), {}, total

    def _seen(self, q: Question, ep: Episode) -> str:
        """ "object 3 (person) was last seen 0:12.0–0:14.5 at box [..] (episode 7: ...)"."""
        obj = self._object_in(q, ep)
        if obj is None:
            return f"last seen in {describe(ep)}"
        name = q.object_name or (f"object {q.object_id}" if q.object_id is not None else None)
        label = obj.label or "object"
        who = f"{name} ({label})" if name else label
        box = ", ".join(f"{v:.0f}" for v in obj.bbox)
        return (f"{who} was last seen {format_time(obj.t_first)}–{format_time(obj.t_last)} "
                f"at box [{box}] px in {describe(ep)}")  # fmt: skip

    def _object_in(self, q: Question, ep: Episode) -> ObjectRecord | None:
        if not ep.objects:
            return None
        if q.object_id is not None or q.object_name:
            oid = q.object_id
            track = sightings(self.store, oid, [ep.episode_id]).get(ep.episode_id) if oid else None
            found = [o for o in ep.objects if o.track_id == track]
            if found:
                return found[0]
        alts = {a for w in q.keywords for a in concept(w)}
        named = [o for o in ep.objects if set(tokenize(o.label)) & alts]
        return max(named or ep.objects, key=lambda o: o.t_last)
