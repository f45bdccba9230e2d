"""QueryEngine over live (wall clock) and file episodes, and over object identities."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from memory.episodes import summarize
from memory.query import QueryEngine
from memory.store import EpisodeStore
from memory.types import Answer, Episode, ObjectRecord, Query, SoundRecord
from tests.test_memory_query import assert_grounded

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=timezone.utc)
T = NOW.timestamp()
MIDNIGHT = datetime(2026, 11, 26, tzinfo=timezone.utc).timestamp()
LIVE, FILE = "rtsp://cam/live", "/media/kitchen.mp4"
# label, source, media t_start, wall_start (None for the file)
EPISODES = [
    ("clock_alarm", LIVE, 100.0, T - 3 * 86400),  # 1: three days ago
    ("door_wood_knock", LIVE, 200.0, MIDNIGHT - 86400 + 14 * 3600),  # 2: yesterday 14:00
    ("dog", LIVE, 300.0, MIDNIGHT + 14 * 3600 + 5 * 60 + 10),  # 3: today 14:05:10
    ("glass_breaking", LIVE, 400.0, T - 600),  # 4: 10 minutes ago
    ("glass_breaking", FILE, 845.2, None),  # 5: 14:05 into the file
    ("can_opening", FILE, 10.0, None),  # 6
]


def episode(label: str, source: str, t0: float, wall: float | None, objects=()) -> Episode:
    sounds = (SoundRecord(label, 0.9, t0 + 0.1, t0 + 0.6),)
    return Episode(source=source, t_start=t0, t_end=t0 + 2.0, labels=(label,),
                   summary=summarize((label,), sounds, objects), sounds=sounds, objects=objects,
                   wall_start=wall)  # fmt: skip


@pytest.fixture
def store(tmp_path: Path):
    with EpisodeStore(tmp_path / "live") as s:
        for label, source, t0, wall in EPISODES:
            s.add(episode(label, source, t0, wall))
        yield s


def ask(store: EpisodeStore, text: str, **kw) -> Answer:
    answer = QueryEngine(store).answer(Query(text=text, **kw), now=NOW)
    assert_grounded(answer)
    return answer


def ids(answer: Answer) -> list[int]:
    return [h.episode.episode_id for h in answer.evidence]


def test_relative_times_resolve_against_wall_time(store: EpisodeStore) -> None:
    assert ids(ask(store, "what happened yesterday?")) == [2]
    assert ids(ask(store, "what happened 10 minutes ago")) == [4]
    a = ask(store, "did the dog bark in the last hour")
    assert a.answered and ids(a) == [3] and "2026-11-26 14:05:10 UTC" in a.answer
    assert not ask(store, "did the dog bark yesterday").answered
    assert ids(ask(store, "how many times did the glass break today")) == [4]  # files have no day
    assert ids(ask(store, "what happened since 2026-11-25")) == [2, 3, 4]


def test_clock_time_reads_per_source_kind(store: EpisodeStore) -> None:
    assert sorted(ids(ask(store, "what happened at 14:05"))) == [3, 5]  # live 14:05 and media 14:05
    assert ids(ask(store, "what happened at 14:05", source=FILE)) == [5]
    assert ids(ask(store, "what happened at 14:05", source=LIVE)) == [3]
    assert ids(ask(store, "what happened at 2pm yesterday")) == [2]


def test_before_after_stays_on_one_clock(store: EpisodeStore) -> None:
    a = ask(store, "what happened after the dog barked?")
    assert ids(a) == [4, 3]  # the live glass, then the anchor; the file's clock is not comparable
    assert ids(ask(store, "when did the glass break for the last time")) == [4]
    assert ids(ask(store, "when did the glass break, every time")) == [5, 4]


def add_identities(store: EpisodeStore) -> dict[str, int]:
    """Two live episodes seeing the same two objects (the store re-identifies them by
    descriptor, memory/objects.py); the user names one of them "keys"."""
    rng = np.random.default_rng(3)
    look = {t: (x / np.linalg.norm(x)).astype(np.float32) for t, x in
            ((1, rng.standard_normal(16)), (2, rng.standard_normal(16)))}  # fmt: skip
    mug = ObjectRecord(2, "object", 501.0, 502.5, 4, (10.0, 20.0, 50.0, 80.0), descriptor=look[2])
    other = ObjectRecord(1, "object", 500.0, 500.5, 2, (0.0, 0.0, 5.0, 5.0), descriptor=look[1])
    seen = {}
    for wall in (T - 7200, T - 300):
        stored = store.add(episode("footsteps", LIVE, 500.0, wall, objects=(other, mug)))
        seen[wall] = stored.episode_id
    (keys,) = [x.object_id for x in store.sightings(seen[T - 300]) if x.track_id == 2]
    store.name_object(keys, "keys")
    return {"first": seen[T - 7200], "last": seen[T - 300], "keys": keys}


def test_object_last_seen_with_identities(store: EpisodeStore) -> None:
    seen = add_identities(store)
    assert [o.n_sightings for o in store.objects()] == [2, 2]  # one identity per object
    for text in (f"where was object {seen['keys']} last seen?", "when did you last see my keys",
                 "where are the keys", "when did you last see the object named keys"):  # fmt: skip
        a = ask(store, text)
        assert a.answered and ids(a) == [seen["last"]], text
        assert "was last seen 8:21.0–8:22.5 at box [10, 20, 50, 80] px" in a.answer, a.answer
    n = seen["keys"]
    assert ids(ask(store, f"how many times was object {n} seen")) == [seen["first"], seen["last"]]
    assert not ask(store, "where was object 99 last seen").answered
    assert ids(ask(store, f"where was object {n} seen yesterday")) == []


def test_named_object_with_several_words(store: EpisodeStore) -> None:
    seen = add_identities(store)
    store.name_object(seen["keys"], "My Red Keys")
    for text in ("where are my red keys?", "when did you last see the red keys"):
        a = ask(store, text)
        assert a.answered and ids(a) == [seen["last"]], text
        assert a.answer.startswith("My Red Keys (object) was last seen"), a.answer
    assert not ask(store, "where is my wallet?").answered
    store.name_object(seen["keys"], None)
    assert not ask(store, "where are my red keys?").answered
