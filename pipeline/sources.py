"""Sources: what a SOURCE string names (file, URL, device, a configured stream) and how to open it.

A source is a file path, a network URL (``rtsp://``, ``rtmp://``, ``http(s)://`` incl. HLS,
``tcp://``, ``udp://``), a capture device (``v4l2:/dev/video0``, ``alsa:hw:1``, ``pulse:`` or
``pulse:NAME``), or the name of an entry of ``sources.streams`` in the config. :func:`resolve`
merges the per-source options over the section defaults; :func:`open_args` maps them onto the
arguments of :func:`av.open` (format, FFmpeg options, timeouts), the one place that knows FFmpeg's
option names per protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.config import SourceOptions, SourcesConfig

URL_SCHEMES = (
    "rtsp://",
    "rtsps://",
    "rtmp://",
    "rtmps://",
    "http://",
    "https://",
    "tcp://",
    "udp://",
)
DEVICE_PREFIXES = {"v4l2:": "v4l2", "alsa:": "alsa", "pulse:": "pulse"}
US_PER_S = 1_000_000  # FFmpeg timeouts are in microseconds


def is_url(source: str) -> bool:
    """True for a network source (``rtsp://``, ``http(s)://``, ...)."""
    return source.lower().startswith(URL_SCHEMES)


def device_kind(source: str) -> str | None:
    """``"v4l2"``, ``"alsa"`` or ``"pulse"`` for a device source, else None."""
    low = source.lower()
    return next((kind for prefix, kind in DEVICE_PREFIXES.items() if low.startswith(prefix)), None)


def scheme(source: str) -> str:
    """``"file"``, a URL scheme (``"rtsp"``, ``"http"``...) or a device kind."""
    if is_url(source):
        name = source.split("://", 1)[0].lower()
        return {"https": "http", "rtsps": "rtsp", "rtmps": "rtmp"}.get(name, name)
    return device_kind(source) or "file"


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One resolved source: what to open (``target``) and with which options.

    name: what the user gave (a path, URL, device or stream name); audio: a paired audio source
    (its own spec) or None; live: read as an endless stream (reconnect, ring buffer, wall time).
    """

    name: str
    target: str
    options: SourceOptions
    audio: SourceSpec | None = None
    live: bool = False

    @property
    def kind(self) -> str:
        return scheme(self.target)


@dataclass(frozen=True, slots=True)
class OpenArgs:
    """Arguments of :func:`av.open` for one source."""

    file: str
    format: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    timeout: tuple[float, float] | None = None

    def kwargs(self) -> dict[str, Any]:
        return {"format": self.format, "options": dict(self.options), "timeout": self.timeout}


def _merged(cfg: SourcesConfig, override: SourceOptions | None) -> SourceOptions:
    from pipeline.config import SourceOptions

    base = {k: getattr(cfg, k) for k in SourceOptions.model_fields}
    if override is not None:
        base.update({k: getattr(override, k) for k in override.model_fields_set})
    return SourceOptions(**base)


def resolve(source: str, cfg: SourcesConfig, *, audio: str | None = None) -> SourceSpec:
    """The :class:`SourceSpec` of ``source`` under ``cfg`` (a ``sources`` config section).

    ``source`` may name an entry of ``cfg.streams`` (its ``url`` is then opened) or be a path,
    URL or device with an entry keyed by itself. ``audio`` pairs a separate audio source (it
    overrides the entry's ``audio``).
    """
    override = cfg.streams.get(source)
    opts = _merged(cfg, override)
    target = opts.url or source
    if override is not None and opts.url is None and not _looks_like_source(source):
        raise ConfigError(f"sources.streams.{source}: set its url (a file, URL or device)")
    live = (
        opts.live if opts.live is not None else (is_url(target) or device_kind(target) is not None)
    )
    pair = audio or opts.audio
    audio_spec = None
    if pair:
        a_opts = _merged(cfg, cfg.streams.get(pair))
        audio_spec = SourceSpec(pair, a_opts.url or pair, a_opts, None, live)
    return SourceSpec(source, target, opts, audio_spec, live)


def _looks_like_source(source: str) -> bool:
    return bool(is_url(source) or device_kind(source) or "/" in source or "." in source)


def open_args(spec: SourceSpec, *, open_timeout_s: float | None = None) -> OpenArgs:
    """Map ``spec``'s options onto :func:`av.open` arguments (format, FFmpeg options, timeouts).

    Files get no options. Network sources get a socket I/O timeout (``rw_timeout``, plus the
    protocol's own ``timeout`` where it has one) so a stall raises instead of hanging; devices get
    their capture size, rate and channels.
    """
    o = spec.options
    opts = {str(k): str(v) for k, v in o.ffmpeg_options.items()}
    kind = spec.kind
    if kind == "file":
        return OpenArgs(spec.target, o.format, opts, None)
    timeout = (open_timeout_s or o.open_timeout_s, o.read_timeout_s)
    read_us = str(int(o.read_timeout_s * US_PER_S))
    if kind in DEVICE_PREFIXES.values():
        return _device_args(spec, kind, opts, timeout)
    opts.setdefault("rw_timeout", read_us)
    if kind == "rtsp":
        if o.rtsp_transport != "auto":
            opts.setdefault("rtsp_transport", o.rtsp_transport)
        opts.setdefault("timeout", read_us)  # RTSP: socket I/O timeout (us)
    elif kind == "udp":
        opts.setdefault("timeout", read_us)
        opts.setdefault("overrun_nonfatal", "1")
        opts.setdefault("fifo_size", "50000")  # x188 bytes: a few seconds of a camera's bitrate
    elif kind == "rtmp":
        opts.setdefault("rtmp_live", "live")
    elif kind == "http" and spec.live:
        opts.setdefault("seekable", "0")
    return OpenArgs(spec.target, o.format, opts, timeout)


def _device_args(spec: SourceSpec, kind: str, opts: dict[str, str], timeout) -> OpenArgs:
    o = spec.options
    target = spec.target.split(":", 1)[1]
    if kind == "v4l2":
        if o.video_size:
            opts.setdefault("video_size", o.video_size)
        if o.framerate:
            opts.setdefault("framerate", f"{o.framerate:g}")
    else:
        target = target or "default"
        if o.sample_rate:
            opts.setdefault("sample_rate", str(o.sample_rate))
        if o.channels:
            opts.setdefault("channels", str(o.channels))
    return OpenArgs(target, o.format or kind, opts, timeout)


class Backoff:
    """Reconnect delays: ``initial``, doubling up to ``maximum``; ``reset()`` after a success."""

    def __init__(self, initial: float, maximum: float, *, limit: int | None = None) -> None:
        self.initial, self.maximum, self.limit = initial, maximum, limit
        self.failures = 0

    def next_delay(self) -> float | None:
        """The wait before the next attempt, or None when ``limit`` failures in a row were reached."""
        if self.limit is not None and self.failures >= self.limit:
            return None
        delay = min(self.maximum, self.initial * 2**self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0
