"""The ingest journal: what a batch has finished, so an interrupted batch resumes without redoing it.

One SQLite file in the store (``<store>/ingest-journal.db``, WAL). A file is identified by its
resolved path, size and modification time (a changed file is ingested again). Recorded, each in
its own committed transaction and only after the work it names is stored:

- ``audio``  (per shard): the capture windows and sounds found by the audio pass;
- ``window`` (per shard and window index): the episode stored for that capture window;
- ``shard``  (per shard): every window of the shard is stored;
- ``file``   : the whole file is done (its report is kept and returned on resume).

Payloads are pickled (windows, sounds with their embeddings): the journal is private to the store.
"""

from __future__ import annotations

import pickle
import sqlite3
import threading
from pathlib import Path
from typing import Any

JOURNAL_NAME = "ingest-journal.db"
FILE = -1  # shard number of whole-file entries

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    file_key TEXT NOT NULL, kind TEXT NOT NULL, shard INTEGER NOT NULL, item INTEGER NOT NULL,
    payload BLOB, PRIMARY KEY (file_key, kind, shard, item)
);
"""


def file_key(path: str) -> str:
    """``resolved path | size | mtime_ns``: changes when the file does."""
    p = Path(path).resolve()
    st = p.stat()
    return f"{p}|{st.st_size}|{st.st_mtime_ns}"


class Journal:
    """Thread-safe access to the journal of one store (any number of processes may write)."""

    def __init__(self, store: Path) -> None:
        store.mkdir(parents=True, exist_ok=True)
        self.path = store / JOURNAL_NAME
        self._db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def put(self, key: str, kind: str, payload: Any = None, *, shard: int = FILE, item: int = 0) -> None:
        blob = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)", (key, kind, shard, item, blob)
            )

    def get(self, key: str, kind: str, *, shard: int = FILE, item: int = 0, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute(
                "SELECT payload FROM entries WHERE file_key=? AND kind=? AND shard=? AND item=?",
                (key, kind, shard, item),
            ).fetchone()
        return default if row is None else pickle.loads(row[0])

    def has(self, key: str, kind: str, *, shard: int = FILE, item: int = 0) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM entries WHERE file_key=? AND kind=? AND shard=? AND item=?",
                (key, kind, shard, item),
            ).fetchone()
        return row is not None

    def close(self) -> None:
        with self._lock:
            self._db.close()
