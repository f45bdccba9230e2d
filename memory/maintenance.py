"""Store upkeep: the writer lock, crash leftovers, ``stats``, ``check`` and ``export``."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memory import blobs
from memory.errors import ParameterError, StoreLocked
from memory.indexes import MODALITIES
from memory.schema import DB_NAME, SCHEMA_VERSION, get_meta

if TYPE_CHECKING:
    from memory.store import EpisodeStore

logger = logging.getLogger(__name__)

LOCK_NAME = ".writer.lock"
RESERVE_NAME = ".reserve"
SQLITE_FULL = 13
MAX_REPORTED = 50  # problems listed per kind before "... and N more"


class WriterLock:
    """An exclusive ``flock`` on ``<store>/.writer.lock`` held while a writer is open."""

    def __init__(self, root: Path) -> None:
        import fcntl

        root.mkdir(parents=True, exist_ok=True)
        self.path = root / LOCK_NAME
        self._f = open(self.path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
        try:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._f.seek(0)
            holder = self._f.read().strip() or "?"
            self._f.close()
            raise StoreLocked(
                f"store {root} is already open for writing (pid {holder}); stop that writer or "
                "open the store with readonly=True"
            ) from None
        self._f.seek(0)
        self._f.truncate()
        self._f.write(f"{os.getpid()}\n")
        self._f.flush()

    def close(self) -> None:
        """Release the lock (closing the file releases the flock)."""
        if not self._f.closed:
            self._f.close()


def is_disk_full(e: BaseException) -> bool:
    """True for ENOSPC/EDQUOT and SQLite's "database or disk is full"."""
    import errno

    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(e, sqlite3.DatabaseError):
        return getattr(e, "sqlite_errorcode", None) == SQLITE_FULL or "disk is full" in str(e)
    return False


def ensure_reserve(root: Path, nbytes: int) -> None:
    """Keep ``<store>/.reserve`` (``nbytes`` of zeros): deleted when the disk is full, it gives
    retention room to commit. Best effort: a full disk leaves it missing until next time."""
    path = root / RESERVE_NAME
    if nbytes <= 0:
        path.unlink(missing_ok=True)
        return
    try:
        if path.exists() and path.stat().st_size == nbytes:
            return
        with open(path, "wb") as f:
            f.write(b"\0" * nbytes)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        path.unlink(missing_ok=True)
        logger.warning("cannot create the disk-full reserve %s: %s", path, e)


def ensure_span_hint(conn: sqlite3.Connection) -> None:
    """Record the longest episode (meta ``max_span_s``) and create the filter indexes if a
    store (written by an earlier build of schema v2) lacks them."""
    from memory.schema import ENSURE

    for stmt in ENSURE:
        conn.execute(stmt)
    if get_meta(conn, "max_span_s") is None:
        span = conn.execute("SELECT MAX(t_end - t_start) FROM episodes").fetchone()[0]
        if span is not None:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('max_span_s', ?)", (str(span),))


def acquire_writer_lock(root: Path) -> WriterLock:
    """Take the store's writer lock or raise ``StoreLocked``."""
    return WriterLock(root)


def empty_trash(store: EpisodeStore) -> int:
    """Delete the files of forgotten episodes (the ``trash`` table) and dropped clips (the
    ``clip_trash`` table), then their trash rows."""
    ids = [int(r[0]) for r in store._conn.execute("SELECT episode_id FROM trash")]
    for episode_id in ids:
        blobs.remove_episode_files(store.path, episode_id)
    if ids:
        store._conn.execute("DELETE FROM trash")
    clips = [r[0] for r in store._conn.execute("SELECT path FROM clip_trash")]
    for rel in clips:
        (store.path / rel).unlink(missing_ok=True)
    if clips:
        store._conn.execute("DELETE FROM clip_trash")
    return len(ids) + len(clips)


def remove_orphans(store: EpisodeStore, *, all_ids: bool = False) -> list[Path]:
    """Delete episode files without an episode row.

    On every writer open: the files of forgotten episodes left by a kill between the forget's
    commit and its file deletion (the ``trash`` table), and files of ids from
    ``next_episode_id`` on (a kill between writing them and the commit). ``all_ids=True`` scans
    every directory (``EpisodeStore.rebuild``).
    """
    root = store.path
    empty_trash(store)
    if all_ids:
        known = {int(r[0]) for r in store._conn.execute("SELECT id FROM episodes")}
        orphans = blobs.orphan_dirs(root, known)
    else:
        orphans, i = [], store._next_id
        while (root / blobs.KEYFRAME_DIR / str(i)).is_dir():
            orphans.append(root / blobs.KEYFRAME_DIR / str(i))
            i += 1
        clips = root / blobs.CLIP_DIR
        if clips.is_dir():
            orphans += [p for p in clips.iterdir()
                        if p.stem.isdigit() and int(p.stem) >= store._next_id]  # fmt: skip
    for path in orphans:
        logger.warning("removing orphan episode files %s (no episode row)", path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    for tmp in [*(root / "index").glob(".*.tmp"), *(root / blobs.CLIP_DIR).glob(".incoming-*")]:
        tmp.unlink(missing_ok=True)  # a killed writer's temp files (index saves, clips)
    return orphans


def _count(conn: sqlite3.Connection, sql: str, params: tuple = ()) -> int:
    return int(conn.execute(sql, params).fetchone()[0])


def stats(store: EpisodeStore) -> dict[str, Any]:
    """``{"path", "schema_version", "episodes", "vectors": {modality: n}, "dims", "sounds",
    "sources": {source: episodes}, "bytes", "clips": {"episodes", "bytes", "dropped"},
    "time_span": {"t_start", "t_end", "wall_start", "wall_end"}}`` (times: media seconds / UTC
    epoch seconds; None when empty; clips: episodes with a clip, their bytes, episodes whose
    clip was dropped)."""
    conn = store._conn
    span = conn.execute(
        "SELECT MIN(t_start), MAX(t_end), MIN(wall_start), MAX(wall_start + t_end - t_start) "
        "FROM episodes"
    ).fetchone()
    sources = conn.execute("SELECT source, COUNT(*) FROM episodes GROUP BY source ORDER BY source")
    return {
        "path": str(store.path),
        "schema_version": SCHEMA_VERSION,
        "episodes": _count(conn, "SELECT COUNT(*) FROM episodes"),
        "vectors": {m: store._ix.sqlite_count(m) for m in MODALITIES},
        "dims": {m: store._ix.dim(m) for m in MODALITIES},
        "sounds": _count(conn, "SELECT COUNT(*) FROM sounds"),
        "sources": {r[0]: int(r[1]) for r in sources},
        "bytes": blobs.disk_bytes(store.path),
        "clips": dict(zip(("episodes", "bytes", "dropped"), (int(v or 0) for v in conn.execute(
            "SELECT COUNT(clip), SUM(clip_bytes), COUNT(clip_note) FROM episodes").fetchone()))),
        "time_span": dict(zip(("t_start", "t_end", "wall_start", "wall_end"), tuple(span))),
    }


def _capped(kind: str, items: list[str]) -> list[str]:
    extra = len(items) - MAX_REPORTED
    return items[:MAX_REPORTED] + ([f"... and {extra} more {kind}"] if extra > 0 else [])


def _sqlite_problems(conn: sqlite3.Connection) -> list[str]:
    rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    problems = [] if rows == ["ok"] else [f"sqlite integrity_check: {r}" for r in rows]
    n_eps = _count(conn, "SELECT COUNT(*) FROM episodes")
    n_fts = _count(conn, "SELECT COUNT(*) FROM episodes_fts")
    if n_fts != n_eps:
        problems.append(f"full-text index has {n_fts} rows for {n_eps} episodes")
    dangling = _count(conn, "SELECT COUNT(*) FROM vectors WHERE episode_id NOT IN "
                            "(SELECT id FROM episodes)")  # fmt: skip
    if dangling:
        problems.append(f"{dangling} vector rows belong to no episode")
    for modality, n_dims in conn.execute(
        "SELECT modality, COUNT(DISTINCT dim) FROM vectors GROUP BY modality"
    ):
        if n_dims > 1:
            problems.append(f"{modality} vectors have {n_dims} different dims")
    return problems


def _orphan_problems(store: EpisodeStore) -> list[str]:
    """Episode files without a row, except the harmless leftovers of a killed writer (files of
    an uncommitted id >= next_episode_id, or of a forget whose files are in the trash), which
    the next writer removes."""
    conn = store._conn
    known = {int(r[0]) for r in conn.execute("SELECT id FROM episodes")}
    pending = {int(r[0]) for r in conn.execute("SELECT episode_id FROM trash")}
    next_id = int(get_meta(conn, "next_episode_id", "1") or 1)
    out = []
    for path in blobs.orphan_dirs(store.path, known):
        episode_id = int(path.name.split(".")[0])
        if episode_id in pending or episode_id >= next_id:
            continue
        out.append(f"orphan episode files (run rebuild): {path}")
    return out


def check(store: EpisodeStore) -> dict[str, Any]:
    """Verify the store: SQLite integrity, FAISS files == SQLite vectors, keyframe files.

    Returns ``{"ok": bool, "episodes": N, "vectors": N, "problems": [str, ...]}`` where
    ``vectors`` counts the vectors of every modality (SQLite, the source of truth).
    """
    conn = store._conn
    try:
        problems = _sqlite_problems(conn)
        n_eps = _count(conn, "SELECT COUNT(*) FROM episodes")
        n_vec = _count(conn, "SELECT COUNT(*) FROM vectors")
        for modality in MODALITIES:
            problems += store._ix.problems(modality)
        bad_kf = []
        for episode_id, keyframes, clip in conn.execute("SELECT id, keyframes, clip FROM episodes"):
            for rel in json.loads(keyframes):
                if (why := blobs.jpeg_problem(store.path / rel)) is not None:
                    bad_kf.append(f"episode {episode_id}: {why}")
            if clip and not (store.path / clip).is_file():
                bad_kf.append(f"episode {episode_id}: clip missing: {store.path / clip}")
        problems += _capped("keyframe problems", bad_kf)
        problems += _capped("orphans", _orphan_problems(store))
    except sqlite3.DatabaseError as e:
        return {"ok": False, "episodes": 0, "vectors": 0, "problems": [f"sqlite: {e}"]}
    return {"ok": not problems, "episodes": n_eps, "vectors": n_vec, "problems": problems}


def export(store: EpisodeStore, dst: Path) -> Path:
    """Write a consistent copy (a backup) of ``store`` to the new or empty directory ``dst``.

    The index files are copied first, then SQLite with the online backup API (a snapshot that
    is at least as new as those files, so they are merely behind and caught up), then the
    keyframes and clips the snapshot references. Safe while a writer is running. Returns ``dst``.
    """
    from memory.store import EpisodeStore

    dst = dst.resolve()
    if dst == store.path or (dst.exists() and any(dst.iterdir())):
        raise ParameterError(f"export target {dst} is not empty; choose a new directory")
    dst.mkdir(parents=True, exist_ok=True)
    index_dir = store.path / "index"
    if index_dir.is_dir():
        (dst / "index").mkdir()
        for modality in MODALITIES:
            for name in (f"{modality}.faiss", f"{modality}.faiss.json"):
                try:
                    shutil.copy2(index_dir / name, dst / "index" / name)
                except FileNotFoundError:
                    pass
    snap = sqlite3.connect(dst / DB_NAME)
    try:
        store._conn.backup(snap)
        rows = snap.execute("SELECT keyframes, clip FROM episodes").fetchall()
    finally:
        snap.close()
    for keyframes, clip in rows:
        for rel in [*json.loads(keyframes), *([clip] if clip else [])]:
            src = store.path / rel
            if src.exists():
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst / rel)
            else:
                logger.warning("export: %s is missing; the copy lacks it too", src)
    with EpisodeStore(dst):  # the first writer open catches the indexes up and cleans up
        pass
    logger.info("exported %s to %s (%d episodes)", store.path, dst, len(rows))
    return dst
