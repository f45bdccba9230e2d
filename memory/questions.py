"""Rule-based parsing of a question: intent, first/last/all, before/after, times, objects.

``parse_question("what happened after the glass broke?")`` →
``Question(intent=WHAT, relation="after", anchor=("glass", "break"))``. No model is involved:
regular expressions, a stop-word list and :mod:`memory.timeexpr` for times. Programs can skip
the parsing with :func:`question_from_dict` (the structured query of ``POST /v1/query``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from typing import Any, Literal

from memory.text import tokenize
from memory.timeexpr import (
    _AMPM,
    _DAY,
    _ISO,
    TIME_EXPR,
    QuestionError,
    TimeExprError,
    TimeSpan,
    intersect,
    last_n,
    parse_seconds,
    parse_time_expr,
)

__all__ = ["Intent", "Question", "QuestionError", "TimeExprError", "TimeSpan", "keywords",
           "parse_question", "parse_seconds", "question_from_dict"]  # fmt: skip

logger = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 2000


class Intent(str, Enum):
    """What kind of answer the question wants."""

    WHEN = "when"  # when did/was X (first/last/all)
    YESNO = "yesno"  # did/was/is there X → like WHEN, answered "Yes: ..."
    COUNT = "count"  # how many times / how often
    DURATION = "duration"  # how long did X last
    SEEN = "seen"  # where/when was object N (or X) last seen
    SIMILAR = "similar"  # anything like this image / sound / episode N
    WHAT = "what"  # what happened (after/before X, between T1 and T2), or anything else


STOPWORDS = frozenset(
    """
    a about after again all also am an and any anyone anything anybody are around as at be been
    before being between by can could did do does doing done during each ever every everything
    for from get got had has have having hear heard hearing her here him his how i if in into is
    it its just last latest lately long many me more most much my near next no not now of off
    often on once one onto or our out over please previous previously recent recently right
    say saw see seen show so some someone somebody something sometime sometimes than that the
    their them then there these they thing things this those time times to tell today until up
    us was we were what whats when whenever where which while who whom why will with would yes
    yesterday you your earliest first final happen happened happening happens occur occurred
    list give record recorded remember remembered spotted spot notice noticed find found
    object objects number count
    """.split()
)

_END = r"(?![\w:])"
_BETWEEN = re.compile(rf"\b(?:between|from)\s+({TIME_EXPR}){_END}\s+(?:and|to|until|till)\s+"
                      rf"({TIME_EXPR}){_END}")  # fmt: skip
_HALF_BETWEEN = re.compile(rf"\bbetween\s+{TIME_EXPR}{_END}(?:\s+(?:and|to))?\s*$")
_RELATION = re.compile(r"\b(after|before|since|until|till)\b\s+(.+)$")
_STANDALONE = re.compile(
    rf"(?:\b(?:at|around|about|on|by)\s+({TIME_EXPR}){_END})"
    rf"|\b({_ISO}|{_DAY}(?:\s+(?:at|around)\s+(?:{_AMPM}|\d+:\d{{2}}))?|{_AMPM}"
    rf"|(?:\d+|an?|one|two|three|four|five|ten|twenty|thirty)\s+\w+\s+ago){_END}"
)
_CLOCK_DAY = re.compile(rf"\b(?:at|around)\s+({_AMPM}|\d+:\d{{2}})\s+({_DAY})\b")
_OBJECT_ID = re.compile(r"\b(?:object|thing|track)\s*(?:#|number|no|id)?\s*#?(\d+)\b")
_OBJECT_NAME = re.compile(r"\b(?:object|thing)\s+(?:named|called)\s+['\"]?([\w-]+)['\"]?")
_EPISODE = re.compile(r"^episode\s*#?(\d+)\b")
_SIMILAR = re.compile(
    r"\b(?:like|similar to|resembling|resembles|looks like|sounds like)\s+(?:this|these|that|"
    r"the (?:example|attached|given|same))\b\s*(image|picture|photo|frame|snapshot|sound|clip|"
    r"audio|noise|recording)?|\b(?:like|similar to)\s+episode\s*#?(\d+)\b"
)
_SOUND_WORDS = ("sound", "clip", "audio", "noise", "recording")
_FIRST = re.compile(r"\b(first|earliest)\b|\bfor the first time\b")
_LAST = re.compile(r"\b(last|latest|most recent(?:ly)?|lately)\b")
_ALL = re.compile(r"\b(every time|each time|all (?:the )?times|all of them|every|each)\b")


@dataclass(frozen=True, slots=True)
class Question:
    """A parsed question.

    keywords: content words of what to look for. anchor: words of the X in "after X" (or
    ``anchor_episode``, an episode id). span: the time window the question names (media, wall or
    clock; "after 0:25" gives ``relation="after"`` and a span from 0:25 on). object_id /
    object_name: the object asked about. example: the question refers to an example ("anything
    like this image"); similar_to: "like episode N". labels: exact labels (structured queries).
    """

    intent: Intent
    keywords: tuple[str, ...] = ()
    which: Literal["first", "last", "all"] | None = None
    relation: Literal["after", "before"] | None = None
    anchor: tuple[str, ...] = ()
    anchor_text: str = ""
    anchor_which: Literal["first", "last"] = "last"  # which match of X anchors "after the first X"
    anchor_episode: int | None = None
    span: TimeSpan | None = None
    object_id: int | None = None
    object_name: str | None = None
    example: Literal["image", "sound", "any"] | None = None
    similar_to: int | None = None
    labels: tuple[str, ...] = ()


def keywords(text: str) -> tuple[str, ...]:
    """Content words of ``text`` (normalised, stop words and numbers removed, order kept)."""
    words = [w for w in tokenize(text) if w not in STOPWORDS and not w.isdigit()]
    return tuple(dict.fromkeys(words))


def normalize(text: str) -> str:
    """Lower case, control characters and sentence punctuation dropped, "2 p.m." → "2 pm"."""
    t = "".join(c if c.isprintable() else " " for c in text.lower())
    t = re.sub(r"\b([ap])\.m\.?", r"\1m", t).replace("o'clock", "")
    t = re.sub(r"[?!,;]|\.(?=\s|$)", " ", t)
    return " ".join(t.split())


def _cut(t: str, span: tuple[int, int]) -> str:
    return " ".join((t[: span[0]] + " " + t[span[1] :]).split())


def _intent(text: str) -> Intent:
    if re.search(r"\bhow (many|often)\b|\bnumber of\b|\bcount\b", text):
        return Intent.COUNT
    if re.search(r"\bhow long\b|\bfor how long\b", text):
        return Intent.DURATION
    if re.search(r"^\s*where\b|\b(last seen|seen last|see last|last see|last saw|saw last)\b"
                 r"|\b(seen|spotted)\b\s*$", text):  # fmt: skip
        return Intent.SEEN
    if re.search(r"^\s*(when|at what time|what time)\b", text):
        return Intent.WHEN
    if re.search(r"^\s*(did|was|were|has|have|is|are|does|do)\b", text):
        return Intent.YESNO
    return Intent.WHEN if re.search(r"\bwhen\b", text) else Intent.WHAT


def _merge(span: TimeSpan | None, new: TimeSpan) -> TimeSpan:
    return intersect(span, new)


def _between(a: TimeSpan, b: TimeSpan) -> TimeSpan:
    """The span from the earlier of ``a``, ``b`` to the end of the later one."""
    if a.kind != b.kind:
        live = "wall" in (a.kind, b.kind)
        a, b = a.resolve(live), b.resolve(live)
        if a.kind != b.kind:
            raise QuestionError("'between' mixes a media time and a wall time; use one kind")
    first, last = (a, b) if (a.lo or 0) <= (b.lo or 0) else (b, a)
    return TimeSpan(a.kind, first.lo, last.hi, first.wall_lo, last.wall_hi) if a.kind == "clock" \
        else TimeSpan(a.kind, first.lo, last.hi)  # fmt: skip


def _side(span: TimeSpan, relation: str) -> TimeSpan:
    """The open span after (or before) the start of ``span``."""
    if relation == "after":
        return TimeSpan(span.kind, span.lo, None, span.wall_lo, None)
    return TimeSpan(span.kind, None, span.lo, None, span.wall_lo)


def parse_question(text: str, *, now: datetime | None = None) -> Question:
    """Parse ``text`` (any casing; punctuation ignored).

    Parameters
    ----------
    text : str
        The question.
    now : datetime, optional
        Time-zone aware "now" for "yesterday", "10 minutes ago", "at 14:05" (default: the local
        clock).

    Raises
    ------
    QuestionError, TimeExprError
        A time that cannot be read ("at 25:99"), "between 0:10 and" without its second time, or
        a question longer than :data:`MAX_QUESTION_CHARS`. Anything else parses.
    """
    if len(text) > MAX_QUESTION_CHARS:
        raise QuestionError(f"question too long ({len(text)} characters, at most "
                            f"{MAX_QUESTION_CHARS})")  # fmt: skip
    now = now if now is not None else datetime.now().astimezone()
    t = normalize(text)
    span: TimeSpan | None = None
    if m := _BETWEEN.search(t):
        span = _between(parse_time_expr(m.group(1), now), parse_time_expr(m.group(2), now))
        t = _cut(t, m.span())
    elif _HALF_BETWEEN.search(t):
        raise QuestionError(f"{text!r}: 'between' needs two times, e.g. 'between 0:10 and 0:20'")
    if got := last_n(t, now):
        span = _merge(span, got[0])
        t = _cut(t, got[1])
    relation, anchor, anchor_text, anchor_episode = None, (), "", None
    anchor_which: Literal["first", "last"] = "last"
    if m := _RELATION.search(t):
        word, rest = m.group(1), m.group(2).strip(" .")
        rel = "after" if word in ("after", "since") else "before"
        if tm := re.match(rf"({TIME_EXPR}){_END}\s*$", rest):
            relation, anchor_text = rel, rest
            span = _merge(span, _side(parse_time_expr(tm.group(1), now), rel))
        elif em := _EPISODE.match(rest):
            relation, anchor_text, anchor_episode = rel, rest, int(em.group(1))
        elif words := keywords(rest):
            relation, anchor, anchor_text = rel, words, rest
            anchor_which = "first" if _FIRST.search(rest) else "last"
        if relation is not None:
            t = t[: m.start()].strip()
    t = _CLOCK_DAY.sub(r"\2 at \1", t)  # "at 2pm yesterday" → "yesterday at 2pm"
    while m := _STANDALONE.search(t):
        span = _merge(span, parse_time_expr(m.group(1) or m.group(2), now))
        t = _cut(t, m.span())
    object_id, object_name = None, None
    if m := _OBJECT_NAME.search(t):
        object_name = m.group(1)
        t = _cut(t, m.span())
    elif m := _OBJECT_ID.search(t):
        object_id = int(m.group(1))
        t = _cut(t, m.span())
    example, similar_to = None, None
    if m := _SIMILAR.search(t):
        if m.group(2):
            similar_to = int(m.group(2))
        else:
            kind = m.group(1) or ""
            example = "sound" if kind in _SOUND_WORDS else ("image" if kind else "any")
        t = _cut(t, m.span())
    intent = _intent(t)
    if intent in (Intent.WHAT, Intent.YESNO) and (example or similar_to is not None):
        intent = Intent.SIMILAR
    if intent is Intent.WHAT and (object_id is not None or object_name) and not relation:
        intent = Intent.SEEN
    t_which = re.sub(r"\blast$", "", t) if intent is Intent.DURATION else t  # "how long did X last"
    which: Literal["first", "last", "all"] | None = None
    if _FIRST.search(t_which):
        which = "first"
    elif _LAST.search(t_which) or (intent is Intent.SEEN):
        which = "last"
    elif _ALL.search(t_which):
        which = "all"
    return Question(
        intent=intent, keywords=keywords(t), which=which, relation=relation,  # type: ignore[arg-type]
        anchor=anchor, anchor_text=anchor_text, anchor_which=anchor_which,
        anchor_episode=anchor_episode, span=span, object_id=object_id, object_name=object_name,
        example=example, similar_to=similar_to,  # type: ignore[arg-type]
    )  # fmt: skip


# --- structured queries -------------------------------------------------------------------------

STRUCTURED_KEYS = {"intent", "what", "labels", "which", "after", "before", "since", "until",
                   "object", "like_episode"}  # fmt: skip


def _time_arg(value: Any, key: str, now: datetime) -> TimeSpan:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise QuestionError(f"{key}: give seconds of media time or an ISO 8601 time, got {value!r}")
    if isinstance(value, (int, float)):
        return TimeSpan("media", float(value), float(value))
    try:
        return TimeSpan("media", float(value), float(value))
    except ValueError:
        return parse_time_expr(normalize(value), now)


def question_from_dict(doc: dict[str, Any], *, now: datetime | None = None) -> Question:
    """A structured query (for programs) → :class:`Question`, no text parsing involved.

    Keys (all optional): ``intent`` (``when``, ``count``, ``duration``, ``what``, ``seen``,
    ``similar``, ``yesno``), ``what`` (words to search, e.g. ``"glass breaking"``), ``labels``
    (exact labels, any of them), ``which`` (``first``/``last``/``all``), ``after`` / ``before``
    (an anchor: ``{"episode": id}`` or ``{"what": words, "which": "first"|"last"}``), ``since`` /
    ``until`` (seconds of media time, ISO 8601, or "yesterday", "10 minutes ago"...), ``object``
    (an object id or name), ``like_episode`` (an episode id).
    Raises QuestionError naming the bad key.
    """
    if not isinstance(doc, dict):
        raise QuestionError(f"a structured query is a JSON object, got {type(doc).__name__}")
    unknown = set(doc) - STRUCTURED_KEYS
    if unknown:
        raise QuestionError(f"unknown structured query keys {sorted(unknown)}; known: "
                            f"{sorted(STRUCTURED_KEYS)}")  # fmt: skip
    now = now if now is not None else datetime.now().astimezone()
    try:
        intent = Intent(doc.get("intent", "what"))
    except ValueError:
        raise QuestionError(f"intent must be one of {[i.value for i in Intent]}, "
                            f"got {doc.get('intent')!r}") from None  # fmt: skip
    which = doc.get("which")
    if which not in (None, "first", "last", "all"):
        raise QuestionError(f"which must be 'first', 'last' or 'all', got {which!r}")
    labels = doc.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise QuestionError(f"labels must be a list of label names, got {labels!r}")
    what = doc.get("what", "")
    if not isinstance(what, str):
        raise QuestionError(f"what must be a string of words to look for, got {what!r}")
    q = Question(intent=intent, keywords=keywords(what), which=which, labels=tuple(labels))
    span = None
    for key, rel in (("since", "after"), ("until", "before")):
        if doc.get(key) is not None:
            span = _merge(span, _side(_time_arg(doc[key], key, now), rel))
    q = replace(q, span=span)
    for rel in ("after", "before"):
        if doc.get(rel) is not None:
            q = _structured_anchor(q, rel, doc[rel])
    obj = doc.get("object")
    if obj is not None:
        if isinstance(obj, bool) or not isinstance(obj, (int, str)) or obj == "":
            raise QuestionError(f"object must be an object id or name, got {obj!r}")
        q = replace(q, object_id=obj if isinstance(obj, int) else None,
                    object_name=obj if isinstance(obj, str) else None)  # fmt: skip
    like = doc.get("like_episode")
    if like is not None:
        if isinstance(like, bool) or not isinstance(like, int):
            raise QuestionError(f"like_episode must be an episode id, got {like!r}")
        q = replace(q, similar_to=like)
    return q


def _structured_anchor(q: Question, rel: str, anchor: Any) -> Question:
    if q.relation is not None:
        raise QuestionError("give either 'after' or 'before', not both")
    if not isinstance(anchor, dict) or not anchor.keys() <= {"episode", "what", "which"}:
        raise QuestionError(f"{rel} must be {{'episode': id}} or {{'what': words, 'which': "
                            f"'first'|'last'}}, got {anchor!r}")  # fmt: skip
    if "episode" in anchor:
        ep = anchor["episode"]
        if isinstance(ep, bool) or not isinstance(ep, int):
            raise QuestionError(f"{rel}.episode must be an episode id, got {ep!r}")
        return replace(q, relation=rel, anchor_episode=ep, anchor_text=f"episode {ep}")
    words = keywords(str(anchor.get("what", "")))
    if not words:
        raise QuestionError(f"{rel}.what must name something to anchor on, got {anchor!r}")
    which = anchor.get("which", "last")
    if which not in ("first", "last"):
        raise QuestionError(f"{rel}.which must be 'first' or 'last', got {which!r}")
    return replace(q, relation=rel, anchor=words, anchor_text=str(anchor["what"]),
                   anchor_which=which)  # fmt: skip
