"""Text normalisation shared by the store (FTS5 indexing and matching) and the query engine.

Labels such as ``glass_breaking`` are indexed as words (``glass breaking``); SQLite's ``porter``
tokenizer stems regular forms (breaking → break, knocked → knock) and :data:`IRREGULAR` maps the
irregular ones a question may use (broke → break). Every query term is a quoted FTS5 string, so
user text can never inject FTS5 syntax (``"``, ``OR``, ``(``, ``*``, ``NEAR``, ``:``).
"""

from __future__ import annotations

import logging
import re
from typing import Literal

logger = logging.getLogger(__name__)

FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"
MIN_PREFIX_LEN = 3  # shorter tokens match whole words only ("tv", "go")

_WORD = re.compile(r"[^\W_]+", re.UNICODE)  # letters/digits; "_" and punctuation separate words

IRREGULAR: dict[str, str] = {
    "broke": "break",
    "broken": "break",
    "rang": "ring",
    "rung": "ring",
    "fell": "fall",
    "fallen": "fall",
    "sang": "sing",
    "sung": "sing",
    "shook": "shake",
    "shaken": "shake",
    "threw": "throw",
    "thrown": "throw",
    "blew": "blow",
    "blown": "blow",
    "shut": "shut",
    "spoke": "speak",
    "spoken": "speak",
    "ran": "run",
    "came": "come",
    "went": "go",
    "left": "leave",
    "dropped": "drop",
    "slammed": "slam",
    "knocks": "knock",
    "doors": "door",
    "glasses": "glass",
    "dishes": "dish",
    "babies": "baby",
    "cries": "cry",
    "cried": "cry",
    "crying": "cry",
}


def normalize_label(label: str) -> str:
    """``"glass_breaking"`` → ``"glass breaking"`` (lower case, separators as spaces)."""
    return " ".join(_WORD.findall(label.lower()))


def tokenize(text: str) -> list[str]:
    """Lower-case words of ``text`` with irregular forms mapped to their stem, in order."""
    return [IRREGULAR.get(w, w) for w in _WORD.findall(text.lower())]


def _term(token: str, *, prefix: bool) -> str:
    quoted = '"' + token.replace('"', '""') + '"'
    return quoted + "*" if prefix and len(token) >= MIN_PREFIX_LEN else quoted


def fts_expression(
    tokens: list[str], *, match: Literal["any", "all"] = "any", prefix: bool = True
) -> str | None:
    """An FTS5 MATCH expression over ``tokens`` (each quoted, optionally as a prefix).

    Returns None when there is no token (the caller then matches nothing).
    """
    if match not in ("any", "all"):
        raise ValueError(f"match must be 'any' or 'all', got {match!r}")
    terms = [_term(t, prefix=prefix) for t in dict.fromkeys(tokens) if t]
    if not terms:
        return None
    return (" OR " if match == "any" else " AND ").join(terms)
