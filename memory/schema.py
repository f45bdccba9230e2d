"""The store's SQLite schema (version 3) with its migrations, connection setup, and row codecs.

A new store runs ``DDL_V1`` and then every migration, so a migrated store and a new one have the
same schema. Migrations run in one transaction when a writer opens an older store; a reader of an
older store is told to open it once with a writer.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np

from memory.errors import SchemaError, StoreLocked
from memory.text import FTS_TOKENIZER, normalize_label
from memory.types import Episode, ObjectRecord, SoundRecord

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 3
DB_NAME = "eidetic.db"
BUSY_TIMEOUT_MS = 10_000
WAL_SIZE_LIMIT = 4 * 2**20  # the WAL is truncated to this after a checkpoint

DDL_V1 = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS episodes (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    t_start REAL NOT NULL,
    t_end REAL NOT NULL,
    wall_start REAL,
    labels TEXT NOT NULL DEFAULT '[]',
    summary TEXT NOT NULL DEFAULT '',
    objects TEXT NOT NULL DEFAULT '[]',
    sounds TEXT NOT NULL DEFAULT '[]',
    keyframes TEXT NOT NULL DEFAULT '[]',
    keyframe_times TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS episodes_source_t ON episodes (source, t_start);
CREATE INDEX IF NOT EXISTS episodes_t ON episodes (t_start);
CREATE INDEX IF NOT EXISTS episodes_wall ON episodes (wall_start);
CREATE TABLE IF NOT EXISTS vectors (
    episode_id INTEGER NOT NULL REFERENCES episodes (id) ON DELETE CASCADE,
    modality TEXT NOT NULL,
    dim INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (episode_id, modality)
);
CREATE INDEX IF NOT EXISTS vectors_modality ON vectors (modality, episode_id);
CREATE TABLE IF NOT EXISTS sounds (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    label TEXT NOT NULL,
    score REAL NOT NULL,
    t_start REAL NOT NULL,
    t_end REAL NOT NULL,
    episode_id INTEGER
);
CREATE INDEX IF NOT EXISTS sounds_source_t ON sounds (source, t_start);
CREATE INDEX IF NOT EXISTS sounds_label ON sounds (label, t_start);
CREATE INDEX IF NOT EXISTS sounds_episode ON sounds (episode_id);
CREATE VIRTUAL TABLE IF NOT EXISTS episodes_fts USING fts5 (
    summary, labels, source, tokenize = '{FTS_TOKENIZER}'
);
"""
CLIP_TIME = "COALESCE(wall_start, t_start)"  # an episode's time for the clip budget
# version -> statements that bring a store from that version to the next
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        # episode media and the bytes of its files (retention by size without walking the disk)
        "ALTER TABLE episodes ADD COLUMN clip TEXT",
        "ALTER TABLE episodes ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0",
        # cosine of the visual vector to the previous episode of the same source (retention
        # drops redundant episodes first)
        "ALTER TABLE episodes ADD COLUMN redundancy REAL NOT NULL DEFAULT 0",
        # vectors deleted from SQLite but maybe still in a FAISS file (index types that cannot
        # remove, or a file saved before the delete); cleared when an index is rebuilt
        """CREATE TABLE IF NOT EXISTS tombstones (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            episode_id INTEGER NOT NULL,
            modality TEXT NOT NULL
        )""",
        # persistent object identities (re-identified by descriptor) and where they were seen
        """CREATE TABLE IF NOT EXISTS objects (
            id INTEGER PRIMARY KEY,
            name TEXT,
            label TEXT NOT NULL DEFAULT '',
            dim INTEGER NOT NULL,
            descriptor BLOB NOT NULL,
            n_descriptors INTEGER NOT NULL DEFAULT 1,
            created_at REAL NOT NULL
        )""",
        "CREATE UNIQUE INDEX IF NOT EXISTS objects_name ON objects (name) WHERE name IS NOT NULL",
        """CREATE TABLE IF NOT EXISTS sightings (
            object_id INTEGER NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
            episode_id INTEGER NOT NULL REFERENCES episodes (id) ON DELETE CASCADE,
            track_id INTEGER NOT NULL,
            source TEXT NOT NULL,
            t_first REAL NOT NULL,
            t_last REAL NOT NULL,
            wall_first REAL,
            similarity REAL NOT NULL,
            PRIMARY KEY (episode_id, track_id)
        )""",
        "CREATE INDEX IF NOT EXISTS sightings_object ON sightings (object_id, episode_id)",
        # forgotten episodes whose files are not deleted yet (done after the commit, and again
        # by the next writer if it was killed in between)
        "CREATE TABLE IF NOT EXISTS trash (episode_id INTEGER PRIMARY KEY)",
        *(ENSURE := (
            # covering indexes for time/source filters (no table lookups for the span)
            "CREATE INDEX IF NOT EXISTS episodes_source_span ON episodes (source, t_start, t_end)",
            "CREATE INDEX IF NOT EXISTS episodes_span ON episodes (t_start, t_end)",
        )),
    ),
    2: (
        # the clip's share of ``bytes`` (the clip budget and size retention drop clips before
        # episodes) and why an episode has no clip (e.g. dropped by the clip budget)
        "ALTER TABLE episodes ADD COLUMN clip_bytes INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE episodes ADD COLUMN clip_note TEXT",
        # clipped episodes by source and time (the clip budget's per-source time buckets)
        f"CREATE INDEX IF NOT EXISTS episodes_clip_time ON episodes (source, {CLIP_TIME}) "
        "WHERE clip IS NOT NULL",
        # dropped clips whose files are not deleted yet (done after the commit, and again by
        # the next writer if it was killed in between)
        "CREATE TABLE IF NOT EXISTS clip_trash (path TEXT PRIMARY KEY)",
    ),
}
FTS_WEIGHTS = (1.0, 4.0, 0.5)  # bm25 column weights: summary, labels, source


def connect(db_path: Path, *, readonly: bool, synchronous: str) -> sqlite3.Connection:
    """Open ``db_path`` in autocommit mode (explicit ``BEGIN``), WAL, with a busy timeout.

    A read-only connection uses the ``file:...?mode=ro`` URI and never writes the file.
    """
    if readonly:
        if not db_path.exists():
            raise SchemaError(f"no Eidetic store at {db_path.parent} (no {DB_NAME}); check --store")
        uri = f"{db_path.resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    else:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    if not readonly:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as e:
            conn.close()
            msg = f"cannot switch {db_path} to WAL: {e}; is another writer open?"
            raise StoreLocked(msg) from e
        if mode.lower() != "wal":
            logger.warning("journal_mode is %s, not wal, for %s", mode, db_path)
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
    return conn


def init_schema(conn: sqlite3.Connection, *, readonly: bool) -> int:
    """Create the tables (new store), migrate an older store (writer), or check them (reader).

    Returns the schema version, which is :data:`SCHEMA_VERSION` on success.
    """
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if not has_meta and readonly:
        raise SchemaError("the store has no schema yet; open it once without readonly=True")
    if not has_meta:
        with transaction(conn):
            for stmt in DDL_V1.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            set_meta(conn, "schema_version", 1)
            set_meta(conn, "created_at", repr(time.time()))
        logger.info("created store schema v1")
    version = int(get_meta(conn, "schema_version", "0") or 0)
    if version > SCHEMA_VERSION or version < 1:
        raise SchemaError(
            f"store schema version {version} is not supported by this eidetic (knows 1 to "
            f"{SCHEMA_VERSION}); use a newer eidetic, or export/re-ingest the store"
        )
    if version < SCHEMA_VERSION:
        if readonly:
            raise SchemaError(
                f"store schema version {version} is older than {SCHEMA_VERSION}; open it once "
                "with a writer to migrate it (e.g. `eidetic store check --store DIR --migrate`)"
            )
        version = migrate(conn, version)
    return version


def migrate(conn: sqlite3.Connection, version: int) -> int:
    """Apply every migration from ``version`` on, in one transaction; returns the new version."""
    start = version
    with transaction(conn):
        while version < SCHEMA_VERSION:
            for stmt in MIGRATIONS[version]:
                conn.execute(stmt)
            if version == 2:
                _backfill_clip_bytes(conn)
            if version == 1:
                _backfill_bytes(conn)
                span = conn.execute("SELECT MAX(t_end - t_start) FROM episodes").fetchone()[0]
                if span is not None:
                    set_meta(conn, "max_span_s", span)
            version += 1
            set_meta(conn, "schema_version", version)
    if start != 1 or has_episodes(conn):
        logger.warning("migrated store schema v%d -> v%d", start, version)
    return version


def has_episodes(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM episodes LIMIT 1").fetchone() is not None


def _backfill_bytes(conn: sqlite3.Connection) -> None:
    """v1 -> v2: ``episodes.bytes`` from the keyframe files on disk."""
    root = Path(conn.execute("PRAGMA database_list").fetchone()[2]).parent
    rows = conn.execute("SELECT id, keyframes FROM episodes").fetchall()
    for episode_id, keyframes in rows:
        size = 0
        for rel in json.loads(keyframes):
            try:
                size += (root / rel).stat().st_size
            except OSError:
                pass
        conn.execute("UPDATE episodes SET bytes = ? WHERE id = ?", (size, episode_id))


def _backfill_clip_bytes(conn: sqlite3.Connection) -> None:
    """v2 -> v3: ``episodes.clip_bytes`` from the clip files on disk."""
    root = Path(conn.execute("PRAGMA database_list").fetchone()[2]).parent
    rows = conn.execute("SELECT id, clip FROM episodes WHERE clip IS NOT NULL").fetchall()
    for episode_id, clip in rows:
        try:
            size = (root / clip).stat().st_size
        except OSError:
            size = 0
        conn.execute("UPDATE episodes SET clip_bytes = ? WHERE id = ?", (size, episode_id))


class transaction:
    """``with transaction(conn):`` → ``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise StoreLocked(f"database is busy: {e}; another process holds a write lock") from e
        return self.conn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.conn.execute("ROLLBACK")
            return
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise


def get_meta(conn: sqlite3.Connection, key: str, default: str | None = None) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else default


def set_meta(conn: sqlite3.Connection, key: str, value: object) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, str(value)),
    )


# --- codecs -----------------------------------------------------------------------------------


def vector_blob(x: np.ndarray) -> bytes:
    """``float32[d]`` little-endian bytes."""
    return np.ascontiguousarray(x, dtype="<f4").reshape(-1).tobytes()


def blob_vector(data: bytes) -> np.ndarray:
    """Inverse of :func:`vector_blob` (a writable copy)."""
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def _object_json(o: ObjectRecord) -> dict[str, Any]:
    d: dict[str, Any] = {
        "track_id": int(o.track_id),
        "label": o.label,
        "t_first": float(o.t_first),
        "t_last": float(o.t_last),
        "n_frames": int(o.n_frames),
        "bbox": [float(v) for v in o.bbox],
    }
    if o.descriptor is not None:
        d["descriptor_f32_b64"] = base64.b64encode(vector_blob(o.descriptor)).decode("ascii")
    return d


def _object_record(d: dict[str, Any]) -> ObjectRecord:
    desc = d.get("descriptor_f32_b64")
    return ObjectRecord(
        track_id=int(d["track_id"]),
        label=str(d["label"]),
        t_first=float(d["t_first"]),
        t_last=float(d["t_last"]),
        n_frames=int(d["n_frames"]),
        bbox=tuple(float(v) for v in d["bbox"]),  # type: ignore[arg-type]
        descriptor=blob_vector(base64.b64decode(desc)) if desc else None,
    )


def sound_json(s: SoundRecord) -> dict[str, Any]:
    return {"label": s.label, "score": float(s.score), "t_start": float(s.t_start),
            "t_end": float(s.t_end)}  # fmt: skip


def episode_row(
    ep: Episode, episode_id: int, keyframes: list[str], *, nbytes: int = 0, redundancy: float = 0.0,
    clip_bytes: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Column values of the ``episodes`` row for ``ep`` (keyframes, clip: store-relative paths;
    nbytes: size of its files, clip_bytes: of its clip)."""
    return {
        "id": episode_id,
        "source": ep.source,
        "t_start": float(ep.t_start),
        "t_end": float(ep.t_end),
        "wall_start": None if ep.wall_start is None else float(ep.wall_start),
        "labels": json.dumps(list(ep.labels)),
        "summary": ep.summary,
        "objects": json.dumps([_object_json(o) for o in ep.objects]),
        "sounds": json.dumps([sound_json(s) for s in ep.sounds]),
        "keyframes": json.dumps(keyframes),
        "keyframe_times": json.dumps([float(t) for t in ep.keyframe_times]),
        "created_at": time.time(),
        "clip": ep.clip,
        "bytes": int(nbytes),
        "redundancy": float(redundancy),
        "clip_bytes": int(clip_bytes),
        "clip_note": ep.clip_note,
    }


def fts_row(ep: Episode, episode_id: int) -> tuple[int, str, str, str]:
    """``(rowid, summary, labels, source)`` for ``episodes_fts`` (labels split into words)."""
    labels = " ".join(normalize_label(x) for x in (*ep.labels, *(o.label for o in ep.objects)))
    return episode_id, ep.summary, labels, normalize_label(ep.source)


def row_episode(row: sqlite3.Row, vectors: dict[str, np.ndarray] | None = None) -> Episode:
    """Build the stored Episode from an ``episodes`` row (+ its vectors by modality)."""
    vectors = vectors or {}
    return Episode(
        source=row["source"],
        t_start=float(row["t_start"]),
        t_end=float(row["t_end"]),
        labels=tuple(json.loads(row["labels"])),
        summary=row["summary"],
        sounds=tuple(SoundRecord(**d) for d in json.loads(row["sounds"])),
        objects=tuple(_object_record(d) for d in json.loads(row["objects"])),
        keyframes=tuple(json.loads(row["keyframes"])),
        keyframe_times=tuple(float(t) for t in json.loads(row["keyframe_times"])),
        wall_start=row["wall_start"],
        visual=vectors.get("visual"),
        audio=vectors.get("audio"),
        episode_id=int(row["id"]),
        clip=row["clip"],
        clip_note=row["clip_note"],
    )
