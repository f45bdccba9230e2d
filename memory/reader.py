"""Read side of the store: episode lookups, listings, the sound log, text and vector search."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from memory.catalog import Catalog
from memory.errors import EpisodeNotFound, ParameterError
from memory.indexes import IndexSet, check_modality
from memory.schema import FTS_WEIGHTS, blob_vector, get_meta, row_episode
from memory.text import fts_expression, tokenize
from memory.types import Episode, ObjectIdentity, Sighting, SoundRecord

logger = logging.getLogger(__name__)

OVERFETCH = 4  # search_vectors fetches k * OVERFETCH neighbours (then x4 ...) before SQL filters
PREFILTER_MAX = 50_000  # narrow filters passing at most this many episodes are searched exactly
BROAD_FILTER = 0.05  # a filter passed by this fraction of the nearest hits is applied after
MAX_FETCH = 4096  # post-filtering asks FAISS for at most this many neighbours, then more lists
SELECT_SPARE = 10  # filtered search: neighbours fetched beyond k (deleted ones are dropped) ...
SELECT_RETRIES = 4  # ... and searches repeated after dropping them from the catalog
BM25 = f"bm25(episodes_fts, {', '.join(map(str, FTS_WEIGHTS))})"


@dataclass(frozen=True, slots=True)
class LoggedSound:
    """One row of the audio event log: a sound heard on ``source`` (maybe in an episode)."""

    sound_id: int
    source: str
    sound: SoundRecord
    episode_id: int | None = None


def where_sql(
    *,
    source: str | None = None,
    since: float | None = None,
    until: float | None = None,
    wall_since: float | None = None,
    wall_until: float | None = None,
    labels: Sequence[str] | None = None,
    max_span: float | None = None,
) -> tuple[str, list[Any]]:
    """SQL conditions on the alias ``e`` (episodes) and their parameters.

    since/until (media s) and wall_since/wall_until (UTC epoch s) keep the episodes whose span
    overlaps the range (a wall filter drops episodes without ``wall_start``); labels: any of them.
    ``max_span`` (the longest episode, s) turns "ends after since" into an index range on starts.
    """
    conds, params = ["1"], []
    for cond, value in (
        ("e.source = ?", source),
        ("e.t_end >= ?", since),
        ("e.t_start <= ?", until),
        ("e.wall_start + (e.t_end - e.t_start) >= ?", wall_since),
        ("e.wall_start <= ?", wall_until),
    ):
        if value is not None:
            conds.append(cond)
            params.append(value)
    if max_span is not None:  # redundant bounds that let SQLite use the start-time indexes
        for cond, value in (("e.t_start >= ?", since), ("e.wall_start >= ?", wall_since)):
            if value is not None:
                conds.append(cond)
                params.append(value - max_span)
    if labels:
        conds.append("EXISTS (SELECT 1 FROM json_each(e.labels) WHERE value IN "
                     "(SELECT value FROM json_each(?)))")  # fmt: skip
        params.append(json.dumps(list(labels)))
    return " AND ".join(conds), params


def _ids_json(ids: Sequence[int]) -> str:
    return json.dumps([int(i) for i in ids])


class StoreReader:
    """Queries over an open store; :class:`memory.store.EpisodeStore` adds writes and upkeep.

    Subclasses set ``path``, ``_conn`` (SQLite), ``_lock`` (serialises the connection) and ``_ix``.
    Filter keywords (``source``, ``since``, ``until``, ``wall_since``, ``wall_until``,
    ``labels``) mean the same everywhere: see :func:`where_sql`.
    """

    path: Path
    _conn: sqlite3.Connection
    _lock: threading.RLock
    _ix: IndexSet

    def _vectors(self, ids: Sequence[int]) -> dict[int, dict[str, np.ndarray]]:
        out: dict[int, dict[str, np.ndarray]] = {}
        sql = (
            "SELECT episode_id, modality, data FROM vectors "
            "WHERE episode_id IN (SELECT value FROM json_each(?))"
        )
        for r in self._conn.execute(sql, (_ids_json(ids),)):
            out.setdefault(int(r[0]), {})[r[1]] = blob_vector(r[2])
        return out

    def get(self, episode_id: int, *, vectors: bool = True) -> Episode:
        """The stored episode ``episode_id`` (with its vectors); raises ``EpisodeNotFound``."""
        got = self.get_many([episode_id], vectors=vectors)
        if not got:
            raise EpisodeNotFound(episode_id, str(self.path))
        return got[0]

    def get_many(self, ids: Sequence[int], *, vectors: bool = False) -> list[Episode]:
        """The stored episodes among ``ids``, in the order given (unknown ids are skipped)."""
        sql = "SELECT * FROM episodes WHERE id IN (SELECT value FROM json_each(?))"
        with self._lock:
            rows = {int(r["id"]): r for r in self._conn.execute(sql, (_ids_json(ids),))}
            vecs = self._vectors(list(rows)) if vectors else {}
        return [row_episode(rows[i], vecs.get(i)) for i in map(int, ids) if i in rows]

    def episodes(
        self,
        *,
        source: str | None = None,
        since: float | None = None,
        until: float | None = None,
        wall_since: float | None = None,
        wall_until: float | None = None,
        labels: Sequence[str] | None = None,
        limit: int = 100,
        order: Literal["asc", "desc"] = "asc",
    ) -> list[Episode]:
        """Episodes passing the filters, by start (``wall_start`` when known, else ``t_start``).

        Vectors are not loaded (use :meth:`get`).
        """
        if order not in ("asc", "desc"):
            raise ParameterError(f"order must be 'asc' or 'desc', got {order!r}")
        where, params = where_sql(
            source=source, since=since, until=until,
            wall_since=wall_since, wall_until=wall_until, labels=labels,
        )  # fmt: skip
        sql = (
            f"SELECT * FROM episodes e WHERE {where} "
            f"ORDER BY COALESCE(e.wall_start, e.t_start) {order}, e.id {order} LIMIT ?"
        )
        with self._lock:
            rows = self._conn.execute(sql, (*params, int(limit))).fetchall()
        return [row_episode(r) for r in rows]

    def objects(self, *, named: bool | None = None, limit: int = 1000) -> list[ObjectIdentity]:
        """Persistent object identities, most recently seen first (memory/objects.py)."""
        from memory.objects import list_objects

        with self._lock:
            return list_objects(self._conn, named=named, limit=limit)

    def object(self, object_id: int) -> ObjectIdentity:
        """One persistent object identity; ``ParameterError`` if unknown (memory/objects.py)."""
        from memory.objects import get_object

        with self._lock:
            return get_object(self._conn, object_id)

    def object_timeline(self, object_id: int) -> list[Sighting]:
        """Every sighting of one identity, oldest first; ``ParameterError`` if unknown."""
        from memory.objects import timeline

        with self._lock:
            return timeline(self._conn, object_id)

    def sightings(self, episode_id: int) -> list[Sighting]:
        """The object identities seen in one episode."""
        from memory.objects import episode_sightings

        with self._lock:
            return episode_sightings(self._conn, episode_id)

    def sounds(
        self,
        *,
        source: str | None = None,
        label: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[LoggedSound]:
        """The audio event log, oldest first; since/until keep sounds overlapping the range."""
        conds, params = ["1"], []
        for cond, value in (
            ("source = ?", source),
            ("label = ?", label),
            ("t_end >= ?", since),
            ("t_start <= ?", until),
        ):
            if value is not None:
                conds.append(cond)
                params.append(value)
        sql = f"SELECT * FROM sounds WHERE {' AND '.join(conds)} ORDER BY t_start, id LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, (*params, int(limit))).fetchall()
        return [
            LoggedSound(
                sound_id=int(r["id"]),
                source=r["source"],
                sound=SoundRecord(r["label"], float(r["score"]), float(r["t_start"]),
                                  float(r["t_end"])),  # fmt: skip
                episode_id=r["episode_id"],
            )
            for r in rows
        ]

    def search_text(
        self,
        text: str,
        *,
        k: int = 10,
        source: str | None = None,
        since: float | None = None,
        until: float | None = None,
        wall_since: float | None = None,
        wall_until: float | None = None,
        labels: Sequence[str] | None = None,
        match: Literal["any", "all"] = "any",
    ) -> list[tuple[int, float]]:
        """Full-text search (FTS5 bm25 over summary, labels, source), best first.

        Words match as prefixes after normalisation (``glass_breaking`` ~ "glass broke"); any user
        text is safe (every term is quoted). ``match="all"`` requires every word.
        Returns ``(episode_id, score)``, score = -bm25 (higher is better).
        """
        if match not in ("any", "all"):
            raise ParameterError(f"match must be 'any' or 'all', got {match!r}")
        expr = fts_expression(tokenize(text), match=match)
        if expr is None:
            return []
        where, params = where_sql(
            source=source, since=since, until=until,
            wall_since=wall_since, wall_until=wall_until, labels=labels,
        )  # fmt: skip
        sql = (
            f"SELECT e.id, {BM25} AS r FROM episodes_fts "
            "JOIN episodes e ON e.id = episodes_fts.rowid "
            f"WHERE episodes_fts MATCH ? AND {where} ORDER BY r, e.id LIMIT ?"
        )
        with self._lock:
            rows = self._conn.execute(sql, (expr, *params, int(k))).fetchall()
        return [(int(r[0]), -float(r[1])) for r in rows]

    def search_vectors(
        self,
        modality: str,
        x: np.ndarray,
        *,
        k: int = 10,
        source: str | None = None,
        since: float | None = None,
        until: float | None = None,
        wall_since: float | None = None,
        wall_until: float | None = None,
        labels: Sequence[str] | None = None,
    ) -> list[tuple[int, float]]:
        """Nearest episodes to an example vector, filtered like :meth:`episodes`.

        Without filters FAISS is asked for ``k * OVERFETCH`` neighbours, then more, until ``k``
        exist in SQLite. Source/time filters select the allowed ids in memory
        (:meth:`_search_selected`). With a label filter (or an HNSW index) a narrow filter
        (fewer than ``BROAD_FILTER`` of the nearest neighbours pass it) passing at most
        ``PREFILTER_MAX`` episodes is applied first: exact search among their stored vectors;
        a broad one after the search.

        Parameters
        ----------
        modality : {"visual", "audio"}
            Which index to search.
        x : ndarray
            ``float32[d]`` query, L2-normalised like the stored vectors.
        k : int
            Maximum number of results.

        Returns
        -------
        list of (int, float)
            ``(episode_id, inner product)``, best first.

        Raises
        ------
        IndexMismatch
            ``d`` is not the dimension of the store's ``modality`` vectors.
        """
        check_modality(modality)
        if int(k) < 1:
            raise ParameterError(f"k must be >= 1, got {k!r}")
        xq = np.asarray(x, dtype=np.float32).reshape(1, -1)
        with self._lock:
            index = self._ix.get(modality)
            if index is None or index.ntotal == 0:
                return []
            span = get_meta(self._conn, "max_span_s")
            where = where_sql(source=source, since=since, until=until, wall_since=wall_since,
                              wall_until=wall_until, labels=labels,
                              max_span=None if span is None else float(span))  # fmt: skip
            if where[0] == "1":
                return self._search_post_filtered(index, xq, int(k), where, int(k) * OVERFETCH)
            if not labels and (index.ivf is not None or index.exact):
                # time/source: the catalog lists the allowed ids, FAISS searches only those
                return self._search_selected(index, xq, int(k), where, dict(
                    source=source, since=since, until=until, wall_since=wall_since,
                    wall_until=wall_until))  # fmt: skip
            # probe: how many of the nearest neighbours pass the filter?
            fetch = min(int(k) * OVERFETCH, index.ntotal)
            hits, frac = self._probe(index, xq, where, fetch)
            if len(hits) >= k or fetch >= index.ntotal:
                return hits[: int(k)]
            if frac < BROAD_FILTER:
                allowed = self._allowed_ids(where)
                if allowed is not None:
                    return self._search_among(index, xq, int(k), allowed)
            fetch = int(np.ceil(2 * k / max(frac, 1.0 / PREFILTER_MAX)))
            hits = self._search_post_filtered(index, xq, int(k), where, fetch)
            if len(hits) < k and not index.exact:  # IVF lists visited held too few
                allowed = self._allowed_ids(where)
                if allowed is not None:
                    return self._search_among(index, xq, int(k), allowed)
            return hits

    def _catalog(self) -> Catalog:
        """The filter columns of every episode, caught up with SQLite (memory/catalog.py)."""
        cat = getattr(self, "_cat", None)
        if cat is None:
            cat = self._cat = Catalog()
        cat.catch_up(self._conn)
        return cat

    def _search_selected(
        self, index: Any, xq: np.ndarray, k: int, where: tuple[str, list[Any]], flt: dict[str, Any]
    ) -> list[tuple[int, float]]:
        """Search only the ids the catalog allows (a faiss ID selector: checked before any
        distance is computed). An IVF index visits ``nprobe * filter_gain / f`` lists for an
        allowed fraction ``f`` (as many allowed vectors as an unfiltered search visits vectors,
        times the tuned gain; a narrow filter thus scans every list: exact). Hits are verified in SQLite (a deleted episode's vector
        may linger in the index); deleted ones are dropped from the catalog and the search
        repeated."""
        cat = self._catalog()
        ivf = index.ivf
        for _ in range(SELECT_RETRIES):
            allowed = cat.select(**flt)
            if allowed.size == 0:
                return []
            fetch = min(k + SELECT_SPARE, allowed.size)
            nprobe = None
            if ivf is not None:
                frac = allowed.size / max(1, index.ntotal)
                gain = float(getattr(index, "filter_gain", 1.0))  # tuned (memory/indexes.py)
                nprobe = int(min(ivf.nlist, np.ceil(ivf.nprobe * gain / frac)))
            D, I = index.search(xq, fetch, allowed=allowed, nprobe=nprobe)
            if nprobe is not None and nprobe < ivf.nlist and I[0, -1] < 0:  # lists ran dry
                D, I = index.search(xq, fetch, allowed=allowed, nprobe=int(ivf.nlist))
            found = [(int(i), float(d)) for i, d in zip(I[0].tolist(), D[0].tolist()) if i >= 0]
            ok = self._filter_ids([i for i, _ in found], where)
            hits = [(i, d) for i, d in found if i in ok]
            dead = [i for i, _ in found if i not in ok]
            if dead:
                cat.mark_dead(dead)
            if len(hits) >= k or not dead:
                return hits[:k]
        return hits[:k]

    def _probe(
        self, index: Any, xq: np.ndarray, where: tuple[str, list[Any]], fetch: int
    ) -> tuple[list[tuple[int, float]], float]:
        """Hits among the ``fetch`` nearest neighbours, and the fraction of them that passed."""
        D, I = index.search(xq, fetch)
        found = [(int(i), float(d)) for i, d in zip(I[0], D[0]) if i >= 0]
        allowed = self._filter_ids([i for i, _ in found], where)
        hits = [(i, d) for i, d in found if i in allowed]
        return hits, len(hits) / max(1, len(found))

    def _search_post_filtered(
        self, index: Any, xq: np.ndarray, k: int, where: tuple[str, list[Any]], fetch: int
    ) -> list[tuple[int, float]]:
        """FAISS first, then SQLite keeps the hits that exist and pass ``where``; asks for
        ``OVERFETCH`` times more neighbours (at most ``MAX_FETCH``), or visits more IVF lists
        when those ran dry, until ``k`` pass (deleted vectors still in an index drop out)."""
        ivf = index.ivf
        nprobe = None if ivf is None else int(ivf.nprobe)
        while True:
            fetch = min(fetch, index.ntotal, MAX_FETCH)
            D, I = index.search(xq, fetch, nprobe=nprobe)
            found = [(int(i), float(d)) for i, d in zip(I[0], D[0]) if i >= 0]
            allowed = self._filter_ids([i for i, _ in found], where)
            hits = [(i, d) for i, d in found if i in allowed]
            if len(hits) >= k:
                return hits[:k]
            if ivf is not None and nprobe < ivf.nlist and (len(found) < fetch or fetch == MAX_FETCH):
                nprobe = min(int(ivf.nlist), nprobe * OVERFETCH)  # the lists visited ran dry
            elif fetch < min(index.ntotal, MAX_FETCH):
                fetch *= OVERFETCH
            else:
                return hits

    def _allowed_ids(self, where: tuple[str, list[Any]]) -> np.ndarray | None:
        """The ids passing a filter when there are at most ``PREFILTER_MAX`` (else None: a broad
        filter is cheaper applied after the search)."""
        cond, params = where
        sql = f"SELECT e.id FROM episodes e WHERE {cond} LIMIT ?"
        rows = self._conn.execute(sql, (*params, PREFILTER_MAX + 1)).fetchall()
        if len(rows) > PREFILTER_MAX:
            return None
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    @staticmethod
    def _search_among(index: Any, xq: np.ndarray, k: int, allowed: np.ndarray) -> list[tuple[int, float]]:
        """Exact search among the ``allowed`` ids: their stored vectors, scored directly."""
        ids, x = index.vectors(allowed)
        if ids.size == 0:
            return []
        scores = x @ xq[0]
        top = np.argsort(-scores, kind="stable")[:k]
        return [(int(ids[i]), float(scores[i])) for i in top]

    def _filter_ids(self, ids: list[int], where: tuple[str, list[Any]]) -> set[int]:
        """The ids that exist in SQLite and pass ``where`` (from :func:`where_sql`)."""
        cond, params = where
        # CROSS JOIN fixes the loop order: look the few ids up by rowid, never scan an index of
        # the filter's columns (a source index would scan every episode of that source)
        sql = (
            "SELECT e.id FROM json_each(?) AS j CROSS JOIN episodes AS e ON e.id = j.value "
            f"WHERE {cond}"
        )
        return {int(r[0]) for r in self._conn.execute(sql, (_ids_json(ids), *params))}
