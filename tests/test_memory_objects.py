"""Persistent object identities: re-identification across episodes/sources, timeline, names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from memory.errors import ParameterError
from memory.store import EpisodeStore
from memory.types import Episode, ObjectRecord
from models.embedders.classical import ClassicalEmbedder

D = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x)).astype(np.float32)


def obj(track_id: int, desc: np.ndarray, t0: float, label: str = "object") -> ObjectRecord:
    return ObjectRecord(track_id, label, t0, t0 + 1.0, 3, (0, 0, 1, 1), descriptor=desc)


def ep(source: str, t0: float, *objects: ObjectRecord, wall: float | None = None) -> Episode:
    return Episode(source=source, t_start=t0, t_end=t0 + 2, labels=("sound",), summary="s",
                   objects=objects, wall_start=wall)  # fmt: skip


@pytest.fixture
def looks(rng: np.random.Generator):
    """Two identities' descriptors and noisy views of them (cosine ~0.97 to their identity)."""
    a, b = unit(rng.standard_normal(D)), unit(rng.standard_normal(D))

    def view(x: np.ndarray) -> np.ndarray:
        return unit(x + 0.25 * rng.standard_normal(D) / np.sqrt(D))

    return a, b, view


def test_identities_across_episodes_and_sources(tmp_path: Path, looks) -> None:
    a, b, view = looks
    with EpisodeStore(tmp_path / "s") as s:
        e1 = s.add(ep("cam1", 0.0, obj(1, view(a), 0.5), wall=1000.0))
        e2 = s.add(ep("cam1", 10.0, obj(1, view(b), 10.5)))
        e3 = s.add(ep("cam2", 3.0, obj(7, view(a), 3.2), obj(8, view(b), 4.0)))
        found = s.objects()
        assert len(found) == 2
        by_first = {o.first_seen.episode_id: o for o in found}
        oa, ob = by_first[e1.episode_id], by_first[e2.episode_id]
        assert (oa.n_sightings, ob.n_sightings) == (2, 2)
        assert oa.last_seen.episode_id == e3.episode_id and oa.last_seen.source == "cam2"
        assert oa.sources == ("cam1", "cam2") and oa.first_seen.wall_first == 1000.5
        assert [x.episode_id for x in s.object_timeline(oa.object_id)] == [1, 3]
        assert {x.object_id for x in s.sightings(e3.episode_id)} == {oa.object_id, ob.object_id}
        assert found[0].last_seen.episode_id == 3  # most recently seen first


def test_one_track_per_identity_per_episode_and_labels(tmp_path: Path, looks) -> None:
    a, _, view = looks
    with EpisodeStore(tmp_path / "s") as s:
        s.add(ep("cam1", 0.0, obj(1, view(a), 0.0, label="cup")))
        s.add(ep("cam1", 5.0, obj(1, view(a), 5.0, label="cup"), obj(2, view(a), 5.0, label="cup")))
        s.add(ep("cam1", 9.0, obj(1, view(a), 9.0, label="car")))  # same look, other label
        s.add(ep("cam1", 12.0, obj(1, view(a), 12.0)))  # generic label matches anything
        found = s.objects()
        # the twin in episode 2 and the "car" are new identities; the generic one matches one
        assert len(found) == 3 and sum(o.n_sightings for o in found) == 5
        assert sorted(o.label for o in found) == ["car", "cup", "cup"]


def test_names_are_unique_searchable_and_survive_forget(tmp_path: Path, looks) -> None:
    a, b, view = looks
    with EpisodeStore(tmp_path / "s") as s:
        e1 = s.add(ep("cam1", 0.0, obj(1, view(a), 0.0)))
        e2 = s.add(ep("cam1", 5.0, obj(1, view(b), 5.0)))
        oa = next(o for o in s.objects() if o.first_seen.episode_id == e1.episode_id)
        s.name_object(oa.object_id, "  my   keys ")
        assert s.objects(named=True)[0].name == "my keys"
        e3 = s.add(ep("cam2", 9.0, obj(4, view(a), 9.0)))  # seen again after naming
        assert {i for i, _ in s.search_text("keys")} == {e1.episode_id, e3.episode_id}
        ob = next(o for o in s.objects() if o.first_seen.episode_id == e2.episode_id)
        with pytest.raises(ParameterError, match="taken by object"):
            s.name_object(ob.object_id, "my keys")
        with pytest.raises(ParameterError, match="no object with id 999"):
            s.name_object(999, "x")
        with pytest.raises(ParameterError, match="1-80 characters"):
            s.name_object(ob.object_id, "   ")
        s.forget_many([e1.episode_id, e2.episode_id, e3.episode_id])
        left = s.objects()
        assert [(o.name, o.n_sightings, o.last_seen) for o in left] == [("my keys", 0, None)]
        assert s.check()["ok"]
        e4 = s.add(ep("cam1", 20.0, obj(1, view(a), 20.0)))  # still recognised by name
        assert s.objects(named=True)[0].last_seen.episode_id == e4.episode_id
        s.name_object(left[0].object_id, None)
        assert s.search_text("keys") == []


def test_real_descriptors_reidentify_a_painted_object(tmp_path: Path) -> None:
    """Classical descriptors of a red textured square on two backgrounds vs a blue disc."""
    rng = np.random.default_rng(3)
    emb = ClassicalEmbedder()

    def scene(kind: str, x0: int, bg: int) -> tuple[np.ndarray, np.ndarray]:
        img = np.full((120, 160, 3), bg, np.uint8)
        img += rng.integers(0, 12, img.shape, dtype=np.uint8)
        yy, xx = np.mgrid[:120, :160]
        if kind == "square":
            mask = (abs(yy - 60) < 25) & (abs(xx - x0) < 25)
            img[mask] = (200, 30, 30)
            img[mask & ((yy // 6) % 2 == 0)] = (230, 200, 40)  # stripes
        else:
            mask = (yy - 60) ** 2 + (xx - x0) ** 2 < 26**2
            img[mask] = (30, 60, 210)
        return img, mask

    def describe(kind: str, x0: int, bg: int) -> np.ndarray:
        img, mask = scene(kind, x0, bg)
        return emb.embed_images([img], [mask])[0]

    with EpisodeStore(tmp_path / "s") as s:
        s.add(ep("cam1", 0.0, obj(1, describe("square", 40, 60), 0.0)))
        s.add(ep("cam2", 5.0, obj(1, describe("disc", 80, 60), 5.0)))
        s.add(ep("cam2", 9.0, obj(3, describe("square", 110, 90), 9.0)))
        counts = sorted(o.n_sightings for o in s.objects())
        assert counts == [1, 2]


def test_objects_cli_list_show_name(tmp_path: Path, looks) -> None:
    from tests.test_cli import eidetic

    a, b, view = looks
    store = tmp_path / "s"
    with EpisodeStore(store) as s:
        s.add(ep("cam1", 0.0, obj(1, view(a), 0.5)))
        s.add(ep("cam2", 4.0, obj(1, view(a), 4.5), obj(2, view(b), 5.0)))
    r = eidetic("objects", "list", "--store", str(store), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert len(doc["objects"]) == 2
    oa = next(o for o in doc["objects"] if o["sightings"] == 2)
    assert oa["last_seen"]["source"] == "cam2" and oa["first_seen"]["episode_id"] == 1
    r = eidetic("objects", "name", str(oa["object_id"]), "red mug", "--store", str(store), "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {
        "object_id": oa["object_id"],
        "name": "red mug",
    }
    r = eidetic("objects", "list", "--named", "--store", str(store))
    assert (
        r.returncode == 0 and "red mug" in r.stdout and "last seen in episode 2 on cam2" in r.stdout
    )
    r = eidetic("objects", "show", str(oa["object_id"]), "--store", str(store), "--json")
    assert [x["episode_id"] for x in json.loads(r.stdout)["sightings"]] == [1, 2]
    other = next(o for o in doc["objects"] if o["sightings"] == 1)["object_id"]
    r = eidetic("objects", "name", str(other), "red mug", "--store", str(store), "--json")
    assert r.returncode == 2 and "taken by object" in json.loads(r.stdout)["error"]
    r = eidetic("objects", "show", "999", "--store", str(store))
    assert r.returncode == 2 and "no object with id 999" in r.stderr
    r = eidetic("objects", "list", "--store", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "no store" in r.stderr
