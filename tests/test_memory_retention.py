"""Retention by age and size (importance-aware), forget of a time range, and a full disk."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import memory.store
from memory.errors import ParameterError, StoreFull
from memory.retention import DAY_S, RetentionPolicy, checkpoint, store_bytes
from memory.store import EpisodeStore
from memory.types import Episode, ObjectRecord, SoundRecord
from tests.conftest import IN_CI

D = 16
NOW = 1.8e9


def unit(rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal(D).astype(np.float32)
    return x / np.linalg.norm(x)


def noisy(rng: np.random.Generator, h: int = 96, w: int = 128) -> np.ndarray:
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)  # incompressible: big JPEGs


def ep(source: str, t0: float, label: str, visual: np.ndarray, *, wall: float | None = None,
       objects: tuple = (), keyframes: int = 0) -> Episode:  # fmt: skip
    return Episode(source=source, t_start=t0, t_end=t0 + 2, labels=(label,), summary=label,
                   sounds=(SoundRecord(label, 0.9, t0, t0 + 1),), objects=objects,
                   keyframe_times=tuple(t0 + 0.1 * i for i in range(keyframes)),
                   wall_start=wall, visual=visual)  # fmt: skip


def test_age_limits_per_source_keep_rare_and_named_longer(tmp_path: Path, rng) -> None:
    policy = RetentionPolicy(max_age_days=1.0, source_max_age_days={"cam2": 100.0})
    desc = unit(rng)
    with EpisodeStore(tmp_path / "s", retention=policy) as s:
        common = [s.add(ep("cam1", i, "footsteps", unit(rng), wall=NOW - 1.5 * DAY_S))
                  for i in range(8)]  # fmt: skip
        rare = s.add(ep("cam1", 20, "glass_breaking", unit(rng), wall=NOW - 1.5 * DAY_S))
        ancient = s.add(ep("cam1", 30, "glass_breaking", unit(rng), wall=NOW - 9 * DAY_S))
        named = s.add(
            ep(
                "cam1",
                40,
                "footsteps",
                unit(rng),
                wall=NOW - 1.5 * DAY_S,
                objects=(ObjectRecord(1, "object", 40, 41, 2, (0, 0, 1, 1), desc),),
            )
        )
        s.name_object(s.objects()[0].object_id, "bike")
        other = s.add(ep("cam2", 50, "footsteps", unit(rng), wall=NOW - 9 * DAY_S))
        dry = s.enforce_retention(now=NOW, dry_run=True)
        assert s.stats()["episodes"] == 12  # a dry run forgets nothing
        report = s.enforce_retention(now=NOW)
        assert sorted(report["age"]) == sorted(dry["age"]) and report["forgotten"] == 9
        left = {e.episode_id for e in s.episodes()}
        assert left == {rare.episode_id, named.episode_id, other.episode_id}
        assert ancient.episode_id not in left and not left & {e.episode_id for e in common}
        assert s.check()["ok"]


def test_size_limit_drops_redundant_first(tmp_path: Path, rng) -> None:
    with EpisodeStore(tmp_path / "s", reserve_bytes=0) as s:
        look = unit(rng)
        base = [s.add(ep("cam1", i, f"sound{i}", unit(rng), wall=NOW - 3600), [noisy(rng)])
                for i in range(0, 20, 2)]  # fmt: skip
        dupes = [
            s.add(ep("cam1", 100 + i, f"sound{i}", look, wall=NOW - 3600), [noisy(rng)])
            for i in range(10)
        ]  # fmt: skip  (same look as the one before: redundant)
        checkpoint(s)  # the WAL folded in: only episodes' own bytes remain to free
        limit = int(store_bytes(s) * 0.75)
        s.retention = RetentionPolicy(max_bytes=limit)
        report = s.enforce_retention(now=NOW)
        assert report["forgotten"] > 0 and store_bytes(s) <= limit
        gone = set(report["size"])
        assert gone <= {e.episode_id for e in dupes[1:]}  # only redundant ones went
        assert all(e.episode_id not in gone for e in base)
        assert s.check()["ok"]


def test_forget_range(tmp_path: Path, rng) -> None:
    with EpisodeStore(tmp_path / "s") as s:
        eps = [s.add(ep(f"cam{i % 2}", 10.0 * i, "knock", unit(rng), keyframes=1), [noisy(rng)])
               for i in range(6)]  # fmt: skip
        s.add_sounds("cam0", [SoundRecord("dog", 0.5, 25.0, 26.0), SoundRecord("dog", 0.5, 70, 71)])
        with pytest.raises(ParameterError, match="needs a source or a time range"):
            s.forget_range()
        preview = s.forget_range(since=15.0, until=41.0, dry_run=True)
        assert preview["episodes"] == [3, 4, 5] and s.stats()["episodes"] == 6
        done = s.forget_range(since=15.0, until=41.0, source="cam0")
        assert done["episodes"] == [3, 5] and done["sounds"] == 1  # dog at 25 s on cam0
        assert [e.episode_id for e in s.episodes()] == [1, 2, 4, 6]
        assert not (s.path / eps[2].keyframes[0]).exists()
        assert [x.sound.t_start for x in s.sounds(label="dog")] == [70.0]
        assert s.check()["ok"]


def test_retention_runs_while_adding(tmp_path: Path, rng, monkeypatch) -> None:
    monkeypatch.setattr(memory.store, "RETENTION_EVERY_S", 0.0)
    policy = RetentionPolicy(max_age_days=1.0)
    with EpisodeStore(tmp_path / "s", retention=policy) as s:
        old = s.add(ep("cam1", 0, "knock", unit(rng), wall=time.time() - 5 * DAY_S))
        s.add(ep("cam1", 10, "knock", unit(rng), wall=time.time()))
        assert old.episode_id not in {e.episode_id for e in s.episodes()}


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 3 MiB tmpfs (root only): a real ENOSPC, not a simulation."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        if IN_CI:
            pytest.fail("the disk-full test needs root (mount -t tmpfs) under CI")
        pytest.skip("needs root to mount a tiny tmpfs")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_makes_room_and_never_corrupts(tiny_disk: Path, rng) -> None:
    acked = []
    with EpisodeStore(tiny_disk / "s", reserve_bytes=512 * 1024) as s:
        for i in range(200):  # ~25 kB per episode: ~5 MB into 3 MiB
            acked.append(s.add(ep("cam1", i, f"sound{i % 5}", unit(rng), wall=NOW + i,
                                  keyframes=1), [noisy(rng)]).episode_id)  # fmt: skip
        assert s.check()["ok"]
        kept = {e.episode_id for e in s.episodes(limit=1000)}
        assert acked[-1] in kept and len(kept) < 200  # retention made room, newest kept
    with EpisodeStore(tiny_disk / "s", readonly=True) as r:
        assert r.check()["ok"]


def test_full_disk_without_retention_is_a_clear_error(tiny_disk: Path, rng) -> None:
    policy = RetentionPolicy(make_room_when_full=False)
    acked = []
    with EpisodeStore(tiny_disk / "s", retention=policy, reserve_bytes=0) as s:
        with pytest.raises(StoreFull, match="disk full") as err:
            for i in range(200):
                acked.append(s.add(ep("cam1", i, "knock", unit(rng), keyframes=1),
                                   [noisy(rng)]).episode_id)  # fmt: skip
        assert isinstance(err.value, OSError)
        assert len(acked) > 10
        assert [e.episode_id for e in s.episodes(limit=1000)] == acked  # nothing lost or half
    with EpisodeStore(tiny_disk / "s", readonly=True) as r:
        assert r.check()["ok"]


def test_store_forget_and_prune_cli(tmp_path: Path, rng) -> None:
    import json

    from tests.test_cli import eidetic

    store = tmp_path / "s"
    with EpisodeStore(store) as s:
        for i in range(6):
            s.add(ep(f"cam{i % 2}", 10.0 * i, "knock", unit(rng), wall=time.time() - i * DAY_S))
    r = eidetic(
        "store",
        "forget",
        "--since",
        "15",
        "--until",
        "41",
        "--dry-run",
        "--store",
        str(store),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["forgotten"] == [3, 4, 5]
    r = eidetic(
        "store", "forget", "--source", "cam1", "--since", "15", "--store", str(store), "--json"
    )
    assert json.loads(r.stdout)["forgotten"] == [4, 6]
    r = eidetic("store", "forget", "1", "--store", str(store), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["forgotten"] == [1]
    r = eidetic("store", "forget", "1", "--store", str(store), "--json")
    assert r.returncode == 2 and "no episode with id 1" in json.loads(r.stdout)["error"]
    r = eidetic("store", "forget", "--store", str(store))
    assert r.returncode == 2 and "EPISODE_ID" in r.stderr
    r = eidetic("store", "prune", "--dry-run", "--store", str(store), "--json")
    assert r.returncode == 0, r.stderr  # the default clip budget is a limit (no clips here)
    assert json.loads(r.stdout)["clips_dropped"] == [] and json.loads(r.stdout)["forgotten"] == 0
    assert json.loads(r.stdout)["clips_dropped_by_size"] == 0  # no clips: none to drop for size
    no_limits = tmp_path / "no_limits.yaml"
    no_limits.write_text("retention:\n  clip_mb_per_hour: null\n")
    r = eidetic("store", "prune", "--config", str(no_limits), "--store", str(store), "--json")
    assert r.returncode == 2 and "no retention limits" in json.loads(r.stdout)["error"]
    r = eidetic("store", "prune", "--max-age-days", "1.5", "--store", str(store), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["by_age"] == [3, 5]  # 2 and 4 days old (1 day: kept)
    r = eidetic("store", "check", "--store", str(store), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["episodes"] == 1
