"""Source specs: per-source options over the defaults, and their mapping onto av.open arguments
(devices cannot be opened here, so their option mapping is what is tested)."""

from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.sources import Backoff, open_args, resolve, scheme


def _sources(**section):
    return load_config(environ={}, sources=section).sources


def test_schemes():
    assert [scheme(s) for s in ("a.mp4", "rtsp://h/x", "RTSPS://h", "https://h/x.m3u8", "udp://@:5000",
                                "v4l2:/dev/video0", "alsa:hw:1", "pulse:")] == [
        "file", "rtsp", "rtsp", "http", "udp", "v4l2", "alsa", "pulse"]  # fmt: skip


def test_files_are_not_live_and_get_no_options():
    spec = resolve("clip.mp4", _sources())
    assert not spec.live and open_args(spec).kwargs() == {"format": None, "options": {}, "timeout": None}


def test_rtsp_defaults_and_override():
    cfg = _sources(read_timeout_s=3, streams={"rtsp://cam/1": {"rtsp_transport": "udp", "open_timeout_s": 2}})
    a = open_args(resolve("rtsp://cam/1", cfg))
    assert a.options == {"rw_timeout": "3000000", "rtsp_transport": "udp", "timeout": "3000000"}
    assert a.timeout == (2.0, 3.0)
    b = open_args(resolve("rtsp://cam/2", cfg))  # the override is per source
    assert b.options["rtsp_transport"] == "tcp" and b.timeout == (10.0, 3.0)
    assert "rtsp_transport" not in open_args(resolve("rtsp://x", _sources(rtsp_transport="auto"))).options


def test_network_protocol_options():
    udp = open_args(resolve("udp://127.0.0.1:5000", _sources()))
    assert udp.options["overrun_nonfatal"] == "1" and udp.options["timeout"] == "10000000"
    assert open_args(resolve("rtmp://h/live/x", _sources())).options["rtmp_live"] == "live"
    hls = resolve("https://h/cam.m3u8", _sources())
    assert hls.live and open_args(hls).options == {"rw_timeout": "10000000", "seekable": "0"}
    vod = resolve("https://h/film.mp4", _sources(streams={"https://h/film.mp4": {"live": False}}))
    assert not vod.live and "seekable" not in open_args(vod).options


def test_device_option_mapping():
    cfg = _sources(streams={
        "v4l2:/dev/video2": {"video_size": "1280x720", "framerate": 30},
        "alsa:hw:1": {"sample_rate": 48000, "channels": 2},
    })  # fmt: skip
    cam = open_args(resolve("v4l2:/dev/video2", cfg))
    assert (cam.file, cam.format, cam.options) == ("/dev/video2", "v4l2", {"video_size": "1280x720", "framerate": "30"})
    mic = open_args(resolve("alsa:hw:1", cfg))
    assert (mic.file, mic.format, mic.options) == ("hw:1", "alsa", {"sample_rate": "48000", "channels": "2"})
    pulse = open_args(resolve("pulse:", cfg))
    assert (pulse.file, pulse.format) == ("default", "pulse") and pulse.timeout == (10.0, 10.0)


def test_named_stream_pairs_video_with_separate_audio():
    cfg = _sources(streams={
        "kitchen": {"url": "v4l2:/dev/video0", "audio": "mic", "framerate": 15},
        "mic": {"url": "alsa:hw:1", "channels": 1},
    })  # fmt: skip
    spec = resolve("kitchen", cfg)
    assert spec.target == "v4l2:/dev/video0" and spec.live and spec.kind == "v4l2"
    assert spec.audio is not None and spec.audio.target == "alsa:hw:1"
    assert open_args(spec.audio).options == {"channels": "1"}
    paired = resolve("rtsp://cam/1", cfg, audio="pulse:")
    assert paired.audio.target == "pulse:"


def test_stream_name_without_url_is_a_config_error():
    with pytest.raises(ConfigError, match="sources.streams.kitchen: set its url"):
        resolve("kitchen", _sources(streams={"kitchen": {"framerate": 15}}))


def test_config_rejects_bad_source_options():
    with pytest.raises(ConfigError, match="sources.rtsp_transport"):
        _sources(rtsp_transport="carrier-pigeon")
    with pytest.raises(ConfigError, match="video_size"):
        _sources(streams={"v4l2:/dev/video0": {"video_size": "big"}})


def test_backoff_doubles_caps_and_gives_up():
    b = Backoff(0.5, 3.0, limit=5)
    assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 3.0, 3.0, None]
    b.reset()
    assert b.next_delay() == 0.5
