"""``eidetic track``: semi-supervised video object segmentation over a frames folder or a video."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import ConfigError, IngestError

logger = logging.getLogger(__name__)

FRAME_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
PRESETS = ("quality", "fast")


def read_mask(path: Path) -> tuple[np.ndarray, str, list[int] | None]:
    """Read a DAVIS-style mask PNG → (``uint8[H, W]`` values, mode "P" or "L", palette or None)."""
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise IngestError(str(path), "no such file") from None
    except (OSError, UnidentifiedImageError) as e:
        raise IngestError(str(path), f"not a readable image ({e})") from e
    if img.mode == "P":
        return np.asarray(img, dtype=np.uint8), "P", img.getpalette()
    if img.mode in ("1", "L", "LA", "I", "I;16"):
        return np.asarray(img.convert("L"), dtype=np.uint8), "L", None
    raise IngestError(str(path), f"mask must be a palette or grey PNG, got mode {img.mode}")


def write_mask(path: Path, values: np.ndarray, mode: str, palette: list[int] | None) -> None:
    """Write ``values`` (``uint8[H, W]``) as a PNG in the input mask's mode (palette kept)."""
    v = np.ascontiguousarray(values, dtype=np.uint8)
    img = Image.frombytes(mode, (v.shape[1], v.shape[0]), v.tobytes())
    if mode == "P" and palette:
        img.putpalette(palette)
    img.save(path)


def iter_frames(source: Path, *, max_dimension: int) -> Iterator[tuple[str, np.ndarray]]:
    """(output stem, RGB ``uint8[H, W, 3]``) for each frame of a folder (sorted) or a video."""
    if source.is_dir():
        files = sorted(f for f in source.iterdir() if f.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise IngestError(str(source), "folder holds no image frames (.jpg/.png)")
        for f in files:
            try:
                yield f.stem, np.asarray(Image.open(f).convert("RGB"))
            except (OSError, UnidentifiedImageError) as e:
                raise IngestError(str(f), f"not a readable image ({e})") from e
        return
    from pipeline.ingest import iter_video, probe

    info = probe(str(source), max_dimension=max_dimension)
    if not info.has_video:
        raise IngestError(str(source), "has no video stream")
    side = max(info.width, info.height)
    for i, packet in enumerate(iter_video(str(source), stream_id="track", fps=None, max_side=side)):
        yield f"{i:05d}", packet.image


def run_track(
    frames: Path,
    first_mask: Path,
    out: Path,
    *,
    preset: str = "quality",
    hook=None,
    max_dimension: int = 16384,
    refiner=None,
    refine_every: int = 10,
    refine_gate: float = 0.59,
) -> dict[str, Any]:
    """Propagate ``first_mask`` through ``frames``; write one PNG per frame into ``out``.

    Returns ``{"frames", "objects", "fps", "keyframes_kept"}``. ``hook(done)`` is called per frame.
    ``refiner`` (a box-prompted Segmenter such as SAM-HQ) refines the masks every
    ``refine_every`` frames through the IoU gate ``refine_gate``.
    """
    from tracker.vos import VOSTracker

    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if not frames.exists():
        raise IngestError(str(frames), "no such file or folder")
    values, mode, palette = read_mask(first_mask)
    objects = [int(v) for v in np.unique(values) if v != 0]
    out.mkdir(parents=True, exist_ok=True)
    vos = VOSTracker(
        preset=preset, refiner=refiner, refine_every=refine_every, refine_gate=refine_gate
    )
    n, t0 = 0, time.perf_counter()
    for stem, image in iter_frames(frames, max_dimension=max_dimension):
        if n == 0:
            if image.shape[:2] != values.shape:
                raise IngestError(
                    str(first_mask),
                    f"mask is {values.shape[1]}x{values.shape[0]} but frames are {image.shape[1]}x{image.shape[0]}",
                )
            vos.start(image, values)
            labels = values
        else:
            labels = vos.step(image)
        write_mask(out / f"{stem}.png", np.asarray(labels, dtype=np.uint8), mode, palette)
        n += 1
        if hook is not None:
            hook(n)
    elapsed = time.perf_counter() - t0
    return {
        "frames": n,
        "objects": len(objects),
        "fps": round(n / elapsed, 3) if elapsed > 0 else 0.0,
        "keyframes_kept": int(vos.keyframes_kept()),
    }
