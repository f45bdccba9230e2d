"""Episode clips under a budget: the clip budget per source and hour, size retention dropping
clips before episodes, crash-safe clip deletion, and bounded keyframe JPEGs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from memory.errors import ParameterError
from memory.retention import CLIP_BUCKET_S, RetentionPolicy, checkpoint, store_bytes
from memory.store import EpisodeStore
from memory.types import Episode, SoundRecord

D = 16
CLIP = 4000  # bytes of each test clip
BUDGET_MB_H = 2.5 * CLIP * 3600 / CLIP_BUCKET_S / 1e6  # 2.5 clips per bucket: 2 fit


def unit(rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal(D).astype(np.float32)
    return x / np.linalg.norm(x)


def clip_file(tmp: Path, name: str, rng: np.random.Generator) -> str:
    path = tmp / "incoming" / f"{name.replace('/', '_').replace(':', '_')}-{rng.integers(1e9)}.mp4"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(rng.bytes(CLIP))  # the store adopts any file; its content is not read
    return str(path)


def ep(source: str, t0: float, label: str, rng, tmp: Path, *, clip: bool = True,
       wall: float | None = None) -> Episode:  # fmt: skip
    return Episode(source=source, t_start=t0, t_end=t0 + 3, labels=(label,), summary=label,
                   sounds=(SoundRecord(label, 0.9, t0, t0 + 1),), visual=unit(rng), wall_start=wall,
                   clip=clip_file(tmp, f"{source}-{t0}", rng) if clip else None)  # fmt: skip


def test_clip_budget_keeps_the_important_clips_per_source_and_bucket(tmp_path: Path, rng) -> None:
    policy = RetentionPolicy(clip_mb_per_hour=BUDGET_MB_H)
    with EpisodeStore(tmp_path / "s", retention=policy, reserve_bytes=0) as s:
        common = [s.add(ep("cam1", 10.0 * i, "footsteps", rng, tmp_path)) for i in range(5)]
        rare = s.add(ep("cam1", 60.0, "glass_breaking", rng, tmp_path))
        later = [s.add(ep("cam1", CLIP_BUCKET_S + 10.0 * i, "footsteps", rng, tmp_path))
                 for i in range(2)]  # fmt: skip  (the next bucket: within budget)
        other = [s.add(ep("cam2", 10.0 * i, "footsteps", rng, tmp_path)) for i in range(2)]
        dropped = s.enforce_clip_budget()  # the input may go on: full budgets
        bytes_after = {e.episode_id: r for e, r in zip(common, s._conn.execute(
            "SELECT bytes, clip_bytes FROM episodes ORDER BY id").fetchall())}  # fmt: skip
        assert len(dropped) == 4 and rare.episode_id not in dropped  # 6 clips, 2 fit
        assert dropped == [e.episode_id for e in common[:4]]  # same importance: older go first
        for e in common[:4]:
            got = s.get(e.episode_id)
            assert got.clip is None and "clip budget" in (got.clip_note or "")
            assert got.keyframes == e.keyframes and got.visual is not None  # the episode stays
            assert not (s.path / e.clip).exists()
        for e in [common[4], rare, *later, *other]:
            got = s.get(e.episode_id)
            assert got.clip and (s.path / got.clip).is_file() and got.clip_note is None
        assert s.check()["ok"]
        for i, (nbytes, clip_bytes) in bytes_after.items():
            assert (clip_bytes == 0) == (i in dropped) and nbytes >= clip_bytes


def test_clip_budget_is_applied_while_adding_and_on_close(tmp_path: Path, rng, monkeypatch) -> None:
    import memory.store

    monkeypatch.setattr(memory.store, "CLIP_BUDGET_EVERY_S", 1e9)  # only on close
    policy = RetentionPolicy(clip_mb_per_hour=BUDGET_MB_H)
    with EpisodeStore(tmp_path / "s", retention=policy) as s:
        for i in range(5):  # the input covers its whole first bucket (the last ends at 593 s)
            s.add(ep("cam1", 10.0 * i if i < 4 else 590.0, "footsteps", rng, tmp_path))
        assert s.stats()["clips"]["episodes"] == 5
    with EpisodeStore(tmp_path / "s", readonly=True) as r:
        stats = r.stats()["clips"]
        assert stats["episodes"] == 2 and stats["dropped"] == 3 and stats["bytes"] == 2 * CLIP
    monkeypatch.setattr(memory.store, "CLIP_BUDGET_EVERY_S", 0.0)  # at every add
    with EpisodeStore(tmp_path / "t", retention=policy) as s:
        for i in range(5):
            s.add(ep("cam1", 10.0 * i, "footsteps", rng, tmp_path))
            assert s.stats()["clips"]["episodes"] <= 2
    unlimited = RetentionPolicy()
    with EpisodeStore(tmp_path / "u", retention=unlimited) as s:
        for i in range(5):
            s.add(ep("cam1", 10.0 * i, "footsteps", rng, tmp_path))
        assert s.enforce_clip_budget(all_buckets=True) == []
        assert s.stats()["clips"]["episodes"] == 5
    with pytest.raises(ParameterError):
        RetentionPolicy(clip_mb_per_hour=-1)


def test_a_short_input_keeps_its_share_of_the_budget(tmp_path: Path, rng, monkeypatch) -> None:
    """Clips of a 2-minute file: 2 minutes' worth of the hourly budget once the input ended."""
    policy = RetentionPolicy(clip_mb_per_hour=10 * BUDGET_MB_H)  # 25 clips per 10 min
    with EpisodeStore(tmp_path / "s", retention=policy) as s:
        for i in range(12):  # every 10 s for 2 minutes: 5 clips' worth of budget
            s.add(ep("short.mp4", 10.0 * i, "knock", rng, tmp_path))
        assert s.enforce_clip_budget(all_buckets=True) == []  # the input may go on: full budget
        assert s.stats()["clips"]["episodes"] == 12
    with EpisodeStore(tmp_path / "s", readonly=True) as r:  # closed: the input ended at 113 s
        assert r.stats()["clips"]["episodes"] == int(25 * 113 / CLIP_BUCKET_S)


def test_live_sources_are_budgeted_by_wall_clock(tmp_path: Path, rng) -> None:
    policy = RetentionPolicy(clip_mb_per_hour=BUDGET_MB_H)
    wall = 1.8e9
    with EpisodeStore(tmp_path / "s", retention=policy) as s:
        # media time restarts at 0 after each reconnect; wall time spreads them over buckets
        eps = [s.add(ep("rtsp://door", 5.0, "knock", rng, tmp_path, wall=wall + i * CLIP_BUCKET_S))
               for i in range(4)]  # fmt: skip
        assert s.enforce_clip_budget(all_buckets=True) == []
        eps += [s.add(ep("rtsp://door", 9.0, "knock", rng, tmp_path, wall=wall + 30)) for _ in range(2)]
        assert len(s.enforce_clip_budget(all_buckets=True, dry_run=True)) == 1
        assert s.stats()["clips"]["episodes"] == 6  # a dry run drops nothing
        (gone,) = s.enforce_clip_budget(all_buckets=True)  # 3 in the first bucket, 2 fit
        assert gone in {eps[0].episode_id, eps[4].episode_id, eps[5].episode_id}
        assert s.stats()["clips"]["episodes"] == 5


def test_size_limit_drops_clips_before_episodes(tmp_path: Path, rng) -> None:
    with EpisodeStore(tmp_path / "s", reserve_bytes=0) as s:
        eps = [s.add(ep("cam1", 10.0 * i, "footsteps", rng, tmp_path)) for i in range(8)]
        checkpoint(s)
        limit = store_bytes(s) - 3 * CLIP  # dropping ~3-4 clips is enough
        s.retention = RetentionPolicy(max_bytes=limit)
        report = s.enforce_retention()
        assert report["forgotten"] == 0 and report["size"] == [] and store_bytes(s) <= limit
        assert 3 <= report["clips_dropped"] <= 5 and len(report["clips"]) == report["clips_dropped"]
        assert s.stats()["episodes"] == 8
        notes = [s.get(e.episode_id).clip_note for e in eps]
        assert sum("size limit" in (n or "") for n in notes) == report["clips_dropped"]
        s.retention = RetentionPolicy(max_bytes=int(store_bytes(s) * 0.5))  # clips are not enough
        report = s.enforce_retention()
        assert report["forgotten"] > 0 and s.stats()["clips"]["episodes"] == 0
        assert s.check()["ok"]


def test_a_dropped_clip_left_by_a_kill_is_deleted_by_the_next_writer(tmp_path: Path, rng) -> None:
    with EpisodeStore(tmp_path / "s") as s:
        e = s.add(ep("cam1", 0.0, "knock", rng, tmp_path))
    path = tmp_path / "s" / e.clip
    conn = sqlite3.connect(tmp_path / "s" / "eidetic.db")  # the commit of a drop, then a kill
    conn.execute("UPDATE episodes SET clip = NULL, clip_note = 'x', clip_bytes = 0")
    conn.execute("INSERT INTO clip_trash VALUES (?)", (e.clip,))
    conn.commit()
    conn.close()
    assert path.is_file()
    with EpisodeStore(tmp_path / "s") as s:
        assert not path.exists() and s.check()["ok"]
        assert s._conn.execute("SELECT COUNT(*) FROM clip_trash").fetchone()[0] == 0


def test_keyframes_are_stored_at_a_bounded_size(tmp_path: Path, rng) -> None:
    image = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
    with EpisodeStore(tmp_path / "s", keyframe_max_side=160) as s:
        e = s.add(ep("cam1", 0.0, "knock", rng, tmp_path, clip=False), [image, image[:100, :50]])
        with Image.open(s.path / e.keyframes[0]) as a, Image.open(s.path / e.keyframes[1]) as b:
            assert a.size == (160, 90) and b.size == (50, 100)  # small ones are left alone
    with pytest.raises(ParameterError):
        EpisodeStore(tmp_path / "t", keyframe_max_side=0)
