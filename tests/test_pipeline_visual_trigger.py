"""Tests of the visual-change trigger (video without audio) on real H.264 video and on frames."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from pipeline.errors import ConfigError, IngestError
from pipeline.triggers import capture_windows
from pipeline.types import FramePacket, TriggerState
from pipeline.visual_trigger import (
    LABEL,
    MAX_BACKGROUND,
    VisualChange,
    VisualChangeDetector,
    detect_visual_changes,
    visual_trigger_events,
)
from tests.media import write_video

FPS = 10  # encoded frame rate
SAMPLE_FPS = 2.0  # detector sampling rate (one sampled frame = 0.5 s)
OBJECT_AT = 3.2  # s: a red square appears (and stays until the cut)
CUT_AT = 6.2  # s: scene cut to another scene
DURATION = 9.0  # s
NOISE = 4.0  # levels: per-frame Gaussian sensor noise


def scene(seed: int, width: int = 320, height: int = 240) -> np.ndarray:
    """A smooth random colour texture, ``uint8[H, W, 3]``."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (height // 16 + 1, width // 16 + 1, 3)).astype(np.uint8)
    return cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)


def noisy(img: np.ndarray, rng: np.random.Generator, sigma: float = NOISE) -> np.ndarray:
    return np.clip(img + rng.normal(0.0, sigma, img.shape), 0, 255).astype(np.uint8)


def encode(path: Path, frames: list[np.ndarray], fps: int = FPS) -> Path:
    """Encode RGB frames to an H.264 MP4 without audio."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "ultrafast", "g": "30"}
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
    return path


def event_frames(duration: float = DURATION, *, events: bool = True) -> list[np.ndarray]:
    """Static noisy scene; with ``events`` an object appears at OBJECT_AT and a cut at CUT_AT."""
    rng = np.random.default_rng(0)
    a, b = scene(1), scene(2)
    with_object = a.copy()
    with_object[80:150, 120:190] = (230, 60, 50)  # 6 % of the frame, about a's luminance
    out = []
    for i in range(int(duration * FPS)):
        t = i / FPS
        img = a if not events or t < OBJECT_AT else with_object if t < CUT_AT else b
        out.append(noisy(img, rng))
    return out


@pytest.fixture(scope="module")
def event_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encode(tmp_path_factory.mktemp("visual") / "events.mp4", event_frames())


@pytest.fixture(scope="module")
def static_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encode(tmp_path_factory.mktemp("visual") / "static.mp4", event_frames(events=False))


def packet(img: np.ndarray, t: float, idx: int = 0) -> FramePacket:
    img = np.ascontiguousarray(img)
    img.setflags(write=False)
    return FramePacket("cam", idx, None, 0.0, t, img)


def run(detector: VisualChangeDetector, frames: list[tuple[float, np.ndarray]]) -> list:
    out = []
    for i, (t, img) in enumerate(frames):
        out += detector.feed(packet(img, t, i))
    return out + detector.flush()


def covers(c: VisualChange, t: float, slack: float = 1e-6) -> bool:
    return c.t_start - slack <= t <= c.t_end + slack


# ----------------------------------------------------------------------------- real video


def test_finds_the_object_and_the_cut_and_nothing_else(event_video: Path) -> None:
    changes, duration = detect_visual_changes(str(event_video), fps=SAMPLE_FPS)
    assert duration == pytest.approx(DURATION, abs=1.0 / SAMPLE_FPS)
    assert len(changes) == 3, changes
    first, obj, cut = changes
    assert (first.t_start, first.t_end, first.score) == (0.0, pytest.approx(0.5), 1.0)
    # each change spans from the sampled frame before the event to the one showing it
    for c, t in ((obj, OBJECT_AT), (cut, CUT_AT)):
        assert covers(c, t) and c.t_end - c.t_start <= 1.0 / SAMPLE_FPS + 1e-6, (c, t)
        assert 0.02 < c.score <= 1.0
    assert cut.score > obj.score


def test_trigger_events_make_windows_over_the_changes(event_video: Path) -> None:
    changes, duration = detect_visual_changes(str(event_video), stream_id="cam0")
    events = visual_trigger_events(changes, stream_id="cam0")
    assert [e.state for e in events] == [TriggerState.START, TriggerState.END] * len(changes)
    assert [e.trigger_id for e in events] == [i for i in range(len(changes)) for _ in range(2)]
    assert {e.label for e in events} == {LABEL} and {e.stream_id for e in events} == {"cam0"}
    assert all(e.accepted for e in events)
    assert [(e.t_start, e.t_end, e.score) for e in events[1::2]] == [
        (c.t_start, c.t_end, c.score) for c in changes
    ]
    assert [e.t for e in events] == [t for c in changes for t in (c.t_start, c.t_end)]
    windows = capture_windows(
        events, stream_id="cam0", pre_roll_s=1.0, post_roll_s=1.0, max_window_s=20.0,
        duration_s=duration,
    )  # fmt: skip
    assert [(w.t_start, w.t_end) for w in windows] == [
        (0.0, pytest.approx(1.5)), (pytest.approx(2.0), pytest.approx(4.5)),
        (pytest.approx(5.0), pytest.approx(7.5)),
    ]  # fmt: skip
    for t in (0.0, OBJECT_AT, CUT_AT):
        assert any(w.t_start <= t <= w.t_end for w in windows)
    assert all(w.labels == (LABEL,) for w in windows)
    for t in (1.75, 4.75, 8.0, 8.9):  # static stretches are not captured
        assert not any(w.t_start <= t <= w.t_end for w in windows), t


def test_static_noisy_video_yields_only_the_initial_change(static_video: Path) -> None:
    changes, _ = detect_visual_changes(str(static_video))
    assert changes == [VisualChange(0.0, pytest.approx(0.5), 1.0)]
    changes, _ = detect_visual_changes(str(static_video), initial=False)
    assert changes == []


def test_single_frame_video(tmp_path: Path) -> None:
    path = encode(tmp_path / "one.mp4", [scene(3)])
    changes, duration = detect_visual_changes(str(path))
    assert changes == [VisualChange(0.0, 0.0, 1.0)]
    assert duration == pytest.approx(1.0 / SAMPLE_FPS)


def test_motion_from_the_start_and_errors_name_the_source(tmp_path: Path) -> None:
    path = write_video(tmp_path / "squares.mp4", duration_s=3.0, audio=False)
    changes, duration = detect_visual_changes(str(path))
    assert duration == pytest.approx(3.0, abs=0.1)
    first = changes[0]  # the squares move in every frame: the motion joins the first view
    assert (first.t_start, first.score) == (0.0, 1.0) and first.t_end >= 1.0
    with pytest.raises(IngestError, match="missing.mp4"):
        detect_visual_changes(str(tmp_path / "missing.mp4"))
    with pytest.raises(ConfigError, match="fps"):
        detect_visual_changes(str(path), fps=0)


# ----------------------------------------------------------------------------- frames


def test_identical_and_noisy_frames_never_trigger(rng: np.random.Generator) -> None:
    img = scene(4)
    assert run(VisualChangeDetector(), [(i * 0.5, img) for i in range(20)]) == [
        VisualChange(0.0, 0.5, 1.0)
    ]
    frames = [(i * 0.5, noisy(img, rng, sigma=12.0)) for i in range(240)]  # 2 minutes
    assert run(VisualChangeDetector(), frames) == [VisualChange(0.0, 0.5, 1.0)]


def test_single_frame_and_initial_switch() -> None:
    assert run(VisualChangeDetector(), [(7.0, scene(5))]) == [VisualChange(7.0, 7.0, 1.0)]
    assert run(VisualChangeDetector(initial=False), [(7.0, scene(5))]) == []
    assert VisualChangeDetector().flush() == []
    grey = scene(5)[..., 1]  # uint8[H, W] frames are accepted too
    assert run(VisualChangeDetector(), [(0.0, grey), (0.5, grey)]) == [VisualChange(0.0, 0.5, 1.0)]


def test_change_at_the_second_frame_merges_with_the_initial_one() -> None:
    a, b = scene(6), scene(7)
    frames = [(0.0, a)] + [(i * 0.5, b) for i in range(1, 12)]
    assert run(VisualChangeDetector(), frames) == [VisualChange(0.0, 0.5, 1.0)]
    assert run(VisualChangeDetector(merge_gap_s=0.0), frames) == [VisualChange(0.0, 0.5, 1.0)]


def test_merge_gap_joins_close_changes_only() -> None:
    a, b = scene(8), scene(9)
    # activity at 2.0 and 3.0 (1 s apart: one change), then at 8.0 (5 s later: another)
    seq = [a] * 4 + [b, b, a] + [a] * 9 + [b] + [b] * 5
    frames = [(i * 0.5, img) for i, img in enumerate(seq)]
    changes = run(VisualChangeDetector(initial=False), frames)
    assert [(c.t_start, c.t_end) for c in changes] == [(1.5, 3.0), (7.5, 8.0)]
    changes = run(VisualChangeDetector(initial=False, merge_gap_s=0.0), frames)
    assert [(c.t_start, c.t_end) for c in changes] == [(1.5, 2.0), (2.5, 3.0), (7.5, 8.0)]
    changes = run(VisualChangeDetector(initial=False, min_event_s=1.0), frames)
    assert [(c.t_start, c.t_end) for c in changes] == [(1.5, 3.0)]


def test_changes_are_reported_as_soon_as_merge_gap_passes() -> None:
    a, b = scene(10), scene(11)
    detector = VisualChangeDetector(initial=False, merge_gap_s=1.0)
    seq = [a, a, b, b, b, b, b]  # change at 1.0; reported at 2.0 (1 s later)
    reported = {i: detector.feed(packet(img, i * 0.5, i)) for i, img in enumerate(seq)}
    assert [i for i, found in reported.items() if found] == [4]
    assert detector.flush() == []


def test_frame_size_change_mid_stream() -> None:
    large = scene(12, 640, 480)
    small = cv2.resize(large, (160, 120), interpolation=cv2.INTER_AREA)  # same view
    frames = [(i * 0.5, small) for i in range(6)] + [(i * 0.5, large) for i in range(6, 12)]
    assert run(VisualChangeDetector(), frames) == [VisualChange(0.0, 0.5, 1.0)]
    wide = cv2.resize(scene(13), (320, 180))  # another view at another aspect ratio
    frames += [(i * 0.5, wide) for i in range(12, 16)]
    changes = run(VisualChangeDetector(), frames)
    assert [(c.t_start, c.t_end) for c in changes] == [(0.0, 0.5), (5.5, 6.0)]


def test_timestamp_jumps() -> None:
    a, b = scene(14), scene(15)
    # same view across a forward jump and a backward jump: nothing but the initial change
    ts = [i * 0.5 for i in range(8)] + [100.0 + i * 0.5 for i in range(8)] + [1.0, 1.5, 2.0]
    assert run(VisualChangeDetector(), [(t, a) for t in ts]) == [VisualChange(0.0, 0.5, 1.0)]
    # another view after the jump: a change ending at the jumped frame, one interval long
    frames = [(t, a) for t in ts[:8]] + [(t, b) for t in ts[8:16]] + [(t, a) for t in ts[16:]]
    changes = run(VisualChangeDetector(), frames)
    assert [(c.t_start, c.t_end) for c in changes] == [(0.0, 0.5), (99.5, 100.0), (0.5, 1.0)]


def test_threshold_adapts_to_a_busy_background(rng: np.random.Generator) -> None:
    """Constant moderate flicker raises the threshold; a cut still stands out."""
    a, b = scene(16), scene(17)
    frames = [(i * 0.5, noisy(a, rng, sigma=3.0)) for i in range(80)]
    frames = [(t, img if i % 2 else np.clip(img.astype(np.int16) + 12, 0, 255).astype(np.uint8))
              for i, (t, img) in enumerate(frames)]  # fmt: skip
    frames.append((40.0, b))
    flicker = run(VisualChangeDetector(initial=False, k_mad=5.0, min_change=0.02), frames)
    assert [(c.t_start, c.t_end) for c in flicker][-1] == (39.5, 40.0)
    assert len(flicker) == 2 and flicker[0].t_end <= 2.5  # only while the background fills up


def test_memory_is_bounded(rng: np.random.Generator) -> None:
    detector = VisualChangeDetector(background_s=5.0)
    img = scene(18, 96, 72)
    sizes = []
    for i in range(1000):
        detector.feed(packet(img, i * 0.1, i))
        sizes.append(detector.state_nbytes)
    assert sizes[-1] == sizes[100] and sizes[-1] < 20_000
    dense = VisualChangeDetector(background_s=1e6)  # the background is capped in scores too
    for i in range(MAX_BACKGROUND + 20):
        dense.feed(packet(img, i * 1e-3, i))
        if i == MAX_BACKGROUND + 10:
            capped = dense.state_nbytes
    assert dense.state_nbytes == capped


def test_bad_parameters_and_frames_raise() -> None:
    for kwargs in ({"k_mad": 0}, {"min_change": 1.0}, {"background_s": 0.0},
                   {"merge_gap_s": -1.0}, {"min_event_s": float("nan")}, {"size": 4}):  # fmt: skip
        with pytest.raises(ConfigError, match=next(iter(kwargs))):
            VisualChangeDetector(**kwargs)
    detector = VisualChangeDetector()
    with pytest.raises(ValueError, match="uint8"):
        detector.feed(packet(np.zeros((8, 8, 4), np.uint8), 0.0))
    with pytest.raises(ValueError, match="float32"):
        detector.feed(packet(np.zeros((8, 8, 3), np.float32), 0.0))
    with pytest.raises(ValueError, match="time"):
        detector.feed(packet(np.zeros((8, 8, 3), np.uint8), float("nan")))
    assert detector.n_frames == 0
