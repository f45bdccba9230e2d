"""EpisodeStore on real SQLite + FAISS in tmp_path: writes, reads, search, recovery, readers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from memory.errors import (
    EpisodeNotFound,
    IndexMismatch,
    ParameterError,
    ReadOnlyStore,
    SchemaError,
    StoreError,
    StoreLocked,
)
from memory.store import EpisodeStore
from memory.types import Episode, ObjectRecord, SoundRecord

DIM = 16
HOSTILE = ['"glass" OR (', "glass*", "NEAR(a b)", "a AND", ")(", "'; DROP TABLE episodes; --",
           "col:glass", "^start", '""', "", "   ", "✓ ünïcode", "-glass", "glass_"]  # fmt: skip


def unit(rng: np.random.Generator, d: int = DIM) -> np.ndarray:
    x = rng.standard_normal(d).astype(np.float32)
    return x / np.linalg.norm(x)


def image(value: int) -> np.ndarray:
    img = np.zeros((24, 32, 3), np.uint8)
    img[..., 0] = value
    img[4:12, 4:12] = 255
    return img


def episode(
    rng: np.random.Generator,
    label: str,
    t0: float,
    *,
    source: str = "cam1",
    audio: bool = False,
    keyframes: int = 0,
) -> Episode:
    """An episode over [t0, t0 + 2] with a sound, an object and ``keyframes`` keyframe times."""
    sound = SoundRecord(label, 0.8, t0 + 0.1, t0 + 0.6)
    obj = ObjectRecord(1, "object", t0, t0 + 1.0, 5, (1.0, 2.0, 3.0, 4.0), descriptor=unit(rng, 8))
    return Episode(
        source=source, t_start=t0, t_end=t0 + 2.0, labels=(label,), summary=f"{label} heard",
        sounds=(sound,), objects=(obj,),
        keyframe_times=tuple(t0 + 0.5 * n for n in range(keyframes)),
        visual=unit(rng), audio=unit(rng, 8) if audio else None,
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path):
    with EpisodeStore(tmp_path / "store") as s:
        yield s


def fill(store: EpisodeStore, rng: np.random.Generator) -> list[Episode]:
    labels = ["door_wood_knock", "glass_breaking", "sound", "door_wood_knock", "dog"]
    return [
        store.add(
            episode(rng, label, 10.0 * i, source="cam1" if i % 2 == 0 else "cam2", audio=i < 2,
                    keyframes=2),
            [image(10 * i), image(10 * i + 5)],
        )  # fmt: skip
        for i, label in enumerate(labels)
    ]


def test_add_get_round_trip(store: EpisodeStore, rng: np.random.Generator) -> None:
    ep = episode(rng, "glass_breaking", 4.0, audio=True, keyframes=2)
    stored = store.add(ep, [image(1), image(2)])
    assert stored.episode_id == 1
    assert stored.keyframes == ("keyframes/1/0.jpg", "keyframes/1/1.jpg")
    got = store.get(1)
    assert got == stored  # vectors and descriptors are compare=False: check them below
    np.testing.assert_array_equal(got.visual, ep.visual)
    np.testing.assert_array_equal(got.audio, ep.audio)
    np.testing.assert_array_equal(got.objects[0].descriptor, ep.objects[0].descriptor)
    for rel in got.keyframes:
        with Image.open(store.path / rel) as im:
            assert im.size == (32, 24) and im.format == "JPEG"
    assert store.check() == {"ok": True, "episodes": 1, "vectors": 2, "problems": []}


def test_episodes_filters_and_order(store: EpisodeStore, rng: np.random.Generator) -> None:
    eps = fill(store, rng)
    assert [e.episode_id for e in store.episodes()] == [1, 2, 3, 4, 5]
    assert [e.episode_id for e in store.episodes(order="desc", limit=2)] == [5, 4]
    assert [e.episode_id for e in store.episodes(source="cam2")] == [2, 4]
    # spans are [10 i, 10 i + 2]: since/until keep overlapping spans
    assert [e.episode_id for e in store.episodes(since=11.0, until=20.0)] == [2, 3]
    assert [e.episode_id for e in store.episodes(labels=["door_wood_knock"])] == [1, 4]
    assert store.episodes()[0].visual is None  # listings skip vectors
    assert store.get_many([3, 99, 1]) == [eps[2], eps[0]]
    with pytest.raises(ParameterError, match="order"):
        store.episodes(order="sideways")  # type: ignore[arg-type]


def test_sound_log(store: EpisodeStore, rng: np.random.Generator) -> None:
    ep = store.add(episode(rng, "glass_breaking", 0.0))
    heard = [SoundRecord("dog", 0.4, 1.0, 1.5), SoundRecord("glass_breaking", 0.9, 0.1, 0.6)]
    store.add_sounds("cam1", heard, episode_id=ep.episode_id)
    store.add_sounds("cam2", [SoundRecord("dog", 0.7, 30.0, 31.0)])
    log = store.sounds()
    assert [(s.source, s.sound.label, s.sound.t_start) for s in log] == [
        ("cam1", "glass_breaking", 0.1), ("cam1", "dog", 1.0), ("cam2", "dog", 30.0)]  # fmt: skip
    assert [s.source for s in store.sounds(label="dog")] == ["cam1", "cam2"]
    assert [s.sound.t_start for s in store.sounds(since=5.0)] == [30.0]
    store.forget(ep.episode_id)  # forgetting an episode forgets its logged sounds too
    assert [s.sound.t_start for s in store.sounds()] == [30.0]


def test_forget_removes_sounds_logged_without_episode(store: EpisodeStore, rng) -> None:
    """The file pipeline logs sounds with no episode id: forgetting an episode removes those
    on its source overlapping its span, and keeps the others."""
    ep = store.add(episode(rng, "can_opening", 10.0))  # span [10, 12] on cam1
    keep = store.add(episode(rng, "can_opening", 40.0))
    store.add_sounds("cam1", [SoundRecord("can_opening", 0.8, 10.2, 10.7),  # inside
                              SoundRecord("speech", 0.5, 3.0, 10.5),  # long, overlaps the start
                              SoundRecord("dog", 0.6, 11.9, 13.0),  # overlaps the end
                              SoundRecord("dog", 0.6, 12.5, 13.0),  # after
                              SoundRecord("can_opening", 0.8, 40.2, 40.7)])  # another episode
    store.add_sounds("cam2", [SoundRecord("dog", 0.7, 10.5, 11.0)])  # another source
    store.forget(ep.episode_id)
    assert [(s.source, s.sound.t_start) for s in store.sounds()] == [
        ("cam2", 10.5), ("cam1", 12.5), ("cam1", 40.2)]  # fmt: skip
    done = store.forget_range(source="cam1", since=39.0, until=39.5)  # overlaps [40, 42]? no
    assert done["episodes"] == [] and len(store.sounds()) == 3
    done = store.forget_range(source="cam1", since=41.0, until=41.5)  # inside keep's span
    assert done["episodes"] == [keep.episode_id] and done["sounds"] == 0
    assert [(s.source, s.sound.t_start) for s in store.sounds()] == [("cam2", 10.5), ("cam1", 12.5)]
    assert store.check()["ok"]


def test_search_text(store: EpisodeStore, rng: np.random.Generator) -> None:
    fill(store, rng)
    for text in ("glass breaking", "glass broke", "Glass_Breaking", "glass"):
        assert [i for i, _ in store.search_text(text)] == [2], text
    assert {i for i, _ in store.search_text("knock")} == {1, 4}
    assert [i for i, _ in store.search_text("knock", source="cam2")] == [4]
    assert [i for i, _ in store.search_text("knock", until=5.0)] == [1]
    assert store.search_text("glass dog", match="all") == []
    assert {i for i, _ in store.search_text("glass dog")} == {2, 5}
    for text in HOSTILE:
        store.search_text(text)  # never raises


def test_search_vectors_matches_brute_force(store: EpisodeStore) -> None:
    rng = np.random.default_rng(5)
    eps = [store.add(episode(rng, "sound", float(i), source=f"cam{i % 3}")) for i in range(60)]
    xb = np.stack([e.visual for e in eps])
    xq = unit(rng)
    truth = [eps[i].episode_id for i in np.argsort(-(xb @ xq))]
    hits = store.search_vectors("visual", xq, k=5)
    assert [i for i, _ in hits] == truth[:5]
    np.testing.assert_allclose(hits[0][1], np.max(xb @ xq), rtol=1e-5)
    # filters are applied after FAISS: over-fetch until k survive
    cam2 = [i for i in truth if eps[i - 1].source == "cam2"]
    assert [i for i, _ in store.search_vectors("visual", xq, k=7, source="cam2")] == cam2[:7]
    assert store.search_vectors("audio", unit(rng, 8)) == []  # no audio vectors yet
    with pytest.raises(IndexMismatch):
        store.search_vectors("visual", unit(rng, DIM + 1))
    with pytest.raises(ParameterError, match="modality"):
        store.search_vectors("smell", xq)


def test_forget(store: EpisodeStore, rng: np.random.Generator) -> None:
    eps = fill(store, rng)
    victim = eps[1]
    store.forget(victim.episode_id)
    with pytest.raises(EpisodeNotFound, match="no episode with id 2") as err:
        store.get(2)
    assert isinstance(err.value, KeyError) and isinstance(err.value, StoreError)
    with pytest.raises(EpisodeNotFound):
        store.forget(2)
    assert not (store.path / "keyframes" / "2").exists()
    assert store.search_text("glass") == []
    assert 2 not in [i for i, _ in store.search_vectors("visual", victim.visual, k=10)]
    report = store.check()
    assert report["ok"], report
    assert (report["episodes"], report["vectors"]) == (4, 4 + 1)  # visual x4, audio x1
    assert store.add(episode(rng, "sound", 99.0)).episode_id == 6  # ids are never reused


def test_persistence_across_reopen(tmp_path: Path, rng: np.random.Generator) -> None:
    with EpisodeStore(tmp_path / "s") as s:
        eps = fill(s, rng)
    with EpisodeStore(tmp_path / "s") as s:
        assert s.episodes() == eps
        assert s.search_vectors("visual", eps[3].visual, k=1)[0][0] == 4
        assert s.add(episode(rng, "sound", 70.0)).episode_id == 6
        assert s.check()["ok"]


@pytest.mark.parametrize("damage", ["delete", "garbage", "stale"])
def test_bad_index_file_is_rebuilt_on_open(
    tmp_path: Path, rng: np.random.Generator, damage: str
) -> None:
    path = tmp_path / "s"
    with EpisodeStore(path) as s:
        eps = fill(s, rng)[:3]
        s.save_indexes()
        old = (path / "index" / "visual.faiss").read_bytes()
        late = s.add(episode(rng, "sound", 50.0))
    index_file = path / "index" / "visual.faiss"
    if damage == "delete":
        index_file.unlink()
    elif damage == "garbage":
        index_file.write_bytes(b"\x00" * 100)
    else:  # as if killed between the SQLite commit and the index save: behind, not wrong
        index_file.write_bytes(old)
    with EpisodeStore(path, readonly=True) as r:
        assert r.check()["ok"] is (damage == "stale")
        assert r.search_vectors("visual", late.visual, k=1)[0][0] == late.episode_id
    with EpisodeStore(path) as s:
        assert s.check() == {"ok": True, "episodes": 6, "vectors": 8, "problems": []}
        assert s.search_vectors("visual", eps[2].visual, k=1)[0][0] == eps[2].episode_id
        assert s.search_vectors("visual", late.visual, k=1)[0][0] == late.episode_id


def test_check_reports_keyframe_problems(store: EpisodeStore, rng: np.random.Generator) -> None:
    eps = fill(store, rng)
    (store.path / eps[0].keyframes[1]).unlink()
    corrupt = store.path / eps[2].keyframes[0]
    corrupt.write_bytes(corrupt.read_bytes()[:50])  # truncated JPEG
    report = store.check()
    assert report["ok"] is False
    assert any("missing" in p and eps[0].keyframes[1] in p for p in report["problems"])
    assert any("corrupt" in p and eps[2].keyframes[0] in p for p in report["problems"])
    assert len(report["problems"]) == 2


def test_rebuild_and_orphans(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "s"
    with EpisodeStore(path) as s:
        fill(s, rng)
        s.forget(2)
        s.save_indexes()
        (path / "index" / "audio.faiss").unlink()
        (path / "keyframes" / "2").mkdir()  # a forgotten episode's files reappeared
        report = s.check()
        assert not report["ok"] and len(report["problems"]) == 2, report
        assert s.rebuild() == {"visual": 4, "audio": 1}
        assert s.check()["ok"] and not (path / "keyframes" / "2").exists()
        (path / "keyframes" / "6").mkdir()  # JPEGs written, then killed before the commit
        (path / "keyframes" / "6" / "0.jpg").write_bytes(b"x")
        (path / "keyframes" / "4").rename(path / "keyframes" / "4.bak")
        s._conn.execute("INSERT INTO trash VALUES (4)")  # killed inside forget(4) ...
        s._conn.execute("DELETE FROM episodes WHERE id = 4")  # ... after its commit
        s._conn.execute("DELETE FROM episodes_fts WHERE rowid = 4")
        s._conn.execute("DELETE FROM vectors WHERE episode_id = 4")
        s._conn.execute("INSERT INTO tombstones (episode_id, modality) VALUES (4, 'visual')")
        (path / "keyframes" / "4.bak").rename(path / "keyframes" / "4")
        assert s.check()["ok"], s.check()  # leftovers of a killed writer are not damage
    with EpisodeStore(path) as s:  # ... and the next writer removes them
        assert not (path / "keyframes" / "6").exists() and not (path / "keyframes" / "4").exists()
        assert s.check() == {"ok": True, "episodes": 3, "vectors": 4, "problems": []}


def test_rejected_episode_writes_nothing(store: EpisodeStore, rng: np.random.Generator) -> None:
    store.add(episode(rng, "sound", 0.0))
    bad = episode(rng, "sound", 5.0)
    bad = Episode(**{**{f: getattr(bad, f) for f in Episode.__slots__}, "visual": unit(rng, 8)})
    with pytest.raises(IndexMismatch, match="dim 16"):
        store.add(bad)
    with pytest.raises(ParameterError, match="keyframe_times"):
        store.add(episode(rng, "sound", 6.0, keyframes=2), [image(1)])
    with pytest.raises(ParameterError, match="uint8"):
        store.add(episode(rng, "sound", 6.0, keyframes=2), [image(1), image(2).astype(float)])
    assert len(store.episodes()) == 1
    assert sorted(p.name for p in (store.path / "keyframes").iterdir()) == []
    assert store.check()["ok"]


def test_readonly_reader_sees_later_writes(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "s"
    with EpisodeStore(path) as writer:
        first = writer.add(episode(rng, "door_wood_knock", 0.0))
        with EpisodeStore(path, readonly=True) as reader:
            assert [e.episode_id for e in reader.episodes()] == [1]
            assert reader.search_vectors("visual", first.visual, k=1)[0][0] == 1
            later = writer.add(episode(rng, "glass_breaking", 10.0, audio=True))
            assert reader.get(later.episode_id).labels == ("glass_breaking",)
            assert [i for i, _ in reader.search_text("glass")] == [later.episode_id]
            assert reader.search_vectors("visual", later.visual, k=1)[0][0] == later.episode_id
            assert reader.search_vectors("audio", later.audio, k=1)[0][0] == later.episode_id
            writer.forget(first.episode_id)
            assert 1 not in [i for i, _ in reader.search_vectors("visual", first.visual, k=5)]
            with pytest.raises(ReadOnlyStore):
                reader.add(episode(rng, "sound", 20.0))
            with pytest.raises(ReadOnlyStore):
                reader.forget(later.episode_id)


def test_single_writer_and_missing_store(tmp_path: Path) -> None:
    with EpisodeStore(tmp_path / "s"):
        with pytest.raises(StoreLocked, match="readonly=True"):
            EpisodeStore(tmp_path / "s")
    EpisodeStore(tmp_path / "s").close()  # the lock was released
    with pytest.raises(SchemaError, match="no Eidetic store"):
        EpisodeStore(tmp_path / "nowhere", readonly=True)


def test_schema_and_pragmas(store: EpisodeStore) -> None:
    conn = sqlite3.connect(store.path / "eidetic.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "3"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "episodes", "vectors", "sounds", "episodes_fts", "tombstones", "objects",
            "sightings", "trash", "clip_trash"} <= tables
    conn.close()


def test_stats_and_export(store: EpisodeStore, rng: np.random.Generator, tmp_path: Path) -> None:
    eps = fill(store, rng)
    stats = store.stats()
    assert stats["episodes"] == 5 and stats["vectors"] == {"visual": 5, "audio": 2}
    assert stats["sources"] == {"cam1": 3, "cam2": 2}
    assert stats["time_span"]["t_start"] == 0.0 and stats["time_span"]["t_end"] == 42.0
    assert stats["bytes"] > 0 and stats["dims"] == {"visual": DIM, "audio": 8}
    dst = store.export(tmp_path / "copy")
    with EpisodeStore(dst, readonly=True) as copy:
        assert copy.episodes() == eps
        assert copy.check() == {"ok": True, "episodes": 5, "vectors": 7, "problems": []}
        assert copy.search_vectors("visual", eps[4].visual, k=1)[0][0] == 5
    with pytest.raises(ParameterError, match="not empty"):
        store.export(dst)
