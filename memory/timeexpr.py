"""Time expressions in questions: media times, clock times, days, "ago", ISO 8601.

``parse_time_expr("10 minutes ago", now)`` → a wall-clock :class:`TimeSpan` around that moment.
Three kinds of span:

- ``media``: seconds of media time ("90 s", "2 minutes", "0:25.5", "after 1:02:03");
- ``wall``: UTC epoch seconds ("yesterday", "10 minutes ago", "at 2pm", "2026-11-26T14:05");
- ``clock``: a bare ``H:MM`` / ``H:MM:SS`` ("at 14:05") that reads as media time for a file and
  as a time of day for a live source; both readings are kept and the query engine picks one.

Day words and times of day are in the time zone of ``now`` (the server's local zone by default).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from memory.errors import ParameterError

logger = logging.getLogger(__name__)

UNIT_S = {"s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
          "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
          "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
          "day": 86400.0, "days": 86400.0, "week": 604800.0, "weeks": 604800.0}  # fmt: skip
NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                "seven": 7, "eight": 8, "nine": 9, "ten": 10, "fifteen": 15, "twenty": 20,
                "thirty": 30, "forty": 40, "fifty": 50, "few": 3, "couple of": 2}  # fmt: skip
DAY_PARTS = {  # (start hour, end hour) relative to the day named; "last night" starts yesterday
    "morning": (0, 12), "afternoon": (12, 18), "evening": (18, 24), "night": (18, 30),
}  # fmt: skip

_NUM = r"(?:\d+(?:\.\d+)?|an?|one|two|three|four|five|six|seven|eight|nine|ten|fifteen|twenty|" \
       r"thirty|forty|fifty|few|couple of)"  # fmt: skip
_UNIT = r"(?:seconds?|secs?|minutes?|mins?|hours?|hrs?|days?|weeks?)"
_MEDIA_UNIT = r"(?:hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)"
_DAY = r"(?:yesterday|today|tonight|this (?:morning|afternoon|evening)|last night)"
_AMPM = r"(?:\d{1,2}(?::\d{2})?\s*(?:am|pm)|noon|midnight)"
_COLON = r"\d+(?::\d{1,2}){1,2}(?:\.\d+)?"
_ISO = r"\d{4}-\d{2}-\d{2}(?:[t ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:z|[+-]\d{2}:?\d{2})?)?"
_CLOCKISH = rf"(?:{_AMPM}|{_COLON})"
# one time expression, longest alternatives first
TIME_EXPR = (
    rf"(?:{_ISO}|{_NUM}\s+{_UNIT}\s+ago|{_DAY}(?:\s+(?:at|around)\s+{_CLOCKISH})?"
    rf"|{_AMPM}|{_COLON}|\d+(?:\.\d+)?\s*{_MEDIA_UNIT}?(?![\w:]))"
)
_LAST_N = re.compile(
    rf"\b(?:in|within|during|over) the (?:last|past)\s+(?:({_NUM})\s+)?({_UNIT})\b"
)


class QuestionError(ParameterError):
    """A question or structured query cannot be understood as given; the message says why."""


class TimeExprError(QuestionError):
    """A time in a question cannot be read (``25:99``, ``13pm``); the message quotes it."""


@dataclass(frozen=True, slots=True)
class TimeSpan:
    """A time range named in a question; ``None`` ends are open.

    kind "media": ``lo``/``hi`` in media seconds. kind "wall": UTC epoch seconds. kind "clock":
    ``lo``/``hi`` read as media seconds, ``wall_lo``/``wall_hi`` as a time of day.
    """

    kind: Literal["media", "wall", "clock"]
    lo: float | None
    hi: float | None
    wall_lo: float | None = None
    wall_hi: float | None = None

    def resolve(self, live: bool) -> TimeSpan:
        """A clock span as wall time (``live``) or media time; other kinds unchanged."""
        if self.kind != "clock":
            return self
        if live:
            return TimeSpan("wall", self.wall_lo, self.wall_hi)
        return TimeSpan("media", self.lo, self.hi)


def _number(word: str) -> float:
    return float(NUMBER_WORDS[word]) if word in NUMBER_WORDS else float(word)


def parse_seconds(value: str, unit: str | None = None) -> float:
    """``"1:02:03.5"`` → 3723.5, ``"90"`` → 90.0, ``("2", "min")`` → 120.0.

    Raises TimeExprError when a minutes or seconds field is 60 or more.
    """
    parts = value.split(":")
    if any(float(p) >= 60 for p in parts[1:]):
        raise TimeExprError(f"bad time {value!r}: minutes and seconds must be below 60")
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60.0 + float(p)
    return seconds * (UNIT_S.get(unit, 1.0) if unit else 1.0)


def _at(day: datetime, hour: int, minute: int = 0, second: float = 0.0) -> datetime:
    base = day.replace(hour=0, minute=0, second=0, microsecond=0)
    return base + timedelta(hours=hour, minutes=minute, seconds=second)


def _time_of_day(text: str) -> tuple[int, int, float, float]:
    """``"14:05"`` / ``"2pm"`` / ``"noon"`` → (hour, minute, second, precision_s)."""
    if text == "noon":
        return 12, 0, 0.0, 60.0
    if text == "midnight":
        return 0, 0, 0.0, 60.0
    m = re.fullmatch(r"(\d{1,2})(?::(\d{2}))?(?::(\d{2}(?:\.\d+)?))?\s*(am|pm)?", text)
    if m is None:
        raise TimeExprError(f"bad time of day {text!r}: use e.g. 14:05, 2pm or 2:30 pm")
    hour, minute = int(m.group(1)), int(m.group(2) or 0)
    second = float(m.group(3) or 0.0)
    if m.group(4):
        if not 1 <= hour <= 12:
            raise TimeExprError(f"bad time of day {text!r}: with am/pm the hour is 1 to 12")
        hour = hour % 12 + (12 if m.group(4) == "pm" else 0)
    if hour > 23 or minute > 59 or second >= 60:
        raise TimeExprError(f"bad time of day {text!r}: hours 0-23, minutes and seconds 0-59")
    precision = 1.0 if m.group(3) else (60.0 if m.group(2) or not m.group(4) else 3600.0)
    return hour, minute, second, precision


def _clock_wall(text: str, now: datetime, day: datetime | None) -> tuple[float, float]:
    """Wall range of a time of day: on ``day``, else its latest occurrence not after ``now``."""
    hour, minute, second, precision = _time_of_day(text)
    when = _at(day or now, hour, minute, second)
    if day is None and when > now:
        when -= timedelta(days=1)
    return when.timestamp(), when.timestamp() + precision


def _day_range(word: str, now: datetime) -> tuple[datetime, datetime]:
    """``"yesterday"`` → (yesterday 00:00, today 00:00) in ``now``'s time zone, etc."""
    today = _at(now, 0)
    if word == "today":
        return today, today + timedelta(days=1)
    if word == "yesterday":
        return today - timedelta(days=1), today
    if word == "last night":
        a, b = DAY_PARTS["night"]
        return today - timedelta(days=1) + timedelta(hours=a), today + timedelta(hours=b - 24)
    part = "night" if word == "tonight" else word.split()[-1]
    a, b = DAY_PARTS[part]
    return today + timedelta(hours=a), today + timedelta(hours=b)


def parse_time_expr(text: str, now: datetime) -> TimeSpan:
    """One time expression (lower case, as matched by :data:`TIME_EXPR`) → its span.

    A point in time becomes a span as wide as its precision ("at 14:05": one minute; "10 minutes
    ago": ± one minute; "0:25": one second).

    Parameters
    ----------
    text : str
        E.g. ``"yesterday at 2pm"``, ``"10 minutes ago"``, ``"0:25"``, ``"90 s"``.
    now : datetime
        Time-zone aware "now" against which day words and "ago" resolve.
    """
    text = " ".join(text.split())
    if re.fullmatch(_ISO, text):
        return _iso_span(text, now)
    if m := re.fullmatch(rf"({_NUM})\s+({_UNIT})\s+ago", text):
        unit = UNIT_S[m.group(2)]
        t = now.timestamp() - _number(m.group(1)) * unit
        return TimeSpan("wall", t - unit, t + unit)
    if m := re.fullmatch(rf"({_DAY})(?:\s+(?:at|around)\s+({_CLOCKISH}))?", text):
        lo, hi = _day_range(m.group(1), now)
        if m.group(2):
            a, b = _clock_wall(m.group(2), now, lo)
            return TimeSpan("wall", a, b)
        return TimeSpan("wall", lo.timestamp(), hi.timestamp())
    if re.fullmatch(_AMPM, text):
        a, b = _clock_wall(text, now, None)
        return TimeSpan("wall", a, b)
    if re.fullmatch(_COLON, text):
        s = parse_seconds(text)
        if "." in text or text.count(":") > 2:
            return TimeSpan("media", s, s + 0.1)
        try:
            wall = _clock_wall(text, now, None)
        except TimeExprError:  # "75:30" is media time only (75 minutes into a file)
            return TimeSpan("media", s, s + 1.0)
        return TimeSpan("clock", s, s + 1.0, *wall)
    if m := re.fullmatch(rf"(\d+(?:\.\d+)?)\s*({_MEDIA_UNIT})?", text):
        s = parse_seconds(m.group(1), m.group(2))
        return TimeSpan("media", s, s + UNIT_S.get(m.group(2) or "s", 1.0))
    raise TimeExprError(f"cannot read the time {text!r}")


def _iso_span(text: str, now: datetime) -> TimeSpan:
    try:
        when = datetime.fromisoformat(text.upper().replace(" ", "T"))
    except ValueError:
        raise TimeExprError(
            f"bad date/time {text!r}: use ISO 8601, e.g. 2026-11-26T14:05"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=now.tzinfo)
    width = 86400.0 if len(text) == 10 else (60.0 if text.count(":") == 1 else 1.0)
    return TimeSpan("wall", when.timestamp(), when.timestamp() + width)


def last_n(text: str, now: datetime) -> tuple[TimeSpan, tuple[int, int]] | None:
    """``"... in the last 10 minutes"`` → (the wall span up to ``now``, match position)."""
    m = _LAST_N.search(text)
    if m is None:
        return None
    n = _number(m.group(1)) if m.group(1) else 1.0
    return TimeSpan("wall", now.timestamp() - n * UNIT_S[m.group(2)], now.timestamp()), m.span()


def intersect(a: TimeSpan | None, b: TimeSpan) -> TimeSpan:
    """The overlap of two spans of the same kind (``a`` may be None)."""
    if a is None:
        return b
    if a.kind != b.kind and "clock" in (a.kind, b.kind):  # the other one decides the reading
        a, b = a.resolve(live=b.kind == "wall"), b.resolve(live=a.kind == "wall")
    if a.kind != b.kind:
        raise TimeExprError("a question mixes media times (0:25) and wall times (yesterday); "
                            "use one kind")  # fmt: skip

    def lo(x: float | None, y: float | None) -> float | None:
        return y if x is None else (x if y is None else max(x, y))

    def hi(x: float | None, y: float | None) -> float | None:
        return y if x is None else (x if y is None else min(x, y))

    return TimeSpan(a.kind, lo(a.lo, b.lo), hi(a.hi, b.hi), lo(a.wall_lo, b.wall_lo),
                    hi(a.wall_hi, b.wall_hi))  # fmt: skip
