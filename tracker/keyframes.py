"""Bounded per-object keyframe memory (HQ-SMem: keep the reference, evict the least similar)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from models.errors import ParameterError

logger = logging.getLogger(__name__)

__all__ = ["EVICTIONS", "KeyframeEntry", "KeyframeMemory", "evict_least_similar", "evict_oldest"]


@dataclass(frozen=True, slots=True)
class KeyframeEntry:
    """One stored keyframe of one object.

    descriptor: L2-normalised ``float32[d]`` appearance vector of the object in that frame;
    quality in [0, 1] (e.g. mask confidence); reference: the first keyframe, never evicted.
    """

    frame_idx: int
    descriptor: np.ndarray = field(compare=False)
    quality: float
    reference: bool = False


def _unit(x: np.ndarray) -> np.ndarray:
    v = np.asarray(x, dtype=np.float32).ravel()
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def evict_least_similar(entries: list[KeyframeEntry], sims: np.ndarray) -> int:
    """HQ-SMem's policy: the stored non-reference keyframe least similar to the candidate."""
    return int(np.argmin(sims[1:])) + 1  # index 0 is the reference


def evict_oldest(entries: list[KeyframeEntry], sims: np.ndarray) -> int:
    """FIFO: the oldest non-reference keyframe (a working-memory ring, XMem style)."""
    return 1


# An eviction policy maps (entries, cosine of each to the candidate) to the index to drop (>= 1).
EVICTIONS: dict[str, Callable[[list[KeyframeEntry], np.ndarray], int]] = {
    "least_similar": evict_least_similar,
    "oldest": evict_oldest,
}


class KeyframeMemory:
    """At most ``budget`` keyframes for one object, whatever the video length.

    The first admitted keyframe is the reference and is never evicted. A later candidate is
    admitted when at least ``min_gap`` frames have passed since the last admitted one, its
    quality is at least ``min_quality``, and it is novel (cosine similarity to every stored
    descriptor below ``max_similarity``) or forced. When the memory is full, the stored
    non-reference keyframe least similar to the candidate (the current frame) is evicted, as in
    HQ-SMem, so the memory follows the object's current appearance while keeping its origin.

    Parameters
    ----------
    budget : int, keyword-only
        Maximum number of keyframes kept (reference included), ≥ 1.
    min_gap : int, keyword-only
        Minimum number of frames between two admitted keyframes, ≥ 0.
    max_similarity : float, keyword-only
        A candidate whose cosine to some stored descriptor reaches this value is redundant.
    min_quality : float, keyword-only
        Candidates of lower quality are refused, even when forced.
    eviction : str or callable, keyword-only
        A name in :data:`EVICTIONS` or ``f(entries, sims) -> index`` (never 0, the reference).
    """

    def __init__(
        self,
        *,
        budget: int = 10,
        min_gap: int = 30,
        max_similarity: float = 0.98,
        min_quality: float = 0.0,
        eviction: str | Callable[[list[KeyframeEntry], np.ndarray], int] = "least_similar",
    ) -> None:
        if budget < 1:
            raise ParameterError(f"budget must be >= 1, got {budget!r}")
        if min_gap < 0:
            raise ParameterError(f"min_gap must be >= 0, got {min_gap!r}")
        self.budget = int(budget)
        self.min_gap = int(min_gap)
        self.max_similarity = float(max_similarity)
        self.min_quality = float(min_quality)
        if isinstance(eviction, str):
            if eviction not in EVICTIONS:
                raise ParameterError(
                    f"eviction must be one of {sorted(EVICTIONS)} or a callable, got {eviction!r}"
                )
            eviction = EVICTIONS[eviction]
        self._eviction = eviction
        self._entries: list[KeyframeEntry] = []
        self._last_admitted: int | None = None
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def entries(self) -> tuple[KeyframeEntry, ...]:
        """Stored keyframes, reference first, then in admission order."""
        return tuple(self._entries)

    @property
    def reference(self) -> KeyframeEntry | None:
        """The reference keyframe (the first admitted), or None while empty."""
        return self._entries[0] if self._entries else None

    def similarities(self, descriptor: np.ndarray) -> np.ndarray:
        """Cosine of ``descriptor`` (``float[d]``) to each stored keyframe: ``float32[len]``."""
        if not self._entries:
            return np.zeros(0, dtype=np.float32)
        xb = np.stack([e.descriptor for e in self._entries])
        return xb @ _unit(descriptor)

    def offer(
        self, frame_idx: int, descriptor: np.ndarray, quality: float, *, force: bool = False
    ) -> bool:
        """Offer frame ``frame_idx`` as a keyframe; return True when it was admitted.

        Parameters
        ----------
        frame_idx : int
            Index of the candidate frame (increasing over calls).
        descriptor : np.ndarray
            ``float[d]`` appearance vector of the object in that frame (normalised here).
        quality : float
            Confidence in [0, 1] of the object's mask in that frame.
        force : bool, keyword-only
            Admit even when not novel (a trigger, a new track); the gap still applies.
        """
        d = _unit(descriptor)
        if not self._entries:
            self._admit(KeyframeEntry(int(frame_idx), d, float(quality), reference=True))
            return True
        if self._last_admitted is not None and frame_idx - self._last_admitted < self.min_gap:
            return False
        if quality < self.min_quality or self.budget == 1:
            return False
        sims = self.similarities(d)
        if not force and float(sims.max()) >= self.max_similarity:
            return False
        if len(self._entries) >= self.budget:
            self._evict(sims, frame_idx)
        self._admit(KeyframeEntry(int(frame_idx), d, float(quality)))
        return True

    def select(self, descriptor: np.ndarray, k: int) -> list[KeyframeEntry]:
        """The reference plus the ``k - 1`` stored keyframes most similar to ``descriptor``."""
        if not self._entries or k <= 0:
            return []
        sims = self.similarities(descriptor)
        order = [int(i) for i in np.argsort(-sims[1:], kind="stable") + 1]
        return [self._entries[0], *(self._entries[i] for i in order[: k - 1])]

    def clear(self) -> None:
        """Forget every keyframe, the reference included."""
        self._entries.clear()
        self._last_admitted = None

    def _admit(self, entry: KeyframeEntry) -> None:
        self._entries.append(entry)
        self._last_admitted = entry.frame_idx

    def _evict(self, sims: np.ndarray, frame_idx: int) -> None:
        i = int(self._eviction(self._entries, sims))
        if not 1 <= i < len(self._entries):
            raise ParameterError(
                f"eviction policy returned {i}; it must pick a non-reference entry"
            )
        gone = self._entries.pop(i)
        self.evictions += 1
        logger.debug(
            "evicted keyframe %d (cosine %.3f to frame %d); %d kept",
            gone.frame_idx,
            float(sims[i]),
            frame_idx,
            len(self._entries),
        )
