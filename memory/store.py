"""EpisodeStore: a directory holding SQLite (source of truth), FAISS indexes and keyframe JPEGs.

Layout::

    <store>/eidetic.db                  SQLite, WAL (schema: memory/schema.py)
    <store>/index/<modality>.faiss      one FAISS IDMap2 index per modality ("visual", "audio")
    <store>/keyframes/<episode_id>/<n>.jpg

Durability. ``synchronous=FULL`` (the default) fsyncs the WAL at every commit, and keyframe JPEGs
are fsynced before the commit that references them: an ``add`` that returned survives ``kill -9``
*and* power loss. With ``synchronous="NORMAL"`` an acknowledged write still survives ``kill -9``,
but the last transactions before a power cut or OS crash may be rolled back (never corrupted).
FAISS files are derived data (memory/indexes.py): updated in memory after each commit, written
atomically (temp + rename) now and then and on close, caught up from SQLite when behind, rebuilt
when missing or unreadable. ``add_many`` commits a batch in one transaction (the fast path).

One writer per store (an ``fcntl`` lock on ``<store>/.writer.lock``); any number of readers
(``readonly=True``) in other processes see every commit made after they opened.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from memory import blobs, maintenance, retention
from memory import objects as objects_mod
from memory.errors import IndexMismatch, ParameterError, ReadOnlyStore, StoreFull
from memory.indexes import AUTO, MODALITIES, IndexSet
from memory.objects import REID_THRESHOLD, ObjectMatcher, forget_orphan_objects
from memory.reader import LoggedSound, StoreReader, where_sql
from memory.retention import RetentionPolicy
from memory.schema import (
    DB_NAME,
    blob_vector,
    connect,
    episode_row,
    fts_row,
    get_meta,
    init_schema,
    set_meta,
    transaction,
    vector_blob,
)
from memory.types import Episode, SoundRecord

__all__ = ["EpisodeStore", "LoggedSound"]

logger = logging.getLogger(__name__)

SYNCHRONOUS = ("NORMAL", "FULL")
RESERVE_BYTES = 4 * 2**20  # the disk-full reserve file (see ``reserve_bytes``)
RETENTION_EVERY_S = 60.0
CLIP_BUDGET_EVERY_S = 10.0  # the clip budget is applied this often while adding, and on close


class EpisodeStore(StoreReader):
    """Durable episodic memory in one directory (see the module docstring for the layout).

    Parameters
    ----------
    path : str or Path
        The store directory (created by a writer when missing).
    readonly : bool
        Open SQLite with ``mode=ro`` (query processes); writes raise ``ReadOnlyStore``.
    synchronous : {"FULL", "NORMAL"}
        SQLite ``PRAGMA synchronous`` of the writer (see the module docstring).
    index_factory : str
        ``"auto"``: exact Flat while small, IVF with a tuned nprobe as the store grows; or a
        FAISS factory string used for every index (e.g. ``"IDMap2,HNSW32"``).
    jpeg_quality : int
        Quality of keyframe JPEGs (10–100).
    keyframe_max_side : int, optional
        Keyframe JPEGs are shrunk so their longer side is at most this (px); None: as given.
    reid_threshold : float
        Cosine similarity at which an episode's object is the same identity as a known one
        (memory/objects.py).
    retention : RetentionPolicy, optional
        Size and age limits (memory/retention.py), enforced by the writer every
        ``RETENTION_EVERY_S`` while adding, and when the disk is full.
    reserve_bytes : int
        A writer keeps a file of this size in the store, deleted when the disk is full so that
        retention has room to commit its deletes.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        readonly: bool = False,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        index_factory: str = AUTO,
        jpeg_quality: int = 85,
        keyframe_max_side: int | None = None,
        reid_threshold: float = REID_THRESHOLD,
        retention: RetentionPolicy | None = None,
        reserve_bytes: int = RESERVE_BYTES,
    ) -> None:
        if synchronous not in SYNCHRONOUS:
            raise ParameterError(f"synchronous must be one of {SYNCHRONOUS}, got {synchronous!r}")
        if not 10 <= int(jpeg_quality) <= 100:
            raise ParameterError(f"jpeg_quality must be in [10, 100], got {jpeg_quality!r}")
        self.path = Path(path).resolve()
        self.readonly = readonly
        self.jpeg_quality = int(jpeg_quality)
        if keyframe_max_side is not None and int(keyframe_max_side) < 1:
            raise ParameterError(f"keyframe_max_side must be >= 1, got {keyframe_max_side!r}")
        self.keyframe_max_side = keyframe_max_side
        self._fsync = synchronous == "FULL"
        self._lock = threading.RLock()
        self._objects = ObjectMatcher(threshold=reid_threshold)
        self._last_visual: dict[str, np.ndarray] = {}
        self.retention = retention or RetentionPolicy()
        self.reserve_bytes = int(reserve_bytes)
        self._retention_at = 0.0
        self._clip_dirty: set[tuple[str, int]] = set()  # clip-budget buckets added to
        self._clip_last: dict[str, int] = {}  # each source's latest bucket added to (on close)
        self._clip_at = 0.0
        self._label_counts: tuple[Any, int, float] | None = None  # (counts, n, monotonic time)
        self._conn = None  # type: ignore[assignment]
        self._writer_lock = None if readonly else maintenance.acquire_writer_lock(self.path)
        try:
            self._conn = connect(self.path / DB_NAME, readonly=readonly, synchronous=synchronous)
            init_schema(self._conn, readonly=readonly)
            self._ix = IndexSet(
                self.path, self._conn, self._lock, readonly=readonly, factory=index_factory
            )
            if not readonly:
                self._next_id = self._load_next_id()
                maintenance.remove_orphans(self)
                maintenance.ensure_span_hint(self._conn)
                self._ix.open()
                maintenance.ensure_reserve(self.path, self.reserve_bytes)
        except BaseException:
            self.close()
            raise
        logger.info("opened store %s (%s)", self.path, "read-only" if readonly else "writer")

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Save unsaved index changes, close SQLite and release the writer lock (idempotent)."""
        with self._lock:
            if self._conn is not None:
                if not self.readonly and (self._clip_dirty or self._clip_last):
                    try:
                        self._clip_dirty.update(self._clip_last.items())
                        self.enforce_clip_budget(final=True)
                    except Exception:  # noqa: BLE001 - closing must go on; the next writer retries
                        logger.exception("clip budget not applied on close")
                if not self.readonly and hasattr(self, "_ix"):
                    self._ix.flush()
                self._conn.close()
                self._conn = None  # type: ignore[assignment]
            if self._writer_lock is not None:
                self._writer_lock.close()
                self._writer_lock = None

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EpisodeStore({str(self.path)!r}, readonly={self.readonly})"

    def _require_writer(self) -> None:
        if self._conn is None:
            raise ReadOnlyStore(f"store {self.path} is closed; open a new EpisodeStore")
        if self.readonly:
            raise ReadOnlyStore(f"store {self.path} is open read-only; open it with readonly=False")

    def _load_next_id(self) -> int:
        top = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM episodes").fetchone()[0]
        return max(int(get_meta(self._conn, "next_episode_id", "1") or 1), int(top) + 1)

    # --- writes ------------------------------------------------------------------------------

    def add(self, episode: Episode, keyframe_images: Sequence[np.ndarray] = ()) -> Episode:
        """Store ``episode`` durably.

        Keyframes are written first (temp + rename, fsynced with ``synchronous="FULL"``), then
        one SQLite transaction (row, vectors, FTS), then the FAISS indexes are updated and saved.

        Parameters
        ----------
        episode : Episode
            Without ``episode_id`` and ``keyframes`` (the store assigns both).
            ``keyframe_times``, if given, has one entry per image.
        keyframe_images : sequence of ndarray
            ``uint8[H, W, 3]`` RGB (or ``uint8[H, W]`` grey), stored as
            ``keyframes/<episode_id>/<n>.jpg``; never mutated.

        Returns
        -------
        Episode
            The stored episode: ``episode_id`` set, ``keyframes`` relative to the store dir.

        Raises
        ------
        IndexMismatch
            A vector's dim differs from the store's vectors of that modality.
        ParameterError
            Bad images, times or ids; nothing is written.
        """
        return self.add_many([(episode, keyframe_images)])[0]

    def add_many(self, items: Iterable[tuple[Episode, Sequence[np.ndarray]]]) -> list[Episode]:
        """Store several episodes in one transaction (the fast path); see :meth:`add`.

        On a full disk, retention makes room (unless ``retention.make_room_when_full`` is off)
        and the write is retried once; ``StoreFull`` if it still fails. Nothing is half-written.
        """
        with self._lock:
            self._require_writer()
            batch = [(ep, list(imgs)) for ep, imgs in items]
            try:
                stored = self._add_batch(batch)
            except (OSError, sqlite3.DatabaseError) as e:
                if not maintenance.is_disk_full(e):
                    raise
                stored = self._add_after_disk_full(batch, e)
            if self.retention.clip_bucket_bytes is not None:
                for ep in stored:
                    if ep.clip is not None:
                        b = retention.clip_bucket(ep.t_start if ep.wall_start is None else ep.wall_start)
                        self._clip_dirty.add((ep.source, b))
                        self._clip_last[ep.source] = max(b, self._clip_last.get(ep.source, b))
            self._maybe_enforce_retention()
            return stored

    def _add_after_disk_full(self, batch: list, error: BaseException) -> list[Episode]:
        """Free the reserve; retention forgets the least important episodes in small commits
        (or, when it may not, the WAL is folded in); retry once, else ``StoreFull``."""
        logger.warning("disk full writing to store %s (%s)", self.path, error)
        (self.path / maintenance.RESERVE_NAME).unlink(missing_ok=True)
        if self.retention.make_room_when_full:
            need = sum(img.nbytes // 4 for _, imgs in batch for img in imgs) + 64 * 1024
            store_bytes = retention.store_bytes(self)
            report = retention.enforce(
                self, self.retention, batch=retention.DISK_FULL_BATCH,
                free_bytes=max(need, int(retention.DISK_FULL_FREE_FRACTION * store_bytes)),
            )  # fmt: skip
            logger.warning("disk full: retention forgot %d episodes", report["forgotten"])
        else:
            retention.checkpoint(self)
        try:
            stored = self._add_batch(batch)
        except (OSError, sqlite3.DatabaseError) as e:
            if not maintenance.is_disk_full(e):
                raise
            why = "after retention" if self.retention.make_room_when_full else "(retention off)"
            raise StoreFull(f"disk full writing to store {self.path} {why}: {e}; free space, "
                            "or lower the retention limits") from e  # fmt: skip
        maintenance.ensure_reserve(self.path, self.reserve_bytes)
        return stored

    def _add_batch(self, batch: list[tuple[Episode, list[np.ndarray]]]) -> list[Episode]:
        dims: dict[str, int | None] = {m: self._ix.dim(m) for m in MODALITIES}
        for ep, imgs in batch:
            self._validate(ep, imgs, dims)
        ids = list(range(self._next_id, self._next_id + len(batch)))
        written: list[tuple[Episode, int]] = []
        try:
            for i, (ep, imgs) in zip(ids, batch):
                written.append(self._write_files(i, ep, imgs))
            gens = self._insert(written)
        except BaseException:
            self._objects.invalidate()
            self._last_visual.clear()
            for (ep, _), (stored, _) in zip(batch, written):
                blobs.give_back_clip(self.path, stored.clip, ep.clip)
            for episode_id in ids:
                blobs.remove_episode_files(self.path, episode_id)
            raise
        self._next_id += len(batch)
        stored = [ep for ep, _ in written]
        self._index_added(stored, gens)
        return stored

    def _maybe_enforce_retention(self) -> None:
        if self._clip_dirty and time.monotonic() - self._clip_at >= CLIP_BUDGET_EVERY_S:
            self.enforce_clip_budget()
        if self.retention.active and time.monotonic() - self._retention_at >= RETENTION_EVERY_S:
            self._retention_at = time.monotonic()
            retention.enforce(self, self.retention)

    def enforce_retention(self, *, now: float | None = None, dry_run: bool = False) -> dict[str, Any]:
        """Apply the retention policy now (the clip budget over the whole store, then the size
        and age limits); returns what was (or would be) dropped and forgotten."""
        with self._lock:
            self._require_writer()
            clips = self.enforce_clip_budget(all_buckets=True, final=True, dry_run=dry_run)
            self._retention_at = time.monotonic()
            report = retention.enforce(self, self.retention, now=now, dry_run=dry_run)
            return {**report, "clips_over_budget": clips}

    def enforce_clip_budget(
        self, *, all_buckets: bool = False, final: bool = False, dry_run: bool = False
    ) -> list[int]:
        """Apply ``retention.clip_mb_per_hour`` to the buckets added to since the last time (or
        to every bucket); ``final``: the input has ended, each source's last bucket gets the
        budget of the input it covers (:func:`memory.retention.clip_budget_plan`). Returns the
        ids whose clips were (or would be) dropped."""
        with self._lock:
            self._require_writer()
            self._clip_at = time.monotonic()
            if self.retention.clip_bucket_bytes is None:
                self._clip_dirty.clear()
                return []
            buckets = None if all_buckets else set(self._clip_dirty)
            cached = self._label_counts
            if cached is None or time.monotonic() - cached[2] > retention.LABEL_COUNTS_TTL_S:
                counts, n = retention.label_counts(self._conn)
                cached = self._label_counts = (counts, n, time.monotonic())
            ids = retention.clip_budget_plan(self, self.retention, buckets, counts=cached[:2],
                                             final=final)  # fmt: skip
            if dry_run:
                return ids
            self._clip_dirty.clear()
            return self.drop_clips(ids, retention.clip_note_budget(self.retention)) if ids else []

    def _write_files(self, episode_id: int, ep: Episode, imgs: list[np.ndarray]) -> tuple[Episode, int]:
        """Keyframes written and the clip moved in (fsynced); returns the episode and its bytes."""
        rel = blobs.write_keyframes(
            self.path, episode_id, imgs, quality=self.jpeg_quality, fsync=self._fsync,
            max_side=self.keyframe_max_side,
        )  # fmt: skip
        clip = None
        if ep.clip is not None:
            clip = blobs.adopt_clip(self.path, episode_id, Path(ep.clip), fsync=self._fsync)
        stored = dataclasses.replace(
            ep, episode_id=episode_id, keyframes=tuple(rel), clip=clip,
            t_start=float(ep.t_start), t_end=float(ep.t_end),
        )  # fmt: skip
        return stored, blobs.files_bytes(self.path, [*rel, *([clip] if clip else [])])

    @staticmethod
    def _validate(ep: Episode, imgs: list[np.ndarray], dims: dict[str, int | None]) -> None:
        """Reject a bad episode before anything is written; ``dims`` learns new modalities."""
        if ep.episode_id is not None:
            raise ParameterError(f"episode already has id {ep.episode_id}; the store assigns ids")
        if ep.keyframes and not imgs:
            raise ParameterError("pass keyframe images, not paths: the store writes keyframes")
        if ep.keyframe_times and len(ep.keyframe_times) != len(imgs):
            raise ParameterError(f"{len(ep.keyframe_times)} keyframe_times for {len(imgs)} images")
        if not ep.t_end >= ep.t_start:
            raise ParameterError(f"episode ends before it starts: [{ep.t_start}, {ep.t_end}]")
        if ep.clip is not None and not Path(ep.clip).is_file():
            raise ParameterError(f"clip {ep.clip!r} is not a file; give the path of a media file")
        for modality in MODALITIES:
            if (x := getattr(ep, modality)) is None:
                continue
            x = np.asarray(x)
            if x.ndim != 1 or x.size == 0 or dims[modality] not in (None, x.shape[0]):
                raise IndexMismatch(
                    f"{modality} vector has shape {list(x.shape)}, the store's {modality} vectors "
                    f"have dim {dims[modality]}; use one embedder per store (or a new store)"
                )
            if not np.isfinite(x).all():
                raise ParameterError(f"{modality} vector has NaN/inf values")
            dims[modality] = x.shape[0]

    def _insert(self, written: list[tuple[Episode, int]]) -> dict[str, int]:
        """One transaction: rows, FTS, vectors, generations; returns the new generations."""
        changed: set[str] = set()
        vec_rows = []
        with transaction(self._conn) as c:
            for ep, nbytes in written:
                row = episode_row(ep, ep.episode_id, list(ep.keyframes), nbytes=nbytes,  # type: ignore[arg-type]
                                  redundancy=self._redundancy(ep),
                                  clip_bytes=blobs.files_bytes(self.path, [ep.clip] if ep.clip else []))  # fmt: skip
                marks = ", ".join("?" * len(row))
                sql = f"INSERT INTO episodes ({', '.join(row)}) VALUES ({marks})"
                c.execute(sql, tuple(row.values()))
                for modality in MODALITIES:
                    if (x := getattr(ep, modality)) is not None:
                        vec_rows.append((ep.episode_id, modality, int(np.size(x)), vector_blob(x)))
                        changed.add(modality)
            c.executemany(
                "INSERT INTO episodes_fts (rowid, summary, labels, source) VALUES (?, ?, ?, ?)",
                [fts_row(ep, ep.episode_id) for ep, _ in written],  # type: ignore[arg-type]
            )
            c.executemany("INSERT INTO vectors VALUES (?, ?, ?, ?)", vec_rows)
            self._objects.assign(c, [ep for ep, _ in written])
            gens = {m: self._ix.sqlite_gen(m) + 1 for m in changed}
            for modality, gen in gens.items():
                set_meta(c, f"gen:{modality}", gen)
            if written:
                set_meta(c, "next_episode_id", written[-1][0].episode_id + 1)  # type: ignore[operator]
                span = max(ep.t_end - ep.t_start for ep, _ in written)
                if span > float(get_meta(c, "max_span_s", "0") or 0):
                    set_meta(c, "max_span_s", span)  # the longest episode (bounds range scans)
        return gens

    def _redundancy(self, ep: Episode) -> float:
        """Cosine of ``ep.visual`` to the previous episode of its source (0 without vectors)."""
        if ep.visual is None:
            return 0.0
        prev = self._last_visual.get(ep.source)
        if prev is None:
            row = self._conn.execute(
                "SELECT v.data FROM episodes e JOIN vectors v ON v.episode_id = e.id AND "
                "v.modality = 'visual' WHERE e.source = ? ORDER BY e.id DESC LIMIT 1", (ep.source,),
            ).fetchone()  # fmt: skip
            prev = None if row is None else blob_vector(row[0])
        x = np.asarray(ep.visual, np.float32)
        self._last_visual[ep.source] = x
        if prev is None or prev.shape != x.shape:
            return 0.0
        return float(np.clip(x @ prev / max(np.linalg.norm(x) * np.linalg.norm(prev), 1e-12), -1, 1))

    def _index_added(self, stored: list[Episode], gens: dict[str, int]) -> None:
        """Add the committed vectors to FAISS; on failure rebuild from SQLite."""
        try:
            for modality, gen in gens.items():
                eps = [ep for ep in stored if getattr(ep, modality) is not None]
                ids = np.array([ep.episode_id for ep in eps], dtype=np.int64)
                x = np.stack([np.asarray(getattr(ep, modality), np.float32) for ep in eps])
                self._ix.add(modality, ids, x, gen)
        except Exception:  # the commit stands; the index is derived data
            logger.exception("updating FAISS after a commit failed; rebuilding from SQLite")
            self._ix.rebuild()

    def add_sounds(
        self, source: str, sounds: Sequence[SoundRecord], *, episode_id: int | None = None
    ) -> list[int]:
        """Append ``sounds`` heard on ``source`` to the audio event log; returns their row ids.

        ``Episode.sounds`` are kept in the episode row; log them here too (with ``episode_id``)
        if they should appear in :meth:`sounds`.
        """
        sql = (
            "INSERT INTO sounds (source, label, score, t_start, t_end, episode_id) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        )
        with self._lock:
            self._require_writer()
            with transaction(self._conn) as c:
                rows = [
                    (source, s.label, float(s.score), float(s.t_start), float(s.t_end), episode_id)
                    for s in sounds
                ]
                longest = max((r[4] - r[3] for r in rows), default=0.0)
                if longest > float(get_meta(c, "max_sound_span_s", "0") or 0):
                    set_meta(c, "max_sound_span_s", longest)  # bounds forget's range scans
                return [int(c.execute(sql, row).lastrowid) for row in rows]

    def forget(self, episode_id: int) -> None:
        """Delete an episode: row, vectors, FTS entry, index entries, files, and the sound-log
        rows heard in it (tied to it, or logged without an episode on its source during its
        span: otherwise a forgotten moment would still be answered from the log).

        Raises ``EpisodeNotFound`` if there is no such episode.
        """
        with self._lock:
            self._require_writer()
            self.get(episode_id, vectors=False)  # raises EpisodeNotFound
            self.forget_many([episode_id], sounds_in_span=True)

    def forget_range(
        self,
        *,
        source: str | None = None,
        since: float | None = None,
        until: float | None = None,
        wall_since: float | None = None,
        wall_until: float | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Forget every episode overlapping a time range (filters as in :meth:`episodes`; at
        least one is required), and the logged sounds in the range and in those episodes' spans.
        Returns ``{"episodes": [ids], "sounds": n}`` (n: sounds deleted in the range)."""
        if all(v is None for v in (source, since, until, wall_since, wall_until)):
            raise ParameterError("forget_range needs a source or a time range; "
                                 "use forget(episode_id) for one episode")  # fmt: skip
        where, params = where_sql(source=source, since=since, until=until,
                                  wall_since=wall_since, wall_until=wall_until)  # fmt: skip
        sound_where, sound_params = where_sql(source=source, since=since, until=until)
        with self._lock:
            ids = [int(r[0]) for r in self._conn.execute(
                f"SELECT e.id FROM episodes e WHERE {where} ORDER BY e.id", params)]  # fmt: skip
            n_sounds = 0
            if dry_run:
                return {"episodes": ids, "sounds": None, "dry_run": True}
            self._require_writer()
            for i in range(0, len(ids), retention.BATCH):
                self.forget_many(ids[i : i + retention.BATCH], sounds_in_span=True)
            if wall_since is None and wall_until is None:
                with transaction(self._conn) as c:
                    n_sounds = c.execute(f"DELETE FROM sounds AS e WHERE {sound_where}",
                                         sound_params).rowcount  # fmt: skip
            return {"episodes": ids, "sounds": n_sounds, "dry_run": False}

    def forget_many(self, ids: Sequence[int], *, sounds_in_span: bool = False) -> list[int]:
        """Delete the episodes among ``ids`` (unknown ids are skipped) in one transaction; then
        their index entries and files. Returns the ids deleted.

        Their sound-log rows go too; with ``sounds_in_span`` also the rows logged without an
        episode (the file pipeline's log) on their source overlapping their span."""
        with self._lock:
            self._require_writer()
            doomed = json.dumps(sorted({int(i) for i in ids}))
            in_ids = "IN (SELECT value FROM json_each(?))"
            with transaction(self._conn) as c:
                found = [int(r[0]) for r in c.execute(f"SELECT id FROM episodes WHERE id {in_ids}",
                                                      (doomed,))]  # fmt: skip
                if sounds_in_span and found:
                    self._forget_logged_sounds(c, doomed)
                vecs = c.execute(f"SELECT episode_id, modality FROM vectors WHERE episode_id {in_ids}",
                                 (doomed,)).fetchall()  # fmt: skip
                for sql in (
                    f"DELETE FROM vectors WHERE episode_id {in_ids}",
                    f"DELETE FROM episodes_fts WHERE rowid {in_ids}",
                    f"DELETE FROM sounds WHERE episode_id {in_ids}",
                    f"DELETE FROM sightings WHERE episode_id {in_ids}",
                    f"DELETE FROM episodes WHERE id {in_ids}",
                ):
                    c.execute(sql, (doomed,))
                forget_orphan_objects(c)
                self._objects.invalidate()
                c.executemany("INSERT INTO tombstones (episode_id, modality) VALUES (?, ?)",
                              [(int(r[0]), r[1]) for r in vecs])  # fmt: skip
                c.executemany("INSERT OR IGNORE INTO trash VALUES (?)", [(i,) for i in found])
                modalities = {r[1] for r in vecs}
                gens = {m: self._ix.sqlite_gen(m) + 1 for m in modalities}
                for modality, gen in gens.items():
                    set_meta(c, f"gen:{modality}", gen)
            for modality, gen in gens.items():
                gone = np.array([r[0] for r in vecs if r[1] == modality], dtype=np.int64)
                self._ix.remove(modality, gone, gen)
            if (cat := getattr(self, "_cat", None)) is not None:
                cat.mark_dead(found)
            maintenance.empty_trash(self)
            if found:
                logger.info("forgot %d episode(s): %s", len(found), found[:10])
            return found

    def drop_clips(self, ids: Sequence[int], note: str) -> list[int]:
        """Delete the clips of the episodes among ``ids`` (keeping the episodes, keyframes and
        vectors): their rows get ``clip = NULL`` and ``clip_note = note`` (why) in one
        transaction, then the files go. Returns the ids whose clip was dropped."""
        with self._lock:
            self._require_writer()
            todo = json.dumps(sorted({int(i) for i in ids}))
            with transaction(self._conn) as c:
                rows = c.execute(
                    "SELECT id, clip FROM episodes WHERE clip IS NOT NULL AND id IN "
                    "(SELECT value FROM json_each(?))", (todo,),
                ).fetchall()  # fmt: skip
                c.executemany("INSERT OR IGNORE INTO clip_trash VALUES (?)", [(r[1],) for r in rows])
                c.executemany(
                    "UPDATE episodes SET clip = NULL, clip_note = ?, bytes = MAX(0, bytes - "
                    "clip_bytes), clip_bytes = 0 WHERE id = ?", [(note, int(r[0])) for r in rows],
                )  # fmt: skip
            maintenance.empty_trash(self)
            if rows:
                logger.info("dropped %d clip(s) (%s): %s", len(rows), note, [r[0] for r in rows][:10])
            return [int(r[0]) for r in rows]

    @staticmethod
    def _forget_logged_sounds(c: sqlite3.Connection, doomed: str) -> int:
        """Delete the episode-less sound-log rows on each doomed episode's source that overlap
        its span (a range on the ``(source, t_start)`` index, bounded by the longest sound)."""
        longest = get_meta(c, "max_sound_span_s")
        if longest is None:  # a store from before this key: measured once
            longest = c.execute("SELECT COALESCE(MAX(t_end - t_start), 0) FROM sounds").fetchone()[0]
            set_meta(c, "max_sound_span_s", longest)
        sql = (
            "DELETE FROM sounds WHERE id IN (SELECT s.id FROM episodes e JOIN sounds s "
            "ON s.source = e.source AND s.t_start <= e.t_end AND s.t_start >= e.t_start - ? "
            "AND s.t_end >= e.t_start WHERE e.id IN (SELECT value FROM json_each(?)) "
            "AND s.episode_id IS NULL)"
        )
        return c.execute(sql, (float(longest), doomed)).rowcount

    def name_object(self, object_id: int, name: str | None) -> None:
        """Name the object identity ``object_id`` (unique; None clears it). Its episodes become
        findable by the name in full-text search. Raises ``ParameterError`` for an unknown id or
        a name another object has."""
        with self._lock:
            self._require_writer()
            with transaction(self._conn) as c:
                objects_mod.name_object(c, object_id, name)
            self._objects.invalidate()

    # --- upkeep (memory/maintenance.py) ------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts, sources, bytes on disk and time span; see :func:`memory.maintenance.stats`."""
        with self._lock:
            return maintenance.stats(self)

    def check(self) -> dict[str, Any]:
        """``{"ok", "episodes", "vectors", "problems"}``; see :func:`memory.maintenance.check`."""
        with self._lock:
            return maintenance.check(self)

    def rebuild(self) -> dict[str, int]:
        """Rebuild every FAISS index from SQLite (saved unless read-only); a writer also deletes
        orphan keyframe directories. Returns the vectors per modality."""
        with self._lock:
            counts = self._ix.rebuild()
            if not self.readonly:
                maintenance.remove_orphans(self, all_ids=True)
            return counts

    def save_indexes(self) -> None:
        """Write every index with unsaved changes now (also done now and then, and on close)."""
        with self._lock:
            self._require_writer()
            self._ix.flush()

    def export(self, dst_dir: str | Path) -> Path:
        """Copy a consistent snapshot to the new or empty ``dst_dir``; returns its path.

        SQLite via the online backup API, then the keyframes it references; indexes rebuilt.
        """
        with self._lock:
            return maintenance.export(self, Path(dst_dir))
