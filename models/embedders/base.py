"""The Embedder seam."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Maps RGB images (each ``uint8[H, W, 3]``) to L2-normalised ``float32[n, dim]`` rows.

    masks, when given, is one ``bool[H, W]`` per image (or None for a whole image): the vector then
    describes only the masked object. Never mutates its inputs.
    """

    dim: int

    def embed_images(
        self, images: list[np.ndarray], masks: list[np.ndarray | None] | None = None
    ) -> np.ndarray: ...
