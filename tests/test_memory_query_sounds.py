"""Questions answered from happenings: the audio event log merged with the episodes' sounds,
sounds split by the detector counted once, sounds heard but not captured cited as sounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memory.episodes import summarize
from memory.query import QueryEngine, answer_to_json
from memory.store import EpisodeStore
from memory.types import Answer, Episode, Query, SoundRecord
from tests.test_memory_query import EVIDENCE_KEYS, assert_grounded

SRC = "/media/kitchen.mp4"


def episode(t0: float, t1: float, *sounds: tuple[str, float, float, float]) -> Episode:
    heard = tuple(SoundRecord(*s) for s in sounds)
    labels = tuple(dict.fromkeys(s.label for s in heard))
    return Episode(source=SRC, t_start=t0, t_end=t1, labels=labels,
                   summary=summarize(labels, heard, ()), sounds=heard)  # fmt: skip


# (episode span, its sounds): as the file pipeline stores them, every sound also in the log
EPISODES = [
    ((4.5, 8.0), [("glass_breaking", 0.99, 5.0, 5.6)]),  # 1
    # a flush cut in two by the gate, its tail heard as a can: one happening, a flush
    ((20.5, 27.0), [("toilet_flush", 0.99, 21.0, 23.2), ("can_opening", 0.98, 23.5, 26.9)]),  # 2
    # an alarm's five beeps: one happening
    ((40.5, 46.0), [("clock_alarm", 0.99, t, t + 0.4) for t in (41.0, 42.0, 43.0, 44.0, 45.0)]),  # 3
    ((60.5, 63.0), [("glass_breaking", 0.97, 61.0, 61.7)]),  # 4
    # the gate's next window opens on the rest of the same knock (1.2 s after the first part)
    ((70.5, 71.5), [("door_wood_knock", 0.7, 71.0, 71.2)]),  # 5
    ((71.9, 75.0), [("can_opening", 0.6, 72.4, 74.0)]),  # 6
]
LOG_ONLY = [("dog", 0.8, 30.0, 30.6), ("dog", 0.9, 30.9, 31.5), ("dog", 0.85, 50.0, 50.5)]


@pytest.fixture
def store(tmp_path: Path):
    with EpisodeStore(tmp_path / "s") as s:
        for (t0, t1), sounds in EPISODES:
            s.add(episode(t0, t1, *sounds), [np.zeros((8, 8, 3), np.uint8)])
            s.add_sounds(SRC, [SoundRecord(*x) for x in sounds])  # logged without episode id
        s.add_sounds(SRC, [SoundRecord(*x) for x in LOG_ONLY])
        yield s


def ask(store: EpisodeStore, text: str, **kw) -> Answer:
    answer = QueryEngine(store).answer(Query(text=text, **kw))
    assert_grounded(answer)
    return answer


def cited(answer: Answer) -> list[tuple[int | None, float]]:
    """(episode id or None, stated span start) of each evidence item but the anchor."""
    return [(h.episode.episode_id, h.episode.t_start) for h in answer.evidence if h.score > 0]


def test_sound_heard_but_not_captured(store: EpisodeStore) -> None:
    a = ask(store, "when did the dog bark?")
    assert a.answered and cited(a) == [(None, 30.0), (None, 50.0)]  # 30.0 and 30.9: one bark
    assert a.answer.startswith("dog at 0:30.0 (heard on kitchen.mp4, not captured)")
    doc = answer_to_json(a)
    ev = doc["evidence"][0]
    assert set(ev) == EVIDENCE_KEYS and ev["episode_id"] is None and ev["keyframes"] == []
    assert (ev["t_start"], ev["labels"], ev["score"]) == (30.0, ["dog"], 0.8)
    a = ask(store, "how many times did the dog bark before 0:40?")
    assert "dog: 1 time" in a.answer and cited(a) == [(None, 30.0)]
    assert ask(store, "when did the dog bark for the last time").answer.startswith("dog at 0:50.0")


def test_log_and_episode_copies_of_a_sound_are_one(store: EpisodeStore) -> None:
    a = ask(store, "when did the glass break?")
    assert cited(a) == [(1, 4.5), (4, 60.5)]  # the episodes, not their logged copies again
    assert "glass_breaking at 0:05.0 (episode 1" in a.answer
    assert "glass_breaking: 2 times" in ask(store, "how many times did the glass break?").answer


def test_a_split_sound_is_one_happening_named_by_its_onset(store: EpisodeStore) -> None:
    assert "toilet_flush: 1 time" in ask(store, "how many times did the toilet flush").answer
    assert "clock_alarm: 1 time" in ask(store, "how many times did the alarm ring").answer
    assert "door_wood_knock: 1 time" in ask(store, "how many times did someone knock").answer
    # the flush's tail and the knock's rest were heard as cans: no can was opened
    assert not ask(store, "when was a can opened?").answered
    a = ask(store, "what happened after the knock?")  # the knock's second window is not "after"
    assert a.answer.startswith("Nothing is remembered after door_wood_knock at 1:11.0")


def test_before_and_after_a_sound(store: EpisodeStore) -> None:
    a = ask(store, "what happened after the dog barked for the first time?")
    assert cited(a)[0] == (3, 40.5)  # the next captured happening after the bark (a sound only)
    assert a.answer.startswith("After dog at 0:30.0 (heard on kitchen.mp4, not captured): ")
    assert a.evidence[-1].score == 0 and a.evidence[-1].episode.episode_id is None  # the anchor
    a = ask(store, "when did the dog bark after the alarm rang?")
    assert a.answered and cited(a) == [(None, 50.0)]
    a = ask(store, "when did the glass break before the dog barked?")
    assert cited(a) == [(1, 4.5)]


def test_wall_clock_questions_do_not_use_the_log(store: EpisodeStore) -> None:
    assert not ask(store, "did the dog bark in the last hour?").answered  # a file: no wall time


@pytest.mark.parametrize("page", [1, 2, 64])
def test_first_and_last_page_through_episodes(tmp_path: Path, monkeypatch, page: int) -> None:
    """Without log sounds, a first/last happening is found a page of episodes at a time; the
    answers are those of the whole list."""
    import memory.happenings

    monkeypatch.setattr(memory.happenings, "PAGE", page)
    with EpisodeStore(tmp_path / "s") as s:
        for (t0, t1), sounds in EPISODES:
            s.add(episode(t0, t1, *sounds), [np.zeros((8, 8, 3), np.uint8)])
        assert cited(ask(s, "when did the glass break for the last time?")) == [(4, 60.5)]
        assert cited(ask(s, "when did the glass break for the first time?")) == [(1, 4.5)]
        assert not ask(s, "when was a can opened for the last time?").answered  # continuations
        a = ask(s, "when did the glass break after the alarm rang?")
        assert cited(a) == [(4, 60.5)]
        a = ask(s, "what happened after the toilet flushed?")  # its can-tail is not "after"
        assert cited(a)[0] == (3, 40.5)
