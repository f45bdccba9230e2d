"""Happenings: remembered sounds grouped into distinct occurrences, for when/how-many questions.

A sound is remembered twice over: in the audio event log (every detected sound, DESIGN §2.4, so
"when did the dog bark?" works although barking does not trigger capture) and in the episode
that captured it. The trigger detector also cuts one acoustic event into several sounds (at its
quiet moments: a clock's beeps, a flush's gurgles), and may label the later pieces differently
(the tail of a flush heard as "keyboard_typing"). So a *happening* is a chain of sounds of one
source, each continuing an earlier one (:func:`continues`): a sound of the happening's own label
(its onset's) starting at most :data:`SAME_GAP_S` after the previous sound ended (a pause inside
one sound), or a sound of another label following at once (at most :data:`CROSS_GAP_S`) while
the happening is young (at most :data:`CROSS_ONSET_S` after its onset: a relabelled tail). A new
sound right after a long one is a new happening (the demo's can, opened 1.2 s after the glass's
last piece), and so is a sound of the label a relabelled tail carried (clapping heard 1.9 s after
a flush's tail was heard as clapping). A happening is named by its onset (the first sound with a
specific label), when the classifier hears the event's characteristic attack. A sound continuing
a chain is part of that happening: it is not counted again, and not as another kind of happening.
Only when a label the question names was heard *nowhere but* inside other happenings are those
sounds reported, marked as part of another sound (:attr:`Happening.within`): memory is never
hidden.

Each happening is tied to the episode whose capture window holds its onset, when one does, so
the evidence still shows keyframes and the clip; otherwise it is a sound-only happening
(``episode_id`` None). Everything here is read-only SQL over the store plus a little Python.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from memory.retrieval import Ref, Where, _rows, concept, has_table, max_span_s, refs
from memory.text import tokenize
from memory.types import Episode, SoundRecord

if TYPE_CHECKING:
    from memory.reader import StoreReader

logger = logging.getLogger(__name__)

SAME_GAP_S = 2.0  # a sound of the happening's label continues it across a pause this long (s)
CROSS_GAP_S = 0.5  # a sound of another label continues it only when it follows this soon (s)
CROSS_ONSET_S = 3.0  # ... and starts at most this long after the happening's onset (s)
LOOKBACK_S = 30.0  # how far back the chain of a sound is followed (s)
DUPLICATE_S = 0.05  # the same sound in the log and in an episode (same label, same onset)
GENERIC_LABELS = ("sound", "interaction", "")  # no class: never names a happening, never chains
MAX_SEEDS = 5000  # sounds examined per question (the count says "at least" beyond)


@dataclass(frozen=True, slots=True)
class Happening:
    """One occurrence: its onset sound (label, score, onset ``t_start``, media s) on ``source``,
    the episode holding the onset (or None: heard, not captured), and that episode's wall clock
    at the onset (live sources). ``within``: not a happening of its own but a sound heard inside
    the happening begun by that sound (reported only when nothing else names the label)."""

    source: str
    sound: SoundRecord
    episode_id: int | None
    wall: float | None
    within: SoundRecord | None = None  # heard only as part of the happening begun by this sound

    @property
    def key(self) -> tuple[float, float]:
        return (self.wall if self.wall is not None else self.sound.t_start), self.sound.t_start

    def as_episode(self) -> Episode:
        """A sound-only happening as an evidence item: its span, label and sound; no keyframes."""
        s = self.sound
        return Episode(source=self.source, t_start=s.t_start, t_end=s.t_end, labels=(s.label,),
                       summary=f"heard {s.label}", sounds=(s,), wall_start=self.wall)  # fmt: skip

    def as_ref(self, t_end: float | None = None) -> Ref:
        """A :class:`Ref` for before/after: ``t_end`` (the chain's end) bounds what continues it."""
        end = self.sound.t_end if t_end is None else t_end
        return Ref(self.episode_id or 0, self.source, self.sound.t_start, end, self.wall)


def continues(prev: SoundRecord, s: SoundRecord, onset: SoundRecord) -> bool:
    """Does ``s`` continue the happening begun by ``onset`` whose latest sound is ``prev`` (all
    of one source)?"""
    if prev.label in GENERIC_LABELS or s.t_start <= prev.t_start:
        return False
    gap = s.t_start - prev.t_end
    if s.label == onset.label:
        return gap <= SAME_GAP_S
    return gap <= CROSS_GAP_S and s.t_start - onset.t_start <= CROSS_ONSET_S


def onsets_of(sounds: Sequence[SoundRecord]) -> list[SoundRecord]:
    """The onset of the happening each of ``sounds`` (one source, sorted by start) belongs to
    (the sound itself when it begins one)."""
    onset: list[SoundRecord] = []
    for i, s in enumerate(sounds):
        j = i - 1  # the latest earlier sound it continues (none begins more than LOOKBACK_S before)
        while j >= 0 and sounds[j].t_start >= s.t_start - LOOKBACK_S and not continues(sounds[j], s, onset[j]):
            j -= 1
        ok = j >= 0 and sounds[j].t_start >= s.t_start - LOOKBACK_S
        onset.append(onset[j] if ok else s)
    return onset


def label_matches(label: str, words: Sequence[str]) -> bool:
    """Every word of the question names the label (prefixes, sound words: "bark" ~ "dog"); with
    3+ words one may be missing."""
    return _label_matches(label, tuple(words))


@functools.lru_cache(maxsize=4096)
def _label_matches(label: str, words: tuple[str, ...]) -> bool:
    tokens = tokenize(label)
    hit = sum(any(t.startswith(a) or a.startswith(t) for a in concept(w) for t in tokens)
              for w in words)  # fmt: skip
    return bool(words) and (hit == len(words) or (len(words) >= 3 and hit >= len(words) - 1))


_LOG_CACHE: dict[str, tuple[float, int, list[str], float]] = {}  # path -> (at, max id, labels, max s)
CACHE_TTL_S = 30.0


def _log_summary(store: StoreReader) -> tuple[list[str], float]:
    """The audio event log's distinct labels and longest sound (s), cached until it grows."""
    if not has_table(store, "sounds"):
        return [], 0.0
    key, now = str(store.path), time.monotonic()
    top = int(_rows(store, "SELECT COALESCE(MAX(id), 0) FROM sounds", [])[0][0])
    got = _LOG_CACHE.get(key)
    if got is not None and got[1] == top and now - got[0] < CACHE_TTL_S:
        return got[2], got[3]
    labels = [r[0] for r in _rows(store, "SELECT DISTINCT label FROM sounds", [])]
    longest = float(_rows(store, "SELECT COALESCE(MAX(t_end - t_start), 0) FROM sounds", [])[0][0])
    _LOG_CACHE[key] = (now, top, labels, longest)
    return labels, longest


Keep = Callable[[list["Happening"]], list["Happening"]]


@dataclass(frozen=True, slots=True)
class _Seed:
    source: str
    sound: SoundRecord
    episode_id: int | None
    wall: float | None


def _episode_rows(store: StoreReader, cand: Where) -> list[Any]:
    """The candidate episodes' (id, source, t_start, wall_start, sounds JSON)."""
    sql = f"SELECT e.id, e.source, e.t_start, e.wall_start, e.sounds FROM episodes e WHERE {cand.sql} LIMIT ?"
    return _rows(store, sql, [*cand.args, MAX_SEEDS])


def _seeds_of(rows: Sequence[Any], words: Sequence[str], exact: Sequence[str]) -> list[_Seed]:
    """Sounds of these episode rows whose label the question names (JSON decoded here: cheaper
    than SQLite's json_each for thousands of episodes)."""
    out = []
    decoded = json.loads("[" + ",".join(r[4] for r in rows) + "]")  # one parse for all rows
    for (eid, source, t0, wall, _), sounds in zip(rows, decoded):
        for d in sounds:
            label = d["label"]
            if (label in exact) if exact else label_matches(label, words):
                w = None if wall is None else float(wall) + float(d["t_start"]) - float(t0)
                sound = SoundRecord(label, float(d["score"]), float(d["t_start"]), float(d["t_end"]))
                out.append(_Seed(source, sound, int(eid), w))
    return out


def _log_seeds(store: StoreReader, labels: Sequence[str], flt: dict[str, Any]) -> list[_Seed]:
    """Sounds of the audio event log with these labels passing the media-time filters."""
    conds, params = ["label IN (SELECT value FROM json_each(?))"], [json.dumps(list(labels))]
    for cond, key in (("source = ?", "source"), ("t_end >= ?", "since"), ("t_start <= ?", "until")):
        if flt.get(key) is not None:
            conds.append(cond)
            params.append(flt[key])
    sql = (f"SELECT source, label, score, t_start, t_end, episode_id FROM sounds "
           f"WHERE {' AND '.join(conds)} ORDER BY t_start LIMIT ?")  # fmt: skip
    return [_Seed(r[0], SoundRecord(r[1], float(r[2]), float(r[3]), float(r[4])),
                  None if r[5] is None else int(r[5]), None)
            for r in _rows(store, sql, [*params, MAX_SEEDS])]  # fmt: skip


def _continuing(store: StoreReader, seeds: Sequence[_Seed], longest: float) -> set[int]:
    """Indexes of ``seeds`` that continue an earlier sound of their source (log or episodes):
    :func:`onsets_of` over the sounds of the :data:`LOOKBACK_S` before each seed."""
    if not seeds:
        return set()
    generic = json.dumps(list(GENERIC_LABELS))
    log_sql = ("SELECT k.key, p.label, p.score, p.t_start, p.t_end FROM json_each(?) k, sounds p "
               "WHERE p.source = k.value ->> '$[0]' AND p.t_start >= k.value ->> '$[1]' - ? "
               "AND p.t_start < k.value ->> '$[1]' AND p.label NOT IN (SELECT value FROM json_each(?))")  # fmt: skip
    ep_sql = ("SELECT k.key, j.value ->> '$.label', j.value ->> '$.score', j.value ->> '$.t_start', "
              "j.value ->> '$.t_end' FROM json_each(?) k, episodes p, json_each(p.sounds) j "
              "WHERE p.source = k.value ->> '$[0]' AND p.t_start <= k.value ->> '$[1]' "
              "AND p.t_start >= k.value ->> '$[1]' - ? AND p.t_end >= k.value ->> '$[1]' - ? "
              "AND j.value ->> '$.t_start' < k.value ->> '$[1]' AND j.value ->> '$.t_start' >= k.value ->> '$[1]' - ? "
              "AND j.value ->> '$.label' NOT IN (SELECT value FROM json_each(?))")  # fmt: skip
    close = _after_a_sound(store, seeds, longest)  # the others begin a happening, surely
    keys = json.dumps([[seeds[i].source, seeds[i].sound.t_start] for i in close])
    rows = _rows(store, log_sql, [keys, LOOKBACK_S, generic]) if longest > 0 else []
    rows += _rows(store, ep_sql, [keys, max_span_s(store) + LOOKBACK_S, LOOKBACK_S, LOOKBACK_S, generic])
    before: dict[int, dict[tuple[str, float], SoundRecord]] = {}
    for key, label, score, t0, t1 in rows:
        before.setdefault(close[int(key)], {})[(str(label), round(float(t0), 2))] = SoundRecord(
            str(label), float(score), float(t0), float(t1))  # fmt: skip
    out = set()
    for i, near in before.items():
        near_sorted = sorted(near.values(), key=lambda x: (x.t_start, x.t_end))
        if onsets_of([*near_sorted, seeds[i].sound])[-1] is not seeds[i].sound:
            out.add(i)
    return out


def _after_a_sound(store: StoreReader, seeds: Sequence[_Seed], longest: float) -> list[int]:
    """Indexes of ``seeds`` with a specific-label sound ending at most SAME_GAP_S before them
    (only those can continue a happening; one indexed probe each)."""
    generic = json.dumps(list(GENERIC_LABELS))
    log_pred = ("EXISTS (SELECT 1 FROM sounds p WHERE p.source = k.value ->> '$[0]' "
                "AND p.t_start < k.value ->> '$[1]' AND p.t_start >= k.value ->> '$[1]' - ? "
                "AND p.t_end >= k.value ->> '$[1]' - ? AND p.label NOT IN (SELECT value FROM json_each(?)))"
                if longest > 0 else "0")  # fmt: skip
    ep_pred = ("EXISTS (SELECT 1 FROM episodes p, json_each(p.sounds) j WHERE p.source = k.value ->> '$[0]' "
               "AND p.t_start <= k.value ->> '$[1]' AND p.t_start >= k.value ->> '$[1]' - ? "
               "AND p.t_end >= k.value ->> '$[1]' - ? AND j.value ->> '$.t_start' < k.value ->> '$[1]' "
               "AND j.value ->> '$.t_end' >= k.value ->> '$[1]' - ? "
               "AND j.value ->> '$.label' NOT IN (SELECT value FROM json_each(?)))")  # fmt: skip
    params: list[Any] = [json.dumps([[s.source, s.sound.t_start] for s in seeds])]
    if longest > 0:
        params += [longest + SAME_GAP_S, SAME_GAP_S, generic]
    params += [max_span_s(store) + SAME_GAP_S, SAME_GAP_S, SAME_GAP_S, generic]
    sql = f"SELECT k.key FROM json_each(?) k WHERE {log_pred} OR {ep_pred}"
    return sorted(int(r[0]) for r in _rows(store, sql, params))


def _dedup(seeds: list[_Seed]) -> list[_Seed]:
    """One seed per sound: the log's copy of an episode's sound (or a sound in two overlapping
    windows) is dropped, the copy tied to an episode kept."""
    seeds = sorted(seeds, key=lambda s: (s.source, s.sound.label, s.sound.t_start, s.episode_id is None))
    out: list[_Seed] = []
    for s in seeds:
        last = out[-1] if out else None
        if (last is not None and (last.source, last.sound.label) == (s.source, s.sound.label)
                and s.sound.t_start - last.sound.t_start <= DUPLICATE_S):  # fmt: skip
            continue
        out.append(s)
    return out


def _tie(store: StoreReader, seeds: list[_Seed]) -> list[_Seed]:
    """Seeds of the log tied to the episode whose window holds their onset, when one does."""
    loose = [i for i, s in enumerate(seeds) if s.episode_id is None]
    if not loose:
        return seeds
    sql = ("SELECT k.key, (SELECT e.id || ' ' || e.t_start || ' ' || COALESCE(e.wall_start, '') "
           "FROM episodes e WHERE e.source = k.value ->> '$[0]' AND e.t_start <= k.value ->> '$[1]' "
           "AND e.t_start >= k.value ->> '$[1]' - ? AND e.t_end >= k.value ->> '$[1]' "
           "ORDER BY e.t_start DESC LIMIT 1) FROM json_each(?) k")  # fmt: skip
    pts = json.dumps([[seeds[i].source, seeds[i].sound.t_start] for i in loose])
    out = list(seeds)
    for key, found in _rows(store, sql, [max_span_s(store), pts]):
        if found:
            eid, t0, *wall = str(found).split(" ")
            s = out[loose[int(key)]]
            w = float(wall[0]) + s.sound.t_start - float(t0) if wall and wall[0] else None
            out[loose[int(key)]] = _Seed(s.source, s.sound, int(eid), w)
    return out


def find(
    store: StoreReader,
    cand: Where,
    words: Sequence[str],
    *,
    labels: Sequence[str] = (),
    flt: dict[str, Any] | None = None,
    log: bool = True,
    which: Literal["first", "last"] | None = None,
    keep: Keep | None = None,
) -> list[Happening] | None:
    """The happenings the question names, chronological; None when no remembered sound does.

    Parameters
    ----------
    cand : Where
        The candidate episodes (filters, words, anchor already applied): their sounds count.
    words, labels : sequence of str
        What the question names (``labels``: exact labels of a structured query, else words).
    flt : dict
        The media-time filters (source, since, until) for the audio event log.
    log : bool
        Consult the audio event log too (it keeps media times only: not with wall-time filters).
    which : {"first", "last"}, optional
        Only the first (last) happening is wanted: without log sounds to merge, episodes are
        read a page at a time until one is found.
    keep : callable, optional
        Filters the chronological happenings (e.g. those after an anchor's chain) before
        ``which`` picks one.
    """
    if not words and not labels:
        return None
    named, longest = _log_summary(store)
    named = [x for x in named if (x in labels if labels else label_matches(x, words))] if log else []
    if which is not None and not named:  # episodes only: page through them, stop at the first
        got = _first_or_last(store, cand, words, labels, flt or {}, which, longest, keep)
    else:
        rows = _episode_rows(store, cand)
        if not rows and not named:
            return []  # no candidate at all: nothing happened (the episode path would find none)
        seeds = _seeds_of(rows, words, labels)
        if named:
            seeds += _log_seeds(store, named, flt or {})
        got = _onsets(store, seeds, flt or {}, longest, keep)
    if got is None:
        return None
    found, inside = got
    if found or not inside:
        return found
    # the label was heard, but only inside other happenings: say so rather than hide it
    return [dataclasses.replace(h, within=chain_onset(store, h)) for h in inside]


Split = tuple[list[Happening], list[Happening]]  # (happenings, sounds heard inside others)


def _onsets(
    store: StoreReader, seeds: list[_Seed], flt: dict[str, Any], longest: float, keep: Keep | None
) -> Split | None:
    """The happenings begun by ``seeds`` and the seeds continuing other happenings (None when no
    seed names a sound), each chronological and passed through ``keep``."""
    lo, hi = flt.get("since"), flt.get("until")
    seeds = [s for s in seeds if s.sound.label not in GENERIC_LABELS
             and (lo is None or s.sound.t_end >= lo) and (hi is None or s.sound.t_start <= hi)]  # fmt: skip
    if not seeds:
        return None
    seeds = _dedup(seeds)
    cont = _continuing(store, seeds, longest)
    out = []
    for part in ([s for i, s in enumerate(seeds) if i not in cont], [seeds[i] for i in sorted(cont)]):
        hs = sorted((Happening(s.source, s.sound, s.episode_id, s.wall) for s in _tie(store, part)),
                    key=lambda h: h.key)  # fmt: skip
        out.append(keep(hs) if keep is not None else hs)
    return out[0], out[1]


PAGE = 64  # episodes examined at a time for a first / last happening


def _first_or_last(
    store: StoreReader,
    cand: Where,
    words: Sequence[str],
    labels: Sequence[str],
    flt: dict[str, Any],
    which: Literal["first", "last"],
    longest: float,
    keep: Keep | None,
) -> Split | None:
    """The first (last) happening among the candidate episodes, a page of them at a time (else
    the first (last) sound heard inside another happening)."""
    sql = ("SELECT e.id, e.source, e.t_start, e.wall_start, e.sounds FROM episodes e "
           "WHERE e.id IN (SELECT value FROM json_each(?))")  # fmt: skip
    any_seed, inside = False, []
    pick = (lambda hs: hs[:1]) if which == "first" else (lambda hs: hs[-1:])  # noqa: E731
    for offset in range(0, MAX_SEEDS, PAGE):
        page = refs(store, cand, order="asc" if which == "first" else "desc", limit=PAGE, offset=offset)
        if not page:
            break
        rows = _rows(store, sql, [json.dumps([r.episode_id for r in page])])
        got = _onsets(store, _seeds_of(rows, words, labels), flt, longest, keep)
        if got is None:
            continue
        any_seed = True
        if got[0]:
            return pick(got[0]), []
        inside = inside or pick(got[1])
    return ([], inside) if any_seed or offset == 0 else None


def beyond(
    found: list[Happening], anchor: Ref, relation: str, onset: float | None = None
) -> list[Happening]:
    """The happenings after ``anchor``'s chain ends (before its ``onset``, default its start)
    on its clock (see Where.beyond)."""
    if relation == "after":
        if anchor.wall_start is not None:
            return [h for h in found if h.wall is not None and h.wall > anchor.wall_start
                    and not (h.source == anchor.source and h.sound.t_start < anchor.t_end)]  # fmt: skip
        return [h for h in found if h.source == anchor.source and h.wall is None
                and h.sound.t_start >= anchor.t_end]  # fmt: skip
    t0 = anchor.t_start if onset is None else onset
    if anchor.wall_start is not None:
        w0 = anchor.wall_start + (t0 - anchor.t_start)
        return [h for h in found if h.wall is not None and h.wall < w0]
    return [h for h in found if h.source == anchor.source and h.wall is None
            and h.sound.t_start < t0]  # fmt: skip


def chain_end(store: StoreReader, h: Happening, *, horizon_s: float = 600.0) -> float:
    """When the chain of sounds begun by ``h`` ends (its last sound's end, media s)."""
    t0 = h.sound.t_start
    near = _sounds_near(store, h.source, t0, t0 + horizon_s)
    near = [h.sound, *(s for s in near if not _same(s, h.sound))]
    end = h.sound.t_end
    for s, onset in zip(near, onsets_of(near)):
        if s.t_start > end + SAME_GAP_S:
            break
        if onset is h.sound:
            end = max(end, s.t_end)
    return end


def chain_onset(store: StoreReader, h: Happening) -> SoundRecord:
    """The onset of the happening that ``h``'s sound continues (itself when it begins one)."""
    near = _sounds_near(store, h.source, h.sound.t_start - LOOKBACK_S, h.sound.t_start)
    near = [*(s for s in near if not _same(s, h.sound) and s.t_start < h.sound.t_start), h.sound]
    return onsets_of(near)[-1]


def _same(a: SoundRecord, b: SoundRecord) -> bool:
    return a.label == b.label and abs(a.t_start - b.t_start) <= DUPLICATE_S


def _sounds_near(store: StoreReader, source: str, lo: float, hi: float) -> list[SoundRecord]:
    """The specific-label sounds of ``source`` starting in [lo, hi] (log and episodes, each
    once), by start."""
    sql_log = ("SELECT label, score, t_start, t_end FROM sounds WHERE source = ? AND t_start >= ? "
               "AND t_start <= ? AND label NOT IN (SELECT value FROM json_each(?))")  # fmt: skip
    sql_eps = ("SELECT j.value ->> '$.label', j.value ->> '$.score', j.value ->> '$.t_start', "
               "j.value ->> '$.t_end' FROM episodes e, json_each(e.sounds) j "
               "WHERE e.source = ? AND e.t_start >= ? AND e.t_start <= ? AND j.value ->> '$.t_start' >= ? "
               "AND j.value ->> '$.t_start' <= ? AND j.value ->> '$.label' NOT IN (SELECT value FROM json_each(?))")  # fmt: skip
    generic = json.dumps(list(GENERIC_LABELS))
    rows = _rows(store, sql_log, [source, lo, hi, generic]) if has_table(store, "sounds") else []
    rows += _rows(store, sql_eps, [source, lo - max_span_s(store), hi, lo, hi, generic])
    got = {(str(r[0]), round(float(r[2]), 2)): SoundRecord(str(r[0]), float(r[1]), float(r[2]), float(r[3]))
           for r in rows}  # fmt: skip
    return sorted(got.values(), key=lambda x: (x.t_start, x.t_end))
