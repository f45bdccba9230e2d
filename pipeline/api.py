"""The Python API: ``Eidetic`` does what the CLI does (ingest, events, track, query, store)."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

    @property
    def store_path(self) -> Path:
        return self.config.store.path

    def ingest(self, sources: list[str] | str, *, hook: ProgressHook | None = None) -> dict[str, Any]:
        """Ingest files (or directories of files) through the Ray actors; see ``eidetic ingest``."""
        from pipeline.graph import run_ingest

        self.close()
        return run_ingest([sources] if isinstance(sources, str) else list(sources), self.config, hook=hook)

    def events(self, media: str) -> dict[str, Any]:
        """Audio triggers of one file, in this process (no Ray); see ``eidetic events``."""
        from pipeline.ingest import iter_audio, probe
        from pipeline.triggers import TriggerPolicy

        info = probe(media, max_dimension=self.config.ingest.max_dimension)
        if not info.has_audio:
            raise IngestError(media, "has no audio stream to detect events in")
        policy = TriggerPolicy.from_config("events", self.config.trigger)
        end = 0.0
        for chunk in iter_audio(media, stream_id="events", chunk_s=self.config.ingest.chunk_s):
            policy.feed(chunk)
            end = chunk.t_end
        policy.flush()
        duration = info.duration_s or end
        return {
            "media": media,
            "duration_s": round(duration, 3),
            "events": [
                {"t_start": round(e.t_start, 3), "t_end": round(e.t_end, 3), "label": e.label, "score": round(float(e.score), 4)}
                for e in policy.events
            ],
            "capture_windows": [
                {"t_start": round(w.t_start, 3), "t_end": round(w.t_end, 3)} for w in policy.windows(duration)
            ],
        }

    def track(self, frames: str | Path, first_mask: str | Path, out: str | Path, *, preset: str = "quality", hook=None) -> dict[str, Any]:
        """Semi-supervised VOS (DAVIS protocol); see ``eidetic track``."""
        from pipeline.track import run_track

        return run_track(Path(frames), Path(first_mask), Path(out), preset=preset, hook=hook,
                         max_dimension=self.config.ingest.max_dimension)

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
    ) -> Answer:
        """Answer a question about past episodes, with evidence; see ``eidetic query``."""
        from memory.query import QueryEngine
        from memory.types import Query

        if not text and image is None and audio is None:
            raise ConfigError("a query needs TEXT, --image or --audio")
        if k < 1 or k > 1000:
            raise ConfigError(f"-k must be between 1 and 1000, got {k}")
        t_since, w_since = parse_time(since)
        t_until, w_until = parse_time(until)
        query = Query(
            text=text or None,
            visual=self._embed_image(Path(image)) if image is not None else None,
            audio=self._embed_audio(str(audio)) if audio is not None else None,
            source=_source_filter(source),
            since=t_since, until=t_until, wall_since=w_since, wall_until=w_until, k=k,
        )
        return QueryEngine(self.store).answer(query)

    def query_json(self, *args: Any, keyframe_url=None, **kwargs: Any) -> dict[str, Any]:
        """:meth:`query` in the ``eidetic query --json`` shape (keyframes as absolute paths)."""
        from memory.query import answer_to_json

        answer = self.query(*args, **kwargs)
        if keyframe_url is None:
            root = self.store_path.resolve()
            return _absolute_keyframes(answer_to_json(answer), root)
        return answer_to_json(answer, keyframe_url=keyframe_url)

    def _embed_image(self, path: Path):
        import numpy as np
        from PIL import Image, UnidentifiedImageError

        from models import registry

        try:
            image = np.asarray(Image.open(path).convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise IngestError(str(path), f"not a readable image ({e})") from e
        return registry.create(registry.EMBEDDERS, "classical").embed_images([image])[0]

    def _embed_audio(self, media: str):
        import numpy as np

        from models.audio.energy import embed_clip
        from pipeline.ingest import iter_audio, probe

        probe(media)
        samples = np.concatenate([c.samples for c in iter_audio(media, stream_id="query")] or [np.zeros(0, np.float32)])
        if samples.size < 1600:
            raise IngestError(media, "has less than 0.1 s of audio to search with")
        return embed_clip(samples)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


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
