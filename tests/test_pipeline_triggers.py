"""Tests of TriggerPolicy (START/UPDATE/END life cycle) and capture windows."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.audio.base import AudioEvent
from models.audio.energy import EnergyDetector
from pipeline.config import TriggerConfig
from pipeline.errors import ConfigError
from pipeline.triggers import TriggerPolicy, capture_windows
from pipeline.types import AudioChunk, CaptureWindow, TriggerEvent, TriggerState
from tests.media import tone_with_clicks

SR = 16000
START, UPDATE, END = TriggerState.START, TriggerState.UPDATE, TriggerState.END


class ScriptedDetector:
    """Returns scripted events: ``script[i]`` from the i-th feed, ``at_flush`` from flush()."""

    sample_rate = SR

    def __init__(self, script: list[list[AudioEvent]], at_flush: list[AudioEvent] | None = None):
        self.script = list(script)
        self.at_flush = at_flush or []

    def feed(self, samples: np.ndarray, t_start: float) -> list[AudioEvent]:
        return self.script.pop(0) if self.script else []

    def flush(self) -> list[AudioEvent]:
        return self.at_flush


def chunk(t0: float, t1: float, stream_id: str = "cam") -> AudioChunk:
    return AudioChunk(stream_id, t0, SR, np.zeros(int(round((t1 - t0) * SR)), dtype=np.float32))


def chunks_of(y: np.ndarray, chunk_s: float = 0.96, stream_id: str = "cam") -> list[AudioChunk]:
    n = int(chunk_s * SR)
    return [AudioChunk(stream_id, i / SR, SR, y[i : i + n]) for i in range(0, y.size, n)]


def end(
    tid: int, t0: float, t1: float, label: str = "sound", accepted: bool = True
) -> TriggerEvent:
    return TriggerEvent(tid, "cam", END, label, 0.9, t1, t0, t1, accepted=accepted)


def spans(ws: list[CaptureWindow]) -> list[tuple[float, float]]:
    return [(round(w.t_start, 3), round(w.t_end, 3)) for w in ws]


# ----------------------------------------------------------------------------- life cycle


def test_energy_gate_starts_at_the_onset_and_ends_after_the_refractory_time() -> None:
    clicks = [1.0, 3.0, 5.5, 8.0]
    policy = TriggerPolicy("cam", EnergyDetector(), refractory_s=0.5)
    sent = []  # (stream time the message came out, message)
    for c in chunks_of(tone_with_clicks(10.0, clicks), chunk_s=0.24):
        sent += [(c.t_end, m) for m in policy.feed(c)]
    sent += [(10.0, m) for m in policy.flush()]
    out = [m for _, m in sent]
    assert sorted({m.trigger_id for m in out}) == [0, 1, 2, 3]
    for tid, click in enumerate(clicks):
        msgs = [(at, m) for at, m in sent if m.trigger_id == tid]
        assert msgs[0][1].state is START and msgs[-1][1].state is END
        assert {m.state for _, m in msgs[1:-1]} <= {UPDATE}
        start_at, start = msgs[0]
        assert abs(start.t - click) <= 0.05 and start_at - click <= 0.5  # START comes fast
        end_at, ended = msgs[-1]
        assert ended.accepted and ended.label == "sound" and ended.score > 0.5
        assert 0.5 <= end_at - ended.t_end <= 0.5 + 0.24 + 1e-6  # refractory time, one chunk
    assert len(policy.events) == len(clicks)
    # bursts at 1 and 3 s: padded spans [0, ~2.15] and [2, ~4.15] merge; the others stay apart
    ws = policy.windows(10.0)
    assert len(ws) == 3 and ws[0].t_start == 0.0 and ws[0].trigger_ids == (0, 1)
    assert [w.trigger_ids for w in ws[1:]] == [(2,), (3,)]
    assert ws[2].t_end <= 10.0 and ws[1].labels == ("sound",)


def test_update_when_a_better_sound_joins_then_end_after_refractory_time() -> None:
    det = ScriptedDetector(
        [
            [AudioEvent("sound", 0.5, 1.0, 1.2)],
            [AudioEvent("knock", 0.9, 1.4, 1.6)],  # 0.2 s later: same trigger, better score
            [AudioEvent("sound", 0.3, 1.7, 1.8)],  # same trigger, worse: its span only
            [],
            [AudioEvent("sound", 0.4, 3.0, 3.1)],
        ]
    )
    policy = TriggerPolicy("cam", det, refractory_s=0.4)
    got = [policy.feed(c) for c in (chunk(0, 1.3), chunk(1.3, 1.65), chunk(1.65, 1.9))]
    assert [[m.state for m in msgs] for msgs in got] == [[START], [UPDATE], [UPDATE]]
    assert (got[1][0].label, got[1][0].score, got[1][0].t) == ("knock", 0.9, 1.65)
    # a worse sound joining changes neither label nor score: the UPDATE carries its span alone
    assert (got[2][0].label, got[2][0].score) == ("knock", 0.9)
    assert got[1][0].spans == ((1.0, 1.2), (1.4, 1.6)) and got[2][0].spans[-1] == (1.7, 1.8)
    (ended,) = policy.feed(chunk(1.9, 2.3))  # 2.3 >= 1.8 + 0.4: the trigger is over
    assert ended.state is END and ended.accepted and ended.trigger_id == 0
    assert (ended.label, ended.score, ended.t_start, ended.t_end) == ("knock", 0.9, 1.0, 1.8)
    assert [m.state for m in policy.feed(chunk(2.3, 3.2))] == [START]
    (last,) = policy.flush()
    assert (last.state, last.trigger_id, last.t_end) == (END, 1, 3.1)
    assert len(policy.events) == 4  # every sound is remembered, merged or not
    assert spans(policy.windows()) == [(0.0, 4.1)]  # [0, 2.8] and [2.0, 4.1] overlap


def test_flush_reports_the_detectors_last_sound() -> None:
    last_sound = AudioEvent("sound", 0.7, 4.0, 4.5)
    policy = TriggerPolicy("cam", ScriptedDetector([], at_flush=[last_sound]))
    assert policy.feed(chunk(0, 4.6)) == []
    msgs = policy.flush()
    assert [m.state for m in msgs] == [START, END] and msgs[1].t_end == 4.5


def test_chunk_of_another_stream_or_rate_is_refused() -> None:
    policy = TriggerPolicy("cam", ScriptedDetector([]))
    with pytest.raises(ValueError, match="'door'"):
        policy.feed(chunk(0, 1, stream_id="door"))
    with pytest.raises(ValueError, match="44100"):
        policy.feed(AudioChunk("cam", 0.0, 44100, np.zeros(441, dtype=np.float32)))
    with pytest.raises(ConfigError, match="-1"):
        TriggerPolicy("cam", ScriptedDetector([]), pre_roll_s=-1)


def test_from_config_builds_the_energy_gate() -> None:
    cfg = TriggerConfig(
        detector="energy", k_mad=3.0, min_rise_db=6.0, floor_dbfs=-60.0, background_s=2.0,
        min_event_s=0.1, merge_gap_s=0.3, pre_roll_s=0.5, post_roll_s=2.0, max_window_s=10.0,
        refractory_s=0.7,
    )  # fmt: skip
    policy = TriggerPolicy.from_config("cam", cfg)
    det = policy.detector
    assert isinstance(det, EnergyDetector) and policy.classifier is None
    assert (det.k_mad, det.min_rise_db, det.floor_dbfs) == (3.0, 6.0, -60.0)
    assert (det.background_s, det.min_event_s, det.merge_gap_s) == (2.0, 0.1, 0.3)
    assert (policy.pre_roll_s, policy.post_roll_s) == (0.5, 2.0)
    assert (policy.max_window_s, policy.refractory_s, policy.stream_id) == (10.0, 0.7, "cam")


def test_module_imports_neither_ray_nor_librosa() -> None:
    code = "import sys, pipeline.triggers; print(sorted({'ray', 'librosa'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- windows


def windows(evs: list[TriggerEvent], **kw) -> list[CaptureWindow]:
    args = {"stream_id": "cam", "pre_roll_s": 1.0, "post_roll_s": 1.0, "max_window_s": 20.0, **kw}
    return capture_windows(evs, **args)


def test_windows_merge_overlapping_and_touching_spans() -> None:
    evs = [end(0, 2, 3, "knock"), end(1, 4.5, 5, "glass"), end(2, 8, 8.5)]
    evs.append(end(3, 10.5, 11, "knock"))
    ws = windows(list(reversed(evs)))  # input order does not matter
    assert spans(ws) == [(1.0, 6.0), (7.0, 12.0)]  # [7, 9.5] and [9.5, 12] touch
    assert (ws[0].labels, ws[0].trigger_ids) == (("knock", "glass"), (0, 1))
    assert (ws[1].labels, ws[1].trigger_ids) == (("sound", "knock"), (2, 3))
    assert all(w.stream_id == "cam" for w in ws)


def test_windows_clipped_to_media_and_only_accepted_ends() -> None:
    evs = [
        end(0, 0.3, 0.5),
        end(1, 5.0, 5.5, accepted=False),  # rejected: its window is dropped
        TriggerEvent(2, "cam", START, "sound", 0.5, 6.0, 6.0, 6.2),  # not an END
        end(3, 9.5, 9.9),
        end(4, 12.0, 12.5),  # starts after the end of the media
    ]
    assert spans(windows(evs, duration_s=10.0)) == [(0.0, 1.5), (8.5, 10.0)]
    assert spans(windows(evs)) == [(0.0, 1.5), (8.5, 10.9), (11.0, 13.5)]
    assert windows([]) == []


def test_long_windows_are_split_evenly() -> None:
    ws = windows([end(0, 0.0, 50.0)], pre_roll_s=0.0, post_roll_s=0.0)
    assert len(ws) == 3
    assert ws[0].t_start == 0.0 and ws[-1].t_end == 50.0
    assert all(a.t_end == pytest.approx(b.t_start) for a, b in zip(ws, ws[1:]))
    assert all(w.t_end - w.t_start <= 20.0 + 1e-9 for w in ws)
    assert all(w.trigger_ids == (0,) for w in ws)
    # two sounds in one 31 s window: each half names only the sounds it holds
    ws = windows([end(0, 1.0, 10.0, "knock"), end(1, 10.5, 30.0, "glass")])
    assert spans(ws) == [(0.0, 15.5), (15.5, 31.0)]
    assert [w.trigger_ids for w in ws] == [(0, 1), (1,)]
    assert [w.labels for w in ws] == [("knock", "glass"), ("glass",)]


# ----------------------------------------------------------------------------- real sounds


def test_esc50_sounds_are_captured(shared_data: Path, rng: np.random.Generator) -> None:
    import soundfile as sf

    root = shared_data / "esc50"
    with open(root / "meta" / "esc50.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["filename"])
    mix = (rng.standard_normal(30 * SR) * 10 ** (-50 / 20)).astype(np.float32)
    placed = {"door_wood_knock": 3.0, "glass_breaking": 20.0}
    for category, offset in placed.items():
        name = next(r["filename"] for r in rows if r["category"] == category)
        y, _ = sf.read(root / "audio" / Path(name).with_suffix(".flac"), dtype="float32")
        mix[int(offset * SR) : int(offset * SR) + y.size] += y
    policy = TriggerPolicy("cam", EnergyDetector(), refractory_s=0.4)
    msgs = [m for c in chunks_of(mix) for m in policy.feed(c)] + policy.flush()
    starts = [m.t for m in msgs if m.state is START]
    assert len(starts) == sum(m.state is END for m in msgs) >= 2
    for offset in placed.values():  # each clip triggers, and nothing else does
        assert any(offset <= t <= offset + 5.0 for t in starts), (offset, starts)
    assert all(any(o <= t <= o + 5.0 for o in placed.values()) for t in starts), starts
    ws = policy.windows(30.0)
    captured = sum(w.t_end - w.t_start for w in ws)
    assert 2.0 < captured < 12.0  # the quiet 20 s between the sounds are not captured


# ----------------------------------------------------------------------------- with the classifier

TRIGGERING = ("door_wood_knock", "glass_breaking", "can_opening", "clapping")
NOT_TRIGGERING = ("dog", "rooster", "laughing", "crying_baby")
SPACING_S = 7.0


def _active_span(y: np.ndarray) -> tuple[float, float]:
    """First to last 10 ms frame within 30 dB of the clip's loudest (the truth span)."""
    from models.audio.energy import frame_dbfs

    db = frame_dbfs(y)
    on = np.flatnonzero(db >= db.max() - 30.0)
    return on[0] * 0.01, on[-1] * 0.01 + 0.025


@pytest.fixture(scope="module")
def held_out_mix(shared_data_module):
    """Held-out ESC-50 clips (test split: never trained on) over a quiet room, 7 s apart."""
    import soundfile as sf

    from models.audio.esc50 import read_meta, split

    test = split(read_meta(shared_data_module / "esc50"))["test"]
    clips = [next(c for c in test if c.category == name) for name in TRIGGERING + NOT_TRIGGERING]
    rng = np.random.default_rng(5)
    n = int((len(clips) * SPACING_S + 3.0) * SR)
    mix = (rng.standard_normal(n) * 10 ** (-55 / 20)).astype(np.float32)
    truth = []
    for i, clip in enumerate(clips):
        y, sr = sf.read(clip.path, dtype="float32")
        assert sr == SR
        a, b = _active_span(y)
        y = y[int(a * SR) : int(b * SR)][: int(4.5 * SR)]  # the sound itself, at most 4.5 s
        y *= 10 ** (-20 / 20) / max(float(np.sqrt(np.mean(y**2))), 1e-6)  # -20 dBFS RMS
        at = 1.0 + i * SPACING_S
        mix[int(at * SR) : int(at * SR) + y.size] += y
        truth.append((clip.category, at, at + y.size / SR))
    return np.clip(mix, -1, 1), truth


@pytest.fixture(scope="module")
def shared_data_module():
    from tests.conftest import need, shared_data_dir

    return need(shared_data_dir())


def _run(policy: TriggerPolicy, mix: np.ndarray, chunk_s: float = 0.24):
    sent = []
    for c in chunks_of(mix, chunk_s=chunk_s):
        sent += [(c.t_end, m) for m in policy.feed(c)]
    sent += [(mix.size / SR, m) for m in policy.flush()]
    return sent


def _covered(ws: list[CaptureWindow], a: float, b: float) -> float:
    return sum(max(0.0, min(b, w.t_end) - max(a, w.t_start)) for w in ws) / (b - a)


@pytest.fixture(scope="module")
def classified(held_out_mix):
    from pipeline.triggers import load_classifier

    mix, truth = held_out_mix
    cfg = TriggerConfig()
    classifier = load_classifier(cfg)
    policy = TriggerPolicy.from_config("cam", cfg, classifier=classifier, custom_sounds=[])
    return policy, _run(policy, mix), classifier


def test_interaction_sounds_trigger_and_others_are_only_remembered(held_out_mix, classified):
    mix, truth = held_out_mix
    policy, sent, _ = classified
    ws = policy.windows(mix.size / SR)
    hit = {name: _covered(ws, a, b) >= 0.5 for name, a, b in truth}
    assert sum(hit[n] for n in TRIGGERING) >= 3, hit
    accepted = [m for _, m in sent if m.state is END and m.accepted]
    false = [m for m in accepted if not any(
        a - 0.25 < m.t_end and m.t_start < b + 0.25 for n, a, b in truth if n in TRIGGERING
    )]  # fmt: skip
    assert len(false) <= 1, [(m.label, m.t_start) for m in false]
    rejected = [m for _, m in sent if m.state is END and not m.accepted]
    assert rejected, "distractors should end rejected"
    # every sound is remembered with a label, triggering or not
    for name, a, b in truth:
        assert any(a - 0.3 <= e.t_start <= b for e in policy.events), name
    labels = {m.label for m in accepted}
    assert labels & set(TRIGGERING), labels
    assert all(e.embedding is not None and e.embedding.shape == (128,) for e in policy.events)


def test_start_is_fast_and_the_label_follows(held_out_mix, classified):
    _, truth = held_out_mix
    _, sent, _ = classified
    ends = {m.trigger_id: at for at, m in sent if m.state is END}
    checked = 0
    for name, a, b in truth:
        if any(m.state is START and m.t < a - 0.3 and ends[m.trigger_id] >= a for _, m in sent):
            continue  # an earlier sound's trigger is still open: this one joins it, no START
        starts = [(at, m) for at, m in sent if m.state is START and a - 0.3 <= m.t <= b]
        assert starts, name
        at, start = starts[0]
        assert at - a <= 0.5 + 1e-6, (name, at - a)  # onset -> START
        later = [at2 for at2, m in sent if m.trigger_id == start.trigger_id and m.state is not START]
        assert later and later[0] - a <= 1.5 + 1e-6, (name, later[0] - a)  # onset -> UPDATE/END
        checked += 1
    assert checked >= len(truth) // 2


def test_thresholds_and_capture_rate_are_obeyed(held_out_mix, classified):
    mix, truth = held_out_mix
    policy, sent, classifier = classified
    accepted = [m for _, m in sent if m.state is END and m.accepted]
    # a class set to an impossible threshold no longer triggers, but is still heard and labelled
    label = accepted[0].label
    cfg = TriggerConfig(class_thresholds={label: 1.0}, interaction_threshold=2.0)
    strict = TriggerPolicy.from_config("cam", cfg, classifier=classifier, custom_sounds=[])
    out = _run(strict, mix)
    assert not any(m.state is END and m.accepted and m.label == label for _, m in out)
    assert any(e.label == label for e in strict.events)
    # capture budget: at most 10% of any 60 s
    cfg = TriggerConfig(max_capture_fraction=0.1, rate_window_s=60.0)
    capped = TriggerPolicy.from_config("cam", cfg, classifier=classifier, custom_sounds=[])
    out = _run(capped, mix)
    kept = [m for _, m in out if m.state is END and m.accepted]
    assert 1 <= len(kept) <= len(accepted)  # a trigger over the budget is cut short or dropped
    duration = mix.size / SR
    captured = sum(w.t_end - w.t_start for w in capped.windows(duration))
    assert captured < sum(w.t_end - w.t_start for w in policy.windows(duration))
    assert captured <= 0.1 * 60.0 * math.ceil(duration / 60.0) + 1e-6


def test_unknown_trigger_class_is_a_config_error(classified) -> None:
    _, _, classifier = classified
    with pytest.raises(ConfigError, match="unicorn"):
        TriggerPolicy.from_config(
            "cam", TriggerConfig(classes=("unicorn",)), classifier=classifier, custom_sounds=[]
        )


# ----------------------------------------------------------------------------- scripted classifier


class TimedClassifier:
    """Fake classifier: patch ``i`` (the i-th it is given; one stream, no gaps, so it starts at
    ``0.48 * i`` s) gets P(pouring_water) = ``script(t0)``, the rest spread over other classes."""

    def __init__(self, script):
        from models.audio.esc50 import CLASSES

        self.classes = CLASSES
        self.script = script
        self.seen = 0
        self.col = CLASSES.index("pouring_water")

    def predict(self, patches: np.ndarray):
        from models.audio.cnn import Prediction

        n = len(patches)
        t0 = 0.48 * (self.seen + np.arange(n))
        self.seen += n
        p = np.array([self.script(t) for t in t0])
        probs = np.tile(((1 - p) / 49)[:, None], (1, 50))
        probs[:, self.col] = p
        emb = np.zeros((n, 128), np.float32)
        emb[:, 0] = 1
        return Prediction(probs.astype(np.float32), np.zeros(n, np.float32), emb)


def _noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * SR)) * 10 ** (dbfs / 20)).astype(np.float32)


@pytest.mark.parametrize("background_s", [0.0, 20.0])
def test_class_background_keeps_a_room_that_always_sounds_like_a_trigger_quiet(background_s):
    # steady noise the classifier calls "pouring water" (p = 0.7) all along, a pour at 24-27 s
    # (p = 0.97): raw scores trigger on the room; scores over the running background only on
    # the pour (and in the first patches, before any background is known)
    clf = TimedClassifier(lambda t: 0.97 if 24.0 <= t < 27.0 else 0.7)
    policy = TriggerPolicy("cam", EnergyDetector(), classifier=clf, classes=("pouring_water",),
                           interaction_threshold=2.0, class_background_s=background_s)  # fmt: skip
    sent = _run(policy, _noise(40.0, -40.0))
    ws = policy.windows(40.0)
    assert _covered(ws, 24.0, 27.0) == pytest.approx(1.0)
    captured = sum(w.t_end - w.t_start for w in ws)
    if background_s:
        assert captured < 10.0, spans(ws)  # the pour, and the first seconds of the stream
        assert not [w for w in ws if 5.0 < w.t_start < 23.0 or w.t_start > 28.0]
        ends = [m for _, m in sent if m.state is END and m.accepted]
        assert all(m.label == "pouring_water" for m in ends)
    else:
        assert captured > 35.0, spans(ws)


def test_a_sound_is_captured_while_its_patches_are_evidence():
    # a 0.3 s burst the gate hears; the patches over it that start at 9.6 and 10.08 s are
    # trigger evidence: the capture runs 0.72 s into the last of them (+ post-roll), past the
    # gate's end of the sound
    y = _noise(20.0, -50.0)
    y[int(10.0 * SR) : int(10.3 * SR)] += _noise(0.3, -15.0, seed=1)
    clf = TimedClassifier(lambda t: 0.95 if 9.5 <= t <= 10.1 else 0.01)
    policy = TriggerPolicy("cam", EnergyDetector(), classifier=clf, classes=("pouring_water",),
                           interaction_threshold=2.0, pre_roll_s=0.0, post_roll_s=0.1,
                           max_capture_s=None)  # fmt: skip
    _run(policy, y)
    ws = policy.windows(20.0)
    assert len(ws) == 1
    assert ws[0].t_start == pytest.approx(10.0, abs=0.05)
    assert ws[0].t_end == pytest.approx(10.08 + 0.72 + 0.1, abs=1e-6)
    (sound,) = [e for e in policy.events if e.t_start < 10.5 and e.t_end > 10.0]
    assert sound.t_end < 10.7  # the remembered sound keeps the span the gate heard


def _burst_policy(script, bursts, **kwargs):
    """A policy over 20 s of quiet noise with loud bursts ``[(a, b), ...]`` (s) the gate hears and
    a TimedClassifier(script); returns the policy after the stream and its messages."""
    y = _noise(20.0, -50.0)
    for i, (a, b) in enumerate(bursts):
        i0, i1 = int(round(a * SR)), int(round(b * SR))
        y[i0:i1] += _noise((i1 - i0) / SR, -15.0, seed=1 + i)[: i1 - i0]
    kwargs = {"interaction_threshold": 2.0, "pre_roll_s": 0.0, "post_roll_s": 0.0,
              "max_capture_s": None, **kwargs}  # fmt: skip
    policy = TriggerPolicy("cam", EnergyDetector(), classifier=TimedClassifier(script),
                           classes=("pouring_water",), **kwargs)  # fmt: skip
    return policy, _run(policy, y)


@pytest.mark.parametrize("sustain", [1.0, 0.5])
def test_weaker_patches_after_evidence_sustain_the_capture(sustain):
    # evidence (p 0.95 over a 0.5 threshold) in the patches starting at 9.6 and 10.08 s, then
    # three patches at p 0.3 (0.6 of the threshold), then nothing; the same weak patches at
    # 15-16.5 s follow no evidence and never capture anything
    def script(t):
        return 0.95 if 9.5 <= t <= 10.1 else 0.3 if 10.1 < t <= 11.6 or 15 <= t <= 16.5 else 0.01

    policy, _ = _burst_policy(script, [(10.0, 10.3)], sustain=sustain, evidence_tail_s=0.48)
    ws = policy.windows(20.0)
    assert len(ws) == 1 and ws[0].t_start == pytest.approx(10.0, abs=0.05)
    last = 11.52 if sustain < 0.6 else 10.08  # start of the last patch sustaining the sound
    assert ws[0].t_end == pytest.approx(last + 0.48, abs=1e-6)


def test_min_capture_s_captures_a_short_trigger_for_at_least_that_long():
    policy, _ = _burst_policy(lambda t: 0.95 if 9.5 <= t <= 10.1 else 0.01, [(10.0, 10.3)],
                              evidence_tail_s=0.0, min_capture_s=2.0)  # fmt: skip
    ws = policy.windows(20.0)
    assert spans(ws) == [pytest.approx((10.0, 12.0), abs=0.05)]


@pytest.mark.parametrize("cap_runs", [False, True])
def test_cap_runs_gives_touching_sounds_of_a_trigger_one_max_capture_s(cap_runs):
    # two bursts 0.6 s apart, both evidence, one trigger; with rolls of 0.3 s their windows touch
    policy, sent = _burst_policy(lambda t: 0.95 if 9.5 <= t <= 11.5 else 0.01,
                                 [(10.0, 10.3), (10.9, 11.2)], evidence_tail_s=0.0,
                                 pre_roll_s=0.3, post_roll_s=0.3, max_capture_s=0.8,
                                 cap_runs=cap_runs)  # fmt: skip
    assert len({m.trigger_id for _, m in sent}) == 1
    ((a, b),) = spans(policy.windows(20.0))
    assert a == pytest.approx(9.7, abs=0.05)
    # each sound captured on its own (to 11.2 + 0.3), or the run only 0.8 s from its start
    assert b == pytest.approx(10.6 if cap_runs else 11.5, abs=0.05)


def test_capture_budget_cuts_a_long_trigger_short_instead_of_dropping_it():
    # 8 s of evidence under a 3 s budget (5% of 60 s): the trigger is kept, its capture cut
    policy, sent = _burst_policy(lambda t: 0.95 if 9.5 <= t <= 17.5 else 0.01, [(10.0, 18.0)],
                                 max_capture_fraction=0.05, rate_window_s=60.0,
                                 pre_roll_s=0.25, post_roll_s=0.25)  # fmt: skip
    ends = [m for _, m in sent if m.state is END]
    assert ends and all(m.accepted for m in ends)
    ws = policy.windows(20.0)
    assert ws and ws[0].t_start == pytest.approx(9.75, abs=0.05)
    assert 2.5 < sum(w.t_end - w.t_start for w in ws) <= 3.0 + 1e-6


@pytest.mark.parametrize("first_capture_s", [0.0, 2.0])
def test_first_capture_s_extends_only_the_first_sound_of_a_trigger(first_capture_s):
    # two bursts 1.7 s apart join one trigger; only the first is captured first_capture_s long
    policy, sent = _burst_policy(lambda t: 0.95 if 9.5 <= t <= 10.1 or 12.4 <= t <= 13.0 else 0.01,
                                 [(10.0, 10.3), (13.0, 13.3)], evidence_tail_s=0.0,
                                 refractory_s=4.0, first_capture_s=first_capture_s)  # fmt: skip
    assert len({m.trigger_id for _, m in sent}) == 1
    got = spans(policy.windows(20.0))
    first = (10.0, 12.0) if first_capture_s else (10.0, 10.3)
    assert got == [pytest.approx(first, abs=0.05), pytest.approx((13.0, 13.3), abs=0.05)]


def test_first_capture_is_shorter_for_a_class_whose_sounds_are_short():
    from models.audio.esc50 import TYPICAL_SPAN_S

    policy = TriggerPolicy("cam", EnergyDetector(), classifier=TimedClassifier(lambda t: 0.0),
                           first_capture_s=2.6, first_capture_fraction=0.5)  # fmt: skip
    knock = TYPICAL_SPAN_S["door_wood_knock"]
    assert policy._first_capture("door_wood_knock") == pytest.approx(0.5 * knock)
    assert policy._first_capture("toilet_flush") == 2.5  # 0.5 x 5 s
    assert policy._first_capture("interaction") == 2.6  # no typical length: first_capture_s
    assert policy._first_capture("my_doorbell") == 2.6
    # the weight-free gate alone: nothing says a sound goes on past what it heard
    alone = TriggerPolicy("cam", EnergyDetector(), first_capture_s=2.6)
    assert alone._first_capture("sound") == 0.0
