"""The store's FAISS indexes (one per modality), kept in step with the SQLite ``vectors`` table.

SQLite is the source of truth. Every transaction that changes the vectors of a modality bumps the
meta key ``gen:<modality>``; after saving ``index/<modality>.faiss`` the writer records the
generation it reflects in ``index/<modality>.faiss.gen``. A reader compares the three to decide
whether its in-memory index is current, whether the file on disk is, or whether it must rebuild
from SQLite. A writer verifies ids on open and rebuilds any missing, unreadable or stale file.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

import numpy as np

from memory.errors import IndexMismatch, ParameterError
from memory.index import DEFAULT_FACTORY, FaissIndex
from memory.schema import blob_vector, get_meta

logger = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = ("visual", "audio")
INDEX_DIR = "index"
REBUILD_BATCH = 10_000  # vectors read from SQLite per chunk while rebuilding


def check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ParameterError(f"modality must be one of {MODALITIES}, got {modality!r}")


class IndexSet:
    """FAISS indexes of one store, by modality.

    Parameters
    ----------
    root : Path
        The store directory (indexes live in ``root/index``).
    conn : sqlite3.Connection
        The store's connection (shared; callers serialise access with ``lock``).
    readonly : bool
        Readers never write files: a stale index is rebuilt in memory only.
    factory : str
        FAISS factory string for new indexes.
    """

    def __init__(
        self,
        root: Path,
        conn: sqlite3.Connection,
        lock: threading.RLock,
        *,
        readonly: bool,
        factory: str = DEFAULT_FACTORY,
    ) -> None:
        self.dir = root / INDEX_DIR
        self.conn = conn
        self.lock = lock
        self.readonly = readonly
        self.factory = factory
        self._indexes: dict[str, FaissIndex] = {}
        self._gens: dict[str, int] = {}

    # --- SQLite side ------------------------------------------------------------------------

    def path(self, modality: str) -> Path:
        return self.dir / f"{modality}.faiss"

    def sqlite_gen(self, modality: str) -> int:
        return int(get_meta(self.conn, f"gen:{modality}", "0") or 0)

    def sqlite_count(self, modality: str) -> int:
        sql = "SELECT COUNT(*) FROM vectors WHERE modality = ?"
        return int(self.conn.execute(sql, (modality,)).fetchone()[0])

    def sqlite_ids(self, modality: str) -> np.ndarray:
        sql = "SELECT episode_id FROM vectors WHERE modality = ? ORDER BY episode_id"
        rows = self.conn.execute(sql, (modality,)).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    def dim(self, modality: str) -> int | None:
        """The dimension of this modality's vectors (None while it has none)."""
        if modality in self._indexes:
            return self._indexes[modality].dim
        sql = "SELECT dim FROM vectors WHERE modality = ? LIMIT 1"
        row = self.conn.execute(sql, (modality,)).fetchone()
        return int(row[0]) if row else None

    def build_from_sqlite(self, modality: str) -> FaissIndex | None:
        """A fresh index holding every SQLite vector of ``modality`` (None if there are none)."""
        cur = self.conn.execute(
            "SELECT episode_id, dim, data FROM vectors WHERE modality = ? ORDER BY episode_id",
            (modality,),
        )
        index: FaissIndex | None = None
        while rows := cur.fetchmany(REBUILD_BATCH):
            if index is None:
                index = FaissIndex(int(rows[0][1]), factory=self.factory, metric="ip")
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            index.add(ids, np.stack([blob_vector(r[2]) for r in rows]))
        return index

    # --- files ------------------------------------------------------------------------------

    def _gen_path(self, modality: str) -> Path:
        return self.dir / f"{modality}.faiss.gen"

    def _file_gen(self, modality: str) -> int | None:
        try:
            return int(self._gen_path(modality).read_text().strip())
        except (OSError, ValueError):
            return None

    def load_file(self, modality: str) -> FaissIndex | None:
        """The index saved on disk (None when missing or unreadable; logged)."""
        path = self.path(modality)
        if not path.exists():
            return None
        try:
            return FaissIndex.load(path)
        except IndexMismatch as e:
            logger.warning("%s", e)
            return None

    def save(self, modality: str) -> None:
        """Write the in-memory index (or delete the file when the modality is empty)."""
        gen = self._gens.get(modality, self.sqlite_gen(modality))
        index = self._indexes.get(modality)
        if index is None or index.ntotal == 0:
            self.path(modality).unlink(missing_ok=True)
            self._gen_path(modality).unlink(missing_ok=True)
            self._indexes.pop(modality, None)
            return
        index.save(self.path(modality))
        tmp = self._gen_path(modality).with_suffix(".gen.tmp")
        tmp.write_text(f"{gen}\n")
        tmp.replace(self._gen_path(modality))

    def problems(self, modality: str, index: FaissIndex | None = None) -> list[str]:
        """How the file on disk (or ``index``) disagrees with SQLite; empty if it agrees."""
        want = self.sqlite_ids(modality)
        index = self.load_file(modality) if index is None else index
        if index is None:
            if want.size == 0:
                return []
            state = "unreadable" if self.path(modality).exists() else "missing"
            path = self.path(modality)
            return [f"{path} is {state} but SQLite has {want.size} {modality} vectors"]
        have = np.sort(index.ids())
        if have.shape == want.shape and np.array_equal(have, want):
            return []
        extra = np.setdiff1d(have, want)[:5].tolist()
        lost = np.setdiff1d(want, have)[:5].tolist()
        return [
            f"{self.path(modality)} has {have.size} ids, SQLite {want.size} {modality} vectors "
            f"(in index only: {extra}, in SQLite only: {lost})"
        ]

    # --- lifecycle --------------------------------------------------------------------------

    def open(self) -> None:
        """Writer: load each index, rebuilding (and saving) any missing or disagreeing one."""
        for modality in MODALITIES:
            gen = self.sqlite_gen(modality)
            index = self.load_file(modality)
            problems = self.problems(modality, index) if index is not None else []
            if index is None and self.sqlite_count(modality):
                problems = self.problems(modality)
            if problems:
                logger.warning("rebuilding %s index from SQLite: %s", modality, "; ".join(problems))
                self._replace(modality, self.build_from_sqlite(modality), gen)
                self.save(modality)
            elif index is not None:
                self._replace(modality, index, gen)
                if self._file_gen(modality) != gen:
                    self.save(modality)

    def rebuild(self) -> dict[str, int]:
        """Rebuild every index from SQLite; returns vectors per modality."""
        counts = {}
        with self.lock:
            for modality in MODALITIES:
                index = self.build_from_sqlite(modality)
                self._replace(modality, index, self.sqlite_gen(modality))
                if not self.readonly:
                    self.save(modality)
                counts[modality] = 0 if index is None else index.ntotal
                logger.info("rebuilt %s index: %d vectors", modality, counts[modality])
        return counts

    def _replace(self, modality: str, index: FaissIndex | None, gen: int) -> None:
        if index is None:
            self._indexes.pop(modality, None)
        else:
            self._indexes[modality] = index
        self._gens[modality] = gen

    def get(self, modality: str) -> FaissIndex | None:
        """The current index of ``modality`` (a reader refreshes it when SQLite moved on)."""
        check_modality(modality)
        if not self.readonly:
            return self._indexes.get(modality)
        gen = self.sqlite_gen(modality)
        if self._gens.get(modality) == gen:
            return self._indexes.get(modality)
        index = None
        if self._file_gen(modality) == gen:
            index = self.load_file(modality)
            if index is not None and index.ntotal != self.sqlite_count(modality):
                index = None
        if index is None and self.sqlite_count(modality):
            logger.info("%s index file is behind SQLite (gen %d); reading vectors", modality, gen)
            index = self.build_from_sqlite(modality)
        self._replace(modality, index, gen)
        return index

    # --- writer updates (after the SQLite transaction committed) ----------------------------

    def add(self, modality: str, ids: np.ndarray, x: np.ndarray, gen: int) -> None:
        index = self._indexes.get(modality)
        if index is None:
            index = FaissIndex(x.shape[1], factory=self.factory, metric="ip")
            self._indexes[modality] = index
        index.add(ids, x)
        self._gens[modality] = gen

    def remove(self, modality: str, ids: np.ndarray, gen: int) -> None:
        index = self._indexes.get(modality)
        if index is not None:
            index.remove(ids)
        self._gens[modality] = gen

    def ntotal(self) -> dict[str, int]:
        return {m: (0 if (i := self._indexes.get(m)) is None else i.ntotal) for m in MODALITIES}
