"""Exceptions raised by model backends; each also subclasses a builtin."""

from __future__ import annotations


class ModelError(Exception):
    """Base class of every error raised by ``models``."""


class ParameterError(ModelError, ValueError):
    """A tunable or an input array has a bad value; the message quotes it."""


class BackendUnavailable(ModelError, ImportError):
    """A backend was selected whose dependencies cannot be imported."""


class CheckpointError(ModelError, RuntimeError):
    """A checkpoint is missing, has the wrong hash, or does not match the architecture."""
