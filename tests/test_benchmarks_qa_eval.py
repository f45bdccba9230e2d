"""The QA benchmark: scoring on hand-made answers, question templates, and its --quick run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.qa_eval import NOUN, VERB, diagnose, in_memory, questions, score
from benchmarks.soundscapes import Soundscape, TruthEvent
from memory.questions import parse_question
from memory.retrieval import concept
from memory.types import Answer, Episode, EpisodeHit, SoundRecord
from models.audio.esc50 import DEFAULT_TRIGGERS
from tests.conftest import REPO, need, shared_data_dir


def ep(label: str, onset: float, episode_id: int) -> Episode:
    return Episode(source="s", t_start=onset - 0.5, t_end=onset + 2, labels=(label,), summary="",
                   sounds=(SoundRecord(label, 0.9, onset, onset + 1),), episode_id=episode_id)  # fmt: skip


def event(label: str, t: float, kind: str = "trigger") -> TruthEvent:
    return TruthEvent(t, t + 1, label, kind, 10.0, "c.flac", "src")


SC = Soundscape(samples=None, events=(event("glass_breaking", 5.0), event("dog", 9.0, "distractor"),
                                      event("clapping", 12.0), event("glass_breaking", 20.0)),
                background=(), seed=(0,), gain_db=0.0)  # fmt: skip


def test_templates_cover_every_trigger_class_and_parse() -> None:
    assert set(VERB) == set(NOUN) == set(DEFAULT_TRIGGERS)
    for label in DEFAULT_TRIGGERS:  # each phrasing names its label's words (or sound words)
        words = set(label.split("_"))
        for text in (f"when did {VERB[label]}?", f"what happened after {NOUN[label]}?"):
            q = parse_question(text)
            found = {a for w in (*q.keywords, *q.anchor) for a in concept(w)}
            assert any(any(a.startswith(w[:4]) or w.startswith(a[:4]) for w in words) for a in found), text


def test_questions_and_truth() -> None:
    qs = {(q["type"], q["label"]): q for q in questions(SC)}
    assert qs[("when", "glass_breaking")]["truth"] == [5.0, 20.0]
    assert qs[("last", "glass_breaking")]["truth"] == 20.0
    assert qs[("count", "glass_breaking")]["truth"] == 2
    assert qs[("after", "clapping")]["truth"] == 20.0  # the next trigger event, not the dog
    assert qs[("after", "glass_breaking")]["truth"] is None  # the last event
    assert ("when", "dog") not in qs and sum(q["type"] == "absent" for q in qs.values()) == 4


def test_scoring() -> None:
    qs = {(q["type"], q["label"]): q for q in questions(SC)}
    both = Answer(True, "...", (EpisodeHit(ep("glass_breaking", 5.6, 1), 1.0),
                                EpisodeHit(ep("glass_breaking", 20.9, 3), 1.0)))  # fmt: skip
    assert score(qs[("when", "glass_breaking")], both, set())["correct"]
    late = Answer(True, "...", (EpisodeHit(ep("glass_breaking", 5.0, 1), 1.0),
                                EpisodeHit(ep("glass_breaking", 21.2, 3), 1.0)))  # fmt: skip
    assert not score(qs[("when", "glass_breaking")], late, set())["correct"]  # 1.2 s off
    after = Answer(True, "After ...", (EpisodeHit(ep("glass_breaking", 20.3, 3), 1.0),
                                       EpisodeHit(ep("clapping", 12.1, 2), 0.0)))  # fmt: skip
    assert score(qs[("after", "clapping")], after, set())["correct"]
    count = Answer(True, "glass_breaking: 2 times: ...", both.evidence)
    assert score(qs[("count", "glass_breaking")], count, set())["correct"]
    absent = next(q for q in qs.values() if q["type"] == "absent")
    made_up = Answer(True, "yes", (EpisodeHit(ep("clapping", 12.1, 2), 1.0),))
    got = score(absent, made_up, {"clapping"})
    assert not got["correct"] and got["fabricated"] and not got["misheard"]
    got = score(absent, made_up, {absent["label"]})
    assert not got["correct"] and not got["fabricated"] and got["misheard"]
    assert score(absent, Answer(False, "Nothing", ()), set())["correct"]
    stated = Answer(True, "glass_breaking at 0:20.4 (episode 3: 0:19.0–0:22.0 on s)",
                    (EpisodeHit(ep("glass_breaking", 25.0, 3), 1.0),))  # fmt: skip
    assert score(qs[("last", "glass_breaking")], stated, set())["correct"]  # the sentence's time


def test_memory_attribution_and_diagnosis() -> None:
    from memory.reader import LoggedSound

    q = next(q for q in questions(SC) if (q["type"], q["label"]) == ("when", "glass_breaking"))
    eps = [ep("glass_breaking", 5.4, 1), ep("clapping", 20.0, 2)]  # the second glass was missed
    heard = [LoggedSound(1, "s", SoundRecord("glass_breaking", 0.9, 5.4, 6.0)),
             LoggedSound(2, "s", SoundRecord("glass_breaking", 0.9, 20.5, 21.0)),
             LoggedSound(3, "s", SoundRecord("glass_breaking", 0.5, 40.0, 41.0))]  # fmt: skip
    got = in_memory(q, SC, eps, heard)
    assert got == {"events": 2, "in_episodes": 1, "in_sound_log": 2, "spurious_sounds": 1}
    row = {**score(q, Answer(False, "Nothing in memory matches 'x'.", ()), set()), "scenario": "a.mp4",
           "memory": got}  # fmt: skip
    text = diagnose({"questions": [row]})
    assert text.startswith("BAD a.mp4") and "eps 1/2 log 2/2 spur 1" in text and "[5.0, 20.0]" in text
    assert diagnose({"questions": [{**row, "correct": True}]}) == ""


@pytest.mark.slow
def test_quick_run(tmp_path) -> None:
    need(shared_data_dir() / "esc50")
    need(shared_data_dir() / "davis2016")
    out = tmp_path / "qa.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "qa_eval.py"), "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert "target >= 90%" in r.stdout and "HTTP /v1/query at 5000 episodes" in r.stdout
    qa, http = doc["qa"], doc["http"]
    assert qa["ingest"]["episodes_total"] >= 1 and len(qa["questions"]) >= 8
    assert set(qa["per_type"]) == {"when", "last", "count", "after", "absent"}
    assert qa["fabricated"] == 0  # the engine never answers from nothing
    assert http["requests"] == 120 and 0 < http["p50_ms"] <= http["p99_ms"]
