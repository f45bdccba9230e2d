"""SQL retrieval over a store for the query engine and the HTTP API (read-only, additive).

The store's own reader (:class:`memory.reader.StoreReader`) returns whole episodes; answering a
question over 10⁵ episodes needs less: counts, the first/last match, the k nearest after an
anchor. :class:`Where` builds conditions on the ``episodes`` table (alias ``e``) from filters,
FTS5 word matches, labels, ids, anchors and objects; :func:`count` and :func:`refs` run them and
return light :class:`Ref` rows, so only the episodes finally cited are decoded.

Chronology: an episode's key is ``wall_start`` when known, else ``t_start`` (media clocks of
different files are not comparable; the engine keeps before/after on one clock).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from memory.reader import BM25, where_sql
from memory.text import fts_expression, tokenize

if TYPE_CHECKING:
    from memory.reader import StoreReader
    from memory.timeexpr import TimeSpan

logger = logging.getLogger(__name__)

# words a question may use for a sound whose label does not contain them (ESC-50 vocabulary)
EXPANSIONS: dict[str, tuple[str, ...]] = {
    "bark": ("dog",), "woof": ("dog",), "meow": ("cat",), "purr": ("cat",), "moo": ("cow",),
    "oink": ("pig",), "cluck": ("hen",), "baa": ("sheep",), "bleat": ("sheep",),
    "croak": ("frog",), "ribbit": ("frog",), "buzz": ("insects",), "caw": ("crow",),
    "chirp": ("chirping", "crickets"), "tweet": ("chirping",), "ring": ("alarm", "bells"),
    "honk": ("horn",), "beep": ("horn", "alarm"), "flush": ("toilet",), "pour": ("pouring",),
    "type": ("keyboard", "typing"), "click": ("mouse",), "sip": ("drinking", "sipping"),
    "drink": ("drinking", "sipping"), "brush": ("brushing",), "laugh": ("laughing",),
    "giggle": ("laughing",), "cry": ("crying",), "wail": ("crying",), "breathe": ("breathing",),
    "walk": ("footsteps",), "step": ("footsteps",), "creak": ("creaks",), "shatter": ("glass",),
    "smash": ("glass",), "thunder": ("thunderstorm",), "knock": ("knock",), "open": ("opening",),
    "applause": ("clapping",), "clap": ("clapping",), "sneeze": ("sneezing",), "snore": ("snoring",),
    "cough": ("coughing",), "wash": ("washing",), "vacuum": ("vacuum",), "saw": ("saw",),
}  # fmt: skip
_SUFFIXES = ("ing", "ed", "es", "s", "d")


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            base = word[: -len(suffix)]
            if base in EXPANSIONS:
                return base
            if len(base) >= 3 and base[-1] == base[-2] and base[:-1] in EXPANSIONS:  # "clapped"
                return base[:-1]
    return word


def concept(word: str) -> tuple[str, ...]:
    """The alternatives a question word matches: itself plus its sound words (bark → dog)."""
    return (word, *EXPANSIONS.get(_stem(word), ()))


@dataclass(frozen=True, slots=True)
class Ref:
    """Where and when an episode happened: enough to order, count and anchor, no decoding."""

    episode_id: int
    source: str
    t_start: float
    t_end: float
    wall_start: float | None

    @property
    def key(self) -> tuple[float, int]:
        t = self.wall_start if self.wall_start is not None else self.t_start
        return float(t), self.episode_id


@dataclass(slots=True)
class Where:
    """A conjunction of SQL conditions on ``episodes e`` with their parameters."""

    conds: list[str] = field(default_factory=lambda: ["1"])
    params: list[Any] = field(default_factory=list)
    # extra conditions for live (wall clock) episodes only, and for file episodes only
    wall: tuple[list[str], list[Any]] | None = None
    file: tuple[list[str], list[Any]] | None = None
    only: Literal["wall", "file"] | None = None  # every match is on this clock

    def copy(self) -> Where:
        def dup(x: tuple[list[str], list[Any]] | None) -> tuple[list[str], list[Any]] | None:
            return None if x is None else (list(x[0]), list(x[1]))

        return Where(list(self.conds), list(self.params), dup(self.wall), dup(self.file), self.only)

    def clocks(self) -> tuple[bool, ...]:
        """Which clocks (live: True, file: False) can hold a match."""
        return {None: (True, False), "wall": (True,), "file": (False,)}[self.only]

    def add(self, sql: str, *params: Any) -> Where:
        self.conds.append(sql)
        self.params.extend(params)
        return self

    def filters(self, **kw: Any) -> Where:
        """The store's filters (source, since, until, wall_since, wall_until, labels)."""
        sql, params = where_sql(**kw)
        return self.add(sql, *params)

    def clock(self, span: TimeSpan, max_span_s: float) -> Where:
        """Episodes overlapping a clock span: its wall reading for live episodes, its media
        reading for file episodes (a store holding both kinds)."""
        w = Where(conds=[]).filters(wall_since=span.wall_lo, wall_until=span.wall_hi)
        f = Where(conds=[]).filters(since=span.lo, until=span.hi)
        w.bounds({"wall_since": span.wall_lo}, max_span_s)
        f.bounds({"since": span.lo}, max_span_s)
        self.wall, self.file = (w.conds, w.params), (f.conds, f.params)
        return self

    def bounds(self, flt: dict[str, Any], max_span_s: float) -> Where:
        """Redundant lower bounds on the indexed start columns for the filters' since/wall_since
        (no episode lasts longer than ``max_span_s``), so SQLite can use its indexes."""
        if flt.get("since") is not None:
            self.add("e.t_start >= ?", float(flt["since"]) - max_span_s)
        if flt.get("wall_since") is not None:
            self.add("e.wall_start >= ?", float(flt["wall_since"]) - max_span_s)
        return self

    def words(self, words: Sequence[str]) -> Where:
        """Every word (as a concept: itself or its sound words) matches summary/labels/source."""
        for w in words:
            expr = fts_expression(list(concept(w)), match="any")
            if expr is not None:
                self.add(
                    "e.id IN (SELECT rowid FROM episodes_fts WHERE episodes_fts MATCH ?)", expr
                )
        return self

    def labels(self, labels: Sequence[str]) -> Where:
        return self.filters(labels=list(labels)) if labels else self

    def ids(self, ids: Sequence[int]) -> Where:
        return self.add(
            "e.id IN (SELECT value FROM json_each(?))", json.dumps([int(i) for i in ids])
        )

    def beyond(self, anchor: Ref, relation: Literal["after", "before"]) -> Where:
        """Strictly after (before) ``anchor`` on its clock: wall time, else its own media clock."""
        op = ">" if relation == "after" else "<"
        self.only = "wall" if anchor.wall_start is not None else "file"
        if relation == "after":
            self.not_continuing(anchor)
        if anchor.wall_start is not None:
            return self.add(f"e.wall_start IS NOT NULL AND (e.wall_start {op} ? OR "
                            f"(e.wall_start = ? AND e.id {op} ?))",
                            anchor.wall_start, anchor.wall_start, anchor.episode_id)  # fmt: skip
        self.add(f"e.source = ? AND e.wall_start IS NULL AND (e.t_start {op} ? OR "
                 f"(e.t_start = ? AND e.id {op} ?))",
                 anchor.source, anchor.t_start, anchor.t_start, anchor.episode_id)  # fmt: skip
        return self

    def not_continuing(self, anchor: Ref) -> Where:
        """Drop episodes of ``anchor``'s source whose first sound began before the anchor ended:
        the same happening, split over two capture windows, not what came after it."""
        return self.add(
            "NOT (e.source = ? AND COALESCE((SELECT MIN(json_extract(s.value, '$.t_start')) "
            "FROM json_each(e.sounds) s), e.t_start) < ?)", anchor.source, anchor.t_end
        )  # fmt: skip

    def on_clock(self, live: bool) -> tuple[str, list[Any]]:
        """SQL and parameters for live episodes only (``live``) or file episodes only."""
        extra = self.wall if live else self.file
        conds = [*self.conds, "e.wall_start IS NOT NULL" if live else "+e.wall_start IS NULL"]
        params = list(self.params)
        if extra is not None:
            conds += extra[0]
            params += extra[1]
        return " AND ".join(conds), params

    @property
    def sql(self) -> str:
        return self._both()[0]

    @property
    def args(self) -> list[Any]:
        return self._both()[1]

    def _both(self) -> tuple[str, list[Any]]:
        if self.only is not None:
            return self.on_clock(self.only == "wall")
        if self.wall is None and self.file is None:
            return " AND ".join(self.conds), list(self.params)
        (a, pa), (b, pb) = self.on_clock(True), self.on_clock(False)
        return f"(({a}) OR ({b}))", [*pa, *pb]


_REF_COLS = "e.id, e.source, e.t_start, e.t_end, e.wall_start"


def _ref(row: Sequence[Any]) -> Ref:
    return Ref(int(row[0]), row[1], float(row[2]), float(row[3]),
               None if row[4] is None else float(row[4]))  # fmt: skip


def _rows(store: StoreReader, sql: str, params: Sequence[Any]) -> list[Any]:
    with store._lock:
        return store._conn.execute(sql, tuple(params)).fetchall()


def count(store: StoreReader, where: Where) -> int:
    """How many episodes pass ``where``."""
    n = 0
    for live in where.clocks():
        sql, params = where.on_clock(live)
        n += int(_rows(store, f"SELECT COUNT(*) FROM episodes e WHERE {sql}", params)[0][0])
    return n


def refs(
    store: StoreReader,
    where: Where,
    *,
    order: Literal["asc", "desc"] = "asc",
    limit: int = 100,
    offset: int = 0,
) -> list[Ref]:
    """Episodes passing ``where`` in chronological ``order`` (see the module docstring).

    Live (wall clock) and file episodes are fetched by their own index and merged, so no sort
    over the whole table is needed.
    """
    if order not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', got {order!r}")
    n = int(limit) + int(offset)
    out: list[Ref] = []
    for live in where.clocks():
        col = "e.wall_start" if live else "e.t_start"
        cond, params = where.on_clock(live)
        sql = (f"SELECT {_REF_COLS} FROM episodes e WHERE {cond} "
               f"ORDER BY {col} {order}, e.id {order} LIMIT ?")  # fmt: skip
        out += [_ref(r) for r in _rows(store, sql, [*params, n])]
    out.sort(key=lambda r: r.key, reverse=order == "desc")
    return out[int(offset) : n]


def sounds_of(store: StoreReader, ids: Sequence[int]) -> dict[int, list[tuple[str, float]]]:
    """episode_id → its sounds as (label, t_start), without decoding the rest of the episode."""
    sql = ("SELECT e.id, json_extract(s.value, '$.label'), json_extract(s.value, '$.t_start') "
           "FROM episodes e, json_each(e.sounds) s WHERE e.id IN (SELECT value FROM json_each(?))")  # fmt: skip
    out: dict[int, list[tuple[str, float]]] = {int(i): [] for i in ids}
    for r in _rows(store, sql, [json.dumps([int(i) for i in ids])]):
        out[int(r[0])].append((str(r[1]), float(r[2])))
    return out


def refs_of(store: StoreReader, ids: Sequence[int]) -> list[Ref]:
    """The refs of ``ids`` that exist, in the order given."""
    got = {r.episode_id: r for r in refs(store, Where().ids(ids), limit=len(ids))} if ids else {}
    return [got[int(i)] for i in ids if int(i) in got]


def ranked_by_text(
    store: StoreReader, words: Sequence[str], where: Where, *, limit: int
) -> list[tuple[int, float]]:
    """Episodes passing ``where`` ranked by bm25 of ``words`` (any of them): (id, score in (0, 1])."""
    tokens = [t for w in words for t in concept(w)]
    expr = fts_expression(tokenize(" ".join(tokens)), match="any")
    if expr is None:
        return []
    sql = (f"SELECT e.id, {BM25} AS r FROM episodes_fts JOIN episodes e ON e.id = episodes_fts.rowid "
           f"WHERE episodes_fts MATCH ? AND {where.sql} ORDER BY r, e.id LIMIT ?")  # fmt: skip
    rows = _rows(store, sql, [expr, *where.args, int(limit)])
    best = max((-float(r[1]) for r in rows), default=0.0)
    return [(int(r[0]), (-float(r[1]) / best) if best > 0 else 1.0) for r in rows]


def has_live(store: StoreReader, where: Where) -> bool:
    """Does any episode passing ``where`` have a wall clock (a live source)?"""
    if True not in where.clocks():
        return False
    sql, params = where.on_clock(True)
    return bool(_rows(store, f"SELECT 1 FROM episodes e WHERE {sql} LIMIT 1", params))


def has_files(store: StoreReader, where: Where) -> bool:
    """Does any episode passing ``where`` come from a file (no wall clock)?"""
    if False not in where.clocks():
        return False
    sql, params = where.on_clock(False)
    return bool(_rows(store, f"SELECT 1 FROM episodes e WHERE {sql} LIMIT 1", params))


_MAX_SPAN: dict[str, tuple[float, int, float]] = {}  # store path -> (checked at, max id, span)
MAX_SPAN_TTL_S = 30.0


def max_span_s(store: StoreReader) -> float:
    """The longest episode's duration (s), cached per store until new episodes arrive."""
    import time

    now = time.monotonic()
    key = str(store.path)
    top = int(_rows(store, "SELECT COALESCE(MAX(id), 0) FROM episodes", [])[0][0])
    cached = _MAX_SPAN.get(key)
    if cached is not None and cached[1] == top and now - cached[0] < MAX_SPAN_TTL_S:
        return cached[2]
    span = _rows(store, "SELECT COALESCE(MAX(t_end - t_start), 0) FROM episodes", [])[0][0]
    _MAX_SPAN[key] = (now, top, float(span) + 1.0)
    return float(span) + 1.0


def has_table(store: StoreReader, name: str) -> bool:
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return bool(_rows(store, sql, [name]))


# --- objects (identities of memory/objects.py: the store's `objects` and `sightings` tables) ----


def has_identities(store: StoreReader) -> bool:
    """Does the store keep any object identity (tracks re-identified by descriptor)?"""
    return has_table(store, "objects") and bool(_rows(store, "SELECT 1 FROM objects LIMIT 1", []))


def object_names(store: StoreReader) -> list[tuple[int, str]]:
    """(object id, name) of every named identity (users name few objects)."""
    if not has_table(store, "objects"):
        return []
    rows = _rows(store, "SELECT id, name FROM objects WHERE name IS NOT NULL ORDER BY id", [])
    return [(int(r[0]), str(r[1])) for r in rows]


def object_ids_named(store: StoreReader, name: str) -> list[int]:
    """Ids of the objects the user named ``name`` (case and spacing ignored); [] without any."""
    want = tokenize(name)
    return [i for i, n in object_names(store) if tokenize(n) == want] if want else []


def object_exists(store: StoreReader, object_id: int) -> bool:
    sql = "SELECT 1 FROM objects WHERE id = ?"
    return has_table(store, "objects") and bool(_rows(store, sql, [int(object_id)]))


def sighted(where: Where, object_ids: Sequence[int]) -> Where:
    """Restrict ``where`` to episodes in which one of ``object_ids`` was seen."""
    return where.add("e.id IN (SELECT episode_id FROM sightings WHERE object_id IN "
                     "(SELECT value FROM json_each(?)))", json.dumps(list(object_ids)))  # fmt: skip


def sightings(store: StoreReader, object_id: int, episode_ids: Sequence[int]) -> dict[int, int]:
    """episode_id → the track id of ``object_id`` in it (for the episodes given)."""
    sql = ("SELECT episode_id, track_id FROM sightings WHERE object_id = ? AND episode_id IN "
           "(SELECT value FROM json_each(?))")  # fmt: skip
    rows = _rows(store, sql, [int(object_id), json.dumps([int(i) for i in episode_ids])])
    return {int(r[0]): int(r[1]) for r in rows}


def object_labels(store: StoreReader, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """Object labels over the episodes' tracks, most recently seen first: for stores whose
    tracks carry no descriptors (so no identities): ``{"label", "sightings", "last_episode"}``."""
    sql = """SELECT json_extract(o.value, '$.label') AS label, COUNT(DISTINCT e.id), MAX(e.id)
             FROM episodes e, json_each(e.objects) o GROUP BY label ORDER BY 3 DESC LIMIT ? OFFSET ?"""
    rows = _rows(store, sql, [int(limit), int(offset)])
    return [{"label": r[0], "sightings": int(r[1]), "last_episode": int(r[2])} for r in rows]
