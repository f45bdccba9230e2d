"""Store benchmark (issue 7, DESIGN.md §4 "Speed"): inserts, vector search, size per episode.

Run::

    python benchmarks/store_bench.py [--sizes 100000,1000000] [--dim 256] [--queries 500]
        [--repeats 3] [--batch 500] [--out benchmarks/results/store_bench.json]
    python benchmarks/store_bench.py --quick --out /tmp/store_bench.json   # seconds, for tests

For each size N, a new store (``EpisodeStore`` defaults: ``synchronous=FULL``, ``index_factory=
"auto"``) in a temp dir receives N episodes through ``add_many`` in batches of ``--batch``
(one durable commit per batch; index switches and retrains happen inside, as in real use):

- **insert/s**: N / wall time of all batches (sustained, durable); plus **insert/s batch=1**:
  2,000 more episodes, one ``add`` (one fsynced commit) each.
- **search**: ``--queries`` fresh queries (never inserted) through ``StoreReader.search_vectors``
  of a read-only store opened after the writer closed, k=10, one thread, ``--repeats`` passes:
  p50/p99 latency (ms) and recall@10 against exact search (numpy over all N vectors), without a
  filter, with a source filter (1 of 10 sources, ~10 % of episodes) and with source + time
  filter (~1 %). Untimed warm-ups first: one search loads the index file (``open_s``), one
  filtered search loads the filter catalog (``catalog_s``, memory/catalog.py).
- **bytes/episode**: the store directory's size / N (SQLite with vectors and FTS, index files).

Vectors: 256-d, L2-normalised, clustered (not uniform noise): 1,000 centres, each with 10
sub-centres, points = sub-centre + noise (seeded; a query's 10th neighbour has cosine ~0.4, its 100th ~0.17). Episodes carry realistic metadata (source,
span, wall time, labels, a sound, a summary). Prints ``uptime`` with the figures (the machine is
shared: speeds are pessimistic) and writes JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import write_json  # noqa: E402

logger = logging.getLogger("benchmarks.store_bench")

N_SOURCES = 10
N_CENTRES, N_SUB = 1000, 10
SPREAD_SUB, SPREAD_POINT = 0.8, 0.9  # noise norms relative to a unit centre (neighbours fuzzy)
LABELS = ("door_wood_knock", "glass_breaking", "can_opening", "footsteps", "keyboard_typing",
          "pouring_water", "clapping", "mouse_click", "toilet_flush", "clock_alarm")  # fmt: skip
EPISODE_S = 6.0  # one episode every EPISODE_S seconds per source (media time)
K = 10
BLOCK = 1000  # rows generated per seeded block
SINGLE_INSERTS = 2000


class Data:
    """Seeded clustered vectors: ``chunk(i0, n)`` gives rows i0..i0+n, deterministic."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        centres = rng.standard_normal((N_CENTRES, dim)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        noise = rng.standard_normal((N_CENTRES, N_SUB, dim)).astype(np.float32)
        noise *= SPREAD_SUB / np.sqrt(dim)
        self.subs = (centres[:, None, :] + noise).reshape(-1, dim)
        self.seed = seed

    def chunk(self, i0: int, n: int, *, stream: int = 0) -> np.ndarray:
        """Rows ``i0 .. i0 + n`` of stream ``stream`` (the same rows whatever the chunking)."""
        b0, b1 = i0 // BLOCK, (i0 + n - 1) // BLOCK + 1
        x = np.concatenate([self._block(b, stream) for b in range(b0, b1)])
        return x[i0 - b0 * BLOCK : i0 - b0 * BLOCK + n]

    def _block(self, b: int, stream: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, stream, b])
        x = self.subs[rng.integers(0, len(self.subs), BLOCK)]
        noise = rng.standard_normal((BLOCK, self.dim)).astype(np.float32)
        x = x + noise * (SPREAD_POINT / np.sqrt(self.dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def source_of(i: int) -> str:
    return f"rtsp://cam{i % N_SOURCES}/stream"


def t_of(i: int) -> float:
    return (i // N_SOURCES) * EPISODE_S


def make_episodes(i0: int, x: np.ndarray) -> list:
    from memory.types import Episode, SoundRecord

    out = []
    for j, v in enumerate(x):
        i = i0 + j
        t0, label = t_of(i), LABELS[i % len(LABELS)]
        out.append((Episode(
            source=source_of(i), t_start=t0, t_end=t0 + 4.0, labels=(label,),
            summary=f"{label} at {t0:.1f}; 2 objects tracked", wall_start=1.7e9 + t0,
            sounds=(SoundRecord(label, 0.8, t0 + 0.5, t0 + 1.2),), visual=v,
        ), []))  # fmt: skip
    return out


def uptime() -> str:
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return f"loadavg {os.getloadavg()}"


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def batches(n: int, size: int) -> Iterator[tuple[int, int]]:
    for i0 in range(0, n, size):
        yield i0, min(size, n - i0)


def insert(store_dir: Path, data: Data, n: int, batch: int) -> dict[str, Any]:
    from tqdm import tqdm

    from memory.store import EpisodeStore

    t0 = time.perf_counter()
    with EpisodeStore(store_dir) as store:
        bar = tqdm(total=n, desc=f"insert {n}", unit="ep", file=sys.stderr, mininterval=2.0)
        for i0, m in batches(n, batch):
            store.add_many(make_episodes(i0, data.chunk(i0, m)))
            bar.update(m)
        bar.close()
        wall = time.perf_counter() - t0
        index = store._ix.get("visual")
        kind = {"factory": index.factory if index.exact else f"IVF{index.ivf.nlist},Flat",
                "nprobe": index.nprobe, "filter_gain": index.filter_gain}  # fmt: skip
        t1 = time.perf_counter()
        xs = data.chunk(n, SINGLE_INSERTS, stream=2)
        for j, ep in enumerate(make_episodes(n, xs)):
            store.add(ep[0])
        single = SINGLE_INSERTS / (time.perf_counter() - t1)
        t2 = time.perf_counter()
    close_s = time.perf_counter() - t2
    return {"insert_per_s": n / wall, "insert_wall_s": wall, "insert_single_per_s": single,
            "close_s": close_s, "index": kind}  # fmt: skip


def exact_topk(
    xb: np.ndarray, xq: np.ndarray, k: int, mask: np.ndarray | None = None
) -> np.ndarray:
    """Row indices of the exact top-k by inner product (within ``mask`` when given)."""
    scores = xq @ xb.T if mask is None else xq @ xb[mask].T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    top = np.take_along_axis(top, order, axis=1)
    return top if mask is None else np.flatnonzero(mask)[top]


def filters(n: int, nq: int, seed: int) -> list[dict[str, Any]]:
    """Per query: a source (10 %) and a time window of 10 % of the span (with it: ~1 %)."""
    rng = np.random.default_rng(seed)
    span = t_of(n - 1) + EPISODE_S
    out = []
    for _ in range(nq):
        src = int(rng.integers(0, N_SOURCES))
        since = float(rng.uniform(0, 0.9 * span))
        out.append({"source": source_of(src), "since": since, "until": since + 0.1 * span})
    return out


def search_pass(store, xq: np.ndarray, kwargs: list[dict[str, Any]]) -> tuple[np.ndarray, list]:
    lat, got = [], []
    for q, kw in zip(xq, kwargs):
        t0 = time.perf_counter()
        hits = store.search_vectors("visual", q, k=K, **kw)
        lat.append(time.perf_counter() - t0)
        got.append([i for i, _ in hits])
    return np.array(lat) * 1e3, got


def queries(store_dir: Path, data: Data, n: int, nq: int, repeats: int) -> dict[str, Any]:
    from tqdm import tqdm

    from memory.store import EpisodeStore

    xb = np.concatenate([data.chunk(i0, m) for i0, m in batches(n, 20_000)])
    ids = np.arange(1, n + 1)  # episode ids are 1..n in insertion order
    xq = data.chunk(10**9, nq, stream=1)
    fl = filters(n, nq, seed=3)
    src = np.array([i % N_SOURCES for i in range(n)])
    t = np.array([t_of(i) for i in range(n)])
    cases: dict[str, tuple[list[dict[str, Any]], list[np.ndarray | None]]] = {
        "no filter": ([{}] * nq, [None] * nq),
        "source (10 %)": ([{"source": f["source"]} for f in fl],
                          [src == int(f["source"][len("rtsp://cam"):].split("/")[0]) for f in fl]),
        "source + time (1 %)": (fl, [(src == int(f["source"][len("rtsp://cam"):].split("/")[0]))
                                     & (t + 4.0 >= f["since"]) & (t <= f["until"]) for f in fl]),
    }  # fmt: skip
    out = {}
    t_open = time.perf_counter()
    with EpisodeStore(store_dir, readonly=True) as store:
        store.search_vectors("visual", xq[0], k=K)  # loads the index file
        open_s = time.perf_counter() - t_open
        t_cat = time.perf_counter()
        store.search_vectors("visual", xq[0], k=K, source=source_of(0))  # loads the catalog
        catalog_s = time.perf_counter() - t_cat
        for name, (kwargs, masks) in cases.items():
            truth = [ids[exact_topk(xb, xq[i : i + 1], K, masks[i])[0]].tolist() for i in range(nq)]
            p50s, p99s, recalls = [], [], []
            for _ in tqdm(range(repeats), desc=f"search {n} {name}", file=sys.stderr, leave=False):
                ms, got = search_pass(store, xq, kwargs)
                p50s.append(float(np.percentile(ms, 50)))
                p99s.append(float(np.percentile(ms, 99)))
                recalls.append(float(np.mean([len(set(g) & set(tr)) / len(tr)
                                              for g, tr in zip(got, truth)])))  # fmt: skip
            out[name] = {"p50_ms": _spread(p50s), "p99_ms": _spread(p99s),
                         "recall_at_10": float(np.median(recalls))}  # fmt: skip
    return {"open_s": open_s, "catalog_s": catalog_s, "search": out}


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": float(np.median(values)),
        "min": float(min(values)),
        "max": float(max(values)),
    }


def run(n: int, args: argparse.Namespace) -> dict[str, Any]:
    data = Data(args.dim)
    with tempfile.TemporaryDirectory(prefix="store_bench_", dir=args.tmp) as tmp:
        store_dir = Path(args.keep or tmp) / f"store_{n}_{args.dim}"
        load_before = uptime()
        if args.reuse and (store_dir / "eidetic.db").exists():
            ins: dict[str, Any] = {"insert_per_s": None, "insert_wall_s": None,
                                   "insert_single_per_s": None, "close_s": None,
                                   "index": _index_kind(store_dir), "reused_store": True}  # fmt: skip
        else:
            shutil.rmtree(store_dir, ignore_errors=True)
            ins = insert(store_dir, data, n, args.batch)
        size = du(store_dir)
        q = queries(store_dir, data, n, args.queries, args.repeats)
        return {"n": n, "dim": args.dim, "batch": args.batch, **ins, **q,
                "bytes_per_episode": size / (n + SINGLE_INSERTS), "store_bytes": size,
                "uptime_before": load_before, "uptime_after": uptime()}  # fmt: skip


def _index_kind(store_dir: Path) -> dict[str, Any]:
    hint = json.loads((store_dir / "index" / "visual.faiss.json").read_text())
    from memory.store import EpisodeStore

    with EpisodeStore(store_dir, readonly=True) as s:
        index = s._ix.get("visual")
        factory = index.factory if index.exact else f"IVF{index.ivf.nlist},Flat"
    return {"factory": factory, "nprobe": hint.get("nprobe"), "filter_gain": hint.get("filter_gain"),
            "tuned_n": hint.get("tuned_n"), "built_n": hint.get("built_n")}  # fmt: skip


def format_table(results: list[dict[str, Any]]) -> str:
    lines = [
        f"{'N':>9} {'insert/s':>9} {'batch=1/s':>9} {'B/episode':>9}  {'index':<22} "
        f"{'search':<20} {'p50 ms':>7} {'p99 ms':>7} {'recall@10':>9}",
    ]
    for r in results:
        idx = f"{r['index']['factory'].replace('IDMap2,', '')} np={r['index']['nprobe']}"
        if r["index"].get("filter_gain") is not None:
            idx += f" g={r['index']['filter_gain']:g}"
        ins = "reused" if r["insert_per_s"] is None else f"{r['insert_per_s']:.0f}"
        one = "-" if r["insert_single_per_s"] is None else f"{r['insert_single_per_s']:.0f}"
        for j, (name, s) in enumerate(r["search"].items()):
            head = (f"{r['n']:>9} {ins:>9} {one:>9} "
                    f"{r['bytes_per_episode']:>9.0f}  {idx:<22}") if j == 0 else " " * 63  # fmt: skip
            lines.append(f"{head} {name:<20} {s['p50_ms']['median']:>7.2f} "
                         f"{s['p99_ms']['median']:>7.2f} {s['recall_at_10']:>9.3f}")  # fmt: skip
        lines.append(f"{'':>9} load: {r['uptime_after']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated episode counts")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=500, help="episodes per add_many commit")
    ap.add_argument("--tmp", default=None, help="directory for the temporary stores")
    ap.add_argument("--keep", default=None, help="keep the stores in this directory")
    ap.add_argument("--reuse", action="store_true", help="with --keep: search existing stores")
    ap.add_argument(
        "--quick", action="store_true", help="tiny run (tests): 3000 x 32-d, IVF from 1000"
    )
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "store_bench.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.quick:
        import memory.index
        import memory.indexes

        args.sizes, args.dim, args.queries, args.repeats, args.batch = "3000", 32, 50, 1, 200
        for mod in (memory.index, memory.indexes):
            mod.FLAT_MAX = 1000
        memory.index.IVF_NLIST_MIN = 16
        global SINGLE_INSERTS
        SINGLE_INSERTS = 50
    sizes = [int(s) for s in args.sizes.split(",")]
    results = [run(n, args) for n in sizes]
    print(format_table(results))
    doc = {"command": " ".join(["python benchmarks/store_bench.py", *(argv or sys.argv[1:])]),
           "quick": args.quick, "cpu_count": os.cpu_count(),
           "data": {"centres": N_CENTRES, "sub_centres_per_centre": N_SUB,
                    "spread_sub": SPREAD_SUB, "spread_point": SPREAD_POINT, "sources": N_SOURCES},
           "results": results}  # fmt: skip
    write_json(args.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
