"""Eidetic's service layer: ingest, triggers, Ray actors, CLI and HTTP API.

``from pipeline import Eidetic`` gives the Python API; importing this package does not import Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Eidetic", "__version__"]

if TYPE_CHECKING:
    from pipeline.api import Eidetic


def __getattr__(name: str) -> Any:
    if name == "Eidetic":
        from pipeline.api import Eidetic

        return Eidetic
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
