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
**Size**: while the store is over ``max_bytes``, clips are dropped lowest keep-score first
(the episode, its keyframes and vectors stay; ``clip_note`` says why), then episodes are
forgotten in the same order, keep-score = importance - age in units of ``SIZE_AGE_SCALE_DAYS``
(old, redundant, common episodes go first), until it is under ``max_bytes * (1 - HEADROOM)``.
**Clip budget**: clips are the bulk of a store (a few seconds of video each), so each source's
clips may take at most ``clip_mb_per_hour`` per hour of its input, counted in buckets of
``CLIP_BUCKET_S`` of its time (media time for files, wall clock for live sources): in a bucket
over budget the least important episodes lose their clips first (:func:`clip_budget_plan`).
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
CLIP_BUCKET_S = 600.0  # the clip budget holds for every 10 minutes of a source's time
LABEL_COUNTS_TTL_S = 600.0  # label counts (rarity) are re-read this often by the clip budget


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
    clip_mb_per_hour: float | None = None

    def __post_init__(self) -> None:
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise ParameterError(f"max_bytes must be > 0, got {self.max_bytes}")
        if self.clip_mb_per_hour is not None and self.clip_mb_per_hour < 0:
            raise ParameterError(f"clip_mb_per_hour must be >= 0, got {self.clip_mb_per_hour}")
        for days in [self.max_age_days, *self.source_max_age_days.values()]:
            if days is not None and days <= 0:
                raise ParameterError(f"age limits must be > 0 days, got {days}")

    def age_limit(self, source: str) -> float | None:
        return self.source_max_age_days.get(source, self.max_age_days)

    @property
    def active(self) -> bool:
        """Size or age limits are set (the clip budget is applied on its own)."""
        return bool(self.max_bytes or self.max_age_days or self.source_max_age_days)

    @property
    def clip_bucket_bytes(self) -> int | None:
        """Clip bytes allowed per ``CLIP_BUCKET_S`` of a source (None: unlimited)."""
        if self.clip_mb_per_hour is None:
            return None
        return int(self.clip_mb_per_hour * 1e6 * CLIP_BUCKET_S / 3600.0)


@dataclass(slots=True)
class _Row:
    episode_id: int
    source: str
    age_s: float
    nbytes: int
    importance: float
    clip_bytes: int = 0


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


def importance(labels: list[str], named: bool, redundancy: float, counts: Counter[str], n: int) -> float:
    """Rarity of the labels (``counts`` of each label over ``n`` episodes) + 1 if a named object
    was seen - redundancy (see the module docstring)."""
    log_n = math.log(max(n, 2))
    rarity = max((-math.log(max(counts[x], 1) / max(n, 1)) / log_n for x in labels), default=0.0)
    redundant = max(0.0, (float(redundancy) - REDUNDANT_COSINE) / (1 - REDUNDANT_COSINE))
    return max(0.0, rarity) + (1.0 if named else 0.0) - redundant


def _named(conn: sqlite3.Connection) -> set[int]:
    return {int(r[0]) for r in conn.execute(
        "SELECT DISTINCT s.episode_id FROM sightings s JOIN objects o ON o.id = s.object_id "
        "WHERE o.name IS NOT NULL")}  # fmt: skip


def label_counts(conn: sqlite3.Connection) -> tuple[Counter[str], int]:
    """How many episodes carry each label, and how many episodes there are."""
    counts: Counter[str] = Counter()
    for label, n in conn.execute(
        "SELECT j.value, COUNT(DISTINCT e.id) FROM episodes e, json_each(e.labels) j GROUP BY j.value"
    ):  # fmt: skip
        counts[label] = int(n)
    return counts, int(conn.execute("SELECT COUNT(*) FROM episodes").fetchone()[0])


def _rows(store: EpisodeStore, now: float) -> list[_Row]:
    """Every episode with its importance (one pass over the episodes table)."""
    conn = store._conn
    raw = conn.execute(
        "SELECT id, source, labels, COALESCE(wall_start, created_at), bytes, redundancy, "
        "clip_bytes FROM episodes"
    ).fetchall()
    named = _named(conn)
    counts: Counter[str] = Counter()
    labels = [json.loads(r[2]) for r in raw]
    for ls in labels:
        counts.update(set(ls))
    out = []
    for r, ls in zip(raw, labels):
        imp = importance(ls, int(r[0]) in named, float(r[5]), counts, len(raw))
        out.append(_Row(int(r[0]), r[1], max(0.0, now - float(r[3])), int(r[4]), imp, int(r[6])))
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
    by_size, clips = [], set()
    if target is not None:
        ranked = _by_keep_score([r for r in rows if r.episode_id not in gone])
        for r in ranked:  # clips go first: an episode without its clip is still worth a lot
            if est <= target:
                break
            if r.clip_bytes > 0:
                clips.add(r.episode_id)
                est -= r.clip_bytes
        for r in ranked:
            if est <= target:
                break
            by_size.append(r.episode_id)
            est -= r.nbytes - (r.clip_bytes if r.episode_id in clips else 0) + per_row_db
    kept_clips = [r.episode_id for r in rows if r.episode_id in clips and r.episode_id not in by_size]
    return {"age": [r.episode_id for r in expired], "size": by_size, "clips": kept_clips,
            "bytes_before": total, "bytes_after_estimate": int(est)}  # fmt: skip


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
    forgotten, clips, step, goal = 0, 0, todo, todo["bytes_before"] - free_bytes
    for _ in range(MAX_ROUNDS):
        ids = [*step["age"], *step["size"]]
        if step["clips"]:
            clips += len(store.drop_clips(step["clips"], CLIP_NOTE_SIZE))
        if not ids and not step["clips"]:
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
    if forgotten or clips:
        logger.warning(
            "retention forgot %d episodes (first pass: %d by age, %d by size) and dropped %d clips; "
            "store %.1f MB -> %.1f MB", forgotten, len(todo["age"]), len(todo["size"]), clips,
            todo["bytes_before"] / 1e6, store_bytes(store) / 1e6,
        )  # fmt: skip
    return {**todo, "forgotten": forgotten, "clips_dropped": clips, "dry_run": False}


CLIP_NOTE_SIZE = "dropped by retention: the store was over its size limit (retention.max_gb)"


def clip_note_budget(policy: RetentionPolicy) -> str:
    return (f"dropped by the clip budget ({policy.clip_mb_per_hour:g} MB per hour of the "
            "source, retention.clip_mb_per_hour): more important clips kept")  # fmt: skip


def clip_bucket(t: float) -> int:
    """The clip-budget bucket of an episode time (media or wall seconds)."""
    return int(math.floor(float(t) / CLIP_BUCKET_S))


def clip_budget_plan(
    store: EpisodeStore, policy: RetentionPolicy, buckets: set[tuple[str, int]] | None = None,
    counts: tuple[Counter[str], int] | None = None, final: bool = False,
) -> list[int]:  # fmt: skip
    """Episodes whose clips the clip budget drops: in every (source, bucket) of ``buckets``
    (default: all) whose clips exceed their budget, the least important ones (ties: the older)
    until the rest fit. ``counts``: :func:`label_counts` (read if None).

    A bucket's budget is ``policy.clip_bucket_bytes``; with ``final`` (the input has ended: the
    writer closes, or a prune), a source's last bucket gets its share for the input it covers,
    up to the end of its last episode (a one-minute file keeps a minute's worth of clips)."""
    from memory.schema import CLIP_TIME

    full = policy.clip_bucket_bytes
    if full is None:
        return []
    conn = store._conn
    cols = f"id, source, labels, {CLIP_TIME}, clip_bytes, redundancy"
    if buckets is None:
        raw = conn.execute(f"SELECT {cols} FROM episodes WHERE clip IS NOT NULL").fetchall()
    else:
        raw = []
        for source, b in sorted(buckets):
            raw += conn.execute(
                f"SELECT {cols} FROM episodes WHERE clip IS NOT NULL AND source = ? AND "
                f"{CLIP_TIME} >= ? AND {CLIP_TIME} < ?",
                (source, b * CLIP_BUCKET_S, (b + 1) * CLIP_BUCKET_S),
            ).fetchall()  # fmt: skip
    groups: dict[tuple[str, int], list] = {}
    for r in raw:
        groups.setdefault((r[1], clip_bucket(r[3])), []).append(r)
    budgets = {k: _bucket_budget(conn, *k, full) if final else full for k in groups}
    over = {k: g for k, g in groups.items() if sum(int(r[4]) for r in g) > budgets[k]}
    if not over:
        return []
    counts = counts or label_counts(conn)
    named = _named(conn)
    drop = []
    for key, group in over.items():
        budget = budgets[key]
        total = sum(int(r[4]) for r in group)
        keep = sorted(group, key=lambda r: (importance(json.loads(r[2]), int(r[0]) in named,
                                                       float(r[5]), *counts), int(r[0])))  # fmt: skip
        for r in keep:
            if total <= budget:
                break
            drop.append(int(r[0]))
            total -= int(r[4])
    return drop


def _bucket_budget(conn: sqlite3.Connection, source: str, bucket: int, full: int) -> int:
    """``full``, or for the source's last bucket its share up to the end of its last episode."""
    from memory.schema import CLIP_TIME

    start, end = bucket * CLIP_BUCKET_S, (bucket + 1) * CLIP_BUCKET_S
    later = conn.execute(f"SELECT 1 FROM episodes WHERE source = ? AND {CLIP_TIME} >= ? LIMIT 1",
                         (source, end)).fetchone()  # fmt: skip
    if later is not None:
        return full
    (last,) = conn.execute(
        f"SELECT MAX({CLIP_TIME} + t_end - t_start) FROM episodes WHERE source = ? AND "
        f"{CLIP_TIME} >= ?", (source, start),
    ).fetchone()  # fmt: skip
    covered = min(CLIP_BUCKET_S, max(0.0, float(last if last is not None else end) - start))
    return int(full * covered / CLIP_BUCKET_S)
