"""A store writer process for the kill -9 test: ``python tests/memory_writer.py STORE SEQ``.

Writes episodes (batches, keyframes, sounds, forgets) as fast as it can and prints one line per
acknowledged write, after the call returned: ``A seq id`` (episode added), ``F id`` (forgotten;
``f id`` is printed before the call), ``S rowid`` (sound logged). Content is a function of ``seq`` (see :func:`make_episode`), so the
parent can verify every acknowledged episode byte for byte. Index saves, Flat→IVF switches and
rebuilds are made frequent so that kills land in them too.
"""

from __future__ import annotations

import sys

import numpy as np

DIM = 16


def vector(seq: int) -> np.ndarray:
    x = np.random.default_rng(seq).standard_normal(DIM).astype(np.float32)
    return x / np.linalg.norm(x)


def image(seq: int) -> np.ndarray:
    img = np.random.default_rng(seq).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    return img


def make_episode(seq: int):
    from memory.types import Episode, SoundRecord

    t0 = float(seq)
    return Episode(
        source=f"cam{seq % 3}", t_start=t0, t_end=t0 + 1.0, labels=(f"label{seq % 7}",),
        summary=f"episode number {seq}", sounds=(SoundRecord("knock", 0.5, t0, t0 + 0.2),),
        keyframe_times=tuple(t0 + 0.1 * n for n in range(seq % 3)), visual=vector(seq),
    )  # fmt: skip


def main(path: str, seq: int) -> None:
    import memory.index
    import memory.indexes
    from memory.store import EpisodeStore
    from memory.types import SoundRecord

    memory.indexes.SAVE_MIN_CHANGES = 8  # save, switch to IVF and rebuild often
    memory.indexes.SAVE_INTERVAL_S = 0.05
    memory.index.FLAT_MAX = 120
    memory.indexes.FLAT_MAX = 120
    memory.index.IVF_NLIST_MIN = 4
    memory.indexes.IVF_TRAIN_PER_LIST = 8
    rng = np.random.default_rng(seq)
    acked: list[int] = []
    with EpisodeStore(path) as store:
        print("READY", flush=True)
        while True:
            n = int(rng.integers(1, 6))
            seqs = list(range(seq, seq + n))
            items = [(make_episode(s), [image(s * 10 + k) for k in range(s % 3)]) for s in seqs]
            stored = store.add_many(items)
            for s, ep in zip(seqs, stored):
                print(f"A {s} {ep.episode_id}", flush=True)
                acked.append(int(ep.episode_id))
            seq += n
            if rng.random() < 0.3 and acked:
                victim = acked.pop(int(rng.integers(0, len(acked))))
                print(f"f {victim}", flush=True)  # intent: a kill may land before the ack
                store.forget(victim)
                print(f"F {victim}", flush=True)
            if rng.random() < 0.3:
                (rowid,) = store.add_sounds("cam9", [SoundRecord("dog", 0.3, seq, seq + 1.0)])
                print(f"S {rowid}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
