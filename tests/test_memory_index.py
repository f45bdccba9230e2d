"""FaissIndex against NumpyIndex brute force (faiss tests/test_contrib.py style)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memory.errors import IndexMismatch, ParameterError
from memory.index import FaissIndex, NumpyIndex

D_DIM = 32


def clustered(n: int, *, d: int = D_DIM, n_clusters: int = 10, seed: int = 0) -> np.ndarray:
    """Seeded, L2-normalised points around ``n_clusters`` random centres: ``float32[n, d]``."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d))
    x = centres[rng.integers(0, n_clusters, n)] + 0.3 * rng.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def dataset(nb: int, nq: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Database and query points drawn around the same centres (SyntheticDataset style)."""
    x = clustered(nb + nq, seed=seed)
    return x[:nb], x[nb:]


def sparse_ids(n: int, seed: int = 1) -> np.ndarray:
    """Distinct non-contiguous int64 ids (episode ids need not be 0..n-1)."""
    rng = np.random.default_rng(seed)
    return rng.choice(10**9, size=n, replace=False).astype(np.int64)


def both(metric: str, xb: np.ndarray, ids: np.ndarray) -> tuple[FaissIndex, NumpyIndex]:
    fi, ni = FaissIndex(xb.shape[1], metric=metric), NumpyIndex(xb.shape[1], metric=metric)
    fi.add(ids, xb)
    ni.add(ids, xb)
    return fi, ni


def assert_same_search(a, b, xq: np.ndarray, k: int) -> None:
    Da, Ia = a.search(xq, k)
    Db, Ib = b.search(xq, k)
    assert Ia.dtype == np.int64 and Da.dtype == np.float32
    assert Ia.shape == Ib.shape == (xq.shape[0], k)
    np.testing.assert_array_equal(Ia, Ib)
    found = Ia >= 0
    np.testing.assert_allclose(Da[found], Db[found], rtol=1e-4, atol=1e-4)


def do_test_search(metric: str) -> None:
    xb, xq = dataset(2000, 50)
    ids = sparse_ids(2000)
    fi, ni = both(metric, xb, ids)
    assert fi.ntotal == ni.ntotal == 2000
    assert_same_search(fi, ni, xq, 10)


def do_test_remove(metric: str) -> None:
    xb, xq = dataset(500, 20, seed=3)
    ids = sparse_ids(500)
    fi, ni = both(metric, xb, ids)
    gone = ids[::3]
    assert fi.remove(gone) == ni.remove(gone) == gone.size
    assert fi.remove(gone) == 0  # already removed
    assert fi.ntotal == 500 - gone.size
    assert set(fi.ids().tolist()) == set(ids.tolist()) - set(gone.tolist())
    assert_same_search(fi, ni, xq, 8)
    _, I = fi.search(xq, 50)
    assert not np.isin(I, gone).any()


def do_test_save_load(metric: str, tmp_path: Path) -> None:
    xb, xq = dataset(300, 10, seed=5)
    fi, _ = both(metric, xb, sparse_ids(300))
    path = tmp_path / "sub" / "x.faiss"
    fi.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["x.faiss"]  # no temp file left
    loaded = FaissIndex.load(path)
    assert (loaded.dim, loaded.metric, loaded.ntotal) == (fi.dim, metric, fi.ntotal)
    np.testing.assert_array_equal(loaded.ids(), fi.ids())
    assert_same_search(loaded, fi, xq, 5)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_search_matches_brute_force(metric: str) -> None:
    do_test_search(metric)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_remove(metric: str) -> None:
    do_test_remove(metric)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_save_load_round_trip(metric: str, tmp_path: Path) -> None:
    do_test_save_load(metric, tmp_path)


def test_numpy_index_save_load(tmp_path: Path) -> None:
    xb = clustered(100)
    ni = NumpyIndex(D_DIM, metric="l2")
    ni.add(np.arange(100), xb)
    ni.save(tmp_path / "n.npz")
    back = NumpyIndex.load(tmp_path / "n.npz")
    assert back.metric == "l2"
    assert_same_search(back, ni, xb[:5], 4)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_missing_neighbours_are_minus_one(metric: str) -> None:
    fi, ni = FaissIndex(D_DIM, metric=metric), NumpyIndex(D_DIM, metric=metric)
    xq = clustered(3)
    for index in (fi, ni):
        D, I = index.search(xq, 4)
        assert (I == -1).all() and D.shape == (3, 4)
    fi.add([7, 8], xq[:2])
    ni.add([7, 8], xq[:2])
    assert_same_search(fi, ni, xq, 4)
    _, I = fi.search(xq, 4)
    assert (I[:, 2:] == -1).all()


def test_bad_input_is_rejected() -> None:
    fi = FaissIndex(4)
    with pytest.raises(IndexMismatch, match="expects"):
        fi.add([1], np.ones((1, 5), np.float32))
    fi.add([1, 2], np.eye(4, dtype=np.float32)[:2])
    with pytest.raises(IndexMismatch, match=r"\[2\]"):
        fi.add([2], np.ones((1, 4), np.float32))
    with pytest.raises(IndexMismatch):
        fi.add([5, 5], np.ones((2, 4), np.float32))
    with pytest.raises(IndexMismatch, match="one id per row"):
        fi.add([3], np.ones((2, 4), np.float32))
    with pytest.raises(ParameterError):
        fi.add([-3], np.ones((1, 4), np.float32))
    with pytest.raises(ParameterError, match="NaN"):
        fi.search(np.full((1, 4), np.nan, np.float32), 1)
    with pytest.raises(ParameterError, match="metric"):
        FaissIndex(4, metric="cosine")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="factory"):
        FaissIndex(4, factory="NoSuchIndex")
    assert fi.ntotal == 2


def test_load_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "bad.faiss"
    path.write_bytes(b"not an index")
    with pytest.raises(IndexMismatch, match="rebuild"):
        FaissIndex.load(path)


def test_hnsw_factory_recall() -> None:
    xb, xq = dataset(2000, 50, seed=9)
    ids = np.arange(2000)
    hnsw = FaissIndex(D_DIM, factory="HNSW32")  # "IDMap2," is prepended
    assert hnsw.factory == "IDMap2,HNSW32"
    hnsw.add(ids, xb)
    flat = NumpyIndex(D_DIM)
    flat.add(ids, xb)
    _, Ih = hnsw.search(xq, 1)
    _, It = flat.search(xq, 1)
    assert (Ih[:, 0] == It[:, 0]).mean() >= 0.9


def test_importing_memory_is_light() -> None:
    code = (
        "import sys, memory, memory.types, memory.index, memory.store, memory.query, "
        "memory.episodes; heavy = {'faiss', 'torch', 'ray'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


@pytest.mark.parametrize("factory", ["Flat", "IVF8,Flat"])
def test_allowed_ids_selector(factory: str) -> None:
    """``allowed`` restricts a search to those ids, whether the ids ascend (selected by inner
    position) or not (translated), and after removes shift the positions."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((400, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for ids in (np.arange(10, 410), rng.permutation(400) + 10):
        index = FaissIndex(16, factory=factory)
        index.train(x)
        index.add(ids[:300], x[:300])
        allowed = ids[::7]
        index.search(x[:1], 5, allowed=allowed, nprobe=8)  # positions cached ...
        index.add(ids[300:], x[300:])  # ... and extended
        truth = NumpyIndex(16)
        truth.add(ids, x)
        for q in x[:20]:
            got = index.search(q, 5, allowed=allowed, nprobe=8)[1][0]
            assert got.tolist() == truth.search(q, 5, allowed=allowed)[1][0].tolist()
        if factory == "Flat":
            index.remove(allowed[:10])
            truth.remove(allowed[:10])
            for q in x[:20]:
                got = index.search(q, 5, allowed=allowed)[1][0]
                assert got.tolist() == truth.search(q, 5, allowed=allowed)[1][0].tolist()
