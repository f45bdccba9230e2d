"""Short-term memory and episode boundaries (memory/shortterm.py) on constructed streams."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from memory.episodes import EpisodeBuilder
from memory.errors import BuilderStateError, ParameterError
from memory.shortterm import (
    BoundaryPolicy,
    EpisodeCompressor,
    Item,
    ShortTermMemory,
    frame_descriptor,
)
from memory.types import SoundRecord
from models.embedders.classical import ClassicalEmbedder
from tracker.types import RLE, Keyframe, KeyframeReason, Perception, TrackState

H, W = 48, 64
FPS = 2.0
MASK = RLE.encode(np.pad(np.ones((4, 4), bool), ((2, H - 6), (2, W - 6))))


def scene(kind: str, seed: int) -> np.ndarray:
    """A frame of one of two constructed scenes, with fresh sensor noise per frame."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:H, 0:W]
    if kind == "stripes":  # red/yellow vertical stripes
        img = np.stack([np.full((H, W), 200), 100 + 100 * ((x // 8) % 2), np.full((H, W), 30)], -1)
    else:  # a blue-green diagonal gradient
        img = np.stack([np.full((H, W), 20), (x + y) * 2, 120 + (y * 2)], -1)
    noisy = img + rng.normal(0, 4, img.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def perc(t: float, idx: int, *, x0: float = 4.0, track_id: int = 1, keyframe: bool = False,
         image: np.ndarray | None = None) -> Perception:  # fmt: skip
    tr = TrackState(track_id, "object", (x0, 2.0, x0 + 4.0, 6.0), MASK, 0.9, idx)
    kf = None
    if keyframe:
        img = image if image is not None else np.full((H, W, 3), idx % 256, np.uint8)
        kf = Keyframe("cam", idx, t, (track_id,), KeyframeReason.PERIODIC, image=img)
    return Perception("cam", idx, t, W, H, (tr,), keyframe=kf)


def compressor(policy: BoundaryPolicy | None = None, **window) -> EpisodeCompressor:
    embedder = ClassicalEmbedder()
    return EpisodeCompressor(
        "cam", policy or BoundaryPolicy(), window=ShortTermMemory(**window) if window else None,
        new_builder=lambda: EpisodeBuilder("cam", keyframes_per_episode=3, embedder=embedder),
        describe=frame_descriptor(embedder),
    )  # fmt: skip


def run(comp: EpisodeCompressor, frames, t_end: float, *, sounds=(), labels=("knock",)):
    comp.begin(frames[0][0], labels=labels, sounds=sounds)
    out = []
    for t, p, img in frames:
        out += comp.add(p, img, t=t)
    return out + comp.end(t_end)


def test_window_is_bounded_by_count_and_seconds() -> None:
    w = ShortTermMemory(max_items=5, max_s=10.0)
    out = [i.t for k in range(8) for i in w.push(Item(float(k), None, 0))]
    assert out == [0.0, 1.0, 2.0] and len(w) == 5  # count
    w = ShortTermMemory(max_items=100, max_s=2.0)
    out = [i.t for k in range(8) for i in w.push(Item(k * 0.5, None, 0))]
    assert out == [0.0, 0.5, 1.0] and w.span_s == 2.0  # seconds
    with pytest.raises(ParameterError):
        ShortTermMemory(max_items=0)


def test_default_scene_rule_cuts_at_a_scene_change_only() -> None:
    """The classical descriptor under IXC2.5-OL's cosine <= 0.9 rule: sensor noise and a moving
    object do not cut, a different scene does."""
    describe = frame_descriptor(ClassicalEmbedder())
    same = [float(describe(scene("stripes", i)) @ describe(scene("stripes", i + 1))) for i in range(5)]
    other = float(describe(scene("stripes", 0)) @ describe(scene("gradient", 1)))
    assert min(same) > 0.95 and other <= 0.9, (same, other)

    frames = []
    for k in range(16):  # 8 s: stripes until 4.0 s, then the gradient scene
        t = k / FPS
        img = scene("stripes" if t < 4.0 else "gradient", k)
        frames.append((t, perc(t, k, x0=4.0 + k, keyframe=k % 3 == 0, image=img), img))
    eps = run(compressor(), frames, 8.0)
    assert [(e.t_start, e.t_end, why) for e, _, why in eps] == [(0.0, 4.0, "scene"), (4.0, 8.0, "end")]
    assert eps[0][0].labels == ("knock",) and eps[1][0].labels == ()  # the trigger's episode
    assert all(t < 4.0 for t in eps[0][0].keyframe_times)
    assert all(t >= 4.0 for t in eps[1][0].keyframe_times)
    assert eps[0][0].visual is not None and eps[1][0].visual is not None
    assert float(eps[0][0].visual @ eps[1][0].visual) < 0.9  # each episode shows its own scene


def test_scene_cut_waits_for_min_episode_s() -> None:
    frames = []
    for k in range(8):  # the scene changes at 1.0 s, before min_episode_s
        t = k / FPS
        img = scene("stripes" if t < 1.0 else "gradient", k)
        frames.append((t, perc(t, k, x0=4.0 + k), img))
    eps = run(compressor(BoundaryPolicy(min_episode_s=2.0)), frames, 4.0)
    assert [why for *_, why in eps] == ["end"]
    eps = run(compressor(BoundaryPolicy(min_episode_s=0.5)), frames, 4.0)
    assert [(e.t_start, why) for e, _, why in eps] == [(0.0, "scene"), (1.0, "end")]


def test_idle_time_ends_an_episode_and_activity_starts_the_next() -> None:
    """Activity (a moving object) in [0, 3] s and [20, 23] s; a still object in between."""
    frames = []
    img = scene("stripes", 0)
    x0 = 4.0
    for k in range(int(26 * FPS)):
        t = k / FPS
        if 0 < t <= 3.0 or 20.0 <= t <= 23.0:
            x0 = 4.0 + 3.0 * (k % 10)  # moves; else it stays where it was
        frames.append((t, perc(t, k, x0=x0, keyframe=k % 4 == 0), img))
    eps = run(compressor(BoundaryPolicy(idle_s=5.0)), frames, 26.0)
    assert [(e.t_start, e.t_end, why) for e, _, why in eps] == [(0.0, 3.0, "idle"), (20.0, 26.0, "end")]
    kept = [t for e, _, _ in eps for t in e.keyframe_times]
    assert kept and not any(3.0 < t < 20.0 for t in kept)  # idle frames are not remembered


def test_a_new_trigger_after_a_quiet_gap_starts_an_episode() -> None:
    img = scene("stripes", 0)
    frames = [(k / FPS, perc(k / FPS, k, x0=4.0 + 3 * (k % 15)), img) for k in range(int(14 * FPS))]
    knock = SoundRecord("knock", 0.9, 0.2, 1.0)
    glass = SoundRecord("glass_breaking", 0.8, 8.3, 9.0)
    eps = run(compressor(), frames, 14.0, sounds=[knock, glass])
    assert [(e.t_start, why) for e, _, why in eps] == [(0.0, "trigger"), (8.3, "end")]
    assert eps[0][0].sounds == (knock,) and eps[1][0].sounds == (glass,)
    assert eps[1][0].labels == ("glass_breaking",) and eps[0][0].t_end == 8.3
    close = SoundRecord("knock", 0.9, 2.0, 2.5)  # 1 s after the first: the same happening
    eps = run(compressor(), frames, 14.0, sounds=[knock, close])
    assert [why for *_, why in eps] == ["end"] and len(eps[0][0].sounds) == 2


def test_audio_vectors_follow_their_sounds() -> None:
    img = scene("stripes", 0)
    frames = [(k / FPS, perc(k / FPS, k, x0=4.0 + 3 * (k % 15)), img) for k in range(int(14 * FPS))]
    sounds = [SoundRecord("knock", 0.9, 0.2, 1.0), SoundRecord("glass", 0.8, 8.3, 9.0)]
    a, b = np.eye(4, dtype=np.float32)[:2]
    comp = compressor()
    comp.begin(0.0, labels=("knock",), sounds=sounds, audio_embeddings=[a, b])
    eps = [e for t, p, im in frames for e in comp.add(p, im)] + comp.end(14.0)
    assert np.allclose(eps[0][0].audio, a) and np.allclose(eps[1][0].audio, b)


def test_long_episodes_are_cut_at_max_episode_s() -> None:
    img = scene("stripes", 0)
    frames = [(k / FPS, perc(k / FPS, k, x0=4.0 + 3 * (k % 15)), img) for k in range(int(12 * FPS))]
    eps = run(compressor(BoundaryPolicy(max_episode_s=5.0)), frames, 12.0)
    assert [(e.t_start, why) for e, _, why in eps] == [(0.0, "length"), (5.0, "length"), (10.0, "end")]


def test_misuse_is_a_clear_error() -> None:
    comp = compressor()
    with pytest.raises(BuilderStateError):
        comp.add(perc(0.0, 0))
    comp.begin(0.0)
    with pytest.raises(BuilderStateError):
        comp.begin(1.0)
    with pytest.raises(ParameterError):
        BoundaryPolicy(min_episode_s=10.0, max_episode_s=5.0)


def test_memory_stays_flat_on_an_endless_stream() -> None:
    """An hour of frames at 2 fps (one capture that never ends, always active): the window
    stays within its bounds and the memory held does not grow with the stream's length.
    (Frame descriptors are left out: they hold no state, and would make this slow.)"""
    embedder = ClassicalEmbedder()
    comp = EpisodeCompressor(
        "cam", BoundaryPolicy(max_episode_s=60.0), window=ShortTermMemory(max_items=40, max_s=15.0),
        new_builder=lambda: EpisodeBuilder("cam", keyframes_per_episode=3, embedder=embedder),
    )  # fmt: skip
    comp.begin(0.0, labels=("knock",))
    img = scene("stripes", 0)
    n_frames, episodes, worst = int(3600 * FPS), 0, (0, 0.0)
    tracemalloc.start()
    try:
        for k in range(n_frames):
            t = k / FPS
            tracks_id = 1 + k // 50  # the tracker keeps making new track ids
            p = perc(t, k, x0=4.0 + 3 * (k % 15), track_id=tracks_id, keyframe=k % 5 == 0)
            episodes += len(comp.add(p, img))
            worst = (max(worst[0], len(comp.window)), max(worst[1], comp.window.span_s))
            if k == n_frames // 4:
                early = tracemalloc.get_traced_memory()[0]
        late = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    episodes += len(comp.end(n_frames / FPS))
    assert worst[0] <= 40 and worst[1] <= 15.0
    assert episodes == 60  # one per minute
    assert late - early < 256 * 1024, (early, late)
