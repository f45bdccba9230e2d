"""Exceptions raised by ``memory``; each also subclasses a builtin (PyAV style)."""

from __future__ import annotations


class StoreError(RuntimeError):
    """Base class of every error raised by ``memory`` (store, index, builder, query)."""


class ParameterError(StoreError, ValueError):
    """An argument has a bad value (unknown metric, modality, order...); the message quotes it."""


class EpisodeNotFound(StoreError, KeyError):
    """No episode has this id (never stored, or forgotten)."""

    def __init__(self, episode_id: int, store: str = "") -> None:
        where = f" in store {store}" if store else ""
        super().__init__(
            f"no episode with id {episode_id!r}{where}; list ids with EpisodeStore.episodes() "
            "(or `eidetic store stats`)"
        )
        self.episode_id = episode_id

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class IndexMismatch(StoreError, ValueError):
    """Vectors do not fit an index (wrong dim, duplicate ids), or an index disagrees with SQLite."""


class StoreLocked(StoreError):
    """Another process holds the store's writer lock (or SQLite stayed busy past its timeout)."""


class StoreFull(StoreError, OSError):
    """The disk (or file system) holding the store is full and retention could not make room;
    nothing was half-written."""


class ReadOnlyStore(StoreError):
    """A write was attempted on a store opened with ``readonly=True``."""


class SchemaError(StoreError):
    """The directory is not an Eidetic store, or its schema version is not supported."""


class BuilderStateError(StoreError):
    """EpisodeBuilder methods were called out of order (``add`` before ``begin``, ...)."""
