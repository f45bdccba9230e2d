"""Episode files of the store (keyframe JPEGs, media clips): atomic writes, checks, disk usage."""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from memory.errors import ParameterError
from memory.index import FILE_MODE

logger = logging.getLogger(__name__)

KEYFRAME_DIR = "keyframes"
CLIP_DIR = "clips"
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"


def keyframe_relpath(episode_id: int, n: int) -> str:
    """``keyframes/<episode_id>/<n>.jpg`` (POSIX separators, relative to the store dir)."""
    return f"{KEYFRAME_DIR}/{int(episode_id)}/{int(n)}.jpg"


def encode_jpeg(image: np.ndarray, *, quality: int, max_side: int | None = None) -> bytes:
    """JPEG bytes of ``image``: ``uint8[H, W, 3]`` RGB or ``uint8[H, W]`` grey (never mutated),
    shrunk (Lanczos) so its longer side is at most ``max_side`` px when given."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (
        image.ndim == 3 and image.shape[2] != 3
    ):
        raise ParameterError(
            f"keyframe images must be uint8[H, W, 3] RGB or uint8[H, W], got {image.dtype}"
            f"{list(image.shape)}; convert with np.asarray(img, np.uint8)"
        )
    buf = io.BytesIO()
    pil = Image.fromarray(np.ascontiguousarray(image))
    if max_side is not None and max(pil.size) > int(max_side):
        s = int(max_side) / max(pil.size)
        pil = pil.resize((max(1, round(pil.size[0] * s)), max(1, round(pil.size[1] * s))),
                         Image.LANCZOS)  # fmt: skip
    pil.save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (creates, renames) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, fsync: bool) -> None:
    """Write ``data`` to a temp file beside ``path`` and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600; the HTTP server may be another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_keyframes(
    root: Path, episode_id: int, images: list[np.ndarray], *, quality: int, fsync: bool,
    max_side: int | None = None,
) -> list[str]:  # fmt: skip
    """Write ``images`` as ``keyframes/<episode_id>/<n>.jpg``; returns the relative paths.

    A directory left by an earlier, uncommitted attempt at the same id is replaced.
    """
    ep_dir = root / KEYFRAME_DIR / str(int(episode_id))
    if ep_dir.exists():
        shutil.rmtree(ep_dir)
    rel = []
    for n, image in enumerate(images):
        rel.append(keyframe_relpath(episode_id, n))
        write_atomic(root / rel[-1], encode_jpeg(image, quality=quality, max_side=max_side),
                     fsync=fsync)  # fmt: skip
    if images and fsync:
        fsync_dir(ep_dir)
        fsync_dir(ep_dir.parent)
    return rel


def remove_keyframes(root: Path, episode_id: int) -> None:
    """Delete ``keyframes/<episode_id>/`` (no error when absent)."""
    shutil.rmtree(root / KEYFRAME_DIR / str(int(episode_id)), ignore_errors=True)


def clip_relpath(episode_id: int, suffix: str) -> str:
    """``clips/<episode_id><suffix>`` (relative to the store dir)."""
    return f"{CLIP_DIR}/{int(episode_id)}{suffix}"


def adopt_clip(root: Path, episode_id: int, src: Path, *, fsync: bool) -> str:
    """Move the media file ``src`` into the store as ``clips/<episode_id><suffix>`` (rename when
    on the same file system, else copy + delete); returns its relative path."""
    rel = clip_relpath(episode_id, src.suffix.lower() or ".mp4")
    dst = root / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError:  # another file system: copy to a temp beside dst, then rename
        write_atomic(dst, src.read_bytes(), fsync=fsync)
        src.unlink(missing_ok=True)
    else:
        if fsync:
            with open(dst, "rb") as f:
                os.fsync(f.fileno())
    os.chmod(dst, FILE_MODE)
    if fsync:
        fsync_dir(dst.parent)
    return rel


def give_back_clip(root: Path, rel: str | None, original: str | None) -> None:
    """Undo :func:`adopt_clip` after a failed commit (best effort)."""
    if rel and original and (root / rel).exists() and not Path(original).exists():
        try:
            shutil.move(str(root / rel), original)
        except OSError as e:
            logger.warning("could not move clip %s back to %s: %s", rel, original, e)


def remove_episode_files(root: Path, episode_id: int) -> None:
    """Delete an episode's keyframes and clip (no error when absent)."""
    remove_keyframes(root, episode_id)
    clip_dir = root / CLIP_DIR
    if clip_dir.is_dir():
        for clip in clip_dir.glob(f"{int(episode_id)}.*"):
            clip.unlink(missing_ok=True)


def files_bytes(root: Path, rels: list[str]) -> int:
    """Total size of the store-relative files ``rels`` (missing files count 0)."""
    total = 0
    for rel in rels:
        try:
            total += (root / rel).stat().st_size
        except OSError:
            pass
    return total


def jpeg_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole JPEG (missing, empty, no SOI/EOI marker), or None if it is."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(max(0, size - 64))
            tail = f.read().rstrip(b"\x00")
    except FileNotFoundError:
        return f"keyframe missing: {path}"
    except OSError as e:
        return f"keyframe unreadable: {path}: {e}"
    if size == 0 or head != JPEG_SOI or not tail.endswith(JPEG_EOI):
        return f"keyframe corrupt (not a whole JPEG, {size} bytes): {path}"
    return None


def orphan_dirs(root: Path, known_ids: set[int]) -> list[Path]:
    """Keyframe directories and clips whose episode is not in SQLite (a crash before commit,
    or after a forget's commit and before its file deletion)."""
    out = []
    base = root / KEYFRAME_DIR
    if base.is_dir():
        dirs = (p for p in base.iterdir() if p.is_dir() and p.name.isdigit())
        out += [p for p in dirs if int(p.name) not in known_ids]
    clips = root / CLIP_DIR
    if clips.is_dir():
        files = (p for p in clips.iterdir() if p.is_file() and p.stem.isdigit())  # not temps
        out += [p for p in files if int(p.stem) not in known_ids]
    return out


def episode_file_ids(root: Path) -> set[int]:
    """Episode ids that have a keyframe directory or a clip on disk."""
    ids: set[int] = set()
    for sub in (KEYFRAME_DIR, CLIP_DIR):
        base = root / sub
        if base.is_dir():
            ids.update(int(p.name.split(".")[0]) for p in base.iterdir()
                       if p.name.split(".")[0].isdigit())  # fmt: skip
    return ids


def disk_bytes(root: Path) -> int:
    """Total size of the files under ``root`` (the disk-full reserve file excluded)."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name == ".reserve" and dirpath == str(root):
                continue
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total
