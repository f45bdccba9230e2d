"""ESC-50: class names, the groups the trigger uses, and a deterministic split by source recording.

ESC-50 (Piczak, ACM MM 2015) is CC BY-NC 3.0 (its ESC-10 subset CC BY 3.0): anything trained or
tuned on it is for non-commercial use. Clips cut from one Freesound recording share a ``src_file``;
:func:`split` never puts two clips of one recording in different parts, so no recording is both
trained on and scored.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from models.errors import ParameterError

CLASSES: tuple[str, ...] = (
    # animals
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    # natural soundscapes and water
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind",
    "pouring_water", "toilet_flush", "thunderstorm",
    # human, non-speech
    "crying_baby", "sneezing", "clapping", "breathing", "coughing", "footsteps", "laughing",
    "brushing_teeth", "snoring", "drinking_sipping",
    # interior / domestic
    "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks", "can_opening",
    "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick", "glass_breaking",
    # exterior / urban
    "helicopter", "chainsaw", "siren", "car_horn", "engine", "train", "church_bells", "airplane",
    "fireworks", "hand_saw",
)  # fmt: skip
"""The 50 class names, index = ESC-50 ``target``."""

DEFAULT_TRIGGERS: tuple[str, ...] = (
    "door_wood_knock", "door_wood_creaks", "can_opening", "glass_breaking", "keyboard_typing",
    "mouse_click", "pouring_water", "toilet_flush", "brushing_teeth", "drinking_sipping",
    "clapping", "footsteps", "clock_alarm",
)  # fmt: skip
"""Trigger classes by default (DESIGN.md §2.2)."""

TYPICAL_SPAN_S: dict[str, float] = {
    "door_wood_knock": 1.26, "door_wood_creaks": 5.0, "can_opening": 1.88, "glass_breaking": 3.27,
    "keyboard_typing": 4.93, "mouse_click": 4.18, "pouring_water": 4.95, "toilet_flush": 5.0,
    "brushing_teeth": 5.0, "drinking_sipping": 2.88, "clapping": 5.0, "footsteps": 5.0,
    "clock_alarm": 5.0, "hand_saw": 5.0, "water_drops": 4.7,
}  # fmt: skip
"""Median active span (s, capped at 5 s) of the *train* clips of the interaction and default
trigger classes (active part: frames within 30 dB of the clip's loudest, as in
:func:`benchmarks.soundscapes.active_span`): how long such a sound usually lasts, used to size
its capture (``trigger.first_capture_fraction``). Checked against the data by ``tests/test_models_audio_spans.py``."""

INTERACTION: tuple[str, ...] = (
    "door_wood_knock", "door_wood_creaks", "can_opening", "glass_breaking", "keyboard_typing",
    "mouse_click", "pouring_water", "toilet_flush", "brushing_teeth", "drinking_sipping",
    "clapping", "footsteps", "hand_saw", "water_drops",
)  # fmt: skip
"""Positives of the "domestic interaction sound" score: a person handling an object or a surface
(contact, friction, impacts, liquids). ``clock_alarm`` triggers by its own class, but an electronic
beep is not an interaction and teaching the score otherwise would make it fire on sirens and horns."""

BACKGROUND: tuple[str, ...] = (
    "rain", "wind", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "engine", "train",
    "airplane", "helicopter", "washing_machine", "vacuum_cleaner", "clock_tick",
)  # fmt: skip
"""Continuous backgrounds of the trigger evaluation (DESIGN.md §4)."""

DISTRACTORS: tuple[str, ...] = (
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "crying_baby", "sneezing", "breathing", "coughing", "laughing", "snoring",
)  # fmt: skip
"""Sounds that are not interactions and must not trigger: animals and human vocal sounds."""

SPLITS = ("train", "val", "test")
TEST_CLIPS = 2  # clips per class held out for scoring (of ~8)
VAL_CLIPS = 1  # clips per class held out for early stopping and calibration


@dataclass(frozen=True, slots=True)
class Clip:
    """One ESC-50 clip: its audio file, fold, class id and name, source recording and take."""

    path: Path
    fold: int
    target: int
    category: str
    src_file: str
    take: str


def data_dir() -> Path:
    """``$EIDETIC_SHARED_DATA/esc50``, or ``../shared/data/esc50`` beside the repository."""
    env = os.environ.get("EIDETIC_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    return root / "esc50"


def read_meta(root: str | Path | None = None) -> list[Clip]:
    """Clips listed in ``<root>/meta/esc50.csv`` whose audio (``audio/<stem>.flac`` or ``.wav``)
    exists, in file order.

    Raises
    ------
    ParameterError
        If the metadata file is missing or a row names an unknown class.
    """
    root = Path(root) if root is not None else data_dir()
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise ParameterError(f"ESC-50 metadata not found: {meta} (set EIDETIC_SHARED_DATA)")
    clips = []
    with meta.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            target = int(row["target"])
            if not 0 <= target < len(CLASSES) or CLASSES[target] != row["category"]:
                raise ParameterError(f"{meta}: unknown class {row['category']!r} ({target})")
            stem = Path(row["filename"]).stem
            path = next(
                (p for p in (root / "audio" / f"{stem}.flac", root / "audio" / f"{stem}.wav")
                 if p.is_file()),
                None,
            )  # fmt: skip
            if path is not None:
                clips.append(
                    Clip(path, int(row["fold"]), target, row["category"], row["src_file"], row["take"])
                )
    return clips


def _rank(src_file: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{src_file}".encode()).hexdigest()


def split(clips: list[Clip], *, seed: int = 0) -> dict[str, list[Clip]]:
    """Split clips into ``train`` / ``val`` / ``test`` by source recording.

    Per class, the recordings are taken in an order fixed by ``seed`` (a hash of the src_file);
    test takes recordings until it holds ``TEST_CLIPS`` clips, then val until ``VAL_CLIPS``, the
    rest is train; a class keeps at least one recording for training (a class recorded once,
    e.g. washing_machine here, is train only). Deterministic for a given clip list and seed.

    Returns
    -------
    dict[str, list[Clip]]
        ``{"train": [...], "val": [...], "test": [...]}``, each in the input order.
    """
    groups: dict[int, dict[str, list[Clip]]] = defaultdict(lambda: defaultdict(list))
    for c in clips:
        groups[c.target][c.src_file].append(c)
    part: dict[str, str] = {}
    for recs in groups.values():
        order = sorted(recs, key=lambda s: _rank(s, seed))
        n = {"test": 0, "val": 0}
        for i, src in enumerate(order):
            left = len(order) - i - 1  # recordings after this one
            if n["test"] < TEST_CLIPS and left >= 1:
                name = "test"
            elif n["val"] < VAL_CLIPS and left >= 1:
                name = "val"
            else:
                name = "train"
            if name in n:
                n[name] += len(recs[src])
            part[src] = name
    out: dict[str, list[Clip]] = {s: [] for s in SPLITS}
    for c in clips:
        out[part[c.src_file]].append(c)
    return out
