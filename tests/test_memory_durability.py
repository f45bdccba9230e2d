"""Crash safety and schema upkeep of the store: kill -9 of a writer process, migrations."""

from __future__ import annotations

import dataclasses
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from memory.errors import EpisodeNotFound, SchemaError
from memory.schema import DDL_V1, SCHEMA_VERSION
from memory.store import EpisodeStore

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from memory_writer import make_episode, vector  # noqa: E402

ROUNDS = 8


def run_writer_and_kill(path: Path, seq: int, rng: np.random.Generator) -> list[str]:
    """Start a writer process, SIGKILL it at a random moment mid-ingest; its complete lines."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "memory_writer.py"), str(path), str(seq)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "READY"
    time.sleep(float(rng.uniform(0.05, 1.2)))
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return out.split("\n")[:-1]  # the last piece has no newline: not acknowledged


@pytest.mark.slow
def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "store"
    rng = np.random.default_rng(7)
    added: dict[int, int] = {}  # episode id -> seq
    forgotten: set[int] = set()
    maybe_forgotten: set[int] = set()  # forget() called, killed before it returned
    sounds: set[int] = set()
    seq = 0
    for _ in range(ROUNDS):
        for line in run_writer_and_kill(path, seq, rng):
            kind, *rest = line.split()
            if kind == "A":
                added[int(rest[1])] = int(rest[0])
                seq = max(seq, int(rest[0]) + 1)
            elif kind == "f":
                maybe_forgotten.add(int(rest[0]))
            elif kind == "F":
                forgotten.add(int(rest[0]))
            elif kind == "S":
                sounds.add(int(rest[0]))
        seq += 100  # unacknowledged seqs may have been written: never reuse them
        with EpisodeStore(path, readonly=True) as r:  # straight after the kill, no writer
            report = r.check()
            assert report["ok"], report
            alive = sorted(set(added) - forgotten - maybe_forgotten)
            got = {ep.episode_id: ep for ep in r.get_many(alive)}
            assert sorted(got) == alive, "an acknowledged episode was lost"
            for episode_id in alive:
                ep, want = r.get(episode_id), make_episode(added[episode_id])
                assert (ep.summary, ep.source, ep.t_start) == (want.summary, want.source,
                                                               want.t_start)  # fmt: skip
                np.testing.assert_array_equal(ep.visual, want.visual)
                assert len(ep.keyframes) == len(want.keyframe_times)
            for episode_id in forgotten:
                with pytest.raises(EpisodeNotFound):
                    r.get(episode_id)
            assert sounds <= {s.sound_id for s in r.sounds(source="cam9", limit=10**6)}
            probe = alive[int(rng.integers(0, len(alive)))]
            hits = r.search_vectors("visual", vector(added[probe]), k=1)
            assert hits[0][0] == probe  # the index (file + catch-up) finds the newest writes
    assert len(added) > 50 and forgotten, (len(added), len(forgotten))
    with EpisodeStore(path) as s:  # a writer cleans up what the kills left behind
        assert s.check()["ok"]
        stored = {ep.episode_id for ep in s.episodes(limit=10**6)}
        assert set(added) - forgotten - maybe_forgotten <= stored and not forgotten & stored


def make_v1_store(path: Path) -> None:
    """A store as eidetic wrote it at schema version 1 (one episode with a keyframe)."""
    path.mkdir(parents=True)
    conn = sqlite3.connect(path / "eidetic.db")
    conn.executescript(DDL_V1)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1'), ('next_episode_id', '2')")
    conn.execute(
        "INSERT INTO episodes (id, source, t_start, t_end, labels, summary, keyframes, "
        "created_at) VALUES (1, 'cam1', 1.0, 3.0, '[\"glass_breaking\"]', 'glass broke', "
        "'[\"keyframes/1/0.jpg\"]', 0)"
    )
    conn.execute("INSERT INTO episodes_fts (rowid, summary, labels, source) VALUES "
                 "(1, 'glass broke', 'glass breaking', 'cam1')")  # fmt: skip
    x = np.full(8, 8**-0.5, np.float32)
    conn.execute("INSERT INTO vectors VALUES (1, 'visual', 8, ?)", (x.tobytes(),))
    conn.commit()
    conn.close()
    from PIL import Image

    (path / "keyframes" / "1").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(path / "keyframes" / "1" / "0.jpg")


def test_old_schema_is_migrated_by_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "old"
    make_v1_store(path)
    with pytest.raises(SchemaError, match="open it once with a writer"):
        EpisodeStore(path, readonly=True)
    with EpisodeStore(path) as s:
        assert s.check() == {"ok": True, "episodes": 1, "vectors": 1, "problems": []}
        ep = s.get(1)
        assert ep.labels == ("glass_breaking",) and ep.clip is None
        row = s._conn.execute("SELECT bytes FROM episodes WHERE id = 1").fetchone()
        assert row[0] == (path / "keyframes" / "1" / "0.jpg").stat().st_size  # backfilled
        assert [i for i, _ in s.search_text("glass")] == [1]
        new = dataclasses.replace(make_episode(6), visual=np.full(8, 8**-0.5, np.float32))
        assert s.add(new).episode_id == 2
        assert s.check()["ok"]
    conn = sqlite3.connect(path / "eidetic.db")
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert int(version) == SCHEMA_VERSION
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="version 99"):
        EpisodeStore(path)


def test_hint_file_is_json(tmp_path: Path) -> None:
    with EpisodeStore(tmp_path / "s") as s:
        s.add(make_episode(3))
    hint = json.loads((tmp_path / "s" / "index" / "visual.faiss.json").read_text())
    assert hint["ntotal"] == 1 and hint["max_id"] == 1 and hint["nprobe"] is None
