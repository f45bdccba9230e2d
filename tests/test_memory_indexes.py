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
