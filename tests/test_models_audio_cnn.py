"""Tests of the shipped audio CNN: loading, shapes, strict checkpoints, held-out accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from models.audio import esc50
from models.audio.cnn import (
    EMBEDDING_DIM,
    WEIGHTS,
    AudioClassifier,
    AudioCNN,
    ModelError,
    Prediction,
    load_checkpoint,
)
from models.audio.features import N_MELS, PATCH_FRAMES, SAMPLE_RATE, log_mel, patches
from models.errors import CheckpointError, ParameterError

# Ten test classes that sound unlike each other (animals, vocal, water, machines, alarms).
DISTINCT = (
    "dog", "rooster", "crying_baby", "rain", "toilet_flush", "keyboard_typing", "chainsaw",
    "siren", "church_bells", "clock_alarm",
)  # fmt: skip


@pytest.fixture(scope="module")
def clf() -> AudioClassifier:
    return AudioClassifier()


@pytest.fixture(scope="module")
def test_clips(shared_data: Path) -> list[esc50.Clip]:
    return esc50.split(esc50.read_meta(shared_data / "esc50"))["test"]


def clip_scores(clf: AudioClassifier, clips: list[esc50.Clip]) -> Prediction:
    """``predict_clip`` of each clip, stacked into one Prediction of ``len(clips)`` rows."""
    rows = [clf.predict_clip(sf.read(c.path, dtype="float32")[0]) for c in clips]
    return Prediction(*(np.concatenate([getattr(r, f) for r in rows]) for f in
                        ("probs", "interaction", "embedding")))  # fmt: skip


def check_prediction(p: Prediction, n: int) -> None:
    assert p.probs.shape == (n, 50) and p.probs.dtype == np.float32
    assert p.interaction.shape == (n,) and p.interaction.dtype == np.float32
    assert p.embedding.shape == (n, EMBEDDING_DIM) and p.embedding.dtype == np.float32
    assert np.all(p.probs >= 0) and np.allclose(p.probs.sum(1), 1, atol=1e-5)
    assert np.all((p.interaction >= 0) & (p.interaction <= 1))
    assert np.allclose(np.linalg.norm(p.embedding, axis=1), 1, atol=1e-5)


def test_shipped_checkpoint_is_complete(clf: AudioClassifier):
    assert WEIGHTS.is_file() and WEIGHTS.stat().st_size < 3_000_000
    assert clf.classes == esc50.CLASSES
    assert clf.interaction_classes == esc50.INTERACTION
    assert 0.05 < clf.temperature < 20 and clf.platt[0] > 0
    _, ckpt = load_checkpoint()
    assert "python -m models.audio.train" in ckpt["train"]["command"]
    assert len(ckpt["norm"]["mean"]) == len(ckpt["norm"]["std"]) == N_MELS
    assert WEIGHTS.with_suffix(".json").is_file()


def test_predict_shapes_ranges_and_norm(clf: AudioClassifier, rng: np.random.Generator):
    x = patches(log_mel((0.1 * rng.standard_normal(3 * SAMPLE_RATE)).astype(np.float32)))
    check_prediction(clf.predict(x), len(x))
    check_prediction(clf.predict(x.astype(np.float64)), len(x))


def test_predict_zero_patches(clf: AudioClassifier):
    check_prediction(clf.predict(np.zeros((0, PATCH_FRAMES, N_MELS), np.float32)), 0)


def test_predict_rejects_bad_input(clf: AudioClassifier):
    with pytest.raises(ParameterError, match="96, 64"):
        clf.predict(np.zeros((2, 64, 96), np.float32))
    with pytest.raises(ParameterError, match="NaN"):
        clf.predict(np.full((1, PATCH_FRAMES, N_MELS), np.nan, np.float32))


def test_forward_is_deterministic(clf: AudioClassifier, rng: np.random.Generator):
    x = torch.from_numpy(rng.normal(-4, 2, (4, PATCH_FRAMES, N_MELS)).astype(np.float32))
    with torch.inference_mode():
        a, b = clf.model(x), clf.model(x)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert a[0].shape == (4, 50) and a[1].shape == (4,) and a[2].shape == (4, EMBEDDING_DIM)


def test_predict_clip_short_and_long(clf: AudioClassifier, rng: np.random.Generator):
    short = (0.3 * rng.standard_normal(SAMPLE_RATE // 10)).astype(np.float32)  # 0.1 s
    check_prediction(clf.predict_clip(short), 1)
    long = (0.1 * rng.standard_normal(int(2.3 * SAMPLE_RATE))).astype(np.float32)
    check_prediction(clf.predict_clip(long), 1)
    e = clf.embed_clip(long)
    assert e.shape == (EMBEDDING_DIM,) and np.isclose(np.linalg.norm(e), 1, atol=1e-5)
    with pytest.raises(ParameterError, match="too short"):
        clf.predict_clip(np.zeros(300, np.float32))


def _saved(tmp_path: Path, edit) -> Path:
    ckpt = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    edit(ckpt)
    path = tmp_path / "edited.pt"
    torch.save(ckpt, path)
    return path


def test_strict_key_check(tmp_path: Path):
    missing = _saved(tmp_path, lambda c: c["state_dict"].pop("embed.weight"))
    with pytest.raises(CheckpointError, match="missing keys \\['embed.weight'\\]"):
        AudioClassifier(missing)
    extra = _saved(tmp_path, lambda c: c["state_dict"].update(bogus=torch.zeros(1)))
    with pytest.raises(ModelError, match="unexpected keys \\['bogus'\\]"):
        AudioClassifier(extra)
    shape = _saved(tmp_path, lambda c: c["state_dict"].update(norm_mean=torch.zeros(3)))
    with pytest.raises(CheckpointError, match="norm_mean"):
        AudioClassifier(shape)
    no_platt = _saved(tmp_path, lambda c: c.pop("platt"))
    with pytest.raises(CheckpointError, match="platt"):
        AudioClassifier(no_platt)


def test_missing_and_corrupt_files(tmp_path: Path):
    with pytest.raises(CheckpointError, match="not found"):
        AudioClassifier(tmp_path / "nope.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(WEIGHTS.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cannot read"):
        AudioClassifier(bad)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": AudioCNN().state_dict()}, other)
    with pytest.raises(CheckpointError, match="eidetic-audio-cnn"):
        AudioClassifier(other)


def test_held_out_clips_of_distinct_classes(clf: AudioClassifier, test_clips: list[esc50.Clip]):
    clips = [c for c in test_clips if c.category in DISTINCT]
    assert len(clips) >= 15
    p = clip_scores(clf, clips)
    acc = float(np.mean(p.probs.argmax(1) == np.array([c.target for c in clips])))
    assert acc >= 0.4, f"50-way accuracy {acc:.2f} on {len(clips)} held-out clips (chance 0.02)"


def test_interaction_score_separates_held_out_clips(
    clf: AudioClassifier, test_clips: list[esc50.Clip]
):
    pos = [c for c in test_clips if c.category in esc50.INTERACTION]
    neg = [c for c in test_clips if c.category in esc50.DISTRACTORS]
    q_pos, q_neg = clip_scores(clf, pos).interaction, clip_scores(clf, neg).interaction
    assert q_pos.mean() > q_neg.mean() + 0.2, (q_pos.mean(), q_neg.mean())


@pytest.mark.parametrize("n", [1, 3, 70])
def test_fused_forward_matches_eager_module(clf: AudioClassifier, n: int):
    # the streaming path (batch norm folded, oneDNN where torch has it) scores like the module,
    # and so does its plain-torch fallback
    from models.audio.cnn import FusedCNN

    x = torch.from_numpy(np.random.default_rng(n).normal(-4, 2, (n, PATCH_FRAMES, N_MELS)))
    x = x.float()
    with torch.inference_mode():
        ref = clf.model(x)
        for mkldnn in (None, False):
            for a, b in zip(FusedCNN(clf.model, mkldnn=mkldnn)(x), ref):
                np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, rtol=1e-5)
