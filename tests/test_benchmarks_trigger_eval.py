"""Tests of the trigger benchmark: scoring on hand-made spans, soundscapes built from ESC-50."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from benchmarks.soundscapes import PEAK_MAX, TruthEvent, active_span, build_soundscape
from benchmarks.trigger_eval import (
    Emitted,
    classifier_metrics,
    format_table,
    merge,
    overlaps,
    passes,
    pool,
    roc_auc,
    run_policy,
    score,
)
from models.audio.esc50 import BACKGROUND, DEFAULT_TRIGGERS, DISTRACTORS, read_meta, split
from pipeline.types import CaptureWindow, TriggerEvent, TriggerState
from tests.conftest import need

START, UPDATE, END = TriggerState.START, TriggerState.UPDATE, TriggerState.END
SR = 16000


def msg(t_emit, tid, state, label, t0, t1, accepted=True):
    return Emitted(t_emit, TriggerEvent(tid, "eval", state, label, 0.9, t0, t0, t1, accepted))


def win(t0, t1, *labels):
    return CaptureWindow("eval", t0, t1, labels=labels)


# One minute: three trigger events, two distractors. By hand (tolerance 0.25 s):
TRUTH = [
    TruthEvent(10.0, 12.0, "door_wood_knock", "trigger", 10.0, "a.flac", "1"),  # T1
    TruthEvent(20.0, 24.0, "clapping", "trigger", 0.0, "b.flac", "2"),  # T2
    TruthEvent(30.0, 32.0, "dog", "distractor", 5.0, "c.flac", "3"),  # D1
    TruthEvent(39.5, 41.5, "footsteps", "trigger", 10.0, "d.flac", "4"),  # T3
    TruthEvent(50.0, 51.0, "cat", "distractor", 5.0, "e.flac", "5"),  # D2
]
EMITTED = [
    msg(5.0, 3, START, "sound", 4.5, 4.6),  # tr3: rejected, ignored everywhere
    msg(5.4, 3, END, "sound", 4.5, 5.0, accepted=False),
    msg(10.1, 6, START, "sound", 9.9, 10.0),  # tr6: rejected, overlaps T1: not its latency
    msg(10.24, 0, START, "sound", 10.0, 10.1),  # tr0 -> T1, START latency 0.24
    msg(10.5, 6, END, "sound", 9.9, 10.0, accepted=False),
    msg(10.72, 0, UPDATE, "door_wood_knock", 10.0, 10.6),  # UPDATE latency 0.72
    msg(12.48, 0, END, "door_wood_knock", 10.0, 12.0),  # right label
    msg(20.4, 1, START, "sound", 20.1, 20.2),  # tr1 -> T2, START latency 0.4
    msg(22.32, 1, END, "footsteps", 20.1, 21.9),  # no UPDATE: END latency 2.32; wrong label
    msg(30.24, 2, START, "sound", 30.0, 30.1),  # tr2: false (no trigger truth), on D1
    msg(31.92, 2, END, "can_opening", 30.0, 31.5),
    msg(35.24, 4, START, "sound", 35.0, 35.1),  # tr4: false, on nothing
    msg(35.9, 4, END, "sound", 35.0, 35.5),
    msg(38.24, 5, START, "sound", 38.0, 38.1),  # tr5: within tolerance of T3: not false
    msg(39.8, 5, END, "sound", 38.0, 39.4),
]
WINDOWS = [
    win(9.0, 13.0, "door_wood_knock"),
    win(12.0, 13.5, "door_wood_knock"),  # overlaps the previous: the union counts 4.5 s
    win(19.1, 22.0, "clapping"),  # over T2: clapping 2.0 s ...
    win(22.0, 22.9, "footsteps"),  # ... footsteps 0.9 s -> window label right
    win(29.0, 32.5, "can_opening"),
    win(34.0, 36.5, "sound"),
    win(37.0, 40.4, "sound"),  # covers 0.9 s of T3's 2.0 s: not recalled
]


@pytest.fixture(scope="module")
def scored():
    return score(TRUTH, WINDOWS, EMITTED, duration_s=60.0)


def test_recall_and_capture_fraction(scored):
    assert scored["recall"] == pytest.approx(2 / 3)  # T1 fully, T2 2.9/4, T3 0.9/2 < 1/2
    covered = [e["covered"] for e in scored["raw"]["events"]]
    assert covered == pytest.approx([1.0, 2.9 / 4, 0.9 / 2])
    assert scored["capture_fraction"] == pytest.approx((4.5 + 3.8 + 3.5 + 2.5 + 3.4) / 60)


def test_false_triggers_and_distractors(scored):
    assert scored["n_accepted"] == 5 and scored["n_rejected"] == 2
    assert scored["false_per_min"] == pytest.approx(2.0)  # tr2, tr4
    assert scored["false_distractor_per_min"] == pytest.approx(1.0)  # tr2
    assert scored["distractor_rate"] == pytest.approx(0.5)  # D1 yes, D2 no


def test_label_accuracy(scored):
    assert scored["label_accuracy"] == pytest.approx(0.5)  # T1 right, T2 "footsteps"
    assert scored["window_label_accuracy"] == pytest.approx(1.0)  # T2: clapping covers most
    assert scored["per_class"]["clapping"] == {"n": 1, "recall": 1.0, "label_accuracy": 0.0}
    assert scored["per_class"]["footsteps"]["label_accuracy"] is None  # not recalled


def test_latency(scored):
    start, upd = [0.24, 0.4], [0.72, 2.32]
    assert scored["start_latency_median_s"] == pytest.approx(np.median(start))
    assert scored["start_latency_p90_s"] == pytest.approx(0.24 + 0.9 * 0.16)
    assert scored["update_latency_median_s"] == pytest.approx(np.median(upd))
    assert scored["update_latency_p90_s"] == pytest.approx(0.72 + 0.9 * 1.6)
    assert scored["raw"]["events"][2]["start_latency_s"] is None  # T3 not recalled


def test_per_snr(scored):
    snr = scored["per_snr"]
    assert list(snr) == ["0", "5", "10"]
    assert snr["10"]["recall"] == 0.5 and snr["0"]["recall"] == 1.0
    assert snr["5"]["recall"] is None and snr["5"]["distractor_rate"] == 0.5


def test_latency_of_a_trigger_already_open_is_zero():
    truth = [TruthEvent(10.0, 11.0, "clapping", "trigger", 0.0, "a", "1")]
    emitted = [msg(9.5, 0, START, "sound", 9.0, 9.2), msg(12.0, 0, END, "clapping", 9.0, 11.0)]
    s = score(truth, [win(8.0, 12.0, "clapping")], emitted, duration_s=60.0)
    assert s["start_latency_median_s"] == 0.0 and s["update_latency_median_s"] == 2.0


def test_pool_sums_events_not_ratios(scored):
    empty = score([TRUTH[0]], [], [], duration_s=60.0)  # one missed event, nothing captured
    p = pool([scored, empty])
    assert p["recall"] == pytest.approx(2 / 4)
    assert p["false_per_min"] == pytest.approx(1.0)
    assert p["capture_fraction"] == pytest.approx(scored["capture_fraction"] / 2)
    assert "speed_x_rt" not in p  # no wall time recorded
    text = format_table(p, {"available": False, "error": "none"}, "header")
    assert "SNR 10 dB" in text and "capture fraction" in text


def test_helpers():
    assert merge([(3, 4), (0, 1), (0.5, 2), (5, 5)]) == [(0, 2), (3, 4)]
    assert overlaps(0, 1, 1.2, 2, tol=0.25) and not overlaps(0, 1, 1.3, 2, tol=0.25)
    assert roc_auc([0.9, 0.5], [0.5, 0.1]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    assert roc_auc([], [1.0]) is None
    assert passes("recall", 0.95) and not passes("capture_fraction", 0.4)
    assert passes("nothing", 1.0) is None


# ----------------------------------------------------------------------------- soundscapes


@pytest.fixture(scope="module")
def esc50_test(shared_data):
    return split(read_meta(need(shared_data / "esc50")))


def _frame_power(y: np.ndarray) -> float:
    return float(np.mean(np.square(y, dtype=np.float64)))


def test_soundscape_deterministic_and_bounded(esc50_test):
    clips = esc50_test["test"]
    a = build_soundscape(clips, minutes=0.5, seed=(3, 1))
    b = build_soundscape(clips, minutes=0.5, seed=(3, 1))
    c = build_soundscape(clips, minutes=0.5, seed=(3, 2))
    assert np.array_equal(a.samples, b.samples) and a.events == b.events
    assert not np.array_equal(a.samples, c.samples)
    assert a.samples.dtype == np.float32 and a.duration == 30.0
    assert np.abs(a.samples).max() <= PEAK_MAX + 1e-6 and a.gain_db <= 0.0
    kinds = {e.kind for e in a.events}
    assert kinds == {"trigger", "distractor"}
    spans = [(e.t_start, e.t_end) for e in a.events]
    assert spans == sorted(spans) and spans[0][0] >= 3.0 and spans[-1][1] <= 27.0
    assert all(s1 - e0 >= 3.0 - 1e-9 for (_, e0), (s1, _) in zip(spans, spans[1:]))


def test_soundscape_uses_only_test_clips(esc50_test):
    sc = build_soundscape(esc50_test["test"], minutes=0.5, seed=7)
    test = {(c.path.name, c.src_file) for c in esc50_test["test"]}
    train_src = {c.src_file for c in esc50_test["train"] + esc50_test["val"]}
    used = [(e.clip, e.src_file) for e in sc.events]
    used += [u for b in sc.background for u in zip(b.clips, b.src_files)]
    assert set(used) <= test and not {s for _, s in used} & train_src
    for e in sc.events:
        assert e.label in (DEFAULT_TRIGGERS if e.kind == "trigger" else DISTRACTORS)
    assert all(b.label in BACKGROUND for b in sc.background)
    assert sc.background[0].t_start == 0.0 and sc.background[-1].t_end == sc.duration


def test_events_at_their_stated_times(esc50_test):
    # Over a near-silent bed the mix's own active span is the truth span (fades: <= 2 frames).
    sc = build_soundscape(
        esc50_test["test"], minutes=0.5, seed=5, snr_db=(50.0,), bg_dbfs=(-110, -110)
    )
    y = sc.samples
    for e in sc.events:
        lo = int((e.t_start - 1.0) * SR)
        a, b = active_span(y[lo : int((e.t_end + 1.0) * SR)])
        assert (lo + a) / SR == pytest.approx(e.t_start, abs=0.03), e
        assert (lo + b) / SR == pytest.approx(e.t_end, abs=0.03), e


def test_energy_rises_at_truth_spans(esc50_test):
    sc = build_soundscape(esc50_test["test"], minutes=0.5, seed=11, snr_db=(20.0,))
    y = sc.samples
    for e in sc.events:
        inside = _frame_power(y[int(e.t_start * SR) : int(e.t_end * SR)])
        before = _frame_power(y[int((e.t_start - 2.5) * SR) : int((e.t_start - 0.5) * SR)])
        assert 10 * np.log10(inside / before) > 6.0, e
        assert e.snr_db == 20.0


# ----------------------------------------------------------------------------- wiring


class FakePolicy:
    """Records the chunks; emits START on the third chunk and END at flush."""

    def __init__(self):
        self.chunks, self.duration = [], None

    def feed(self, chunk):
        self.chunks.append((chunk.t_start, len(chunk.samples), chunk.stream_id))
        return [msg(0, 0, START, "sound", 0.5, 0.6).event] if len(self.chunks) == 3 else []

    def flush(self):
        return [msg(0, 0, END, "clapping", 0.5, 0.9).event]

    def windows(self, duration_s):
        self.duration = duration_s
        return [win(0.0, 1.9, "clapping")]


def test_run_policy_chunks_and_emission_times(monkeypatch):
    from pipeline.triggers import TriggerPolicy

    fake = FakePolicy()
    monkeypatch.setattr(TriggerPolicy, "from_config", classmethod(lambda cls, sid, cfg: fake))
    emitted, windows, wall, cpu = run_policy(None, np.zeros(SR + 800, np.float32), chunk_s=0.25)
    assert [c[0] for c in fake.chunks] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert [c[1] for c in fake.chunks] == [4000, 4000, 4000, 4000, 800]
    assert {c[2] for c in fake.chunks} == {"eval"}
    assert [(t, e.state) for t, e in emitted] == [(0.75, START), (1.05, END)]
    assert fake.duration == pytest.approx(1.05) and len(windows) == 1 and wall >= 0 and cpu >= 0


def test_classifier_metrics_with_a_fake_classifier(esc50_test, monkeypatch):
    from benchmarks.soundscapes import load_clip

    clips = [
        c for c in esc50_test["test"] if c.category in ("dog", "cat", "clapping", "can_opening")
    ]
    n_cat = sum(c.category == "cat" for c in clips)
    truth = {id(load_clip(c.path)): c for c in clips}

    class Prediction:  # right class and high interaction for trigger clips, "dog" otherwise
        def __init__(self, clip):
            trig = clip.category in DEFAULT_TRIGGERS
            self.probs = np.eye(50)[[clip.target if trig else 0]] * 0.9
            self.interaction = np.array([0.8 if trig else 0.3])

    class AudioClassifier:
        def predict_clip(self, samples):
            return Prediction(truth[id(samples)])

    monkeypatch.setitem(sys.modules, "models.audio.cnn", types.SimpleNamespace(
        AudioClassifier=AudioClassifier))  # fmt: skip
    m = classifier_metrics(clips)
    assert m["available"] and m["n_clips"] == len(clips) and n_cat > 0
    assert m["accuracy"] == pytest.approx(1 - n_cat / len(clips))  # cats are called "dog"
    assert m["interaction_auc"] == 1.0
    monkeypatch.setitem(sys.modules, "models.audio.cnn", types.SimpleNamespace())
    assert classifier_metrics(clips)["available"] is False  # ImportError: reported, no crash
