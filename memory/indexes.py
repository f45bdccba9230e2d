"""The store's FAISS indexes (one per modality), derived from the SQLite ``vectors`` table.

SQLite is the source of truth; an index file may lag behind it and is caught up, never trusted
blindly:

- Episode ids only grow, so an index that holds every vector up to id ``max_id`` is brought up to
  date by adding the SQLite vectors with a larger id ("catch-up", done on open and by readers
  whenever SQLite moved on).
- A delete removes the SQLite row and records a tombstone in the same transaction. Exact (Flat)
  indexes drop the vector at once; IVF/HNSW indexes keep it until the next rebuild (readers never
  return it: every hit is checked against SQLite), and are rebuilt when deleted vectors exceed
  ``COMPACT_FRACTION``.
- The index type follows the size (:func:`memory.index.choose_factory`): exact Flat below
  ``FLAT_MAX`` vectors, then IVF, retrained when it has grown ``GROW_FACTOR`` times; its
  ``nprobe`` is tuned at build time to reach ``TUNE_RECALL`` on the store's own vectors, then
  doubled (``TUNE_MARGIN``) as a safety margin for queries unlike the stored vectors, and tuned
  again whenever the index has grown ``RETUNE_FACTOR`` times since (lists get fuller between
  retrains). Filtered searches visit ``nprobe * filter_gain / f`` lists for an allowed fraction
  ``f``; ``filter_gain`` is tuned with it on a random ``FILTER_TUNE_FRACTION`` of the vectors
  (the top-10 of a subset lie farther out than the top-10 of all, in more lists).
- Files are written atomically (temp + fsync + rename) when enough changed or enough time passed,
  and on close; ``<modality>.faiss.json`` beside each file records what it holds (a hint: a file
  whose hint does not match is described from its own ids).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memory.errors import IndexMismatch, ParameterError
from memory.index import FLAT_MAX, IVF_TRAIN_PER_LIST, FaissIndex, choose_factory
from memory.schema import get_meta

logger = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("visual", "audio")
INDEX_DIR = "index"
AUTO = "auto"  # factory: choose by size
READ_BATCH = 50_000  # vectors read from SQLite per query while building
SAVE_MIN_CHANGES = 256  # a file is rewritten after this many changes (and SAVE_FRACTION) ...
SAVE_FRACTION = 0.2  # ... of its size, or after SAVE_INTERVAL_S with any change, and on close
SAVE_INTERVAL_S = 30.0
SAVE_COST_FACTOR = 20  # ... but waits 20x the last save's duration (saving <= 5 % of the time)
GROW_FACTOR = 4  # an IVF index is rebuilt (retrained) when it holds 4x its build size
COMPACT_FRACTION = 0.1  # IVF/HNSW: rebuild when this fraction of its vectors is deleted
BACKGROUND_MIN = 100_000  # a writer rebuilds an index this large in a thread, adding meanwhile
TUNE_QUERIES = 200  # nprobe tuning: the store's own vectors as queries ...
TUNE_RECALL = 0.97  # ... the smallest nprobe reaching this recall@10 (neighbours 2-11) wins,
TUNE_MARGIN = 2  # ... times this: fresh queries scored up to 3 points below (store_bench, 10⁵)
TUNE_SAMPLE = 20_000  # a re-tune takes its queries from this many of the index's vectors
NPROBES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024, 2048)
RETUNE_FACTOR = 2  # nprobe is re-tuned when an IVF index holds 2x the vectors it was tuned at
FILTER_TUNE_FRACTION = 0.1  # filter_gain: tuned with a random 10 % of the vectors allowed ...
FILTER_GAINS = (1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)  # ... the smallest reaching TUNE_RECALL


def check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ParameterError(f"modality must be one of {MODALITIES}, got {modality!r}")


@dataclass(slots=True)
class IndexState:
    """What an in-memory index reflects (the ``.faiss.json`` hint holds the saved one's)."""

    gen: int = -1  # SQLite ``gen:<modality>`` it was synced at
    max_id: int = 0  # largest episode id added (catch-up adds ids above it)
    tomb_seq: int = 0  # tombstones up to this sequence number are folded in
    built_n: int = 0  # vectors when it was (re)built
    build: str = ""  # token of the (re)build: readers reload the file when it changes
    nprobe: int | None = None
    filter_gain: float = 1.0  # filtered searches visit nprobe * filter_gain / fraction lists
    tuned_n: int = 0  # vectors when nprobe was last tuned
    ntotal: int = 0
    changes: int = 0  # adds and removes since the file was saved
    saved_at: float = field(default_factory=time.monotonic)
    save_s: float = 0.0  # how long the last save took
    dead: int = 0  # writer: vectors in the index that SQLite deleted (kept until a rebuild)

    def hint(self) -> dict[str, Any]:
        d = asdict(self)
        del d["changes"], d["saved_at"], d["save_s"], d["dead"]
        return d


class IndexSet:
    """FAISS indexes of one store, by modality.

    Parameters
    ----------
    root : Path
        The store directory (indexes live in ``root/index``).
    conn : sqlite3.Connection
        The store's connection (shared; callers serialise access with ``lock``).
    readonly : bool
        Readers never write files: they load the saved index and catch up in memory.
    factory : str
        ``"auto"`` (size-based), or a FAISS factory string forced for every index.
    """

    def __init__(
        self,
        root: Path,
        conn: sqlite3.Connection,
        lock: threading.RLock,
        *,
        readonly: bool,
        factory: str = AUTO,
    ) -> None:
        self.dir = root / INDEX_DIR
        self.conn = conn
        self.lock = lock
        self.readonly = readonly
        self.factory = factory
        self._indexes: dict[str, FaissIndex] = {}
        self._states: dict[str, IndexState] = {}
        self._building: dict[str, tuple[threading.Thread, dict[str, Any]]] = {}

    # --- SQLite side ------------------------------------------------------------------------

    def path(self, modality: str) -> Path:
        return self.dir / f"{modality}.faiss"

    def hint_path(self, modality: str) -> Path:
        return self.dir / f"{modality}.faiss.json"

    def sqlite_gen(self, modality: str) -> int:
        return int(get_meta(self.conn, f"gen:{modality}", "0") or 0)

    def sqlite_count(self, modality: str) -> int:
        sql = "SELECT COUNT(*) FROM vectors WHERE modality = ?"
        return int(self.conn.execute(sql, (modality,)).fetchone()[0])

    def sqlite_ids(self, modality: str) -> np.ndarray:
        sql = "SELECT episode_id FROM vectors WHERE modality = ? ORDER BY episode_id"
        rows = self.conn.execute(sql, (modality,)).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def tomb_seq(self) -> int:
        return int(self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM tombstones").fetchone()[0])

    def tombstoned_ids(self, modality: str) -> np.ndarray:
        sql = "SELECT episode_id FROM tombstones WHERE modality = ?"
        return np.array([r[0] for r in self.conn.execute(sql, (modality,))], dtype=np.int64)

    def dim(self, modality: str) -> int | None:
        """The dimension of this modality's vectors (None while it has none)."""
        if modality in self._indexes:
            return self._indexes[modality].dim
        sql = "SELECT dim FROM vectors WHERE modality = ? LIMIT 1"
        row = self.conn.execute(sql, (modality,)).fetchone()
        return int(row[0]) if row else None

    def read_vectors(self, modality: str, after_id: int = 0):
        """Yield ``(ids int64[n], x float32[n, d])`` chunks of SQLite vectors with id > after_id."""
        last = after_id
        sql = (
            "SELECT episode_id, dim, data FROM vectors WHERE modality = ? AND episode_id > ? "
            "ORDER BY episode_id LIMIT ?"
        )
        while rows := self.conn.execute(sql, (modality, last, READ_BATCH)).fetchall():
            d = int(rows[0][1])
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            x = np.frombuffer(b"".join(r[2] for r in rows), dtype="<f4").reshape(len(rows), d)
            yield ids, x.astype(np.float32)
            last = int(ids[-1])

    # --- building ---------------------------------------------------------------------------

    def build_from_sqlite(self, modality: str) -> tuple[FaissIndex | None, IndexState]:
        """A fresh index of every SQLite vector of ``modality`` (None if there are none)."""
        state = IndexState(gen=self.sqlite_gen(modality), tomb_seq=self.tomb_seq())
        state.build = uuid.uuid4().hex[:12]
        n = self.sqlite_count(modality)
        if n == 0:
            return None, state
        factory = choose_factory(n) if self.factory == AUTO else self.factory
        t0 = time.perf_counter()
        chunks = list(self.read_vectors(modality))
        ids = np.concatenate([c[0] for c in chunks])
        x = np.concatenate([c[1] for c in chunks]) if len(chunks) > 1 else chunks[0][1]
        del chunks
        index = FaissIndex(x.shape[1], factory=factory, metric="ip")
        if not index.index.is_trained:
            index.train(_train_sample(x, index))
        index.add(ids, x)
        if index.ivf is not None:
            index.nprobe, index.filter_gain = tune(index, ids, x)
            state.tuned_n, state.filter_gain = index.ntotal, index.filter_gain
        state.max_id, state.built_n, state.ntotal = int(ids[-1]), index.ntotal, index.ntotal
        state.nprobe = index.nprobe
        logger.info(
            "built %s index %s: %d vectors, nprobe %s, %.1f s",
            modality, factory, index.ntotal, index.nprobe, time.perf_counter() - t0,
        )  # fmt: skip
        return index, state

    def catch_up(self, modality: str) -> int:
        """Add the SQLite vectors newer than the in-memory index; returns how many."""
        state = self._states.setdefault(modality, IndexState())
        index = self._indexes.get(modality)
        added = 0
        for ids, x in self.read_vectors(modality, state.max_id):
            if index is None:
                index = FaissIndex(x.shape[1], factory=_first_factory(self.factory), metric="ip")
                self._indexes[modality] = index
                state.build = state.build or uuid.uuid4().hex[:12]
            index.add(ids, x)
            state.max_id = int(ids[-1])
            added += len(ids)
        if index is not None:
            state.ntotal = index.ntotal
        state.changes += added
        return added

    # --- files ------------------------------------------------------------------------------

    def _read_hint(self, modality: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.hint_path(modality).read_text())
        except (OSError, ValueError):
            return None

    def load_file(self, modality: str) -> tuple[FaissIndex, IndexState] | None:
        """The saved index and its state (None when missing or unreadable; logged)."""
        path = self.path(modality)
        if not path.exists():
            return None
        try:
            index = FaissIndex.load(path)
        except IndexMismatch as e:
            logger.warning("%s", e)
            return None
        ids = index.ids()
        max_id = int(ids.max()) if ids.size else 0
        hint = self._read_hint(modality)
        if hint and hint.get("ntotal") == index.ntotal and hint.get("max_id") == max_id:
            state = IndexState(**{k: v for k, v in hint.items() if k in IndexState.__slots__})
        else:  # killed between the file and its hint: describe the file by its own ids
            logger.info("%s index hint does not match the file; using the file's ids", modality)
            state = IndexState(max_id=max_id, built_n=index.ntotal, build=uuid.uuid4().hex[:12])
            state.nprobe = None if index.ivf is None else max(1, index.ivf.nlist // 32)
        state.ntotal = index.ntotal
        if state.nprobe is not None:
            index.nprobe = state.nprobe
        index.filter_gain = float(state.filter_gain)
        return index, state

    def save(self, modality: str) -> None:
        """Write the in-memory index and its hint (or delete both when the modality is empty)."""
        index, state = self._indexes.get(modality), self._states.get(modality)
        if index is None or index.ntotal == 0:
            self.path(modality).unlink(missing_ok=True)
            self.hint_path(modality).unlink(missing_ok=True)
            self._indexes.pop(modality, None)
        else:
            t0 = time.perf_counter()
            index.save(self.path(modality))
            state = self._states.setdefault(modality, IndexState())
            state.save_s = time.perf_counter() - t0
            state.ntotal, state.nprobe = index.ntotal, index.nprobe
            tmp = self.hint_path(modality).with_suffix(".json.tmp")
            tmp.write_text(json.dumps(state.hint()) + "\n")
            os.replace(tmp, self.hint_path(modality))
        if state is not None:
            state.changes, state.saved_at = 0, time.monotonic()
        self._prune_tombstones()

    def _prune_tombstones(self) -> None:
        """Drop tombstones no saved file needs any more (every file holds exactly SQLite's ids)."""
        for modality in MODALITIES:
            index = self._indexes.get(modality)
            n = 0 if index is None else index.ntotal
            if n != self.sqlite_count(modality) or self._states.get(modality, IndexState()).changes:
                return
        if self.conn.execute("SELECT 1 FROM tombstones LIMIT 1").fetchone():
            self.conn.execute("DELETE FROM tombstones")

    def maybe_save(self, modality: str) -> None:
        """Save when enough changed or enough time passed since the last save (writer)."""
        state = self._states.get(modality)
        if state is None or state.changes == 0:
            return
        n = state.ntotal
        due = state.changes >= max(SAVE_MIN_CHANGES, SAVE_FRACTION * n)
        wait = max(SAVE_INTERVAL_S, SAVE_COST_FACTOR * state.save_s)
        if due or time.monotonic() - state.saved_at >= wait:
            self._save_quietly(modality)

    def _save_quietly(self, modality: str) -> None:
        """Save; a failure (e.g. a full disk) is logged: the index is derived data."""
        try:
            self.save(modality)
        except (OSError, RuntimeError, sqlite3.Error) as e:
            logger.warning(
                "could not save the %s index (%s); it will be caught up later", modality, e
            )

    def flush(self) -> None:
        """Save every index with unsaved changes (writer close; a background rebuild still
        running is dropped: the next writer starts it again)."""
        for modality in MODALITIES:
            self._finish_background(modality)
            if self._states.get(modality, IndexState()).changes:
                self._save_quietly(modality)

    def problems(self, modality: str) -> list[str]:
        """How the saved index disagrees with SQLite (empty if it is sound).

        A file that is merely behind (it lacks vectors newer than its newest) is sound: it is
        caught up on open. Unsound: a hint without its file, an unreadable file, ids SQLite never
        had (and never deleted), or ids at or below the file's newest that the file lacks.
        """
        path = self.path(modality)
        loaded = self.load_file(modality)
        if loaded is None:
            if path.exists():
                return [f"{path} is unreadable; run `eidetic store rebuild`"]
            if self.hint_path(modality).exists():
                return [f"{path} is missing; run `eidetic store rebuild`"]
            return []
        index, _ = loaded
        have = np.sort(index.ids())
        want = self.sqlite_ids(modality)
        extra = np.setdiff1d(np.setdiff1d(have, want), self.tombstoned_ids(modality))
        top = int(have[-1]) if have.size else 0
        lost = np.setdiff1d(want[want <= top], have)
        if not extra.size and not lost.size:
            return []
        return [
            f"{path} disagrees with SQLite: ids in the index only: {extra[:5].tolist()} "
            f"({extra.size}), in SQLite only: {lost[:5].tolist()} ({lost.size}); rebuild it"
        ]

    # --- lifecycle --------------------------------------------------------------------------

    def open(self) -> None:
        """Writer: load each index, rebuild any missing/unreadable/disagreeing one, catch up."""
        for modality in MODALITIES:
            loaded = self.load_file(modality)
            problems = self.problems(modality) if loaded is not None else []
            if loaded is None and self.hint_path(modality).exists():
                problems = self.problems(modality)
            if problems or (loaded is None and self.sqlite_count(modality) > SAVE_MIN_CHANGES):
                if problems:
                    logger.warning("rebuilding %s index: %s", modality, "; ".join(problems))
                self._rebuild_one(modality)
                continue
            if loaded is not None:
                self._indexes[modality], self._states[modality] = loaded
            if self.catch_up(modality):
                logger.info("%s index caught up with SQLite", modality)
            state = self._states[modality]
            state.gen = self.sqlite_gen(modality)
            state.dead = max(0, state.ntotal - self.sqlite_count(modality))
            if not self._maybe_rebuild(modality):
                self.maybe_save(modality)

    def rebuild(self) -> dict[str, int]:
        """Rebuild every index from SQLite (saved by a writer); returns vectors per modality."""
        with self.lock:
            return {m: self._rebuild_one(m) for m in MODALITIES}

    def _rebuild_one(self, modality: str) -> int:
        self._building.pop(modality, None)  # a background build in flight is superseded
        index, state = self.build_from_sqlite(modality)
        if index is None:
            self._indexes.pop(modality, None)
        else:
            self._indexes[modality] = index
        state.changes = 1  # unsaved
        self._states[modality] = state
        if not self.readonly:
            self._save_quietly(modality)
        return 0 if index is None else index.ntotal

    def _maybe_rebuild(self, modality: str) -> bool:
        """Writer: retrain a grown index, switch Flat to IVF, or compact deleted vectors."""
        index, state = self._indexes.get(modality), self._states.get(modality)
        if index is None or state is None or self.readonly:
            return False
        n = index.ntotal
        why = None
        if self.factory == AUTO and index.exact and n >= FLAT_MAX:
            why = f"{n} vectors: switching to IVF"
        elif self.factory == AUTO and index.ivf is not None and n >= GROW_FACTOR * state.built_n:
            why = f"{n} vectors, trained at {state.built_n}: retraining"
        elif not index.exact and state.dead > COMPACT_FRACTION * n:
            why = "compacting deleted vectors"
        if why is None:
            if index.ivf is not None and n >= RETUNE_FACTOR * max(state.tuned_n, state.built_n, 1):
                self._retune(modality, index, state)
            return False
        if n >= BACKGROUND_MIN:
            self._start_background(modality, why)
            return False
        logger.info("rebuilding %s index (%s)", modality, why)
        self._rebuild_one(modality)
        return True

    def _retune(self, modality: str, index: FaissIndex, state: IndexState) -> None:
        """Tune nprobe and filter_gain again on the vectors the index holds now (its lists
        are fuller than when it was trained); saved with the index."""
        t0 = time.perf_counter()
        ids = index.ids()
        sample = np.sort(np.random.default_rng(2).choice(ids, min(ids.size, TUNE_SAMPLE), replace=False))
        _, x = index.vectors(sample)
        before = (index.nprobe, index.filter_gain)
        index.nprobe, index.filter_gain = tune(index, sample, x, exhaustive=True)
        state.nprobe, state.filter_gain, state.tuned_n = index.nprobe, index.filter_gain, index.ntotal
        state.build = uuid.uuid4().hex[:12]  # readers load the re-tuned file once it is saved
        state.changes += 1
        logger.info("re-tuned the %s index at %d vectors: nprobe %s -> %s, filter gain %s -> %s "
                    "(%.1f s)", modality, index.ntotal, before[0], index.nprobe, before[1],
                    index.filter_gain, time.perf_counter() - t0)  # fmt: skip

    # --- background rebuilds (writer) -------------------------------------------------------

    def _start_background(self, modality: str, why: str) -> None:
        """Build the new index in a thread from its own read connection (a snapshot of the
        vectors up to some id); :meth:`_finish_background` swaps it in and adds the vectors
        committed meanwhile. Inserts go on into the current index (faiss releases the GIL)."""
        if modality in self._building:
            return
        logger.info("rebuilding %s index in the background (%s)", modality, why)
        db = Path(self.conn.execute("PRAGMA database_list").fetchone()[2])
        box: dict[str, Any] = {}

        def run() -> None:
            conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True,
                                   check_same_thread=False)  # fmt: skip
            try:
                view = IndexSet.__new__(IndexSet)
                view.conn, view.factory = conn, self.factory
                box["result"] = view.build_from_sqlite(modality)
            except BaseException as e:  # reported by _finish_background
                box["error"] = e
            finally:
                conn.close()

        thread = threading.Thread(target=run, name=f"eidetic-index-{modality}", daemon=True)
        self._building[modality] = (thread, box)
        thread.start()

    def _finish_background(self, modality: str, *, wait: bool = False) -> bool:
        """Swap in a finished background build (caught up with SQLite); True if swapped."""
        job = self._building.get(modality)
        if job is None:
            return False
        thread, box = job
        if wait:
            thread.join()
        if thread.is_alive():
            return False
        del self._building[modality]
        if "error" in box or box.get("result", (None,))[0] is None:
            logger.warning("background rebuild of the %s index failed (%s); keeping the old one",
                           modality, box.get("error"))  # fmt: skip
            return False
        index, state = box["result"]
        self._indexes[modality], self._states[modality] = index, state
        added = self.catch_up(modality)
        state.gen = self.sqlite_gen(modality)
        state.dead = max(0, index.ntotal - self.sqlite_count(modality))  # deleted meanwhile
        state.changes = 1
        logger.info("swapped in the rebuilt %s index (+%d added meanwhile)", modality, added)
        self._save_quietly(modality)
        return True

    def get(self, modality: str) -> FaissIndex | None:
        """The current index of ``modality`` (a reader catches up when SQLite moved on)."""
        check_modality(modality)
        if not self.readonly:
            return self._indexes.get(modality)
        gen = self.sqlite_gen(modality)
        state = self._states.get(modality)
        if state is not None and state.gen == gen:
            return self._indexes.get(modality)
        hint = self._read_hint(modality)
        if state is None or (hint and hint.get("build") != state.build):
            loaded = self.load_file(modality)
            if loaded is not None:
                self._indexes[modality], self._states[modality] = loaded
            elif state is None:
                index, self._states[modality] = self.build_from_sqlite(modality)
                if index is not None:
                    self._indexes[modality] = index
        self.catch_up(modality)
        self._states[modality].gen = gen
        return self._indexes.get(modality)

    # --- writer updates (after the SQLite transaction committed) ----------------------------

    def add(self, modality: str, ids: np.ndarray, x: np.ndarray, gen: int) -> None:
        index = self._indexes.get(modality)
        state = self._states.setdefault(modality, IndexState())
        if index is None:
            index = FaissIndex(x.shape[1], factory=_first_factory(self.factory), metric="ip")
            self._indexes[modality] = index
            state.build = uuid.uuid4().hex[:12]
        index.add(ids, x)
        state.max_id = max(state.max_id, int(ids.max()))
        state.gen, state.ntotal = gen, index.ntotal
        state.changes += len(ids)
        if not self._finish_background(modality) and not self._maybe_rebuild(modality):
            self.maybe_save(modality)

    def remove(self, modality: str, ids: np.ndarray, gen: int) -> None:
        index = self._indexes.get(modality)
        state = self._states.setdefault(modality, IndexState())
        if index is not None and index.exact:
            index.remove(ids)  # O(n), cheap while Flat; other types keep tombstoned vectors
        elif index is not None:
            state.dead += len(ids)  # committed deletes of vectors the index holds
        state.gen, state.ntotal = gen, 0 if index is None else index.ntotal
        state.changes += len(ids)
        if not self._finish_background(modality) and not self._maybe_rebuild(modality):
            self.maybe_save(modality)

    def ntotal(self) -> dict[str, int]:
        return {m: (0 if (i := self._indexes.get(m)) is None else i.ntotal) for m in MODALITIES}


def _first_factory(factory: str) -> str:
    return choose_factory(0) if factory == AUTO else factory


def _train_sample(x: np.ndarray, index: FaissIndex) -> np.ndarray:
    """A seeded random sample of ``x`` large enough to train ``index``."""
    ivf = index.ivf
    want = x.shape[0] if ivf is None else IVF_TRAIN_PER_LIST * ivf.nlist
    if x.shape[0] <= want:
        return x
    rows = np.random.default_rng(0).choice(x.shape[0], want, replace=False)
    return x[np.sort(rows)]


def tune(
    index: FaissIndex, ids: np.ndarray, x: np.ndarray, *, exhaustive: bool = False
) -> tuple[int, float]:
    """``(nprobe, filter_gain)`` for an IVF ``index``: :func:`tune_nprobe` (with its margin),
    then the smallest gain of ``FILTER_GAINS`` at which searches allowed a random
    ``FILTER_TUNE_FRACTION`` of the vectors reach ``TUNE_RECALL`` visiting ``nprobe * gain /
    fraction`` lists (the margin is already in ``nprobe``).

    ``ids, x``: the index's vectors (all of them), or with ``exhaustive`` a sample of them (the
    ground truth then comes from an exhaustive search of the index: every list visited)."""
    raw = tune_nprobe(index, ids, x, exhaustive=exhaustive)
    nprobe = int(min(index.ivf.nlist, raw * TUNE_MARGIN))
    logger.info("nprobe %d of %d lists (x%d margin)", nprobe, index.ivf.nlist, TUNE_MARGIN)
    return nprobe, tune_filter_gain(index, ids, x, nprobe, exhaustive=exhaustive)


def _queries(x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = rng.choice(x.shape[0], min(TUNE_QUERIES, x.shape[0]), replace=False)
    return q, np.ascontiguousarray(x[q])


def _recall(truth: list[set[int]], I: np.ndarray, self_ids: list[int]) -> float:
    hits = sum(len(t & (set(row.tolist()) - {s})) for t, row, s in zip(truth, I, self_ids))
    return hits / max(1, sum(len(t) for t in truth))


def tune_nprobe(
    index: FaissIndex, ids: np.ndarray, x: np.ndarray, *, exhaustive: bool = False
) -> int:
    """The smallest nprobe whose recall@10 on stored vectors (as queries, themselves excluded)
    reaches ``TUNE_RECALL`` against exact search (every list when none does); :func:`tune`
    adds the margin."""
    import faiss

    ivf = index.ivf
    q, xq = _queries(x, 1)
    if exhaustive:
        _, gt = index.search(xq, 11, nprobe=ivf.nlist)
    else:
        _, rows = faiss.knn(xq, x, 11, metric=faiss.METRIC_INNER_PRODUCT)
        gt = ids[rows]
    self_ids = [int(ids[qi]) for qi in q]
    truth = [set(r.tolist()) - {s, -1} for r, s in zip(gt, self_ids)]
    for nprobe in (p for p in NPROBES if p <= ivf.nlist):
        _, I = index.search(xq, 11, nprobe=nprobe)
        recall = _recall(truth, I, self_ids)
        if recall >= TUNE_RECALL:
            logger.info("nprobe %d of %d lists: tuning recall@10 %.3f", nprobe, ivf.nlist, recall)
            return int(nprobe)
    return int(ivf.nlist)


def tune_filter_gain(
    index: FaissIndex, ids: np.ndarray, x: np.ndarray, nprobe: int, *, exhaustive: bool = False
) -> float:
    """The smallest gain of ``FILTER_GAINS`` reaching ``TUNE_RECALL`` for searches allowed a
    random ``FILTER_TUNE_FRACTION`` of the index, visiting ``nprobe * gain / fraction`` lists."""
    import faiss

    ivf = index.ivf
    every = index.ids() if exhaustive else ids
    rng = np.random.default_rng(3)
    allowed = np.sort(rng.choice(every, max(11, int(every.size * FILTER_TUNE_FRACTION)), replace=False))
    frac = allowed.size / max(1, index.ntotal)
    q, xq = _queries(x, 4)
    self_ids = [int(ids[qi]) for qi in q]
    if exhaustive:
        _, gt = index.search(xq, 11, allowed=allowed, nprobe=ivf.nlist)
    else:
        rows = np.flatnonzero(np.isin(ids, allowed))
        _, r = faiss.knn(xq, np.ascontiguousarray(x[rows]), 11, metric=faiss.METRIC_INNER_PRODUCT)
        gt = ids[rows][r]
    truth_sets = [{i for i in g.tolist() if i not in (s, -1)} for g, s in zip(gt, self_ids)]
    for gain in FILTER_GAINS:
        probe = int(min(ivf.nlist, np.ceil(nprobe * gain / frac)))
        _, I = index.search(xq, 11, allowed=allowed, nprobe=probe)
        recall = _recall(truth_sets, I, self_ids)
        if recall >= TUNE_RECALL or probe >= ivf.nlist:
            logger.info("filter gain %.2f (%d of %d lists at %.0f %% allowed): recall@10 %.3f",
                        gain, probe, ivf.nlist, 100 * frac, recall)  # fmt: skip
            return float(gain)
    return float(FILTER_GAINS[-1])
