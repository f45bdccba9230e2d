"""Persistent object identities: tracks re-identified across episodes and sources by descriptor.

Every tracked object of a stored episode (an ``ObjectRecord`` with a descriptor) is matched to
the known identities: cosine similarity of its descriptor to each identity's running-mean
descriptor, greedy one-to-one within an episode, accepted at ``REID_THRESHOLD`` or above, and
only between compatible labels. A match adds a sighting and folds the descriptor into the
identity's mean; no match creates a new identity. Sightings make the timeline ("last seen").
A user-given name is unique, kept when the identity's episodes are forgotten, and indexed for
full-text search on the identity's episodes (so "when did I last see my keys" finds them).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Sequence

import numpy as np

from memory.errors import ParameterError
from memory.schema import blob_vector, vector_blob
from memory.text import normalize_label
from memory.types import Episode, ObjectIdentity, Sighting

logger = logging.getLogger(__name__)

# benchmarks/reid_eval.py (classical descriptors, DAVIS 2016): tuned on 9 sequences; on the other
# 9, 93 % of same-object episode pairs match and 0.5 % of different-object pairs do
REID_THRESHOLD = 0.91
GENERIC_LABELS = frozenset({"", "object", "thing"})
MAX_NAME_LEN = 80


def _compatible(a: str, b: str) -> bool:
    return a == b or a in GENERIC_LABELS or b in GENERIC_LABELS


class ObjectMatcher:
    """Matches episode objects to identities; caches identity descriptors by dimension.

    Used by the store's writer inside its insert transaction: call :meth:`invalidate` when that
    transaction rolls back (the cache then reloads from SQLite).
    """

    def __init__(self, *, threshold: float = REID_THRESHOLD) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ParameterError(f"re-identification threshold must be in (0, 1], got {threshold}")
        self.threshold = float(threshold)
        self._cache: dict[int, tuple[list[int], np.ndarray, list[str], list[int]]] | None = None

    def invalidate(self) -> None:
        self._cache = None

    def _load(self, conn: sqlite3.Connection) -> dict:
        if self._cache is None:
            cache: dict[int, tuple[list[int], list, list[str], list[int]]] = {}
            for oid, label, dim, desc, n in conn.execute(
                "SELECT id, label, dim, descriptor, n_descriptors FROM objects ORDER BY id"
            ):
                ids, xs, labels, ns = cache.setdefault(int(dim), ([], [], [], []))
                ids.append(int(oid))
                xs.append(blob_vector(desc))
                labels.append(label)
                ns.append(int(n))
            self._cache = {
                d: (ids, np.stack(xs).astype(np.float32), labels, ns)
                for d, (ids, xs, labels, ns) in cache.items()
            }
        return self._cache

    def assign(self, conn: sqlite3.Connection, episodes: Sequence[Episode]) -> int:
        """Match the objects of stored ``episodes``; writes identities and sightings in the
        caller's transaction. Returns the number of sightings written."""
        cache = self._load(conn)
        n = 0
        for ep in episodes:
            objs = [o for o in ep.objects if o.descriptor is not None and np.size(o.descriptor)]
            if not objs:
                continue
            n += self._assign_episode(conn, cache, ep, objs)
        return n

    def _assign_episode(self, conn, cache, ep: Episode, objs) -> int:
        dim = int(np.size(objs[0].descriptor))
        objs = [o for o in objs if np.size(o.descriptor) == dim]
        x = np.stack([np.asarray(o.descriptor, np.float32) for o in objs])
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        ids, xb, labels, counts = cache.get(dim, ([], np.zeros((0, dim), np.float32), [], []))
        match: dict[int, tuple[int, float]] = {}  # row in objs -> (row in cache, similarity)
        if ids:
            sims = x @ xb.T
            for i, o in enumerate(objs):
                for j, label in enumerate(labels):
                    if not _compatible(o.label, label):
                        sims[i, j] = -np.inf
            used: set[int] = set()
            for flat in np.argsort(-sims, axis=None):
                i, j = divmod(int(flat), sims.shape[1])
                if sims[i, j] < self.threshold:
                    break
                if i in match or j in used:
                    continue
                match[i] = (j, float(sims[i, j]))
                used.add(j)
        for i, o in enumerate(objs):
            if i in match:
                j, sim = match[i]
                xb[j] = _fold(xb[j], x[i], counts[j])
                counts[j] += 1
                conn.execute(
                    "UPDATE objects SET descriptor = ?, n_descriptors = ? WHERE id = ?",
                    (vector_blob(xb[j]), counts[j], ids[j]),
                )
                oid = ids[j]
            else:
                sim = 1.0
                oid = int(conn.execute(
                    "INSERT INTO objects (label, dim, descriptor, n_descriptors, created_at) "
                    "VALUES (?, ?, ?, 1, ?)", (o.label, dim, vector_blob(x[i]), time.time()),
                ).lastrowid)  # fmt: skip
                ids.append(oid)
                xb = np.concatenate([xb, x[i : i + 1]])
                labels.append(o.label)
                counts.append(1)
            wall = None if ep.wall_start is None else ep.wall_start + (o.t_first - ep.t_start)
            conn.execute(
                "INSERT INTO sightings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (oid, ep.episode_id, o.track_id, ep.source, o.t_first, o.t_last, wall, sim),
            )
        cache[dim] = (ids, xb, labels, counts)
        named = conn.execute(
            "SELECT 1 FROM sightings s JOIN objects o ON o.id = s.object_id "
            "WHERE s.episode_id = ? AND o.name IS NOT NULL LIMIT 1", (ep.episode_id,),
        ).fetchone()  # fmt: skip
        if named:
            refresh_fts(conn, [int(ep.episode_id)])  # type: ignore[arg-type]
        return len(objs)


def _fold(mean: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """The L2-normalised running mean of ``n`` descriptors plus ``x``."""
    m = mean * n + x
    return (m / max(float(np.linalg.norm(m)), 1e-12)).astype(np.float32)


def refresh_fts(conn: sqlite3.Connection, episode_ids: Sequence[int]) -> None:
    """Rewrite the ``labels`` column of these episodes' FTS rows: labels, object labels and the
    names of the identities seen in them."""
    for episode_id in episode_ids:
        row = conn.execute(
            "SELECT labels, objects FROM episodes WHERE id = ?", (episode_id,)
        ).fetchone()
        if row is None:
            continue
        names = [r[0] for r in conn.execute(
            "SELECT DISTINCT o.name FROM sightings s JOIN objects o ON o.id = s.object_id "
            "WHERE s.episode_id = ? AND o.name IS NOT NULL", (episode_id,))]  # fmt: skip
        words = [*json.loads(row[0]), *(o["label"] for o in json.loads(row[1])), *names]
        text = " ".join(normalize_label(w) for w in words)
        conn.execute("UPDATE episodes_fts SET labels = ? WHERE rowid = ?", (text, episode_id))


def forget_orphan_objects(conn: sqlite3.Connection) -> int:
    """Delete unnamed identities left without any sighting (inside the caller's transaction);
    named ones are kept (the user gave them a name). Returns how many were deleted."""
    cur = conn.execute(
        "DELETE FROM objects WHERE name IS NULL AND id NOT IN (SELECT object_id FROM sightings)"
    )
    return int(cur.rowcount or 0)


def name_object(conn: sqlite3.Connection, object_id: int, name: str | None) -> None:
    """Give identity ``object_id`` a unique ``name`` (None clears it), in the caller's
    transaction; its episodes' full-text rows then contain the name."""
    if name is not None:
        name = " ".join(str(name).split())
        if not name or len(name) > MAX_NAME_LEN:
            raise ParameterError(
                f"an object name must be 1-{MAX_NAME_LEN} characters, got {name!r}"
            )
        other = conn.execute("SELECT id FROM objects WHERE name = ?", (name,)).fetchone()
        if other and int(other[0]) != int(object_id):
            raise ParameterError(
                f"the name {name!r} is taken by object {other[0]}; rename or clear that one first"
            )
    cur = conn.execute("UPDATE objects SET name = ? WHERE id = ?", (name, int(object_id)))
    if cur.rowcount == 0:
        raise ParameterError(
            f"no object with id {object_id!r}; list them with `eidetic objects list`"
        )
    eps = [int(r[0]) for r in conn.execute(
        "SELECT DISTINCT episode_id FROM sightings WHERE object_id = ?", (int(object_id),))]  # fmt: skip
    refresh_fts(conn, eps)


def _sighting(r: sqlite3.Row | tuple) -> Sighting:
    return Sighting(int(r[0]), int(r[1]), int(r[2]), r[3], float(r[4]), float(r[5]),
                    None if r[6] is None else float(r[6]), float(r[7]))  # fmt: skip


SIGHTING_COLS = "object_id, episode_id, track_id, source, t_first, t_last, wall_first, similarity"


def list_objects(
    conn: sqlite3.Connection, *, named: bool | None = None, limit: int = 1000
) -> list[ObjectIdentity]:
    """Identities, most recently seen first (by episode id); ``named`` filters on having a name."""
    cond = {None: "1", True: "o.name IS NOT NULL", False: "o.name IS NULL"}[named]
    rows = conn.execute(
        f"SELECT o.id, o.name, o.label, COUNT(s.episode_id), MIN(s.episode_id), "
        f"MAX(s.episode_id), json_group_array(DISTINCT s.source) FROM objects o "
        f"LEFT JOIN sightings s ON s.object_id = o.id WHERE {cond} GROUP BY o.id "
        f"ORDER BY MAX(s.episode_id) DESC NULLS LAST, o.id DESC LIMIT ?", (int(limit),),
    ).fetchall()  # fmt: skip
    out = []
    for oid, name, label, n, first, last, sources in rows:
        ends = {}
        for key, episode_id in (("first", first), ("last", last)):
            r = None if episode_id is None else conn.execute(
                f"SELECT {SIGHTING_COLS} FROM sightings WHERE object_id = ? AND episode_id = ? "
                "ORDER BY t_first LIMIT 1", (oid, episode_id)).fetchone()  # fmt: skip
            ends[key] = None if r is None else _sighting(r)
        srcs = tuple(sorted(s for s in json.loads(sources) if s is not None))
        out.append(ObjectIdentity(int(oid), name, label, int(n), srcs, ends["first"], ends["last"]))
    return out


def timeline(conn: sqlite3.Connection, object_id: int) -> list[Sighting]:
    """Every sighting of ``object_id``, oldest first (by episode id)."""
    if conn.execute("SELECT 1 FROM objects WHERE id = ?", (int(object_id),)).fetchone() is None:
        raise ParameterError(
            f"no object with id {object_id!r}; list them with `eidetic objects list`"
        )
    rows = conn.execute(
        f"SELECT {SIGHTING_COLS} FROM sightings WHERE object_id = ? ORDER BY episode_id, t_first",
        (int(object_id),),
    )
    return [_sighting(r) for r in rows]


def episode_sightings(conn: sqlite3.Connection, episode_id: int) -> list[Sighting]:
    """The identities seen in one episode (one sighting per matched track)."""
    rows = conn.execute(
        f"SELECT {SIGHTING_COLS} FROM sightings WHERE episode_id = ? ORDER BY track_id",
        (int(episode_id),),
    )
    return [_sighting(r) for r in rows]


def get_object(conn: sqlite3.Connection, object_id: int) -> ObjectIdentity:
    """One identity with its first and latest sightings, as :func:`list_objects` gives them;
    raises ``ParameterError`` for an unknown id (read-only)."""
    seen = timeline(conn, object_id)
    name, label = conn.execute(
        "SELECT name, label FROM objects WHERE id = ?", (int(object_id),)
    ).fetchone()
    last = [x for x in seen if seen and x.episode_id == seen[-1].episode_id]
    return ObjectIdentity(int(object_id), name, label, len(seen),
                          tuple(sorted({x.source for x in seen})), seen[0] if seen else None,
                          min(last, key=lambda x: x.t_first) if last else None)  # fmt: skip
