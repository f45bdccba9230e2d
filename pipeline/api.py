"""The Python API: ``Eidetic`` does what the CLI does (ingest, events, track, query, store)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.errors import ParameterError
from pipeline.config import ServiceConfig, load_config
from pipeline.errors import ConfigError, IngestError

if TYPE_CHECKING:
    from memory.store import EpisodeStore
    from memory.types import Answer
    from pipeline.graph import ProgressHook

logger = logging.getLogger(__name__)


def parse_time(value: str | float | None) -> tuple[float | None, float | None]:
    """A time option → ``(media_seconds, None)`` or ``(None, utc_epoch_seconds)``.

    Plain numbers are seconds of media time; anything else must be ISO 8601 (local time zone
    unless one is given). Raises ConfigError quoting the value otherwise.
    """
    if value is None or value == "":
        return None, None
    try:
        return float(value), None
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(
            f"bad time {value!r}: give seconds of media time (e.g. 12.5) or ISO 8601 "
            "(e.g. 2026-11-26T14:05:00)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()
    return None, when.timestamp()


class Eidetic:
    """Episodic memory of media sources.

    Parameters
    ----------
    store : directory of the on-disk store (overrides ``config.store.path``).
    config : a :class:`ServiceConfig`, a YAML path, or None for defaults (+ env overrides).
    """

    def __init__(self, store: str | Path | None = None, *, config: ServiceConfig | str | Path | None = None):
        cfg = config if isinstance(config, ServiceConfig) else load_config(config)
        if store is not None:
            cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"path": Path(store)})})
        self.config = cfg
        self._store: EpisodeStore | None = None
        self._engine = None
        self._llm = None

    @property
    def store_path(self) -> Path:
        return self.config.store.path

    def ingest(
        self, sources: list[str] | str, *, hook: ProgressHook | None = None, stop: threading.Event | None = None
    ) -> dict[str, Any]:
        """Ingest files, directories of files, streams or devices through the Ray actors; see
        ``eidetic ingest``. Setting ``stop`` ends live sources (captures flushed) and stops files
        after their current window; a later call resumes them from the store's journal."""
        from pipeline.graph import run_ingest

        self.close()
        srcs = [sources] if isinstance(sources, str) else list(sources)
        return run_ingest(srcs, self.config, hook=hook, stop=stop)

    def events(self, media: str, *, progress: Callable[[float, float], None] | None = None) -> dict[str, Any]:
        """Audio triggers of one file, in this process (no Ray); see ``eidetic events``.

        ``progress(done_s, total_s)`` is called as the audio is read.
        """
        from pipeline.ingest import iter_audio, probe
        from pipeline.triggers import TriggerPolicy

        info = probe(media, max_dimension=self.config.ingest.max_dimension)
        if not info.has_audio:
            if info.has_video:
                return self._visual_events(media, info, progress)
            raise IngestError(media, "has no audio stream to detect events in")
        policy = TriggerPolicy.from_config("events", self.config.trigger, store_path=self.store_path)
        end = 0.0
        for chunk in iter_audio(media, stream_id="events", chunk_s=self.config.ingest.chunk_s):
            policy.feed(chunk)
            end = chunk.t_end
            if progress is not None:
                progress(end, info.duration_s or 0.0)
        policy.flush()
        if end == 0.0:
            raise IngestError(media, "has an audio stream but no decodable audio")
        duration = info.duration_s or end
        windows = policy.windows(duration)
        return {
            "media": media,
            "duration_s": round(duration, 3),
            "trigger": "audio",
            "events": [
                {
                    "t_start": round(e.t_start, 3), "t_end": round(e.t_end, 3), "label": e.label,
                    "score": round(float(e.score), 4), "trigger": _inside(e, windows),
                }
                for e in policy.events
            ],
            "capture_windows": [
                {"t_start": round(w.t_start, 3), "t_end": round(w.t_end, 3), "labels": list(w.labels)}
                for w in windows
            ],
        }  # fmt: skip

    def _visual_events(self, media: str, info, progress) -> dict[str, Any]:
        """Video without audio: the visual-change trigger (DESIGN.md §2.2), with a warning."""
        from pipeline.triggers import capture_windows
        from pipeline.visual_trigger import LABEL, detect_visual_changes, visual_trigger_events

        logger.warning("%s has no audio: using the visual-change trigger", media)
        cfg = self.config.trigger
        changes, seen = detect_visual_changes(media, stream_id="events", fps=cfg.visual_fps)
        duration = info.duration_s or seen
        ends = visual_trigger_events(changes, stream_id="events")
        windows = capture_windows(
            ends, stream_id="events", pre_roll_s=cfg.pre_roll_s, post_roll_s=cfg.post_roll_s,
            max_window_s=cfg.max_window_s, duration_s=duration,
        )  # fmt: skip
        if progress is not None:
            progress(duration, duration)
        return {
            "media": media,
            "duration_s": round(duration, 3),
            "trigger": "visual",
            "warning": "no audio stream: visual-change trigger used",
            "events": [
                {"t_start": round(c.t_start, 3), "t_end": round(c.t_end, 3), "label": LABEL,
                 "score": round(float(c.score), 4), "trigger": True}
                for c in changes
            ],
            "capture_windows": [
                {"t_start": round(w.t_start, 3), "t_end": round(w.t_end, 3), "labels": list(w.labels)}
                for w in windows
            ],
        }  # fmt: skip

    # ------------------------------------------------------------------ custom sounds

    def _sound_library(self):
        from models.audio.esc50 import CLASSES
        from models.audio.sounds import SoundLibrary
        from pipeline.triggers import sounds_dir

        return SoundLibrary(sounds_dir(self.config.trigger, self.store_path), builtin=CLASSES)

    def sounds_add(
        self, name: str, clips: list[str], *, threshold: float | None = None, replace: bool = False
    ) -> dict[str, Any]:
        """Enroll a custom trigger sound from example clips; see ``eidetic sounds add``."""
        from models.audio.esc50 import CLASSES
        from models.audio.sounds import check_name, file_sha256
        from pipeline.triggers import load_classifier

        check_name(name, builtin=CLASSES)
        if not clips:
            raise ParameterError("give at least one example clip")
        samples = [self._read_audio(c) for c in clips]
        classifier = load_classifier(self.config.trigger)
        emb = np.stack([classifier.embed_clip(x) for x in samples])
        weights = getattr(classifier, "path", None)
        sha = file_sha256(weights) if weights is not None and Path(weights).is_file() else None
        library = self._sound_library()
        sound = library.add(
            name, emb, [str(Path(c).name) for c in clips], threshold=threshold,
            model_sha256=sha, replace=replace,
        )  # fmt: skip
        return {"added": sound.to_json(), "sounds_dir": str(library.root)}

    def sounds_list(self) -> dict[str, Any]:
        """Built-in trigger classes and enrolled sounds; see ``eidetic sounds list``."""
        from models.audio.esc50 import CLASSES

        cfg = self.config.trigger
        lib = self._sound_library()
        custom = lib.load()
        triggers = set(cfg.classes) | {s.name for s in custom}
        rows = [
            {"name": s.name, "custom": True, "trigger": True,
             "threshold": round(cfg.class_thresholds.get(s.name, s.threshold), 4),
             "examples": len(s.examples)}
            for s in custom
        ] + [
            {"name": c, "custom": False, "trigger": c in triggers,
             "threshold": round(cfg.class_thresholds.get(c, cfg.threshold), 4), "examples": None}
            for c in CLASSES
        ]  # fmt: skip
        return {"sounds_dir": str(lib.root), "sounds": rows}

    def sounds_remove(self, name: str) -> dict[str, Any]:
        """Forget an enrolled sound; see ``eidetic sounds remove``."""
        lib = self._sound_library()
        if not lib.remove(name):
            raise ParameterError(f"no custom sound named {name!r} in {lib.root}")
        return {"removed": name, "sounds_dir": str(lib.root)}

    def _read_audio(self, media: str) -> np.ndarray:
        """Whole audio of ``media`` as float32 16 kHz mono."""
        from pipeline.ingest import iter_audio, probe

        info = probe(media, max_dimension=self.config.ingest.max_dimension)
        if not info.has_audio:
            raise IngestError(media, "has no audio stream")
        parts = [c.samples for c in iter_audio(media, stream_id="clip")]
        samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if samples.size < 1600:
            raise IngestError(media, "has less than 0.1 s of audio")
        if float(np.max(np.abs(samples))) < 1e-4:
            raise IngestError(media, "is silent")
        return samples

    def track(self, frames: str | Path, first_mask: str | Path, out: str | Path, *, preset: str = "quality", hook=None) -> dict[str, Any]:
        """Semi-supervised VOS (DAVIS protocol); see ``eidetic track``."""
        from pipeline.perception import build_segmenter, refinement_kwargs
        from pipeline.track import run_track

        pc = self.config.perception  # with segmenter sam_hq, SAM-HQ refines through the gate
        refine = refinement_kwargs(pc, build_segmenter(pc)) if pc.segmenter == "sam_hq" else {}
        if refine:
            from models.errors import BackendUnavailable, CheckpointError

            try:  # verify and load the checkpoint before any frame is written
                refine["refiner"].load()
            except (CheckpointError, BackendUnavailable) as e:
                raise ConfigError(f"perception.sam_hq_checkpoint: {e}") from e
        return run_track(Path(frames), Path(first_mask), Path(out), preset=preset, hook=hook,
                         max_dimension=self.config.ingest.max_dimension, **refine)

    @property
    def store(self) -> EpisodeStore:
        """The on-disk store, opened read-only (the MemoryActor is the single writer)."""
        from memory.store import EpisodeStore

        if self._store is None:
            if not (self.store_path / "eidetic.db").exists():
                raise ConfigError(f"no store at {self.store_path} (run `eidetic ingest` first or pass --store)")
            self._store = EpisodeStore(self.store_path, readonly=True)
        return self._store

    def query(
        self,
        text: str | None = None,
        *,
        image: str | Path | None = None,
        audio: str | Path | None = None,
        source: str | None = None,
        since: str | float | None = None,
        until: str | float | None = None,
        k: int = 5,
        structured: dict[str, Any] | None = None,
        visual: np.ndarray | None = None,
        audio_vector: np.ndarray | None = None,
    ) -> Answer:
        """Answer a question about past episodes, with evidence; see ``eidetic query``.

        ``structured`` is a structured query (:func:`memory.questions.question_from_dict`) used
        instead of parsing ``text``; ``visual``/``audio_vector`` are example vectors already
        embedded (the HTTP API embeds uploaded examples). A question that cannot be understood
        raises ConfigError (exit code 2, HTTP 400).
        """
        from memory.questions import QuestionError, question_from_dict
        from memory.types import Query

        if not (text or "").strip() and image is None and audio is None and not structured \
                and visual is None and audio_vector is None:
            raise ConfigError("a query needs TEXT, --image or --audio (or a structured query)")
        if k < 1 or k > 1000:
            raise ConfigError(f"-k must be between 1 and 1000, got {k}")
        t_since, w_since = parse_time(since)
        t_until, w_until = parse_time(until)
        if image is not None:
            visual = self._embed_image(Path(image))
        if audio is not None:
            audio_vector = self._embed_audio(str(audio))
        query = Query(
            text=text or None, visual=visual, audio=audio_vector, source=_source_filter(source),
            since=t_since, until=t_until, wall_since=w_since, wall_until=w_until, k=k,
        )  # fmt: skip
        try:
            question = question_from_dict(structured) if structured is not None else None
            answer = self.engine.answer(query, question=question)
        except QuestionError as e:
            raise ConfigError(str(e)) from None
        return self.llm.phrase(text, answer) if self.llm.enabled else answer

    @property
    def llm(self):
        """The optional LLM phrasing of answers (``llm`` config section; see pipeline/llm.py)."""
        from pipeline.llm import LLMPhraser

        if self._llm is None:
            self._llm = LLMPhraser(self.config.llm)
        return self._llm

    @property
    def engine(self):
        """The :class:`memory.query.QueryEngine` over :attr:`store` (kept between queries)."""
        from memory.query import QueryEngine

        if self._engine is None or self._engine.store is not self.store:
            self._engine = QueryEngine(self.store)
        return self._engine

    def query_json(self, *args: Any, keyframe_url=None, **kwargs: Any) -> dict[str, Any]:
        """:meth:`query` in the ``eidetic query --json`` shape (keyframes as absolute paths)."""
        from memory.query import answer_to_json

        answer = self.query(*args, **kwargs)
        if keyframe_url is None:
            root = self.store_path.resolve()
            return _absolute_keyframes(answer_to_json(answer), root)
        return answer_to_json(answer, keyframe_url=keyframe_url)

    def _embed_image(self, path: Path):
        from PIL import Image, UnidentifiedImageError

        from models import registry

        try:
            image = np.asarray(Image.open(path).convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise IngestError(str(path), f"not a readable image ({e})") from e
        return registry.create(registry.EMBEDDERS, "classical").embed_images([image])[0]

    def _embed_audio(self, media: str):
        """Embed an example sound like the stored sounds (the classifier's, or the gate's)."""
        samples = self._read_audio(media)
        if self.config.trigger.detector == "cnn":
            from pipeline.triggers import load_classifier

            return load_classifier(self.config.trigger).embed_clip(samples)
        from models.audio.energy import embed_clip

        return embed_clip(samples)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def _inside(event, windows) -> bool:
    """True if the sound overlaps an accepted capture window (it triggered, or rode along)."""
    return any(w.t_start < event.t_end and event.t_start < w.t_end for w in windows)


def _source_filter(source: str | None) -> str | None:
    """A ``--source`` given as a relative path matches the absolute name it was stored under."""
    if source is None:
        return None
    from pipeline.graph import source_name

    return source_name(source) if Path(source).exists() else source


def _absolute_keyframes(doc: dict[str, Any], root: Path) -> dict[str, Any]:
    for ev in doc.get("evidence", []):
        ev["keyframes"] = [k if Path(k).is_absolute() else str(root / k) for k in ev.get("keyframes", [])]
    return doc
