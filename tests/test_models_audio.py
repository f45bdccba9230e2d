"""Tests of the YAMNet-framed log-mel front-end and the streaming energy/onset gate."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from models.audio.base import AudioEvent, AudioEventDetector
from models.audio.energy import EMBEDDING_DIM, EnergyDetector, detect, embed_clip
from models.audio.features import (
    HOP,
    N_MELS,
    PATCH_FRAMES,
    PATCH_HOP,
    SAMPLE_RATE,
    WIN,
    log_mel,
    patches,
    warm_up,
)
from models.errors import ParameterError
from tests.media import tone_with_clicks

SR = SAMPLE_RATE
CLICKS = [1.0, 3.0, 5.5, 8.0]


def noise(rng: np.random.Generator, seconds: float, dbfs: float) -> np.ndarray:
    """White noise ``float32[n]`` whose RMS is ``dbfs``."""
    return (rng.standard_normal(int(seconds * SR)) * 10 ** (dbfs / 20)).astype(np.float32)


def feed_chunked(det: EnergyDetector, y: np.ndarray, cuts: np.ndarray, t0: float = 0.0):
    """Feed ``y`` split at sample indices ``cuts``; return [(event, stream time when returned)]."""
    out = []
    bounds = np.concatenate([[0], cuts, [y.size]]).astype(int)
    for a, b in zip(bounds[:-1], bounds[1:]):
        out += [(e, t0 + b / SR) for e in det.feed(y[a:b], t0 + a / SR)]
    return out + [(e, np.inf) for e in det.flush()]


def frame_db(y: np.ndarray) -> np.ndarray:
    """Brute-force per-frame RMS level (dBFS) with YAMNet framing."""
    w = np.lib.stride_tricks.sliding_window_view(y.astype(np.float64), WIN)[::HOP]
    return 10 * np.log10((w**2).mean(axis=1) + 1e-12)


# ----------------------------------------------------------------------------- front-end


@pytest.mark.parametrize("n, frames", [(0, 0), (399, 0), (400, 1), (559, 1), (560, 2), (SR, 98)])
def test_log_mel_frame_count(n: int, frames: int) -> None:
    x = log_mel(np.zeros(n, dtype=np.float32))
    assert x.shape == (frames, N_MELS) and x.dtype == np.float32


def test_log_mel_matches_brute_force(rng: np.random.Generator) -> None:
    import librosa
    from scipy.signal import get_window

    y = noise(rng, 0.2, -20.0)
    got = log_mel(y)
    w = get_window("hann", WIN, fftbins=True)
    basis = librosa.filters.mel(
        sr=SR, n_fft=512, n_mels=N_MELS, fmin=125, fmax=7500, htk=True, norm=None
    )
    for i in (0, 5, got.shape[0] - 1):
        power = np.abs(np.fft.rfft(y[i * HOP : i * HOP + WIN] * w, n=512)) ** 2
        np.testing.assert_allclose(got[i], np.log(basis @ power + 0.001), rtol=1e-4, atol=1e-4)


def test_log_mel_equals_librosa_melspectrogram(rng: np.random.Generator) -> None:
    import librosa

    y = noise(rng, 1.0, -30.0)
    padded = np.pad(y, ((512 - WIN) // 2,) * 2)  # frame i <-> samples [i*HOP, i*HOP + WIN)
    ref = librosa.feature.melspectrogram(
        y=padded, sr=SR, n_fft=512, win_length=WIN, hop_length=HOP, center=False, power=2.0,
        n_mels=N_MELS, fmin=125, fmax=7500, htk=True, norm=None,
    )  # fmt: skip
    np.testing.assert_allclose(log_mel(y), np.log(ref.T + 0.001), rtol=1e-5, atol=1e-5)


def test_log_mel_frames_do_not_look_ahead() -> None:
    y = np.zeros(SR // 2, dtype=np.float32)
    p = 4321
    y[p] = 0.5
    changed = np.flatnonzero(np.abs(log_mel(y) - np.log(0.001)).max(axis=1) > 1e-6)
    expect = [i for i in range(1 + (y.size - WIN) // HOP) if i * HOP <= p < i * HOP + WIN]
    assert changed.tolist() == expect


def test_patches_shape_and_content(rng: np.random.Generator) -> None:
    m = rng.standard_normal((300, N_MELS)).astype(np.float32)
    p = patches(m)
    assert p.shape == (1 + (300 - PATCH_FRAMES) // PATCH_HOP, PATCH_FRAMES, N_MELS)
    assert p.dtype == np.float32
    np.testing.assert_array_equal(p[2], m[2 * PATCH_HOP : 2 * PATCH_HOP + PATCH_FRAMES])
    assert patches(m[:95]).shape == (0, PATCH_FRAMES, N_MELS)


@pytest.mark.parametrize(
    "call, quoted",
    [
        (lambda: log_mel(np.zeros(800, dtype=np.int16)), "int16"),
        (lambda: log_mel(np.zeros((2, 800), dtype=np.float32)), "(2, 800)"),
        (lambda: log_mel(np.zeros(800, dtype=np.float32), sr=44100), "44100"),
        (lambda: patches(np.zeros((100, 40), dtype=np.float32)), "(100, 40)"),
        (lambda: EnergyDetector(44100), "44100"),
        (lambda: EnergyDetector(k_mad=0), "k_mad=0"),
        (lambda: EnergyDetector().feed(np.zeros(800, dtype=np.int16), 0.0), "int16"),
    ],
)
def test_bad_input_quotes_value(call, quoted: str) -> None:
    with pytest.raises(ParameterError, match=quoted.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_warm_up_runs() -> None:
    assert warm_up() >= 0.0


def test_shipped_front_end_constants_are_librosas(tmp_path, monkeypatch) -> None:
    """The filterbank and window read from models/audio/weights/frontend.npz (no librosa import
    per process) are exactly what librosa builds; a missing file falls back to librosa."""
    from models.audio import features

    shipped = np.load(features.FRONTEND)
    fresh = features.librosa_frontend()
    for key in ("mel_basis", "window"):  # else: models.audio.features.export_frontend()
        np.testing.assert_array_equal(shipped[key], fresh[key], err_msg="regenerate frontend.npz")
    monkeypatch.setattr(features, "FRONTEND", tmp_path / "missing.npz")
    features._frontend.cache_clear()
    try:
        np.testing.assert_array_equal(features._frontend()["mel_basis"], fresh["mel_basis"])
    finally:
        features._frontend.cache_clear()


# ----------------------------------------------------------------------------- energy gate


def test_clicks_detected_at_known_times_and_nothing_else() -> None:
    events = detect(tone_with_clicks(10.0, CLICKS))
    assert len(events) == len(CLICKS)
    for e, t in zip(events, CLICKS):
        assert isinstance(e, AudioEvent) and e.label == "sound"
        assert abs(e.t_start - t) <= 0.1
        assert t + 0.05 < e.t_end < t + 0.35  # the burst decays below threshold in ~0.15 s
        assert 0.5 < e.score <= 1.0
        assert e.embedding.shape == (EMBEDDING_DIM,) and e.embedding.dtype == np.float32
        assert np.linalg.norm(e.embedding) == pytest.approx(1.0, abs=1e-5)


def test_detector_protocol_and_registry() -> None:
    from models.registry import AUDIO_DETECTORS, create

    det = create(AUDIO_DETECTORS, "energy", k_mad=4.0)
    assert isinstance(det, EnergyDetector) and isinstance(det, AudioEventDetector)
    assert det.k_mad == 4.0


def test_silence_and_steady_noise_give_nothing(rng: np.random.Generator) -> None:
    assert detect(np.zeros(5 * SR, dtype=np.float32)) == []
    assert detect(noise(rng, 8.0, -50.0)) == []
    assert detect(noise(rng, 8.0, -20.0)) == []


def test_chunking_does_not_change_events(rng: np.random.Generator) -> None:
    y = tone_with_clicks(12.0, [0.3, 2.0, 2.45, 6.0, 9.7], noise_db=-45.0)
    whole = [e for e, _ in feed_chunked(EnergyDetector(), y, np.array([], dtype=int))]
    cuts = np.sort(rng.choice(np.arange(1, y.size), 36, replace=False))
    parts = [e for e, _ in feed_chunked(EnergyDetector(), y, cuts)]
    assert len(whole) == len(parts) >= 4
    for a, b in zip(whole, parts):
        assert abs(a.t_start - b.t_start) <= 0.01 + 1e-9 and abs(a.t_end - b.t_end) <= 0.01 + 1e-9
        assert a.score == pytest.approx(b.score, abs=0.02)
        assert float(a.embedding @ b.embedding) > 0.999


def test_noisy_room_raises_threshold(rng: np.random.Generator) -> None:
    y = noise(rng, 12.0, -20.0)
    m = int(0.3 * SR)
    for t in (4.0, 8.0):  # +15 dB bursts over white noise at -20 dBFS
        i = int(t * SR)
        y[i : i + m] += noise(rng, 0.3, -20.0 + 15.0) * np.linspace(1, 0.3, m, dtype=np.float32)
    events = detect(y)
    assert [round(e.t_start, 1) for e in events] == [4.0, 8.0]
    assert sum(e.t_end - e.t_start for e in events) < 1.0


def test_room_getting_louder_is_absorbed(rng: np.random.Generator) -> None:
    y = np.concatenate([noise(rng, 5.0, -50.0), noise(rng, 15.0, -20.0)])
    events = detect(y, background_s=4.0)
    assert len(events) <= 1  # the step itself may count as one sound ...
    for e in events:  # ... but the louder room stops firing within half the background length
        assert abs(e.t_start - 5.0) < 0.1 and e.t_end < 5.0 + 2.5


def test_onset_in_loud_hum_is_detected(rng: np.random.Generator) -> None:
    from scipy.signal import butter, sosfilt

    t = np.arange(8 * SR) / SR
    y = (0.1 * np.sin(2 * np.pi * 100 * t) + 0.05 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    sos = butter(4, 2000, "hp", fs=SR, output="sos")
    for c in np.arange(4.0, 5.0, 0.1):  # 2 ms high-frequency ticks, 12 dB under the hum's RMS
        i = int(c * SR)
        tick = sosfilt(sos, rng.standard_normal(32)) * 10 ** (-30 / 20)
        y[i : i + 32] += tick.astype(np.float32)
    assert max(frame_db(y)[380:500]) - np.median(frame_db(y)) < 1.0  # level alone cannot tell
    events = detect(y)
    assert len(events) == 1
    assert abs(events[0].t_start - 4.0) < 0.05 and abs(events[0].t_end - 4.9) < 0.05


def test_sound_at_stream_start_is_found() -> None:
    events = detect(tone_with_clicks(4.0, [0.1]))
    assert len(events) == 1 and abs(events[0].t_start - 0.1) <= 0.1


@pytest.mark.parametrize("merge_gap_s", [0.4, 0.2])
def test_events_reported_soon_after_they_end(merge_gap_s: float) -> None:
    y = tone_with_clicks(8.0, [1.0, 4.0, 6.5])
    det = EnergyDetector(merge_gap_s=merge_gap_s)
    got = feed_chunked(det, y, np.arange(160, y.size, 160))  # 10 ms chunks
    assert len(got) == 3
    for e, t_reported in got:
        assert t_reported - e.t_end <= merge_gap_s + 0.05


def test_discontinuity_restarts_the_clock() -> None:
    y = tone_with_clicks(3.0, [1.0])
    det = EnergyDetector()
    events = det.feed(y, 0.0) + det.feed(y, 100.0) + det.flush()
    assert [round(e.t_start, 1) for e in events] == [1.0, 101.0]


def test_memory_stays_bounded_on_endless_stream(rng: np.random.Generator) -> None:
    det = EnergyDetector()
    quiet = noise(rng, 1.0, -50.0)
    loud = quiet + tone_with_clicks(1.0, [0.3], noise_db=-120.0)
    sizes, n_events = {}, 0
    for i in range(600):  # 10 minutes in 1 s chunks, a burst every 30 s
        n_events += len(det.feed(loud if i % 30 == 10 else quiet, float(i)))
        if i in (60, 599):
            sizes[i] = det.state_nbytes
    assert n_events == 20
    assert sizes[599] <= sizes[60] < 64 * 1024


# ----------------------------------------------------------------------------- real sounds


def esc50_clip(root: Path, category: str) -> tuple[str, np.ndarray]:
    """The first clip of ``category`` (by file name) as ``float32[n]`` at 16 kHz."""
    import soundfile as sf

    with open(root / "meta" / "esc50.csv", newline="") as f:
        names = sorted(r["filename"] for r in csv.DictReader(f) if r["category"] == category)
    path = root / "audio" / Path(names[0]).with_suffix(".flac")
    y, sr = sf.read(path, dtype="float32")
    assert sr == SR and y.ndim == 1
    return names[0], y


def esc50_mixture(shared_data: Path, rng: np.random.Generator):
    """20 s of quiet noise with knock, glass and can clips at 2, 9, 14 s.

    Returns the mixture and, per clip, (offset in s, centres in s of its active frames, samples).
    """
    root = shared_data / "esc50"
    room_db = -50.0
    mix = noise(rng, 20.0, room_db)
    truth = []
    placed = (("door_wood_knock", 2.0), ("glass_breaking", 9.0), ("can_opening", 14.0))
    for category, offset in placed:
        _, y = esc50_clip(root, category)
        i = int(offset * SR)
        mix[i : i + y.size] += y
        db = frame_db(y)
        # the clip's active frames: within 20 dB of its peak and clearly (12 dB) above the room
        loud = np.flatnonzero(db > max(db.max() - 20.0, room_db + 12.0))
        truth.append((offset, offset + (loud * HOP + WIN / 2) / SR, y))
    return mix, truth


def test_esc50_interaction_sounds_in_quiet_room(
    shared_data: Path, rng: np.random.Generator
) -> None:
    mix, truth = esc50_mixture(shared_data, rng)
    events = detect(mix)
    for offset, centres, _ in truth:  # most of each clip's active frames fall inside events
        inside = [any(e.t_start <= c <= e.t_end for e in events) for c in centres]
        assert len(centres) >= 10 and np.mean(inside) >= 0.8, (offset, np.mean(inside), events)
    for e in events:  # nothing outside the clips
        assert any(off - 0.1 <= e.t_start and e.t_end <= off + 5.1 for off, _, _ in truth), e
    emb = np.stack([e.embedding for e in events])
    for offset, _, clip in truth:  # the clip itself, as a query, finds one of its own events
        best = events[int(np.argmax(emb @ embed_clip(clip)))]
        assert offset <= best.t_start <= offset + 5.0, (offset, best)


def test_embed_clip_shape_and_errors() -> None:
    e = embed_clip(tone_with_clicks(1.0, [0.2]))
    assert e.shape == (EMBEDDING_DIM,) and e.dtype == np.float32
    assert np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ParameterError, match="399"):
        embed_clip(np.zeros(399, dtype=np.float32))


@pytest.mark.parametrize("width", [1, 2, 7, 400])
def test_gate_median_equals_numpy(rng: np.random.Generator, width: int) -> None:
    # the gate's partition-based median/MAD must be np.median's exactly (same thresholds)
    from models.audio.energy import _mad_stats

    x = np.round(rng.normal(-40, 6, (2, 5, width)), 1)  # ties included
    med, mad = _mad_stats(x)
    np.testing.assert_array_equal(med, np.median(x, axis=-1))
    np.testing.assert_array_equal(mad, np.median(np.abs(x - med[..., None]), axis=-1))
