"""The store's index life cycle: Flat -> IVF by size, tuned nprobe, tombstones, compaction,
readers following a writer's rebuilds, filtered search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import memory.index
import memory.indexes
from memory.store import EpisodeStore
from memory.types import Episode

DIM = 24


@pytest.fixture
def small_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch to IVF at 300 vectors (instead of 50k) so the life cycle runs in a test."""
    for mod in (memory.index, memory.indexes):
        monkeypatch.setattr(mod, "FLAT_MAX", 300)
    monkeypatch.setattr(memory.index, "IVF_NLIST_MIN", 8)
    monkeypatch.setattr(memory.indexes, "IVF_TRAIN_PER_LIST", 20)


def clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, DIM))
    x = centres[rng.integers(0, 12, n)] + 0.35 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def episodes(x: np.ndarray, t0: int = 0) -> list[tuple[Episode, list]]:
    return [
        (Episode(source=f"cam{(t0 + i) % 4}", t_start=float(t0 + i), t_end=float(t0 + i) + 1,
                 labels=("sound",), summary="s", visual=v), [])
        for i, v in enumerate(x)
    ]  # fmt: skip


def exact_top(ids: np.ndarray, xb: np.ndarray, xq: np.ndarray, k: int) -> list[int]:
    return ids[np.argsort(-(xb @ xq), kind="stable")[:k]].tolist()


def test_flat_switches_to_ivf_and_stays_accurate(tmp_path: Path, small_thresholds) -> None:
    x = clustered(1050, seed=1)
    xb, xq = x[:1000], x[1000:]
    with EpisodeStore(tmp_path / "s") as s:
        stored = s.add_many(episodes(xb[:200]))
        assert s._ix.get("visual").exact
        for i in range(200, 1000, 100):
            stored += s.add_many(episodes(xb[i : i + 100], t0=i))
        index = s._ix.get("visual")
        assert index.ivf is not None and 1 <= index.nprobe < index.ivf.nlist
        ids = np.array([e.episode_id for e in stored])
        recall = np.mean([
            len(set(exact_top(ids, xb, q, 10)) & {i for i, _ in s.search_vectors("visual", q, k=10)})
            / 10 for q in xq
        ])  # fmt: skip
        assert recall >= 0.9
        # a narrow filter (1 %) is exact among the allowed episodes (ID selector, all lists)
        cam1 = np.array([e.source == "cam1" and e.t_end >= 960 for e in stored])
        for q in xq[:10]:
            got = [i for i, _ in s.search_vectors("visual", q, k=5, source="cam1", since=960)]
            assert got == exact_top(ids[cam1], xb[cam1], q, 5)
        # a broad one (12 %) is applied to more neighbours
        cam1 = np.array([e.source == "cam1" and e.t_end >= 500 for e in stored])
        recall = np.mean([
            len(set(exact_top(ids[cam1], xb[cam1], q, 10))
                & {i for i, _ in s.search_vectors("visual", q, k=10, source="cam1", since=500)})
            / 10 for q in xq
        ])  # fmt: skip
        assert recall >= 0.85
    with EpisodeStore(tmp_path / "s", readonly=True) as r:
        assert r.check()["ok"]
        assert r._ix.get("visual").ivf is not None  # a reader loads the writer's IVF file


def test_tombstones_and_compaction(tmp_path: Path, small_thresholds) -> None:
    xb = clustered(600, seed=3)
    with EpisodeStore(tmp_path / "s") as s:
        stored = s.add_many(episodes(xb))
        index = s._ix.get("visual")
        assert index.ivf is not None
        victims = [e.episode_id for e in stored[:40]]
        s.forget_many(victims)
        assert s._ix.get("visual").ntotal == 600  # IVF keeps them: tombstones ...
        for ep in stored[:40]:  # ... that are never returned
            assert ep.episode_id not in [i for i, _ in s.search_vectors("visual", ep.visual, k=3)]
        s.save_indexes()
        assert s.check()["ok"]
        s.forget_many([e.episode_id for e in stored[40:70]])  # > 10 % deleted: compacted
        assert s._ix.get("visual").ntotal == 530
        assert s.check()["ok"]
        assert s._conn.execute("SELECT COUNT(*) FROM tombstones").fetchone()[0] == 0


def test_reader_follows_writer_rebuilds(tmp_path: Path, small_thresholds) -> None:
    xb = clustered(900, seed=4)
    with EpisodeStore(tmp_path / "s") as w:
        first = w.add_many(episodes(xb[:100]))
        with EpisodeStore(tmp_path / "s", readonly=True) as r:
            assert r.search_vectors("visual", xb[5], k=1)[0][0] == first[5].episode_id
            assert r._ix.get("visual").exact
            later = w.add_many(episodes(xb[100:900], t0=100))  # the writer switches to IVF
            assert r.search_vectors("visual", xb[850], k=1)[0][0] == later[750].episode_id
            assert r._ix.get("visual").ivf is not None  # the reader reloaded the new build
            w.forget(later[750].episode_id)
            hits = r.search_vectors("visual", xb[850], k=3)
            assert later[750].episode_id not in [i for i, _ in hits]


def test_filtered_search_uses_catalog_and_drops_deleted(tmp_path: Path, small_thresholds) -> None:
    """Time/source/wall filters select ids in memory (memory/catalog.py); FAISS searches only
    those. Results equal exact search among the allowed, live episodes, for a writer and for a
    reader that learns of deletes by verifying hits (its IVF index still holds them)."""
    x = clustered(1400, seed=6)
    xb, xq = x[:1300], x[1300:]
    # cam0 re-ingests a file from t = 0 (starts not in id order); cam3 has no wall time
    t = [float(i % 650 if i % 4 == 0 else i) for i in range(len(xb))]
    eps = [(Episode(source=f"cam{i % 4}", t_start=t[i], t_end=t[i] + 3,
                    labels=("knock",) if i % 3 == 0 else ("sound",),
                    wall_start=None if i % 4 == 3 else 1e9 + i, summary="s", visual=v), [])
           for i, v in enumerate(xb)]  # fmt: skip
    with EpisodeStore(tmp_path / "s") as s:
        stored = s.add_many(eps)
        assert s._ix.get("visual").ivf is not None
        with EpisodeStore(tmp_path / "s", readonly=True) as r:
            r.search_vectors("visual", xq[0], k=3, source="cam1")  # builds the reader's catalog
            gone = [e.episode_id for e in stored if e.source == "cam1" and e.episode_id % 3 == 0]
            s.forget_many(gone)
            ids = np.array([e.episode_id for e in stored])
            src = np.array([e.source for e in stored])
            t0 = np.array([e.t_start for e in stored])
            wall = np.array([np.nan if e.wall_start is None else e.wall_start for e in stored])
            live = ~np.isin(ids, gone)
            cases = [
                ({"source": "cam1"}, src == "cam1"),
                ({"source": "cam0", "since": 100.0, "until": 200.0},
                 (src == "cam0") & (t0 + 3 >= 100) & (t0 <= 200)),
                ({"since": 600.0, "until": 700.0}, (t0 + 3 >= 600) & (t0 <= 700)),
                ({"wall_since": 1e9 + 1000}, wall + 3 >= 1e9 + 1000),  # cam3: no wall time
                ({"source": "cam2", "wall_until": 1e9 + 40}, (src == "cam2") & (wall <= 1e9 + 40)),
                ({"source": "nowhere"}, np.zeros(len(ids), bool)),
                ({"source": "cam2", "labels": ["knock"]},  # labels: filtered in SQL
                 (src == "cam2") & np.array([e.labels == ("knock",) for e in stored])),
            ]  # fmt: skip
            for store in (s, r):
                for flt, mask in cases:
                    mask = mask & live
                    for q in xq[:15]:
                        got = [i for i, _ in store.search_vectors("visual", q, k=5, **flt)]
                        assert got == exact_top(ids[mask], xb[mask], q, 5)[:5], flt
            assert set(s._cat.select(source="cam1").tolist()).isdisjoint(gone)  # told
            assert r._cat.select(source="cam1").size < (src == "cam1").sum()  # learnt from hits


def test_large_rebuild_runs_in_the_background(tmp_path: Path, small_thresholds, monkeypatch):
    """From BACKGROUND_MIN vectors a retrain runs in a thread while adds go on into the old
    index; the new one is swapped in with the vectors added meanwhile and every id is found."""
    monkeypatch.setattr(memory.indexes, "BACKGROUND_MIN", 500)
    xb = clustered(1600, seed=7)
    with EpisodeStore(tmp_path / "s") as s:
        stored = s.add_many(episodes(xb[:400]))  # IVF (synchronous switch at 300), built at 400
        first = s._ix.get("visual")
        assert first.ivf is not None and not s._ix._building
        stored += s.add_many(episodes(xb[400:1600], t0=400))  # 4x: retrain, in the background
        assert "visual" in s._ix._building or s._ix.get("visual") is not first
        s.forget_many([stored[0].episode_id])  # a delete while it builds
        if "visual" in s._ix._building:
            s._ix._building["visual"][0].join()
        s.add_many(episodes(clustered(10, seed=8), t0=1600))  # the next write swaps it in
        index = s._ix.get("visual")
        assert index is not first and not s._ix._building
        assert index.ntotal - s._ix._states["visual"].dead == 1609  # the delete is counted
        assert s._ix._states["visual"].built_n >= 1200
        for e in stored[1::97]:
            assert s.search_vectors("visual", e.visual, k=1)[0][0] == e.episode_id
        assert s.check()["ok"]
    with EpisodeStore(tmp_path / "s", readonly=True) as r:
        assert r._ix.get("visual").ntotal >= 1609 and r.check()["ok"]


def test_nprobe_is_retuned_as_the_index_grows(tmp_path: Path, small_thresholds) -> None:
    """Between retrains (4x growth), nprobe and the filter gain are tuned again at 2x growth;
    readers opened afterwards use the new values."""
    x = clustered(1000, seed=3)
    with EpisodeStore(tmp_path / "s") as s:
        for i in range(0, 350, 50):
            s.add_many(episodes(x[i : i + 50], t0=i))
        state = s._ix._states["visual"]
        built = state.built_n
        assert s._ix.get("visual").ivf is not None and state.tuned_n == built >= 300
        assert state.filter_gain in memory.indexes.FILTER_GAINS
        for i in range(350, 2 * built + 50, 50):
            s.add_many(episodes(x[i : i + 50], t0=i))
        index = s._ix.get("visual")
        assert state.built_n == built and state.tuned_n >= 2 * built  # re-tuned, not retrained
        assert state.nprobe == index.nprobe and 1 <= index.nprobe <= index.ivf.nlist
        assert index.filter_gain == state.filter_gain
        tuned = (index.nprobe, index.filter_gain)
    with EpisodeStore(tmp_path / "s", readonly=True) as r:
        index = r._ix.get("visual")
        assert (index.nprobe, index.filter_gain) == tuned
