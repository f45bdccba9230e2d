"""ServiceConfig: one validated tree loaded from YAML, overridable by ``EIDETIC__SECTION__KEY``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from models.audio.esc50 import DEFAULT_TRIGGERS
from pipeline.errors import ConfigError

ENV_PREFIX = "EIDETIC__"
ENV_TOKEN = "EIDETIC_API_TOKEN"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreConfig(_Section):
    path: Path = Field(Path("./eidetic-data"), description="Directory of the on-disk store.")


class RayConfig(_Section):
    address: str | None = Field(
        None, description="Ray cluster address ('auto', 'ray://host:10001'); empty: local Ray."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs for local Ray; empty: all cores.")
    max_in_flight: int = Field(
        8, ge=1, le=1024, description="Messages in flight between two actors (backpressure)."
    )


class IngestConfig(_Section):
    chunk_s: float = Field(0.96, gt=0, le=10, description="Audio chunk length fed to triggers (s).")
    perception_fps: float = Field(
        2.0, gt=0, le=120, description="Frames per second sampled inside capture windows."
    )
    every_frame: bool = Field(
        False, description="Decode and process every video frame, not just capture windows."
    )
    max_side: int = Field(
        640, ge=64, le=8192, description="Frames are downscaled so their longer side is at most this."
    )
    max_dimension: int = Field(
        16384, ge=64, description="Reject video whose width or height exceeds this (absurd sizes)."
    )
    shard_s: float = Field(
        120.0, ge=10, le=86400, description="Files are split into shards of this many seconds: "
        "their audio passes run in parallel and an interrupted batch resumes shard by shard.",
    )
    shard_warmup_s: float = Field(
        10.0, ge=0, le=600, description="Audio read before a shard so the trigger's background "
        "level is settled at its start (s).",
    )
    parallel: int | None = Field(
        None, ge=1, le=256, description="Files ingested at once (empty: the number of CPUs Ray has)."
    )
    perception_actors: int | None = Field(
        None, ge=1, le=64, description="Perception actors per file: its capture windows are "
        "segmented and tracked this many at a time (empty: Ray's CPUs less one, the one decoding; "
        "at least 1).",
    )
    fast_decode: bool = Field(
        True, description="When sampling capture windows, skip H.264's deblocking filter and "
        "unreferenced frames (~1.5x faster, frames within ~45 dB PSNR); every_frame never does.",
    )


class SourceOptions(_Section):
    """How one source is opened and kept alive (the ``sources`` section holds the defaults;
    ``sources.streams.<name>`` overrides them for one source)."""

    url: str | None = Field(
        None, description="Streams entry only: the source this name stands for (file, URL, device)."
    )
    audio: str | None = Field(
        None, description="A separate audio source paired with this video source (e.g. alsa:hw:1)."
    )
    live: bool | None = Field(
        None, description="Treat as a live stream (empty: URLs and devices are live, files are "
        "not; an http(s) URL with a known duration is a file).",
    )
    format: str | None = Field(
        None, description="Force FFmpeg's input format (e.g. mpegts, v4l2); empty: guess."
    )
    rtsp_transport: Literal["tcp", "udp", "http", "auto"] = Field(
        "tcp", description="RTSP lower transport ('auto' lets FFmpeg try UDP, then TCP)."
    )
    open_timeout_s: float = Field(
        10.0, gt=0, le=600, description="Give up opening a source after this long (s)."
    )
    read_timeout_s: float = Field(
        10.0, gt=0, le=600, description="A stream that sends nothing this long has stalled (s)."
    )
    reconnect: bool = Field(True, description="Live sources: reopen after a drop or a stall.")
    backoff_initial_s: float = Field(
        0.5, gt=0, le=600, description="First wait before reconnecting; doubles per failure (s)."
    )
    backoff_max_s: float = Field(30.0, gt=0, le=3600, description="Longest reconnect wait (s).")
    max_reconnects: int | None = Field(
        None, ge=0, description="Give a live source up after this many failed reconnects in a row "
        "(empty: never).",
    )
    max_dimension: int | None = Field(
        None, ge=16, description="Frame size cap in px for this source (empty: "
        "ingest.max_dimension).",
    )
    video_size: str | None = Field(
        None, pattern=r"^\d+x\d+$", description="Devices: capture size, e.g. 1280x720."
    )
    framerate: float | None = Field(None, gt=0, le=240, description="Devices: frames per second.")
    sample_rate: int | None = Field(
        None, ge=8000, le=192000, description="Audio devices: capture sample rate (Hz)."
    )
    channels: int | None = Field(None, ge=1, le=32, description="Audio devices: channels.")
    ffmpeg_options: dict[str, str] = Field(
        {}, description="Extra FFmpeg input options passed as-is, e.g. {probesize: '500000'}."
    )


class SourcesConfig(SourceOptions):
    """Defaults for every source, per-source overrides, and the live capture limits."""

    streams: dict[str, SourceOptions] = Field(
        {}, description="Per-source overrides keyed by a name or the source itself, e.g. "
        "{kitchen: {url: 'v4l2:/dev/video0', audio: 'alsa:hw:1'}}; 'eidetic ingest kitchen'.",
    )
    ring_max_mb: float = Field(
        64.0, gt=0, le=4096, description="Live: cap of the compressed-packet ring buffer (MB)."
    )
    max_pending_frames: int = Field(
        240, ge=1, le=100000, description="Live: decoded frames held for an open trigger; more "
        "are dropped (counted in stats), never queued without bound.",
    )


class TriggerConfig(_Section):
    detector: Literal["cnn", "energy"] = Field(
        "cnn",
        description="'cnn': energy gate + the shipped audio classifier (labels, interaction score); "
        "'energy': the weight-free gate alone (every sound triggers, labelled 'sound').",
    )
    weights: Path | None = Field(
        None, description="Audio classifier checkpoint; empty: the shipped ESC-50 weights."
    )
    sounds_dir: Path | None = Field(
        None, description="Enrolled custom sounds ('eidetic sounds add'); empty: <store>/sounds."
    )
    classes: tuple[str, ...] = Field(
        DEFAULT_TRIGGERS,
        description="Trigger classes: ESC-50 names or enrolled sounds (enrolled sounds always "
        "trigger).",
    )
    threshold: float = Field(
        0.6, gt=0, le=1, description="Class probability that triggers (per-class default)."
    )
    class_thresholds: dict[str, float] = Field(
        {"drinking_sipping": 0.7, "toilet_flush": 0.7, "brushing_teeth": 0.7},
        description="Per-class thresholds (the defaults: classes the shipped CNN often hears in "
        "running water, engines and ticking clocks; tuned on ESC-50 validation soundscapes, "
        "benchmarks/trigger_tune.py).",
    )
    interaction_threshold: float = Field(
        0.7, gt=0, le=2,
        description="'Domestic interaction' probability that triggers whatever the label "
        "(> 1 disables).",
    )
    hysteresis: float = Field(
        0.5, ge=0, le=1, description="Sounds joining an accepted trigger extend it if their "
        "evidence reaches (1 - hysteresis) of their threshold.",
    )
    refractory_s: float = Field(
        3.0, ge=0, le=60, description="Sounds this close (s) to a trigger's last sound join it."
    )
    sustain: float = Field(
        0.3, ge=0, le=1,
        description="Once a sound is trigger evidence, following patches whose evidence reaches "
        "this fraction of their threshold extend its capture (1: only evidence does).",
    )
    min_capture_s: float = Field(
        0.5, ge=0, le=60, description="Each sound that triggers is captured at least this long "
        "from its start (s).",
    )
    first_capture_s: float = Field(
        2.6, ge=0, le=60,
        description="The first kept sound of an accepted trigger is captured at least this long (s) "
        "from its onset (a long sound heard only in part at low SNR; at most max_capture_s). "
        "Classifier only: detector 'energy' captures a sound as the gate heard it.",
    )
    first_capture_fraction: float = Field(
        0.55, ge=0, le=10,
        description="For a class whose sounds are usually short, first_capture_s is at most this "
        "fraction of the class's typical length (models.audio.esc50.TYPICAL_SPAN_S).",
    )
    cap_runs: bool = Field(
        True, description="Sounds of one trigger whose windows touch share one max_capture_s "
        "(a sound heard in pieces costs no more than one heard whole).",
    )
    evidence_tail_s: float = Field(
        0.48, ge=0, le=0.96,
        description="A kept sound is captured at least this far (s) into its last 0.96 s patch "
        "of evidence.",
    )
    class_background_s: float = Field(
        20.0, ge=0, le=600,
        description="Classifier scores count by how much they exceed their median over this "
        "many seconds of past patches (a room whose rain reads as pouring water does not "
        "trigger all along); 0: raw scores.",
    )
    max_capture_fraction: float = Field(
        0.8, gt=0, le=1, description="Most of any rate_window_s that triggers may capture."
    )
    rate_window_s: float = Field(60.0, gt=0, le=86400, description="Capture-rate window (s).")
    visual_fps: float = Field(
        2.0, gt=0, le=30,
        description="Video without audio: frames per second compared by the visual-change trigger.",
    )
    k_mad: float = Field(
        4.0, gt=0, le=50, description="Threshold = background median + k * MAD of frame dB."
    )
    min_rise_db: float = Field(
        6.0, ge=0, le=80, description="A sound must be at least this many dB over background."
    )
    floor_dbfs: float = Field(
        -55.0, ge=-120, le=0, description="Frames quieter than this never trigger (dBFS)."
    )
    background_s: float = Field(4.0, gt=0, le=120, description="Running background length (s).")
    min_event_s: float = Field(0.08, ge=0, le=10, description="Shorter sounds are ignored (s).")
    merge_gap_s: float = Field(0.4, ge=0, le=10, description="Sounds closer than this merge (s).")
    pre_roll_s: float = Field(0.15, ge=0, le=60, description="Capture starts this long before (s).")
    post_roll_s: float = Field(0.15, ge=0, le=60, description="Capture ends this long after (s).")
    max_capture_s: float | None = Field(
        3.0, gt=0, le=3600,
        description="A trigger captures at most this long from its start (s); empty: all of it.",
    )
    max_window_s: float = Field(
        20.0, gt=0, le=3600, description="Longest capture window; longer activity is split (s)."
    )


class PerceptionConfig(_Section):
    segmenter: Literal["classical", "sam_hq"] = Field(
        "classical", description="Segmenter backend: classical (weight-free) or sam_hq."
    )
    max_objects: int = Field(6, ge=1, le=64, description="Objects tracked per capture window.")
    keyframe_budget: int = Field(10, ge=1, le=100, description="Keyframes kept per object.")
    min_object_area: float = Field(
        0.002, gt=0, lt=1, description="Smallest object, as a fraction of the frame area."
    )
    sam_hq_model: Literal["vit_tiny", "vit_b", "vit_l", "vit_h"] = Field(
        "vit_tiny", description="SAM-HQ architecture (must match the checkpoint)."
    )
    sam_hq_checkpoint: Path | None = Field(
        None, description="Local SAM-HQ .pth file (never downloaded); needed by segmenter sam_hq."
    )
    sam_hq_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="Expected SHA-256 of the checkpoint; empty: it must be the official file.",
    )
    device: str = Field(
        "cpu", pattern=r"^(cpu|cuda(:[0-9]+)?)$", description="Torch device: cpu, cuda, cuda:N."
    )
    hq_token_only: bool = Field(False, description="SAM-HQ: return only the HQ token's mask.")
    refine_every: int = Field(
        10, ge=0, le=10000, description="Frames between SAM-HQ refinements of tracks (0: never)."
    )
    refine_gate: float = Field(
        0.59, ge=0, lt=1, description="A refined mask is kept only above this IoU with the track's."
    )

    @model_validator(mode="after")
    def _checkpoint_for_sam_hq(self) -> PerceptionConfig:
        if self.segmenter == "sam_hq" and self.sam_hq_checkpoint is None:
            raise ValueError("segmenter sam_hq needs sam_hq_checkpoint (a local .pth file)")
        return self


class MemoryConfig(_Section):
    keyframes_per_episode: int = Field(
        4, ge=1, le=64, description="Representative keyframes stored per episode (JPEG)."
    )
    jpeg_quality: int = Field(80, ge=10, le=100, description="Quality of stored keyframe JPEGs.")
    keyframe_max_side: int | None = Field(
        480, ge=32, le=16384, description="Stored keyframe JPEGs are shrunk so their longer side "
        "is at most this (px); empty: as perceived (ingest.max_side).",
    )
    clips: bool = Field(
        True, description="Keep each episode's media: its capture window's video and audio "
        "packets remuxed into a small clip (no re-encode; file sources).",
    )
    short_term_items: int = Field(
        120, ge=2, le=100000, description="Short-term memory per source: at most this many "
        "recent frames wait to be compressed into the open episode.",
    )
    short_term_s: float = Field(
        30.0, gt=0, le=3600, description="Short-term memory per source: at most this many "
        "seconds of recent frames (keep it >= idle_s so idle tails are dropped, not stored).",
    )
    scene_cosine: float = Field(
        0.9, ge=-1, le=1, description="A new episode starts when consecutive frame descriptors "
        "have cosine <= this (a scene change; IXC2.5-OmniLive's rule); -1: never.",
    )
    idle_s: float = Field(
        10.0, gt=0, le=86400, description="An episode ends after this long with no sound and no "
        "new or moving object (its idle frames dropped); activity starts the next one (s).",
    )
    trigger_gap_s: float = Field(
        4.0, gt=0, le=3600, description="Inside one capture, a sound starting this long after "
        "the previous one ended starts a new episode (s).",
    )
    min_episode_s: float = Field(
        2.0, ge=0, le=3600, description="Scene and trigger cuts wait until an episode is this "
        "long (s).",
    )
    max_episode_s: float = Field(
        120.0, gt=0, le=86400, description="Longer episodes are cut (s).",
    )

    def boundary_policy(self):
        """The :class:`memory.shortterm.BoundaryPolicy` of these settings."""
        from memory.shortterm import BoundaryPolicy

        return BoundaryPolicy(
            scene_cosine=self.scene_cosine, idle_s=self.idle_s, min_episode_s=self.min_episode_s,
            max_episode_s=self.max_episode_s, trigger_gap_s=self.trigger_gap_s,
        )  # fmt: skip

    @model_validator(mode="after")
    def _episode_bounds(self) -> MemoryConfig:
        if self.min_episode_s > self.max_episode_s:
            raise ValueError(f"min_episode_s ({self.min_episode_s}) must be <= max_episode_s "
                             f"({self.max_episode_s})")  # fmt: skip
        return self


class RetentionConfig(_Section):
    max_gb: float | None = Field(
        None, gt=0,
        description="Store size limit (GB): the least important episodes (redundant, common, "
        "old) are forgotten first; empty: no limit.",
    )
    max_age_days: float | None = Field(
        None, gt=0,
        description="Forget episodes older than this (days; rare-label and named-object "
        "episodes live up to 3x longer); empty: keep forever.",
    )
    source_max_age_days: dict[str, float] = Field(
        {}, description="Per-source age limits (days) by source name (file path or URL), e.g. "
        "{'rtsp://door/stream': 7}.",
    )
    make_room_when_full: bool = Field(
        True, description="On a full disk, forget the least important episodes and retry the "
        "write (else the write fails with a clear error).",
    )
    clip_mb_per_hour: float | None = Field(
        25.0, ge=0, le=1e6,
        description="Clip budget per source: its episode clips take at most this many MB per "
        "hour of its input (held for every 10 minutes); over it, the least important episodes "
        "lose their clips (keyframes, vectors and text stay; the episode notes why); empty: "
        "keep every clip.",
    )

    def policy(self):
        """The :class:`memory.retention.RetentionPolicy` of these settings."""
        from memory.retention import RetentionPolicy

        return RetentionPolicy(
            max_bytes=None if self.max_gb is None else int(self.max_gb * 1e9),
            max_age_days=self.max_age_days,
            source_max_age_days=dict(self.source_max_age_days),
            make_room_when_full=self.make_room_when_full,
            clip_mb_per_hour=self.clip_mb_per_hour,
        )


class ServeConfig(_Section):
    host: str = Field("127.0.0.1", description="Address to bind; non-loopback needs a token.")
    port: int = Field(8765, ge=0, le=65535, description="TCP port (0: any free port).")
    token: SecretStr | None = Field(
        None, description=f"Bearer token for the API (or set {ENV_TOKEN}); empty: loopback only."
    )
    max_upload_mb: int = Field(
        2048, ge=1, le=1_000_000, description="Largest media file accepted by PUT /v1/ingest/upload (MB)."
    )
    ingest_roots: tuple[Path, ...] = Field(
        (), description="POST /v1/ingest only reads files under these folders; empty: any path."
    )
    webhooks: tuple[str, ...] = Field(
        (), description="URLs that receive every event (new episode, trigger, ...) as a JSON POST."
    )
    webhook_events: tuple[str, ...] = Field(
        (), description="Event types sent to webhooks (episode, trigger, sound, forgotten, job, "
        "source); empty: all."
    )
    webhook_token: str | None = Field(
        None, description="Sent to webhooks as 'Authorization: Bearer ...'; empty: none."
    )
    poll_s: float = Field(
        0.5, gt=0, le=60, description="How often the server looks for new episodes and sounds (s)."
    )


class LLMConfig(_Section):
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1) that phrases "
        "answers from the evidence; empty: rule-based answers only."
    )
    model: str = Field("", description="Model name sent to the endpoint.")
    api_key_env: str = Field(
        "EIDETIC_LLM_API_KEY", description="Environment variable holding the endpoint's API key."
    )
    timeout_s: float = Field(
        10.0, gt=0, le=300, description="Give up on the LLM after this long and use the rule answer."
    )
    max_evidence: int = Field(8, ge=1, le=50, description="Evidence episodes shown to the LLM.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature.")


class ServiceConfig(_Section):
    """Every setting of the service; ``deploy/config.example.yaml`` documents each key."""

    store: StoreConfig = StoreConfig()
    ray: RayConfig = RayConfig()
    ingest: IngestConfig = IngestConfig()
    sources: SourcesConfig = SourcesConfig()
    trigger: TriggerConfig = TriggerConfig()
    perception: PerceptionConfig = PerceptionConfig()
    memory: MemoryConfig = MemoryConfig()
    retention: RetentionConfig = RetentionConfig()
    serve: ServeConfig = ServeConfig()
    llm: LLMConfig = LLMConfig()


EXAMPLE_HEADER = """\
# Eidetic configuration: every key with its default. Copy, edit, and pass with --config FILE.
# Any key can also be set by environment variable EIDETIC__SECTION__KEY (e.g. EIDETIC__STORE__PATH=/data).
# The API token can be given as EIDETIC_API_TOKEN. Check a file with: eidetic config check FILE
# (This file is written by `eidetic config example`; a test keeps it in step with the code.)
"""


def example_yaml() -> str:
    """``deploy/config.example.yaml``: every section and key with its default and description."""
    defaults = ServiceConfig().model_dump(mode="json")
    lines = [EXAMPLE_HEADER.rstrip("\n")]
    for section, info in ServiceConfig.model_fields.items():
        lines.append("")
        lines.append(f"{section}:")
        for key, field in info.annotation.model_fields.items():
            lines.append(f"  # {field.description}")
            value = defaults[section][key]
            flow = isinstance(value, (list, dict))
            dumped = yaml.safe_dump({key: value}, default_flow_style=flow, sort_keys=False, width=100)
            if flow and dumped.startswith("{"):
                dumped = f"{key}: " + yaml.safe_dump(value, default_flow_style=True, width=100)
            lines += ["  " + line for line in dumped.rstrip("\n").splitlines()]
    return "\n".join(lines) + "\n"


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """``EIDETIC__SECTION__KEY=value`` → ``{"section": {"key": value}}`` (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name} conflicts with another override")
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(e: ValidationError, origin: str) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown key (check the spelling; see deploy/config.example.yaml)")
        else:
            lines.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
    return f"invalid configuration in {origin}: " + "; ".join(lines)


def load_config(
    path: str | Path | None = None, *, environ: dict[str, str] | None = None, **overrides: Any
) -> ServiceConfig:
    """Load the YAML file ``path`` (or defaults), then env overrides, then ``overrides``.

    ``overrides`` are nested dicts by section, e.g. ``store={"path": "/data"}``.
    Raises ``ConfigError`` naming the file and every bad key.
    """
    environ = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        p = Path(path)
        origin = str(p)
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read config file {p}: {e}") from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections, got {type(loaded).__name__}")
        data = loaded
    env = _env_overrides(environ)
    if env:
        origin += " + environment"
    data = _merge(data, env)
    data = _merge(data, {k: v for k, v in overrides.items() if v is not None})
    token = environ.get(ENV_TOKEN)
    if token:
        data = _merge(data, {"serve": {"token": token}})
    try:
        return ServiceConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, origin)) from None
