"""Few-shot custom trigger sounds: a few example clips → prototypes in the classifier's embedding.

A user enrolls a sound (``eidetic sounds add doorbell a.wav b.wav c.wav``); each clip is embedded
with :meth:`models.audio.cnn.AudioClassifier.embed_clip` (its active part only). A detected sound
matches the enrolled sound when the cosine similarity of its embedding to the nearest example is
at least the sound's threshold; the score reported is that similarity. The threshold is set at
enrollment from the examples themselves: the lowest leave-one-out similarity among them, lowered
by a margin, and never under :data:`MIN_THRESHOLD` (with a single example: :data:`ONE_SHOT_THRESHOLD`).

On disk, one directory holds ``<name>.json`` (threshold, examples, the classifier checkpoint's
SHA-256) and ``<name>.npy`` (``float32[n, d]`` example embeddings) per sound. Both are written to a
temporary file and renamed, so a crash never leaves half a sound.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import ParameterError

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
MAX_EXAMPLES = 64
MIN_THRESHOLD = 0.6  # cosine: never accept matches weaker than this
ONE_SHOT_THRESHOLD = 0.8  # cosine threshold when only one example was given
MARGIN = 0.05  # subtracted from the lowest leave-one-out similarity
RESERVED = ("sound", "interaction", "visual_change", "video")


@dataclass(frozen=True, slots=True)
class CustomSound:
    """An enrolled sound: name, cosine threshold, example embeddings (``float32[n, d]``, unit rows)."""

    name: str
    threshold: float
    embeddings: np.ndarray
    examples: tuple[str, ...]
    model_sha256: str | None = None

    def similarity(self, embedding: np.ndarray) -> float:
        """Cosine similarity of ``embedding`` (unit ``float32[d]``) to the nearest example."""
        return float(np.max(self.embeddings @ embedding))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "threshold": round(self.threshold, 4),
            "examples": list(self.examples),
            "n_examples": len(self.examples),
            "dim": int(self.embeddings.shape[1]),
            "model_sha256": self.model_sha256,
        }


def check_name(name: str, *, builtin: tuple[str, ...] = ()) -> str:
    """Validate a custom sound's name: lower-case letters, digits, ``_`` or ``-``, not a built-in."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ParameterError(
            f"bad sound name {name!r}: use 1-64 lower-case letters, digits, '_' or '-', "
            "starting with a letter"
        )
    if name in builtin or name in RESERVED:
        raise ParameterError(f"sound name {name!r} is a built-in class; choose another name")
    return name


def enrollment_threshold(embeddings: np.ndarray) -> float:
    """Cosine threshold for examples ``float32[n, d]`` (unit rows): see the module docstring."""
    n = embeddings.shape[0]
    if n < 2:
        return ONE_SHOT_THRESHOLD
    sims = embeddings @ embeddings.T
    np.fill_diagonal(sims, -np.inf)
    loo = sims.max(axis=1)  # each example's nearest other example
    return float(np.clip(loo.min() - MARGIN, MIN_THRESHOLD, 0.99))


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class SoundLibrary:
    """The enrolled sounds in directory ``root`` (created on the first :meth:`add`)."""

    def __init__(self, root: str | Path, *, builtin: tuple[str, ...] = ()) -> None:
        self.root = Path(root)
        self.builtin = tuple(builtin)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.json") if NAME_RE.match(p.stem))

    def get(self, name: str) -> CustomSound:
        meta_path, emb_path = self.root / f"{name}.json", self.root / f"{name}.npy"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            emb = np.load(emb_path, allow_pickle=False).astype(np.float32, copy=False)
        except FileNotFoundError:
            raise ParameterError(f"no custom sound named {name!r} in {self.root}") from None
        except (OSError, ValueError) as e:
            raise ParameterError(f"custom sound {name!r} in {self.root} is unreadable: {e}") from e
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise ParameterError(f"custom sound {name!r}: bad embeddings of shape {emb.shape}")
        return CustomSound(
            name, float(meta["threshold"]), emb, tuple(meta.get("examples", ())),
            meta.get("model_sha256"),
        )  # fmt: skip

    def load(self) -> list[CustomSound]:
        """Every enrolled sound (unreadable ones are skipped with a warning)."""
        out = []
        for name in self.names():
            try:
                out.append(self.get(name))
            except ParameterError as e:
                logger.warning("%s", e)
        return out

    def add(
        self,
        name: str,
        embeddings: np.ndarray,
        examples: list[str],
        *,
        threshold: float | None = None,
        model_sha256: str | None = None,
        replace: bool = False,
    ) -> CustomSound:
        """Enroll ``name`` from example embeddings ``float32[n, d]`` (one row per example clip).

        Raises
        ------
        ParameterError
            Bad name, no or too many examples, non-finite embeddings, or ``name`` exists and
            ``replace`` is False.
        """
        check_name(name, builtin=self.builtin)
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise ParameterError(f"need at least one example embedding, got shape {emb.shape}")
        if emb.shape[0] > MAX_EXAMPLES:
            raise ParameterError(f"at most {MAX_EXAMPLES} examples per sound, got {emb.shape[0]}")
        if not np.isfinite(emb).all():
            raise ParameterError("example embeddings contain NaN or inf")
        if len(examples) != emb.shape[0]:
            raise ParameterError(f"{len(examples)} example names for {emb.shape[0]} embeddings")
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        if (norms <= 0).any():
            raise ParameterError("an example embedding is all zeros (silent clip?)")
        emb = emb / norms
        if (self.root / f"{name}.json").exists() and not replace:
            raise ParameterError(f"custom sound {name!r} exists; remove it first or use --replace")
        thr = enrollment_threshold(emb) if threshold is None else float(threshold)
        if not 0.0 < thr <= 1.0:
            raise ParameterError(f"threshold must be in (0, 1], got {thr}")
        sound = CustomSound(name, thr, emb, tuple(examples), model_sha256)
        self.root.mkdir(parents=True, exist_ok=True)
        buf = _npy_bytes(emb)
        _atomic_write(self.root / f"{name}.npy", buf)
        _atomic_write(
            self.root / f"{name}.json", json.dumps(sound.to_json(), indent=2).encode() + b"\n"
        )
        logger.info("enrolled %s from %d examples (threshold %.3f)", name, len(examples), thr)
        return sound

    def remove(self, name: str) -> bool:
        """Forget ``name``; True if it existed."""
        found = False
        for suffix in (".json", ".npy"):
            p = self.root / f"{name}{suffix}"
            if p.exists():
                p.unlink()
                found = True
        return found


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()
