"""Few-shot custom trigger sounds: `eidetic sounds add|list|remove` and their use by `events`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from models.audio.sounds import SoundLibrary, enrollment_threshold
from models.errors import ParameterError
from tests.test_cli import eidetic

SR = 16000


def chime(rng: np.random.Generator, *, noise_db: float = -45.0, lead_s: float = 0.5) -> np.ndarray:
    """A two-note chime (a made-up doorbell: 880 Hz then 660 Hz, with harmonics), its pitch,
    speed and level varied a little, over fresh noise: one example of the same sound."""
    pitch = rng.uniform(0.97, 1.03)
    note_s = 0.35 * rng.uniform(0.9, 1.1)
    t = np.arange(int(note_s * SR)) / SR
    env = np.exp(-t * 6.0)
    notes = [
        sum(np.sin(2 * np.pi * f * pitch * k * t) / k for k in (1, 2, 3)) * env for f in (880.0, 660.0)
    ]
    body = np.concatenate(notes) * 10 ** (rng.uniform(-14, -8) / 20)
    lead = int(lead_s * SR)
    y = rng.standard_normal(lead + body.size + lead) * 10 ** (noise_db / 20)
    y[lead : lead + body.size] += body
    return y.astype(np.float32)


def buzz(rng: np.random.Generator) -> np.ndarray:
    """A different sound: 0.6 s of band-limited noise bursts (a rattle)."""
    n = int(0.6 * SR)
    x = rng.standard_normal(n)
    x = np.convolve(x, np.ones(8) / 8, mode="same") * (np.arange(n) % 1600 < 800)
    return (x * 0.3).astype(np.float32)


def write(path, y) -> str:
    sf.write(path, y, SR)
    return str(path)


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory):
    """A store whose sounds/ holds "doorbell", enrolled from four example files."""
    root = tmp_path_factory.mktemp("sounds")
    rng = np.random.default_rng(7)
    clips = [write(root / f"bell{i}.wav", chime(rng)) for i in range(4)]
    store = root / "store"
    r = eidetic("sounds", "add", "doorbell", *clips, "--store", str(store), "--json")
    assert r.returncode == 0, r.stderr
    return store, json.loads(r.stdout), rng


def test_add_writes_the_sound_and_list_shows_it(enrolled):
    store, doc, _ = enrolled
    added = doc["added"]
    assert added["name"] == "doorbell" and added["n_examples"] == 4 and added["dim"] == 128
    assert 0.6 <= added["threshold"] < 1.0
    assert (store / "sounds" / "doorbell.json").is_file() and (store / "sounds" / "doorbell.npy").is_file()
    r = eidetic("sounds", "list", "--store", str(store), "--json")
    assert r.returncode == 0, r.stderr
    rows = {s["name"]: s for s in json.loads(r.stdout)["sounds"]}
    assert rows["doorbell"]["custom"] and rows["doorbell"]["trigger"]
    assert rows["glass_breaking"]["trigger"] and not rows["dog"]["trigger"]  # defaults
    human = eidetic("sounds", "list", "--store", str(store))
    assert "doorbell" in human.stdout and "dog" not in human.stdout


def test_events_label_the_enrolled_sound_and_only_it(enrolled, tmp_path):
    store, _, rng = enrolled
    mix = (rng.standard_normal(14 * SR) * 10 ** (-45 / 20)).astype(np.float32)
    bell, other = chime(rng, noise_db=-80), buzz(rng)
    mix[4 * SR : 4 * SR + bell.size] += bell
    mix[10 * SR : 10 * SR + other.size] += other
    media = write(tmp_path / "mix.wav", mix)
    r = eidetic("events", media, "--store", str(store), "--json")
    assert r.returncode == 0, r.stderr
    events = json.loads(r.stdout)["events"]
    bells = [e for e in events if e["label"] == "doorbell"]
    assert bells and all(4.0 <= e["t_start"] <= 5.5 and e["trigger"] for e in bells), events
    assert not any(e["label"] == "doorbell" and e["t_start"] >= 9.5 for e in events), events
    # without the enrolled sound, the chime is not called a doorbell
    r = eidetic("events", media, "--store", str(tmp_path / "empty"), "--json")
    assert r.returncode == 0 and "doorbell" not in r.stdout


def test_bad_names_and_clips_are_refused(enrolled, tmp_path):
    store, _, rng = enrolled
    clip = write(tmp_path / "c.wav", chime(rng))
    for name in ("Bad Name!", "dog", "sound"):
        r = eidetic("sounds", "add", name, clip, "--store", str(store))
        assert r.returncode == 2 and "name" in r.stderr, (name, r.stderr)
    r = eidetic("sounds", "add", "doorbell", clip, "--store", str(store))
    assert r.returncode == 2 and "exists" in r.stderr
    silent = write(tmp_path / "silent.wav", np.zeros(SR, dtype=np.float32))
    r = eidetic("sounds", "add", "hush", silent, "--store", str(store), "--json")
    assert r.returncode == 3 and "silent" in json.loads(r.stdout)["error"]
    text = tmp_path / "notes.txt"
    text.write_text("not audio\n" * 50)
    r = eidetic("sounds", "add", "notes", str(text), "--store", str(store))
    assert r.returncode == 3
    assert not (store / "sounds" / "hush.json").exists() and not (store / "sounds" / "notes.json").exists()


def test_remove_forgets_the_sound(tmp_path):
    rng = np.random.default_rng(3)
    store = tmp_path / "store"
    clips = [write(tmp_path / f"b{i}.wav", chime(rng)) for i in range(2)]
    assert eidetic("sounds", "add", "bell", *clips, "--store", str(store)).returncode == 0
    r = eidetic("sounds", "remove", "bell", "--store", str(store), "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"removed": "bell", "sounds_dir": str(store / "sounds")}
    assert not any((store / "sounds").iterdir())
    r = eidetic("sounds", "remove", "bell", "--store", str(store))
    assert r.returncode == 2 and "no custom sound" in r.stderr


def test_library_threshold_and_validation(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 8)).astype(np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    sims = a @ a.T
    np.fill_diagonal(sims, -1)
    assert enrollment_threshold(a) == pytest.approx(max(0.6, sims.max(axis=1).min() - 0.05))
    assert enrollment_threshold(a[:1]) == 0.8
    lib = SoundLibrary(tmp_path, builtin=("dog",))
    s = lib.add("tick", a, ["a", "b", "c"], threshold=0.9)
    assert lib.names() == ["tick"] and lib.get("tick").threshold == 0.9
    assert s.similarity(a[1]) == pytest.approx(1.0)
    with pytest.raises(ParameterError, match="exists"):
        lib.add("tick", a, ["a", "b", "c"])
    with pytest.raises(ParameterError, match="zeros"):
        lib.add("zero", np.zeros((1, 8), np.float32), ["z"])
    with pytest.raises(ParameterError, match="NaN"):
        lib.add("nan", np.full((1, 8), np.nan, np.float32), ["n"])
    with pytest.raises(ParameterError, match="built-in"):
        lib.add("dog", a, ["a", "b", "c"])
    assert lib.remove("tick") and not lib.remove("tick") and lib.names() == []
