"""Vector indexes keyed by episode id: FAISS by factory string, and numpy brute force.

``faiss`` is imported on first use (not when this module is imported), so ``memory`` stays light.
Vocabulary follows faiss: ``x`` rows to add or search, ``D`` scores/distances, ``I`` ids.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

from memory.errors import IndexMismatch, ParameterError

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)

Metric = Literal["ip", "l2"]
METRICS: tuple[str, ...] = ("ip", "l2")
DEFAULT_FACTORY = "IDMap2,Flat"
FILE_MODE = 0o644
PARALLEL_MIN_QUERIES = 16  # fewer queries are searched on one thread
POSITIONS_RATIO = 4  # allowed ids are mapped to positions when the scan meets 4x as many vectors
FLAT_MAX = 50_000  # exact (Flat) search below this many vectors; IVF from here on
IVF_NLIST_MIN, IVF_NLIST_MAX = 256, 8192
IVF_TRAIN_PER_LIST = 40  # training sample per inverted list (faiss warns below 39)
IVF_TRAIN_ITERS = 10  # k-means iterations (faiss default 25; 10 loses little, trains 2.5x faster)


def choose_factory(n: int) -> str:
    """The factory for an index of ``n`` vectors: exact ``Flat`` while small, then ``IVF{nlist}``
    with ``nlist`` the power of two nearest ``2 * sqrt(n)`` (256 … 8192), full vectors kept."""
    if n < FLAT_MAX:
        return DEFAULT_FACTORY
    nlist = 2 ** int(round(np.log2(2.0 * np.sqrt(n))))
    return f"IDMap2,IVF{int(np.clip(nlist, IVF_NLIST_MIN, IVF_NLIST_MAX))},Flat"


@runtime_checkable
class VectorIndex(Protocol):
    """What the store needs from an index. ids: ``int64``; x: ``float32[n, dim]``."""

    dim: int
    metric: str

    @property
    def ntotal(self) -> int: ...

    def add(self, ids: np.ndarray, x: np.ndarray) -> None: ...

    def search(
        self, x: np.ndarray, k: int, *, allowed: np.ndarray | None = None,
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def remove(self, ids: np.ndarray) -> int: ...

    def ids(self) -> np.ndarray: ...

    def save(self, path: str | Path) -> None: ...


def _faiss() -> Any:
    import faiss  # heavy: imported only when an index is built or loaded

    return faiss


@contextlib.contextmanager
def _threads(n: int | None):
    """Run faiss with ``n`` OpenMP threads (None: unchanged). One query gains nothing from
    threads, and on a busy machine waiting for a second thread costs milliseconds."""
    if n is None:
        yield
        return
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ParameterError(f"metric must be one of {METRICS}, got {metric!r}")


def _as_x(x: np.ndarray, dim: int) -> np.ndarray:
    """``float32[n, dim]`` C-contiguous view/copy of ``x`` (a single ``[dim]`` row is accepted)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise IndexMismatch(
            f"vectors have shape {x.shape}, the index expects (n, {dim}); "
            "use the same embedder for every vector of a modality"
        )
    if not np.isfinite(x).all():
        raise ParameterError("vectors contain NaN or inf; normalise them before adding/searching")
    return np.ascontiguousarray(x)


def _as_ids(ids: np.ndarray | list[int], n: int | None = None) -> np.ndarray:
    ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
    if n is not None and ids.shape[0] != n:
        raise IndexMismatch(f"got {ids.shape[0]} ids for {n} vectors; pass one id per row")
    if (ids < 0).any():
        raise ParameterError(f"ids must be >= 0 (-1 means 'missing'), got {ids[ids < 0][:5]}")
    return ids


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, fsync it, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600; readers may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def id_bitmap(ids: np.ndarray) -> np.ndarray:
    """``uint8`` bitmap of ``ids`` (bit ``i % 8`` of byte ``i // 8``), as faiss.IDSelectorBitmap
    reads it: one bit test per candidate, built in about a millisecond for 10⁶ ids."""
    top = int(ids.max()) + 1 if ids.size else 1
    mask = np.zeros(top, dtype=bool)
    mask[ids] = True
    return np.packbits(mask, bitorder="little")


class _Positions:
    """The ids of an ``IDMap2`` in position order, while they ascend (episode ids only grow, and
    indexes are built and caught up in id order): maps ids to inner positions by bisection, so
    a selector can test positions directly (2x faster scans than translating every candidate)."""

    def __init__(self, ids: np.ndarray) -> None:
        self._buf = np.array(ids, dtype=np.int64)
        self._n = ids.size
        self.sorted = bool(np.all(np.diff(ids) > 0))

    @property
    def ids(self) -> np.ndarray:
        return self._buf[: self._n]

    def append(self, ids: np.ndarray) -> None:
        if self._n + ids.size > self._buf.size:
            buf = np.zeros(max(1024, 2 * (self._n + ids.size)), np.int64)
            buf[: self._n] = self.ids
            self._buf = buf
        if self.sorted and ids.size:
            last = self._buf[self._n - 1] if self._n else -1
            self.sorted = bool(ids[0] > last and np.all(np.diff(ids) > 0))
        self._buf[self._n : self._n + ids.size] = ids
        self._n += ids.size

    def of(self, ids: np.ndarray) -> np.ndarray | None:
        """Positions of those ``ids`` in the index (others dropped); None when not ascending."""
        if not self.sorted:
            return None
        have = self.ids
        pos = np.searchsorted(have, ids)
        ok = pos < have.size
        pos, ids = pos[ok], ids[ok]
        return pos[have[pos] == ids]


class _IdSet:
    """Duplicate-id guard shared by both indexes (IDMap2 would silently accept duplicates)."""

    def __init__(self, ids: np.ndarray) -> None:
        self._ids: set[int] = set(ids.tolist())

    def check_new(self, ids: np.ndarray) -> None:
        seen: set[int] = set()
        bad = []
        for i in ids.tolist():
            if i in self._ids or i in seen:
                bad.append(i)
            seen.add(i)
        if bad:
            raise IndexMismatch(f"ids already in the index or repeated: {bad[:5]}; remove first")

    def add(self, ids: np.ndarray) -> None:
        self._ids.update(ids.tolist())

    def discard(self, ids: np.ndarray) -> None:
        self._ids.difference_update(ids.tolist())


class FaissIndex:
    """A FAISS index built by factory string, wrapped in ``IDMap2`` so ids are episode ids.

    Parameters
    ----------
    dim : int
        Vector dimension.
    factory : str
        ``faiss.index_factory`` string; ``"IDMap2,"`` is prepended when missing. Factories that need
        training (IVF, PQ) must be trained with :meth:`train` before :meth:`add`.
    metric : {"ip", "l2"}
        Inner product (scores, higher is better; use L2-normalised vectors for cosine) or squared L2
        distance (lower is better).
    """

    def __init__(self, dim: int, *, factory: str = DEFAULT_FACTORY, metric: Metric = "ip") -> None:
        if int(dim) <= 0:
            raise ParameterError(f"dim must be a positive int, got {dim!r}")
        _check_metric(metric)
        if not factory.startswith("IDMap2"):
            factory = f"IDMap2,{factory}"
        faiss = _faiss()
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        try:
            index = faiss.index_factory(int(dim), factory, faiss_metric)
        except RuntimeError as e:
            raise ParameterError(f"bad faiss factory string {factory!r}: {e}") from e
        self._init(index, factory=factory, metric=metric)

    def _init(self, index: Any, *, factory: str, metric: Metric) -> None:
        self.index = index
        self.dim = int(index.d)
        self.factory = factory
        self.metric: Metric = metric
        self._idset = _IdSet(self.ids())
        self.filter_gain = 1.0  # filtered IVF searches visit nprobe * gain / fraction lists
        self._positions: _Positions | None = None  # id -> position, for selectors (lazy)

    @property
    def ntotal(self) -> int:
        """Number of vectors in the index."""
        return int(self.index.ntotal)

    @property
    def ivf(self) -> Any | None:
        """The inverted-file index inside (None for Flat/HNSW)."""
        try:
            return _faiss().extract_index_ivf(self.index)
        except RuntimeError:
            return None

    @property
    def exact(self) -> bool:
        """True when searches are exhaustive (a Flat index)."""
        faiss = _faiss()
        inner = faiss.downcast_index(self.index.index)
        return isinstance(inner, faiss.IndexFlat)

    @property
    def nprobe(self) -> int | None:
        """Inverted lists visited per search (IVF only)."""
        ivf = self.ivf
        return None if ivf is None else int(ivf.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        ivf = self.ivf
        if ivf is not None:
            ivf.nprobe = int(np.clip(value, 1, ivf.nlist))

    def train(self, x: np.ndarray) -> None:
        """Train the underlying index on ``x: float32[n, dim]`` (no-op for Flat)."""
        if not self.index.is_trained:
            ivf = self.ivf
            if ivf is not None:
                ivf.cp.niter = IVF_TRAIN_ITERS
            self.index.train(_as_x(x, self.dim))

    def add(self, ids: np.ndarray, x: np.ndarray) -> None:
        """Add ``x: float32[n, dim]`` under ``ids: int64[n]`` (ids must be new and >= 0)."""
        x = _as_x(x, self.dim)
        ids = _as_ids(ids, x.shape[0])
        self._idset.check_new(ids)
        if not self.index.is_trained:
            raise ParameterError(f"index {self.factory!r} needs training; call train(x) first")
        self.index.add_with_ids(x, ids)
        self._idset.add(ids)
        if self._positions is not None:
            self._positions.append(ids)

    def search(
        self,
        x: np.ndarray,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` neighbours of each row of ``x: float32[m, dim]``.

        ``allowed`` (``int64[n]`` ids) restricts the search to those ids (a faiss ID selector,
        checked before any distance is computed); ``nprobe`` overrides the IVF lists visited.
        Returns ``D: float32[m, k]`` (inner products, best first, or squared L2 distances, nearest
        first) and ``I: int64[m, k]``; missing neighbours have id -1 (and D = -/+3.4e38).
        """
        if int(k) < 1:
            raise ParameterError(f"k must be >= 1, got {k!r}")
        xq = _as_x(x, self.dim)
        with _threads(1 if xq.shape[0] < PARALLEL_MIN_QUERIES else None):
            D, I = self._search(xq, int(k), allowed, nprobe)
        return D.astype(np.float32, copy=False), I.astype(np.int64, copy=False)

    def _search(
        self, xq: np.ndarray, k: int, allowed: np.ndarray | None, nprobe: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if allowed is None and nprobe is None:
            D, I = self.index.search(xq, int(k))
        else:
            faiss = _faiss()
            ivf = self.ivf
            params = faiss.SearchParametersIVF() if ivf is not None else faiss.SearchParameters()
            if ivf is not None:
                params.nprobe = int(np.clip(nprobe or ivf.nprobe, 1, ivf.nlist))
            target = self.index
            if allowed is not None:
                allowed = _as_ids(allowed)
                scanned = self.ntotal if ivf is None else self.ntotal * params.nprobe / ivf.nlist
                if allowed.size * POSITIONS_RATIO <= scanned:  # mapping ids costs less than ...
                    if self._positions is None:
                        self._positions = _Positions(self.ids())
                    pos = self._positions.of(allowed)
                    if pos is not None:  # ... translating every candidate the scan meets
                        target, allowed = self.index.index, pos
                bitmap = id_bitmap(allowed)  # referenced until the search returns
                params.sel = faiss.IDSelectorBitmap(bitmap.size, faiss.swig_ptr(bitmap))
            D, I = target.search(xq, int(k), params=params)
            if target is not self.index:
                I = np.where(I >= 0, self._positions.ids[np.maximum(I, 0)], -1)
        return D, I

    def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stored vectors of those ``ids`` that are in the index: ``(ids int64[m],
        x float32[m, dim])`` (IVF: builds its direct map on first use, 8 bytes per vector)."""
        ids = _as_ids(ids)
        ids = ids[np.fromiter((i in self._idset._ids for i in ids.tolist()), bool, ids.size)]
        if ids.size == 0:
            return ids, np.zeros((0, self.dim), np.float32)
        ivf = self.ivf
        if ivf is not None and ivf.direct_map.type == 0:  # NoMap
            ivf.make_direct_map()
        return ids, self.index.reconstruct_batch(ids)

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids`` (absent ids are ignored); returns how many vectors were removed."""
        ids = _as_ids(ids)
        if ids.size == 0:
            return 0
        ivf = self.ivf
        if ivf is not None and ivf.direct_map.type != 0:
            ivf.set_direct_map_type(0)  # an array direct map cannot remove
        n = int(self.index.remove_ids(ids))
        self._idset.discard(ids)
        self._positions = None  # positions shift
        return n

    def ids(self) -> np.ndarray:
        """Every id in the index, in insertion order: ``int64[ntotal]``."""
        return _faiss().vector_to_array(self.index.id_map).astype(np.int64, copy=False)

    def save(self, path: str | Path) -> None:
        """Write the index to ``path`` atomically (temp file + fsync + ``os.replace``)."""
        data = _faiss().serialize_index(self.index)  # uint8 array; Python's write reports ENOSPC

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                f.write(memoryview(data))

        _atomic_write(Path(path), write)

    @classmethod
    def load(cls, path: str | Path) -> FaissIndex:
        """Read an index written by :meth:`save`; raises ``IndexMismatch`` if it is not IDMap2."""
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as e:
            raise IndexMismatch(f"cannot read faiss index {path}: {e}; rebuild it") from e
        if not isinstance(index, faiss.IndexIDMap2):
            raise IndexMismatch(f"{path} holds a {type(index).__name__}, not IDMap2; rebuild it")
        metric: Metric = "ip" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "l2"
        self = cls.__new__(cls)
        self._init(index, factory="loaded", metric=metric)
        return self

    def __repr__(self) -> str:
        return (
            f"FaissIndex(dim={self.dim}, factory={self.factory!r}, metric={self.metric!r}, "
            f"ntotal={self.ntotal}, nprobe={self.nprobe})"
        )


class NumpyIndex:
    """Exact brute-force index with the FaissIndex interface (ground truth in tests)."""

    def __init__(self, dim: int, *, metric: Metric = "ip") -> None:
        if int(dim) <= 0:
            raise ParameterError(f"dim must be a positive int, got {dim!r}")
        _check_metric(metric)
        self.dim = int(dim)
        self.metric: Metric = metric
        self._x = np.zeros((0, self.dim), dtype=np.float32)
        self._ids = np.zeros(0, dtype=np.int64)
        self._idset = _IdSet(self._ids)

    @property
    def ntotal(self) -> int:
        """Number of vectors in the index."""
        return int(self._ids.shape[0])

    def add(self, ids: np.ndarray, x: np.ndarray) -> None:
        """Add ``x: float32[n, dim]`` under ``ids: int64[n]``."""
        x = _as_x(x, self.dim)
        ids = _as_ids(ids, x.shape[0])
        self._idset.check_new(ids)
        self._x = np.concatenate([self._x, x])
        self._ids = np.concatenate([self._ids, ids])
        self._idset.add(ids)

    def search(
        self,
        x: np.ndarray,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Same contract as :meth:`FaissIndex.search` (ties broken by insertion order)."""
        if int(k) < 1:
            raise ParameterError(f"k must be >= 1, got {k!r}")
        xq = _as_x(x, self.dim)
        m, k = xq.shape[0], int(k)
        xb, ids = self._x, self._ids
        if allowed is not None:
            keep = np.isin(ids, _as_ids(allowed))
            xb, ids = xb[keep], ids[keep]
        if self.metric == "ip":
            scores = xq @ xb.T
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            fill = -np.finfo(np.float32).max
        else:
            scores = ((xq[:, None, :] - xb[None, :, :]) ** 2).sum(-1)
            order = np.argsort(scores, axis=1, kind="stable")[:, :k]
            fill = np.finfo(np.float32).max
        D = np.full((m, k), fill, dtype=np.float32)
        I = np.full((m, k), -1, dtype=np.int64)
        n = order.shape[1]
        D[:, :n] = np.take_along_axis(scores, order, axis=1)
        I[:, :n] = ids[order]
        return D, I

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids`` (absent ids are ignored); returns how many were removed."""
        ids = _as_ids(ids)
        keep = ~np.isin(self._ids, ids)
        n = int((~keep).sum())
        self._x, self._ids = self._x[keep], self._ids[keep]
        self._idset.discard(ids)
        return n

    def ids(self) -> np.ndarray:
        """Every id, in insertion order: ``int64[ntotal]``."""
        return self._ids.copy()

    def save(self, path: str | Path) -> None:
        """Write ``.npz`` data to ``path`` atomically."""

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, x=self._x, ids=self._ids, metric=np.array(self.metric))

        _atomic_write(Path(path), write)

    @classmethod
    def load(cls, path: str | Path) -> NumpyIndex:
        """Read an index written by :meth:`save`."""
        with np.load(path) as z:
            self = cls(z["x"].shape[1], metric=str(z["metric"]))
            self.add(z["ids"], z["x"])
        return self
