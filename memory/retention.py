"""Retention: limits by total size and by age per source, importance-aware, and disk-full relief.

An episode's **importance** (0 … ~2) is what makes it worth keeping:

- rarity of its labels in the store: ``max over labels of -log(share) / log(n_episodes)``
  (a label on every episode scores 0, a label seen once scores 1);
- +1 when it holds a sighting of a **named** object (the user cared enough to name it);
- minus its **redundancy**: how far its visual vector's cosine to the previous episode of the
  same source exceeds ``REDUNDANT_COSINE`` (near-duplicates of their predecessor score lowest).

**Age**: an episode of a source with a ``max_age_days`` limit expires when its age (wall clock
start for live sources, ingest time for files) exceeds ``max_age_days * (1 + AGE_GAIN *
importance)``: rare or named episodes live up to ``1 + 2 * AGE_GAIN`` times longer.
**Size**: while the store is over ``max_bytes``, episodes are forgotten lowest keep-score first,
keep-score = importance - age in units of ``SIZE_AGE_SCALE_DAYS`` (old, redundant, common
episodes go first), until it is under ``max_bytes * (1 - HEADROOM)``.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memory.errors import ParameterError

if TYPE_CHECKING:
    from memory.store import EpisodeStore

logger = logging.getLogger(__name__)

DAY_S = 86_400.0
AGE_GAIN = 1.0
REDUNDANT_COSINE = 0.9
SIZE_AGE_SCALE_DAYS = 7.0
HEADROOM = 0.05  # size retention frees down to 95 % of the limit
DISK_FULL_FREE_FRACTION = 0.05  # a full disk frees this much of the store's bytes (at least)
BATCH = 500  # episodes forgotten per transaction
DISK_FULL_BATCH = 8  # ... on a full disk: small commits, each one's files freed before the next
MAX_ROUNDS = 5


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Limits of a store; None means no limit.

    max_bytes: total store size. max_age_days: default age limit of every source;
    source_max_age_days: per-source limits (override the default). make_room_when_full: on a
    full disk (ENOSPC), forget the least important episodes and retry the write once.
    """

    max_bytes: int | None = None
    max_age_days: float | None = None
    source_max_age_days: dict[str, float] = field(default_factory=dict)
    make_room_when_full: bool = True

    def __post_init__(self) -> None:
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise ParameterError(f"max_bytes must be > 0, got {self.max_bytes}")
        for days in [self.max_age_days, *self.source_max_age_days.values()]:
            if days is not None and days <= 0:
                raise ParameterError(f"age limits must be > 0 days, got {days}")

    def age_limit(self, source: str) -> float | None:
        return self.source_max_age_days.get(source, self.max_age_days)

    @property
    def active(self) -> bool:
        return bool(self.max_bytes or self.max_age_days or self.source_max_age_days)


@dataclass(slots=True)
class _Row:
    episode_id: int
    source: str
    age_s: float
    nbytes: int
    importance: float


def store_bytes(store: EpisodeStore) -> int:
    """Bytes the store uses: SQLite pages in use, its WAL, episode files and index files."""
    conn = store._conn
    page = int(conn.execute("PRAGMA page_size").fetchone()[0])
    used = int(conn.execute("PRAGMA page_count").fetchone()[0])
    used -= int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    files = int(conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM episodes").fetchone()[0])
    other = 0
    for p in [store.path / "eidetic.db-wal", *(store.path / "index").glob("*.faiss")]:
        try:
            other += p.stat().st_size
        except OSError:
            pass
    return used * page + files + other


def checkpoint(store: EpisodeStore) -> None:
    """Fold the WAL into the database and truncate it (best effort: a reader holding the WAL
    or a full disk leave it for later)."""
    if store.readonly:
        return
    try:
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.DatabaseError as e:
        logger.info("WAL checkpoint skipped: %s", e)


def _rows(store: EpisodeStore, now: float) -> list[_Row]:
    """Every episode with its importance (one pass over the episodes table)."""
    conn = store._conn
    raw = conn.execute(
        "SELECT id, source, labels, COALESCE(wall_start, created_at), bytes, redundancy "
        "FROM episodes"
    ).fetchall()
    named = {int(r[0]) for r in conn.execute(
        "SELECT DISTINCT s.episode_id FROM sightings s JOIN objects o ON o.id = s.object_id "
        "WHERE o.name IS NOT NULL")}  # fmt: skip
    counts: Counter[str] = Counter()
    labels = [json.loads(r[2]) for r in raw]
    for ls in labels:
        counts.update(set(ls))
    log_n = math.log(max(len(raw), 2))
    out = []
    for r, ls in zip(raw, labels):
        rarity = max((-math.log(counts[x] / len(raw)) / log_n for x in ls), default=0.0)
        redundant = max(0.0, (float(r[5]) - REDUNDANT_COSINE) / (1 - REDUNDANT_COSINE))
        importance = rarity + (1.0 if int(r[0]) in named else 0.0) - redundant
        out.append(_Row(int(r[0]), r[1], max(0.0, now - float(r[3])), int(r[4]), importance))
    return out


def _expired(rows: list[_Row], policy: RetentionPolicy) -> list[_Row]:
    out = []
    for r in rows:
        limit = policy.age_limit(r.source)
        if limit is not None:
            keep_s = limit * DAY_S * (1 + AGE_GAIN * max(0.0, r.importance))
            if r.age_s > keep_s:
                out.append(r)
    return out


def _by_keep_score(rows: list[_Row]) -> list[_Row]:
    return sorted(rows, key=lambda r: (r.importance - r.age_s / (SIZE_AGE_SCALE_DAYS * DAY_S),
                                       r.episode_id))  # fmt: skip


def plan(
    store: EpisodeStore, policy: RetentionPolicy, *, now: float | None = None,
    free_bytes: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Which episodes retention would forget: ``{"age": [ids], "size": [ids], "bytes_before",
    "bytes_after_estimate"}``. ``free_bytes`` asks for that much more room (a full disk)."""
    now = time.time() if now is None else now
    checkpoint(store)
    rows = _rows(store, now)
    expired = _expired(rows, policy)
    gone = {r.episode_id for r in expired}
    total = store_bytes(store)
    per_row_db = _db_bytes_per_episode(store, len(rows))
    est = total - sum(r.nbytes + per_row_db for r in expired)
    target = None
    if policy.max_bytes is not None and est > policy.max_bytes:
        target = policy.max_bytes * (1 - HEADROOM)
    if free_bytes:
        target = min(target if target is not None else est, est - free_bytes)
    by_size = []
    if target is not None:
        for r in _by_keep_score([r for r in rows if r.episode_id not in gone]):
            if est <= target:
                break
            by_size.append(r.episode_id)
            est -= r.nbytes + per_row_db
    return {"age": [r.episode_id for r in expired], "size": by_size, "bytes_before": total,
            "bytes_after_estimate": int(est)}  # fmt: skip


def _db_bytes_per_episode(store: EpisodeStore, n: int) -> int:
    if n == 0:
        return 0
    conn = store._conn
    page = int(conn.execute("PRAGMA page_size").fetchone()[0])
    used = int(conn.execute("PRAGMA page_count").fetchone()[0])
    used -= int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    return used * page // n


def enforce(
    store: EpisodeStore, policy: RetentionPolicy, *, now: float | None = None,
    free_bytes: int = 0, dry_run: bool = False, batch: int = BATCH,
) -> dict[str, Any]:  # fmt: skip
    """Apply ``policy`` (see :func:`plan`); returns the first plan plus ``"forgotten"`` (a
    count). Row deletes free less than estimated in a small store (half-empty pages), so the
    plan is redone (at most ``MAX_ROUNDS`` times) while the store is still over its limit."""
    todo = plan(store, policy, now=now, free_bytes=free_bytes)
    if dry_run:
        return {**todo, "forgotten": 0, "dry_run": True}
    forgotten, step, goal = 0, todo, todo["bytes_before"] - free_bytes
    for _ in range(MAX_ROUNDS):
        ids = [*step["age"], *step["size"]]
        if not ids:
            break
        for i in range(0, len(ids), batch):
            forgotten += len(store.forget_many(ids[i : i + batch]))
        checkpoint(store)
        now_bytes = store_bytes(store)
        over = policy.max_bytes is not None and now_bytes > policy.max_bytes
        if not over and (not free_bytes or now_bytes <= goal):
            break
        step = plan(
            store, policy, now=now, free_bytes=max(0, now_bytes - goal) if free_bytes else 0
        )
    if forgotten:
        logger.warning(
            "retention forgot %d episodes (first pass: %d by age, %d by size); store %.1f MB -> "
            "%.1f MB", forgotten, len(todo["age"]), len(todo["size"]), todo["bytes_before"] / 1e6,
            store_bytes(store) / 1e6,
        )  # fmt: skip
    return {**todo, "forgotten": forgotten, "dry_run": False}
