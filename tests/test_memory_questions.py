"""Question parsing: table-driven over many phrasings, malformed questions, structured queries."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from memory.questions import (
    Intent,
    QuestionError,
    TimeExprError,
    parse_question,
    question_from_dict,
)

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=timezone.utc)  # a Thursday, 15:00 UTC
T = NOW.timestamp()
DAY = 86400.0
MIDNIGHT = datetime(2026, 11, 26, tzinfo=timezone.utc).timestamp()

# text -> expected fields (only those given are checked)
CASES: list[tuple[str, dict]] = [
    ("When did the glass break?", {"intent": Intent.WHEN, "keywords": ("glass", "break"), "which": None}),
    ("when was the glass broken", {"intent": Intent.WHEN, "keywords": ("glass", "break")}),
    ("At what time did someone knock on the door", {"intent": Intent.WHEN, "keywords": ("knock", "door")}),
    ("when did the dog bark for the first time?", {"intent": Intent.WHEN, "which": "first", "keywords": ("dog", "bark")}),
    ("When was the earliest knock", {"which": "first"}),
    ("when did the glass break most recently", {"which": "last"}),
    ("when was the last knock on the door?", {"intent": Intent.WHEN, "which": "last"}),
    ("when did the dog bark, every time", {"which": "all", "keywords": ("dog", "bark")}),
    ("list all the times the door creaked", {"which": "all"}),
    ("did the glass break?", {"intent": Intent.YESNO, "keywords": ("glass", "break")}),
    ("Was there a knock?", {"intent": Intent.YESNO, "keywords": ("knock",)}),
    ("How many times did someone knock?", {"intent": Intent.COUNT, "keywords": ("knock",)}),
    ("how often did the baby cry", {"intent": Intent.COUNT, "keywords": ("baby", "cry")}),
    ("number of door knocks", {"intent": Intent.COUNT, "keywords": ("door", "knock")}),
    ("how long did the vacuum cleaner run?", {"intent": Intent.DURATION, "keywords": ("vacuum", "cleaner", "run")}),
    ("how long did the glass breaking last", {"intent": Intent.DURATION, "which": None}),
    ("What happened after the glass broke?", {"intent": Intent.WHAT, "relation": "after", "anchor": ("glass", "break"), "keywords": ()}),
    ("what happened before the door knock", {"relation": "before", "anchor": ("door", "knock")}),
    ("what happened after the first knock", {"relation": "after", "anchor": ("knock",), "anchor_which": "first"}),
    ("what did you hear since the alarm", {"relation": "after", "anchor": ("alarm",)}),
    ("when did someone knock after the glass broke", {"intent": Intent.WHEN, "keywords": ("knock",), "relation": "after"}),
    ("what happened after episode 12", {"relation": "after", "anchor_episode": 12, "anchor": ()}),
    ("what happened after all", {"relation": None, "keywords": ()}),
    ("what happened between 0:04 and 0:13?", {"span": ("clock", 4.0, 14.0)}),
    ("what happened between 10 s and 20 s", {"span": ("media", 10.0, 21.0)}),
    ("what happened from 1 minute to 2 minutes", {"span": ("media", 60.0, 180.0)}),
    ("what happened between 0:30 and 0:10", {"span": ("clock", 10.0, 31.0)}),
    ("what happened after 0:25", {"relation": "after", "span": ("clock", 25.0, None)}),
    ("how many knocks before 0:20", {"intent": Intent.COUNT, "span": ("clock", None, 20.0)}),
    ("what happened after 90 seconds", {"span": ("media", 90.0, None)}),
    ("what happened at 0:12.5", {"span": ("media", 12.5, 12.6)}),
    ("what happened at 75:30", {"span": ("media", 4530.0, 4531.0)}),
    ("what happened yesterday", {"span": ("wall", MIDNIGHT - DAY, MIDNIGHT)}),
    ("what happened today", {"span": ("wall", MIDNIGHT, MIDNIGHT + DAY)}),
    ("what happened this morning?", {"span": ("wall", MIDNIGHT, MIDNIGHT + DAY / 2)}),
    ("anything last night", {"span": ("wall", MIDNIGHT - 6 * 3600, MIDNIGHT + 6 * 3600)}),
    ("what happened 10 minutes ago", {"span": ("wall", T - 660, T - 540)}),
    ("what happened an hour ago", {"span": ("wall", T - 7200, T)}),
    ("did the dog bark in the last hour", {"intent": Intent.YESNO, "span": ("wall", T - 3600, T)}),
    ("how many knocks in the past 10 minutes", {"intent": Intent.COUNT, "span": ("wall", T - 600, T)}),
    ("what happened at 2pm", {"span": ("wall", MIDNIGHT + 14 * 3600, MIDNIGHT + 15 * 3600)}),
    ("what happened at 4 p.m.", {"span": ("wall", MIDNIGHT - DAY + 16 * 3600, MIDNIGHT - DAY + 17 * 3600)}),
    ("what happened yesterday at 2pm", {"span": ("wall", MIDNIGHT - DAY + 14 * 3600, MIDNIGHT - DAY + 15 * 3600)}),
    ("what happened at noon", {"span": ("wall", MIDNIGHT + 12 * 3600, MIDNIGHT + 12 * 3600 + 60)}),
    ("what happened since 2026-11-25", {"relation": "after", "span": ("wall", MIDNIGHT - DAY, None)}),
    ("what happened on 2026-11-25T09:30", {"span": ("wall", MIDNIGHT - DAY + 9.5 * 3600, MIDNIGHT - DAY + 9.5 * 3600 + 60)}),
    ("when was the glass broken yesterday after 14:00", {"keywords": ("glass", "break")}),
    ("where was object 3 last seen?", {"intent": Intent.SEEN, "object_id": 3, "which": "last", "keywords": ()}),
    ("when did you last see object #7", {"intent": Intent.SEEN, "object_id": 7}),
    ("where is the red mug", {"intent": Intent.SEEN, "keywords": ("red", "mug"), "which": "last"}),
    ("when was the cat last seen", {"intent": Intent.SEEN, "keywords": ("cat",)}),
    ("when did you last see the object named keys", {"intent": Intent.SEEN, "object_name": "keys"}),
    ("how many times was object 2 seen", {"intent": Intent.COUNT, "object_id": 2}),
    ("anything like this image?", {"intent": Intent.SIMILAR, "example": "image", "keywords": ()}),
    ("is there anything that sounds like this clip", {"intent": Intent.SIMILAR, "example": "sound"}),
    ("find episodes similar to this", {"intent": Intent.SIMILAR, "example": "any"}),
    ("anything like episode 12?", {"intent": Intent.SIMILAR, "similar_to": 12}),
    ("what happened", {"intent": Intent.WHAT, "keywords": (), "span": None}),
    ("WHEN DID THE GLASS BREAK", {"intent": Intent.WHEN, "keywords": ("glass", "break")}),
    ('"glass" OR (', {"keywords": ("glass",)}),
    ("'; DROP TABLE episodes; --", {"keywords": ("drop", "table", "episodes")}),
    ("when did \x00 happen", {"intent": Intent.WHEN, "keywords": ()}),
    ("", {"intent": Intent.WHAT, "keywords": ()}),
]


def check(q, expected: dict) -> None:
    for field, want in expected.items():
        got = getattr(q, field)
        if field == "span":
            got = None if got is None else (got.kind, got.lo, got.hi)
            if want is not None and got is not None:
                assert got[0] == want[0], (q, want)
                for a, b in zip(got[1:], want[1:]):
                    assert (a is None and b is None) or a == pytest.approx(b), (q, want)
                continue
        assert got == want, f"{field}: {got!r} != {want!r} in {q}"


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0][:40] for c in CASES])
def test_phrasings(text: str, expected: dict) -> None:
    check(parse_question(text, now=NOW), expected)


def test_clock_keeps_both_readings() -> None:
    span = parse_question("what happened at 14:05", now=NOW).span
    assert (span.kind, span.lo, span.hi) == ("clock", 845.0, 846.0)
    assert span.wall_lo == MIDNIGHT + 14 * 3600 + 300  # today, 14:05 has passed at 15:00
    span = parse_question("what happened at 16:30", now=NOW).span
    assert span.wall_lo == MIDNIGHT - DAY + 16.5 * 3600  # not yet today: yesterday's 16:30
    assert span.resolve(live=True).kind == "wall" and span.resolve(live=False).lo == 990.0


def test_local_time_zone_of_now() -> None:
    tz = timezone(timedelta(hours=2))
    q = parse_question("what happened yesterday", now=datetime(2026, 11, 26, 1, 0, tzinfo=tz))
    assert q.span.lo == datetime(2026, 11, 25, tzinfo=tz).timestamp()


MALFORMED = [
    ("what happened between 1 and", QuestionError, "needs two times"),
    ("between 0:10", QuestionError, "needs two times"),
    ("what happened at 25:99", TimeExprError, "below 60"),
    ("what happened at 13pm", TimeExprError, "1 to 12"),
    ("what happened between 90 s and yesterday", QuestionError, "mixes"),
    ("what happened on 2026-13-45", TimeExprError, "ISO 8601"),
    ("x" * 2001, QuestionError, "too long"),
]


@pytest.mark.parametrize(("text", "error", "message"), MALFORMED, ids=[m[0][:30] for m in MALFORMED])
def test_malformed_questions_raise_clear_errors(text: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        parse_question(text, now=NOW)


STRUCTURED = [
    ({"intent": "when", "what": "glass breaking", "which": "last"},
     {"intent": Intent.WHEN, "keywords": ("glass", "breaking"), "which": "last"}),
    ({"intent": "count", "labels": ["door_wood_knock"], "since": 12.5},
     {"intent": Intent.COUNT, "labels": ("door_wood_knock",), "span": ("media", 12.5, None)}),
    ({"intent": "what", "after": {"episode": 4}}, {"relation": "after", "anchor_episode": 4}),
    ({"after": {"what": "knock", "which": "first"}}, {"relation": "after", "anchor": ("knock",), "anchor_which": "first"}),
    ({"intent": "seen", "object": 3}, {"intent": Intent.SEEN, "object_id": 3}),
    ({"intent": "seen", "object": "keys"}, {"object_name": "keys", "object_id": None}),
    ({"like_episode": 9, "intent": "similar"}, {"intent": Intent.SIMILAR, "similar_to": 9}),
    ({"since": "yesterday", "until": "2026-11-26T12:00:00+00:00"},
     {"span": ("wall", MIDNIGHT - DAY, MIDNIGHT + 12 * 3600)}),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "expected"), STRUCTURED)
def test_structured_queries(doc: dict, expected: dict) -> None:
    check(question_from_dict(doc, now=NOW), expected)


BAD_STRUCTURED = [
    ([], "JSON object"),
    ({"intnet": "when"}, "unknown structured query keys"),
    ({"intent": "why"}, "intent must be one of"),
    ({"which": "middle"}, "which must be"),
    ({"labels": "dog"}, "labels must be a list"),
    ({"what": 3}, "what must be a string"),
    ({"since": [1]}, "since: give seconds"),
    ({"after": {"episode": "x"}}, "episode must be an episode id"),
    ({"after": {"what": "the"}}, "must name something"),
    ({"after": {"episode": 1}, "before": {"episode": 2}}, "either 'after' or 'before'"),
    ({"object": True}, "object must be"),
    ({"like_episode": 1.5}, "like_episode must be"),
]


@pytest.mark.parametrize(("doc", "message"), BAD_STRUCTURED)
def test_bad_structured_queries(doc, message: str) -> None:
    with pytest.raises(QuestionError, match=message):
        question_from_dict(doc, now=NOW)
