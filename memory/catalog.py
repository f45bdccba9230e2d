"""In-memory columns of the episodes' filter fields, for filtered vector search.

A time/source filter is turned into the set of allowed episode ids with numpy (milliseconds at
10⁶ episodes, no SQL), and FAISS then searches only those ids (memory/reader.py). Per source:
episode ids, ``t_start``, ``t_end``, ``wall_start`` (NaN when unknown) and an ``alive`` flag,
about 33 bytes per episode.

Kept up to date cheaply because episode ids only grow and a stored episode never changes:
:meth:`Catalog.catch_up` reads the rows with a larger id than it has seen. Deleted episodes are
learnt when a search verifies its hits against SQLite (:meth:`Catalog.mark_dead`), or directly
from the writer that deleted them; until then a dead id only costs a verification.
"""

from __future__ import annotations

import sqlite3

import numpy as np

CATCH_UP_SQL = (
    "SELECT id, source, t_start, t_end, wall_start FROM episodes WHERE id > ? ORDER BY id"
)


class _Columns:
    """Growable columns of one source's episodes, in id order."""

    __slots__ = ("n", "ids", "t0", "t1", "wall", "alive", "t_sorted", "max_span")

    def __init__(self) -> None:
        self.n = 0
        self.ids = np.zeros(0, np.int64)
        self.t0 = np.zeros(0, np.float64)
        self.t1 = np.zeros(0, np.float64)
        self.wall = np.zeros(0, np.float64)
        self.alive = np.zeros(0, bool)
        self.t_sorted = True  # t_start never decreases with id (a live stream): range by bisection
        self.max_span = 0.0

    def append(self, ids: np.ndarray, t0: np.ndarray, t1: np.ndarray, wall: np.ndarray) -> None:
        m = ids.size
        if self.n + m > self.ids.size:
            cap = max(1024, 2 * (self.n + m))
            for name in ("ids", "t0", "t1", "wall", "alive"):
                old = getattr(self, name)
                new = np.zeros(cap, old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        s = slice(self.n, self.n + m)
        self.ids[s], self.t0[s], self.t1[s], self.wall[s], self.alive[s] = ids, t0, t1, wall, True
        if self.t_sorted:
            prev = self.t0[self.n - 1 : self.n]  # empty for the first rows
            self.t_sorted = bool(np.all(np.diff(np.concatenate([prev, t0])) >= 0))
        self.max_span = max(self.max_span, float(np.max(t1 - t0, initial=0.0)))
        self.n += m

    def select(
        self,
        since: float | None,
        until: float | None,
        wall_since: float | None,
        wall_until: float | None,
    ) -> np.ndarray:
        """Ids of the live episodes overlapping the ranges (semantics of memory.reader.where_sql)."""
        lo, hi = 0, self.n
        if self.t_sorted:  # starts are ordered: only [since - longest span, until] can overlap
            t0 = self.t0[: self.n]
            if until is not None:
                hi = int(np.searchsorted(t0, until, side="right"))
            if since is not None:
                lo = int(np.searchsorted(t0[:hi], since - self.max_span, side="left"))
        keep = self.alive[lo:hi].copy()
        if since is not None:
            keep &= self.t1[lo:hi] >= since
        if until is not None:
            keep &= self.t0[lo:hi] <= until
        if wall_since is not None:  # NaN (no wall time) compares False, like SQL NULL
            keep &= self.wall[lo:hi] + (self.t1[lo:hi] - self.t0[lo:hi]) >= wall_since
        if wall_until is not None:
            keep &= self.wall[lo:hi] <= wall_until
        return self.ids[lo:hi][keep]

    def mark_dead(self, ids: np.ndarray) -> int:
        pos = np.searchsorted(self.ids[: self.n], ids)
        pos = pos[pos < self.n]
        pos = pos[np.isin(self.ids[pos], ids)]
        self.alive[pos] = False
        return int(pos.size)


class Catalog:
    """The filter fields of every episode of a store, by source (see the module docstring)."""

    def __init__(self) -> None:
        self.max_id = 0
        self.n = 0
        self._sources: dict[str, _Columns] = {}

    def catch_up(self, conn: sqlite3.Connection) -> int:
        """Read the episodes added since the last call; returns how many."""
        cur = conn.cursor()
        cur.row_factory = None  # plain tuples: 3x faster than sqlite3.Row for 10⁶ rows
        rows = cur.execute(CATCH_UP_SQL, (self.max_id,)).fetchall()
        if not rows:
            return 0
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        t0 = np.fromiter((r[2] for r in rows), np.float64, len(rows))
        t1 = np.fromiter((r[3] for r in rows), np.float64, len(rows))
        wall = np.fromiter((np.nan if r[4] is None else r[4] for r in rows), np.float64, len(rows))
        names: dict[str, int] = {}
        codes = np.fromiter((names.setdefault(r[1], len(names)) for r in rows), np.int32, len(rows))
        for name, code in names.items():
            rows_of = np.flatnonzero(codes == code) if len(names) > 1 else slice(None)
            cols = self._sources.setdefault(name, _Columns())
            cols.append(ids[rows_of], t0[rows_of], t1[rows_of], wall[rows_of])
        self.max_id = int(ids[-1])
        self.n += len(rows)
        return len(rows)

    def select(
        self,
        *,
        source: str | None = None,
        since: float | None = None,
        until: float | None = None,
        wall_since: float | None = None,
        wall_until: float | None = None,
    ) -> np.ndarray:
        """Ids (``int64``) of the live episodes passing the filters, unordered."""
        if source is not None:
            cols = self._sources.get(source)
            if cols is None:
                return np.zeros(0, np.int64)
            return cols.select(since, until, wall_since, wall_until)
        parts = [c.select(since, until, wall_since, wall_until) for c in self._sources.values()]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def mark_dead(self, ids: np.ndarray | list[int]) -> int:
        """Flag deleted episodes (never selected again); returns how many were known."""
        ids = np.asarray(ids, np.int64)
        if ids.size == 0:
            return 0
        return sum(c.mark_dead(ids) for c in self._sources.values())
