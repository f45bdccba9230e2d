"""Training-recipe pieces of models.audio.train on small synthetic mel-power clips (no files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.audio import esc50
from models.audio.cnn import AudioCNN, CNNConfig
from models.audio.features import N_MELS, PATCH_FRAMES
from models.audio.train import (
    Recipe,
    band_stats,
    interaction_mask,
    load_set,
    make_batch,
    parse_overrides,
    score,
)

T = 300  # frames per synthetic clip (3 s)


def _clips(n: int) -> tuple[list[esc50.Clip], dict[Path, np.ndarray]]:
    """``n`` clips of distinct classes: a 10-frame burst at the very start over faint noise."""
    rng = np.random.default_rng(0)
    clips, cache = [], {}
    for i in range(n):
        c = esc50.Clip(Path(f"/nonexistent/{i}.wav"), 1, i, esc50.CLASSES[i], f"src{i}", "A")
        p = rng.uniform(1e-6, 2e-6, (T, N_MELS)).astype(np.float32)
        p[:10] += 1.0
        clips.append(c)
        cache[c.path] = p
    return clips, cache


def test_padding_lets_crops_start_before_the_clip_and_stats_ignore_it():
    clips, cache = _clips(3)
    plain = load_set(clips, cache)
    padded = load_set(clips, cache, pad=48)
    assert padded.power.shape == (3, T + 96, N_MELS)
    assert padded.frames == [T] * 3
    # the burst sits at the clip start: unpadded, the first patch is the only place for it;
    # padded, patches starting up to 48 frames earlier hold it in their middle too
    assert int(plain.starts[0].min()) == 0
    assert int(padded.starts[0].min()) == 0  # = 48 frames before the clip
    assert int(padded.starts[0].max()) <= T + 96 - PATCH_FRAMES
    assert torch.equal(padded.power[0, 48 : 48 + T], plain.power[0])
    assert not padded.power[:, :48].any() and not padded.power[:, 48 + T :].any()
    # per-band statistics come from the clips' own frames, not from the digital-silence padding
    mean_p, std_p = band_stats(padded)
    starts = padded.starts[0]
    assert mean_p.shape == (N_MELS,) and torch.isfinite(std_p).all()
    frames = torch.unique(starts[:, None] + torch.arange(PATCH_FRAMES))
    own = frames[(frames >= 48) & (frames < 48 + T)]
    assert len(own) < len(frames)  # the active windows did reach into the padding
    ref = torch.cat([torch.log(padded.power[i, own] + 0.001) for i in range(3)]).mean(0)
    assert torch.allclose(mean_p, ref, atol=1e-5)


def test_scoring_a_padded_set_equals_the_unpadded_one():
    clips, cache = _clips(2)
    torch.manual_seed(0)
    model = AudioCNN(CNNConfig()).eval()
    a = score(model, load_set(clips, cache), interaction_mask())
    b = score(model, load_set(clips, cache, pad=48), interaction_mask())
    for x, y in zip(a.logits, b.logits):
        assert torch.equal(x, y)


def test_make_batch_shapes_and_targets():
    clips, cache = _clips(4)
    data = load_set(clips, cache, pad=48)
    r = Recipe(batch=16)
    g = torch.Generator().manual_seed(0)
    weights = torch.ones(len(clips))
    background = torch.tensor([1], dtype=torch.long)
    x, y, t = make_batch(data, weights, background, interaction_mask(), r, g)
    assert x.shape == (16, PATCH_FRAMES, N_MELS) and torch.isfinite(x).all()
    assert torch.allclose(y.sum(1), torch.ones(16))
    assert set(y.argmax(1).tolist()) <= {0, 1, 2, 3}
    assert not t.any()  # classes 0-3 (dog, rooster, pig, cow) are not interactions


def test_parse_overrides_types_and_errors():
    out = parse_overrides(["p_background=0.5", "snr_db=-3,12", "pad_frames=24", "select=val"])
    assert out == {"p_background": 0.5, "snr_db": (-3.0, 12.0), "pad_frames": 24, "select": "val"}
    r = Recipe(**out)
    assert r.snr_db == (-3.0, 12.0)
    for bad in ("nope=1", "p_background", "pad_frames=x", "epochs=3"):
        with pytest.raises(SystemExit):
            parse_overrides([bad])
