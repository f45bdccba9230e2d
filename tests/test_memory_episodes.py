"""EpisodeBuilder: tracks → objects, bounded keyframes, summary, vectors; format_time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memory.episodes import EpisodeBuilder, format_time, spread_keep
from memory.errors import BuilderStateError, ParameterError
from memory.store import EpisodeStore
from memory.types import SoundRecord
from tracker.types import RLE, Keyframe, KeyframeReason, Perception, TrackState

H, W = 24, 32


class MeanColourEmbedder:
    """A deterministic stand-in Embedder: the L2-normalised mean RGB of each image."""

    dim = 3

    def __init__(self) -> None:
        self.calls: list[int] = []

    def embed_images(self, images, masks=None) -> np.ndarray:
        self.calls.append(len(images))
        x = np.stack([np.asarray(im, np.float32).reshape(-1, 3).mean(0) + 1.0 for im in images])
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def frame(value: int) -> np.ndarray:
    img = np.full((H, W, 3), value, np.uint8)
    img.flags.writeable = False  # stages receive read-only frames (Ray object store)
    return img


def track(track_id: int, x0: float, *, desc: np.ndarray | None = None, visible: bool = True):
    mask = np.zeros((H, W), bool)
    mask[2:6, 2:6] = True
    return TrackState(track_id, "object", (x0, 2.0, x0 + 4.0, 6.0), RLE.encode(mask), 0.9, 1,
                      visible=visible, descriptor=desc)  # fmt: skip


def perception(t: float, idx: int, tracks, *, keyframe: bool = False) -> Perception:
    kf = None
    if keyframe:
        kf = Keyframe("cam1", idx, t, tuple(tr.track_id for tr in tracks), KeyframeReason.PERIODIC,
                      image=frame(idx % 256))  # fmt: skip
    return Perception("cam1", idx, t, W, H, tuple(tracks), keyframe=kf)


@pytest.mark.parametrize(
    ("t", "text"),
    [(0.0, "0:00.0"), (4.2, "0:04.2"), (59.96, "1:00.0"), (62.25, "1:02.2"),
     (3723.5, "1:02:03.5"), (-1.5, "-0:01.5")],  # fmt: skip
)
def test_format_time(t: float, text: str) -> None:
    assert format_time(t) == text


def test_build_episode(rng: np.random.Generator) -> None:
    embedder = MeanColourEmbedder()
    builder = EpisodeBuilder("cam1", keyframes_per_episode=3, embedder=embedder)
    sounds = (SoundRecord("glass_breaking", 0.82, 4.2, 4.9), SoundRecord("sound", 0.5, 4.0, 4.1))
    audio = rng.standard_normal((2, 8)).astype(np.float32)
    builder.begin(4.0, labels=("sound",), sounds=sounds, wall_start=1.7e9, audio_embeddings=audio)
    d1, d2 = np.eye(4, dtype=np.float32)[0], np.eye(4, dtype=np.float32)[1]
    for i in range(10):
        t = 4.0 + 0.5 * i
        tracks = [track(1, float(i), desc=d1)]
        if 2 <= i <= 5:
            tracks.append(track(2, 10.0, desc=d2, visible=i != 5))
        builder.add(perception(t, i, tracks, keyframe=True))
    ep, images = builder.end(9.0)
    assert not builder.active
    assert (ep.source, ep.t_start, ep.t_end, ep.wall_start) == ("cam1", 4.0, 9.0, 1.7e9)
    assert ep.labels == ("glass_breaking", "sound")
    assert ep.sounds == sounds
    o1, o2 = ep.objects
    assert (o1.track_id, o1.t_first, o1.t_last, o1.n_frames) == (1, 4.0, 8.5, 10)
    assert o1.bbox == (9.0, 2.0, 13.0, 6.0)  # where last seen
    assert (o2.track_id, o2.t_first, o2.t_last, o2.n_frames) == (2, 5.0, 6.5, 3)
    np.testing.assert_allclose(o1.descriptor, d1)
    # keyframes: at most 3, the first and the latest kept, spread over time
    assert len(images) == 3 and ep.keyframe_times[0] == 4.0 and ep.keyframe_times[-1] == 8.5
    assert images[0] is not None and not images[0].flags.writeable  # the frame, not a copy
    assert "glass_breaking at 0:04.2–0:04.9 (score 0.82)" in ep.summary
    assert "2 objects tracked: object#1 for 4.5 s" in ep.summary
    assert ep.visual.shape == (3,) and np.isclose(np.linalg.norm(ep.visual), 1.0)
    assert embedder.calls == [3]
    want_audio = audio.mean(0) / np.linalg.norm(audio.mean(0))
    np.testing.assert_allclose(ep.audio, want_audio, rtol=1e-5)


def test_visual_vector_without_embedder_uses_descriptors() -> None:
    builder = EpisodeBuilder("cam1")
    builder.begin(0.0)
    d = np.array([3.0, 4.0], np.float32)
    builder.add(perception(0.0, 0, [track(1, 0.0, desc=d)]))
    ep, images = builder.end(1.0)
    np.testing.assert_allclose(ep.visual, [0.6, 0.8])
    assert ep.audio is None and images == [] and ep.labels == ()
    assert ep.summary.startswith("1 object tracked")


def test_fallback_frame_when_no_keyframes() -> None:
    builder = EpisodeBuilder("cam1")
    builder.begin(2.0, labels=("door_wood_knock",))
    for i, t in enumerate([1.0, 1.9, 2.4, 3.0]):
        builder.add_frame(frame(i), t, i)
    ep, images = builder.end(3.0)
    assert ep.keyframe_times == (1.9,) and len(images) == 1 and images[0][0, 0, 0] == 1
    assert ep.visual is None and ep.summary == "door_wood_knock (trigger)"
    builder.begin(5.0)
    builder.add_frame(frame(9), 5.0, 0)
    builder.add(perception(5.5, 1, [], keyframe=True))
    ep, images = builder.end(6.0)
    assert ep.keyframe_times == (5.5,)  # a real keyframe wins over the fallback


def test_spread_keep_keeps_first_and_last() -> None:
    times: list[float] = []
    for t in np.arange(0.0, 20.0, 0.5):
        times.append(float(t))
        if (drop := spread_keep(times, 4)) is not None:
            del times[drop]
    assert len(times) == 4 and times[0] == 0.0 and times[-1] == 19.5
    assert max(np.diff(times)) < 10.0  # spread out, not bunched at one end
    assert spread_keep([0.0, 1.0], 1) == 1


def test_builder_state_errors() -> None:
    builder = EpisodeBuilder("cam1")
    with pytest.raises(BuilderStateError, match="before begin"):
        builder.add(perception(0.0, 0, []))
    with pytest.raises(BuilderStateError):
        builder.end(1.0)
    builder.begin(1.0)
    with pytest.raises(BuilderStateError, match="already begun"):
        builder.begin(2.0)
    with pytest.raises(ParameterError, match="before it began"):
        builder.end(0.5)
    with pytest.raises(ParameterError):
        EpisodeBuilder("cam1", keyframes_per_episode=0)


def test_builder_to_store(tmp_path: Path) -> None:
    builder = EpisodeBuilder("cam1", keyframes_per_episode=2, embedder=MeanColourEmbedder())
    builder.begin(1.0, sounds=(SoundRecord("door_wood_knock", 0.9, 1.0, 1.3),))
    for i in range(5):
        builder.add(perception(1.0 + i, i, [track(7, 0.0)], keyframe=True))
    ep, images = builder.end(6.0)
    with EpisodeStore(tmp_path / "s") as store:
        stored = store.add(ep, images)
        assert store.get(stored.episode_id).keyframe_times == (1.0, 5.0)
        assert [i for i, _ in store.search_text("knocking")] == [stored.episode_id]
        assert store.check()["ok"]
