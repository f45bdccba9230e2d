"""Errors of the service layer, each mapped to a CLI exit code (DESIGN.md §3)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BAD_MEDIA = 3


class EideticError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_ERROR


class ConfigError(EideticError, ValueError):
    """The configuration file or an option is invalid; the message says which key and why."""

    exit_code = EXIT_USAGE


class IngestError(EideticError, RuntimeError):
    """A source could not be read: missing, not media, no usable stream, unreachable."""

    exit_code = EXIT_BAD_MEDIA

    def __init__(self, source: str, cause: str) -> None:
        super().__init__(f"{source}: {cause}")
        self.source = source
        self.cause = cause
