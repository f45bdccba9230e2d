"""Rule-based parsing of a question: intent, first/last, before/after an anchor, a time window.

``parse_question("what happened after the glass broke?")`` →
``Question(intent=WHAT, keywords=(), relation="after", anchor=("glass", "break"))``.
No model is involved: a few regular expressions and a stop-word list.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from memory.text import tokenize

logger = logging.getLogger(__name__)


class Intent(str, Enum):
    """What kind of answer the question wants."""

    WHEN = "when"  # when did/was X (first/last)
    YESNO = "yesno"  # did/was/is there X → like WHEN, answered "Yes: ..."
    COUNT = "count"  # how many times / how often
    DURATION = "duration"  # how long did X last
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
    list give record recorded remember remembered
    """.split()
)

_UNIT_S = {"h": 3600.0, "hour": 3600.0, "hours": 3600.0, "m": 60.0, "min": 60.0, "mins": 60.0,
           "minute": 60.0, "minutes": 60.0, "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0,
           "seconds": 1.0}  # fmt: skip
_TIME = r"(\d+(?::\d{1,2}){0,2}(?:\.\d+)?)\s*(hours?|h|minutes?|mins?|m|seconds?|secs?|s)?\b"
_BETWEEN = re.compile(rf"\b(?:between|from)\s+{_TIME}\s+(?:and|to)\s+{_TIME}")
_RELATION = re.compile(r"\b(after|before|since|until)\b\s+(.+)$")
_FIRST = re.compile(r"\b(first|earliest)\b|\bfor the first time\b")
_LAST = re.compile(r"\b(last|latest|most recent(?:ly)?|lately)\b")


@dataclass(frozen=True, slots=True)
class Question:
    """A parsed question. Times: media seconds. anchor: keywords of the X in "after X"."""

    intent: Intent
    keywords: tuple[str, ...] = ()
    which: Literal["first", "last"] | None = None
    relation: Literal["after", "before"] | None = None
    anchor: tuple[str, ...] = ()
    anchor_time: float | None = None
    anchor_text: str = ""
    anchor_which: Literal["first", "last"] = "last"  # which match of X anchors "after the first X"
    window: tuple[float, float] | None = None


def parse_seconds(value: str, unit: str | None = None) -> float:
    """``"1:02:03.5"`` → 3723.5, ``"90"`` → 90.0, ``("2", "min")`` → 120.0."""
    parts = [float(p) for p in value.split(":")]
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60.0 + p
    return seconds * (_UNIT_S.get(unit, 1.0) if unit else 1.0)


def keywords(text: str) -> tuple[str, ...]:
    """Content words of ``text`` (normalised, stop words and numbers removed, order kept)."""
    words = [w for w in tokenize(text) if w not in STOPWORDS and not w.isdigit()]
    return tuple(dict.fromkeys(words))


def _intent(text: str) -> Intent:
    if re.search(r"\bhow (many|often)\b|\bnumber of\b|\bcount\b", text):
        return Intent.COUNT
    if re.search(r"\bhow long\b|\bfor how long\b", text):
        return Intent.DURATION
    if re.search(r"^\s*(when|at what time|what time)\b", text):
        return Intent.WHEN
    if re.search(r"^\s*(did|was|were|has|have|is|are|does|do)\b", text):
        return Intent.YESNO
    return Intent.WHEN if re.search(r"\bwhen\b", text) else Intent.WHAT


def parse_question(text: str) -> Question:
    """Parse ``text`` (any casing, punctuation ignored). Never raises."""
    t = " ".join(text.lower().replace("?", " ").split())
    window = None
    if m := _BETWEEN.search(t):
        a, b = parse_seconds(m.group(1), m.group(2)), parse_seconds(m.group(3), m.group(4))
        window = (min(a, b), max(a, b))
        t = (t[: m.start()] + " " + t[m.end() :]).strip()
    relation, anchor, anchor_time, anchor_text = None, (), None, ""
    anchor_which: Literal["first", "last"] = "last"
    if m := _RELATION.search(t):
        word, rest = m.group(1), m.group(2).strip(" .!,")
        relation = "after" if word in ("after", "since") else "before"
        anchor_text = rest
        anchor_which = "first" if _FIRST.search(rest) else "last"
        if tm := re.fullmatch(_TIME, rest):
            anchor_time = parse_seconds(tm.group(1), tm.group(2))
        else:
            anchor = keywords(rest)
        t = t[: m.start()].strip()
        if not anchor and anchor_time is None:  # "after all", "before that": not a relation
            relation, anchor_text = None, ""
    intent = _intent(t)
    t_which = re.sub(r"\blast$", "", t) if intent is Intent.DURATION else t  # "how long did X last"
    which: Literal["first", "last"] | None = None
    if _FIRST.search(t_which):
        which = "first"
    elif _LAST.search(t_which):
        which = "last"
    return Question(
        intent=intent,
        keywords=keywords(t),
        which=which,
        relation=relation,  # type: ignore[arg-type]
        anchor=anchor,
        anchor_time=anchor_time,
        anchor_text=anchor_text,
        anchor_which=anchor_which,
        window=window,
    )
