"""Train, calibrate and evaluate the audio CNN on ESC-50: ``python -m models.audio.train``.

One seeded, deterministic command (fixed thread count, ``torch.use_deterministic_algorithms``)
writes the checkpoint (default :data:`models.audio.cnn.WEIGHTS`) and its metrics JSON beside it.

Recipe: each clip's mel power is computed once (train clips padded with 0.48 s of digital
silence, so crops may hold only part of a sound); every batch is augmented in the mel-power
domain (random 96-frame crops among the clip's active windows, gain, a train-split background
clip added at -5..15 dB SNR to 90% of the crops, sometimes a second foreground clip at low level,
optional mixup), then ``log(power + 0.001)``, per-band normalisation and SpecAugment. Loss:
label-smoothed cross-entropy + BCE of the interaction head. AdamW with a one-cycle LR for a fixed
number of epochs, the last one kept (val is not looked at while training). The softmax
temperature and the interaction head's Platt scaling are fitted on val; test is only reported.
``--unseen-eval`` also trains one model per third of ``esc50.INTERACTION`` with those classes
removed from train and val (``--jobs 3``: in worker processes), and scores the
interaction probability on their test clips.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import multiprocessing
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from scipy.optimize import minimize, minimize_scalar
from tqdm import tqdm

from models.audio import esc50
from models.audio.cnn import (
    ACTIVE_WITHIN_DB,
    FORMAT,
    VERSION,
    WEIGHTS,
    AudioCNN,
    CNNConfig,
    active_patches,
    clip_patches,
)
from models.audio.features import LOG_OFFSET, N_MELS, PATCH_FRAMES, SAMPLE_RATE, log_mel
from models.errors import ParameterError

logger = logging.getLogger(__name__)

THREADS = 1  # default torch intra-op threads in training (part of what makes a run reproducible)
ECE_BINS = 10


@dataclass(frozen=True)
class Recipe:
    """Training hyper-parameters (saved in the checkpoint and the metrics JSON)."""

    epochs: int = 40  # validation + best-checkpoint selection after each epoch
    steps_per_epoch: int = 60
    batch: int = 64
    lr: float = 3e-3  # one-cycle peak
    weight_decay: float = 1e-3
    label_smoothing: float = 0.1
    interaction_weight: float = 1.0  # BCE weight relative to the 50-way cross-entropy
    gain_db: tuple[float, float] = (-20.0, 10.0)  # foreground gain range
    p_background: float = 0.9  # probability of adding a BACKGROUND train clip
    snr_db: tuple[float, float] = (-5.0, 15.0)  # foreground-to-background ratio range
    pad_frames: int = 48  # digital silence around each train clip: crops may hold part of it
    select: str = "last"  # "last": keep the final epoch; "val": the best val-accuracy epoch
    p_mix: float = 0.0  # probability of a mixup pair of two foreground clips (soft targets)
    p_second: float = 0.25  # probability of adding a second foreground clip
    second_db: tuple[float, float] = (10.0, 25.0)  # how far below the foreground it sits
    time_masks: int = 2
    time_mask_max: int = 16  # frames
    freq_masks: int = 2
    freq_mask_max: int = 8  # mel bands


# ------------------------------------------------------------------------------------- data


@dataclass
class ClipSet:
    """Clips of one split as mel power ``float32[N, T, 64]`` with labels and active windows."""

    clips: list[esc50.Clip]
    power: torch.Tensor  # [N, T, 64] mel power (digital silence = 0)
    target: torch.Tensor  # int64[N] class index
    starts: list[torch.Tensor]  # per clip: int64 start frames of its active 96-frame windows
    pad: int = 0  # frames of digital silence before each clip in ``power``
    frames: list[int] | None = None  # per clip: its own length in frames (without padding)

    def __len__(self) -> int:
        return len(self.clips)


def mel_power(clip: esc50.Clip) -> np.ndarray:
    """``float32[T, 64]`` mel power of one clip (``exp(log_mel) - 0.001``, clamped at 0)."""
    x, sr = sf.read(clip.path, dtype="float32", always_2d=False)
    if sr != SAMPLE_RATE or x.ndim != 1:
        raise ParameterError(f"{clip.path}: need 16 kHz mono audio, got sr={sr}, shape={x.shape}")
    return np.maximum(np.exp(log_mel(x)) - LOG_OFFSET, 0.0).astype(np.float32)


def active_starts(power: np.ndarray) -> np.ndarray:
    """Start frames of the 96-frame windows within ``ACTIVE_WITHIN_DB`` dB of the loudest one."""
    c = np.concatenate([[0.0], np.cumsum(power.astype(np.float64).mean(axis=1))])
    win = (c[PATCH_FRAMES:] - c[:-PATCH_FRAMES]) / PATCH_FRAMES
    db = 10 * np.log10(win + 1e-12)
    return np.flatnonzero(db >= db.max() - ACTIVE_WITHIN_DB)


def load_set(clips: list[esc50.Clip], cache: dict[Path, np.ndarray], *, pad: int = 0) -> ClipSet:
    """Mel power of ``clips`` (computed once per file, memoised in ``cache``).

    ``pad`` frames of digital silence (power 0) go before and after each clip; the active windows
    are found on the padded clip, so with ``pad > 0`` a training crop may hold only the start or
    the end of a sound that begins or ends the clip (as a streaming patch straddling an onset
    does) and background mixing fills the silence.
    """
    for c in clips:
        if c.path not in cache:
            cache[c.path] = mel_power(c)
    lengths = [cache[c.path].shape[0] for c in clips]
    power = np.zeros((len(clips), max(lengths) + 2 * pad, N_MELS), np.float32)
    starts = []
    for i, c in enumerate(clips):
        power[i, pad : pad + lengths[i]] = cache[c.path]
        starts.append(torch.from_numpy(active_starts(power[i, : lengths[i] + 2 * pad])))
    target = torch.tensor([c.target for c in clips])
    return ClipSet(clips, torch.from_numpy(power), target, starts, pad, lengths)


def band_stats(train: ClipSet) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band mean and std of log-mel over the frames of the train clips' active windows."""
    rows = []
    for i, s in enumerate(train.starts):
        frames = torch.unique(s[:, None] + torch.arange(PATCH_FRAMES))
        if train.frames is not None:  # the clip's own frames only, not its padding
            frames = frames[(frames >= train.pad) & (frames < train.pad + train.frames[i])]
        rows.append(torch.log(train.power[i, frames] + LOG_OFFSET))
    x = torch.cat(rows)
    return x.mean(dim=0), x.std(dim=0).clamp_min(1e-3)


# ----------------------------------------------------------------------------- augmentation


def _uniform(g: torch.Generator, n: int, lo_hi: tuple[float, float]) -> torch.Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _crops(data: ClipSet, idx: torch.Tensor, g: torch.Generator, *, active: bool) -> torch.Tensor:
    """``[B, 96, 64]`` mel-power crops of clips ``idx`` (among active windows, or anywhere)."""
    starts = []
    for i in idx.tolist():
        s = data.starts[i]
        if active:
            starts.append(int(s[torch.randint(len(s), (1,), generator=g)]))
        else:
            t = data.frames[i] if data.frames is not None else data.power.shape[1]
            n = max(t - PATCH_FRAMES + 1, 1)  # within the clip itself (T >= 96 for ESC-50)
            starts.append(data.pad + int(torch.randint(n, (1,), generator=g)))
    frames = torch.tensor(starts)[:, None] + torch.arange(PATCH_FRAMES)
    return data.power[idx[:, None], frames]


def _at_ratio(fg: torch.Tensor, other: torch.Tensor, below_db: torch.Tensor) -> torch.Tensor:
    """``other`` rescaled so its mean power sits ``below_db`` dB under ``fg``'s."""
    pf = fg.mean(dim=(1, 2)).clamp_min(1e-10)
    po = other.mean(dim=(1, 2)).clamp_min(1e-10)
    return other * (pf / po * 10 ** (-below_db / 10))[:, None, None]


def make_batch(
    data: ClipSet,
    weights: torch.Tensor,
    background: torch.Tensor,
    interaction: torch.Tensor,
    r: Recipe,
    g: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One augmented batch: log-mel ``[B, 96, 64]``, class targets ``float[B, 50]`` (one-hot, or
    two classes for a mixup pair) and interaction targets ``float[B]``.

    ``weights`` samples foreground clips (class-balanced), ``background`` indexes the
    BACKGROUND-class clips of the same split, ``interaction`` is ``bool[50]``.
    """
    b = r.batch
    fg_idx = torch.multinomial(weights, b, replacement=True, generator=g)
    y = F.one_hot(data.target[fg_idx], len(esc50.CLASSES)).float()
    x = _crops(data, fg_idx, g, active=True)
    if r.p_mix > 0:  # mixup in the power domain, both at the same mean power, weights lam / 1-lam
        other = torch.multinomial(weights, b, replacement=True, generator=g)
        lam = torch.rand(b, generator=g)
        use = (torch.rand(b, generator=g) < r.p_mix) & (data.target[other] != data.target[fg_idx])
        lam = torch.where(use, lam, torch.ones(b))
        x2 = _at_ratio(x, _crops(data, other, g, active=True), torch.zeros(b))
        x = lam[:, None, None] * x + (1 - lam[:, None, None]) * x2
        y = lam[:, None] * y + (1 - lam[:, None]) * F.one_hot(data.target[other], y.shape[1])
    x = x * 10 ** (_uniform(g, b, r.gain_db) / 10)[:, None, None]
    label = y.argmax(1)
    if len(background):
        bg_idx = background[torch.randint(len(background), (b,), generator=g)]
        use = (torch.rand(b, generator=g) < r.p_background) & (data.target[bg_idx] != label)
        bg = _at_ratio(x, _crops(data, bg_idx, g, active=False), _uniform(g, b, r.snr_db))
        x = x + bg * use[:, None, None]
    second = torch.multinomial(weights, b, replacement=True, generator=g)
    use = (torch.rand(b, generator=g) < r.p_second) & (data.target[second] != label)
    x2 = _at_ratio(x, _crops(data, second, g, active=True), _uniform(g, b, r.second_db))
    x = torch.log(x + x2 * use[:, None, None] + LOG_OFFSET)
    return x, y, y @ interaction.float()


def spec_augment(x: torch.Tensor, r: Recipe, g: torch.Generator) -> torch.Tensor:
    """Zero (the normalised mean) random time and frequency stripes of ``[B, T, F]``."""
    b, t, f = x.shape
    keep = torch.ones_like(x, dtype=torch.bool)
    masks = ((r.time_masks, r.time_mask_max, t, 1), (r.freq_masks, r.freq_mask_max, f, 2))
    for n, width, size, axis in masks:
        for _ in range(n):
            w = torch.randint(width + 1, (b, 1), generator=g)
            s = (torch.rand(b, 1, generator=g) * (size - w + 1)).long()
            pos = torch.arange(size)[None]
            m = (pos >= s) & (pos < s + w)  # [B, size]
            keep &= ~(m[:, :, None] if axis == 1 else m[:, None, :])
    return x * keep


# ------------------------------------------------------------------------------- evaluation


@dataclass
class Scores:
    """Per-clip patch outputs of a model: lists of ``[n_i, 50]`` logits and ``[n_i]`` logits."""

    logits: list[torch.Tensor]
    inter: list[torch.Tensor]
    target: np.ndarray  # int[N]
    positive: np.ndarray  # bool[N] interaction class

    def probs(self, temperature: float = 1.0) -> np.ndarray:
        """``float[N, 50]`` clip probabilities: mean softmax over active patches."""
        return np.stack([torch.softmax(z / temperature, 1).mean(0).numpy() for z in self.logits])

    def interaction(self, a: float = 1.0, b: float = 0.0) -> np.ndarray:
        """``float[N]`` clip interaction probability: mean of ``sigmoid(a * logit + b)``."""
        return np.array([float(torch.sigmoid(a * z + b).mean()) for z in self.inter])


@torch.inference_mode()
def score(model: AudioCNN, data: ClipSet, interaction: torch.Tensor) -> Scores:
    """Run ``model`` over every active patch of every clip (the aggregation of predict_clip)."""
    model.eval()
    logits, inter = [], []
    for i in range(len(data)):
        t = data.frames[i] if data.frames is not None else data.power.shape[1]
        p = clip_patches(torch.log(data.power[i, data.pad : data.pad + t] + LOG_OFFSET).numpy())
        z, s, _ = model(torch.from_numpy(p[active_patches(p)]))
        logits.append(z)
        inter.append(s)
    t = data.target.numpy()
    return Scores(logits, inter, t, interaction[data.target].numpy())


def roc_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney, ties count 1/2); NaN without both classes."""
    pos, neg = score[positive], score[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    gt = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    return float(gt / (len(pos) * len(neg)))


def ece(conf: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error with ``bins`` equal-width confidence bins."""
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    return float(
        sum(abs(conf[idx == k].mean() - correct[idx == k].mean()) * (idx == k).mean()
            for k in range(bins) if (idx == k).any())
    )  # fmt: skip


def fit_temperature(s: Scores) -> float:
    """Temperature minimising the clip-level NLL of ``s`` (bounded to [0.05, 20])."""

    def nll(log_t: float) -> float:
        p = s.probs(math.exp(log_t))[np.arange(len(s.target)), s.target]
        return float(-np.log(np.maximum(p, 1e-12)).mean())

    return math.exp(minimize_scalar(nll, bounds=(math.log(0.05), math.log(20)), method="bounded").x)


def fit_platt(s: Scores) -> tuple[float, float]:
    """Platt (a, b) minimising clip-level NLL of mean ``sigmoid(a*z + b)`` (Platt's targets)."""
    y = s.positive
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    t = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def nll(ab: np.ndarray) -> float:
        p = np.clip(s.interaction(float(ab[0]), float(ab[1])), 1e-7, 1 - 1e-7)
        return float(-(t * np.log(p) + (1 - t) * np.log(1 - p)).mean())

    res = minimize(nll, np.array([1.0, 0.0]), method="Nelder-Mead", options={"xatol": 1e-4})
    return float(res.x[0]), float(res.x[1])


def metrics(s: Scores, temperature: float = 1.0, platt: tuple[float, float] = (1.0, 0.0)) -> dict:
    """Clip accuracy, NLL, top-label ECE, interaction AUC/ECE/recall/FPR at 0.5."""
    p = s.probs(temperature)
    pred = p.argmax(1)
    q = s.interaction(*platt)
    y = s.positive
    return {
        "clips": len(s.target),
        "accuracy": float((pred == s.target).mean()),
        "top5": float((np.argsort(-p, 1)[:, :5] == s.target[:, None]).any(1).mean()),
        "nll": float(-np.log(np.maximum(p[np.arange(len(p)), s.target], 1e-12)).mean()),
        "ece": ece(p.max(1), pred == s.target),
        "interaction_auc": roc_auc(q, y),
        "interaction_ece": ece(q, y.astype(float)),  # reliability of P(interaction)
        "interaction_recall": float((q[y] >= 0.5).mean()) if y.any() else float("nan"),
        "interaction_fpr": float((q[~y] >= 0.5).mean()) if (~y).any() else float("nan"),
    }


# --------------------------------------------------------------------------------- training


def seed_all(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return the generator that drives augmentation."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def interaction_mask() -> torch.Tensor:
    """``bool[50]``: True for the classes of ``esc50.INTERACTION``."""
    return torch.tensor([c in esc50.INTERACTION for c in esc50.CLASSES])


def train_model(
    train: ClipSet, val: ClipSet, r: Recipe, seed: int, *, desc: str = "train"
) -> tuple[AudioCNN, dict]:
    """Train an :class:`AudioCNN`; return it (eval mode) and its history.

    ``r.select == "last"`` keeps the final epoch and never looks at ``val``; ``"val"`` scores
    ``val`` after every epoch and keeps the best accuracy (ties: lower NLL).
    """
    g = seed_all(seed)
    model = AudioCNN(CNNConfig())
    model.norm_mean, model.norm_std = band_stats(train)
    counts = torch.bincount(train.target, minlength=len(esc50.CLASSES)).float()
    weights = 1.0 / counts[train.target]  # class-balanced sampling
    background = torch.tensor(
        [i for i, c in enumerate(train.clips) if c.category in esc50.BACKGROUND], dtype=torch.long
    )
    inter = interaction_mask()
    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    total = r.epochs * r.steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r.lr, total_steps=total)
    best, best_key, history = None, (-1.0, 0.0), []
    bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)
    for epoch in range(r.epochs):
        model.train()
        run = 0.0
        for _ in range(r.steps_per_epoch):
            x, y, t = make_batch(train, weights, background, inter, r, g)
            logits, z, _ = model.forward_normalised(spec_augment(model.normalise(x), r, g))
            loss = F.cross_entropy(logits, y, label_smoothing=r.label_smoothing)
            loss = loss + r.interaction_weight * F.binary_cross_entropy_with_logits(z, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run += loss.item() / r.steps_per_epoch
            bar.update()
        if r.select == "last":  # val plays no part in training: not even scored per epoch
            history.append({"epoch": epoch + 1, "loss": run})
            bar.set_postfix(loss=f"{run:.3f}")
            best_epoch = epoch + 1
            continue
        m = metrics(score(model, val, inter))
        history.append(
            {"epoch": epoch + 1, "loss": run, "val_accuracy": m["accuracy"], "val_nll": m["nll"],
             "val_interaction_auc": m["interaction_auc"]}
        )  # fmt: skip
        bar.set_postfix(loss=f"{run:.3f}", val_acc=f"{m['accuracy']:.3f}")
        if (m["accuracy"], -m["nll"]) > best_key:
            best_key, best = (m["accuracy"], -m["nll"]), copy.deepcopy(model.state_dict())
            best_epoch = epoch + 1
    bar.close()
    if best is not None:
        model.load_state_dict(best)
    return model.eval(), {"best_epoch": best_epoch, "history": history}


def calibrate(model: AudioCNN, val: ClipSet) -> tuple[float, tuple[float, float]]:
    """Temperature of the softmax and Platt (a, b) of the interaction logit, fitted on ``val``."""
    s = score(model, val, interaction_mask())
    return fit_temperature(s), fit_platt(s)


def evaluate(
    model: AudioCNN, sets: dict[str, ClipSet], temperature: float, platt: tuple[float, float]
) -> dict:
    """Raw and calibrated metrics of every split."""
    out = {}
    for name, data in sets.items():
        s = score(model, data, interaction_mask())
        out[name] = {"raw": metrics(s), "calibrated": metrics(s, temperature, platt)}
    return out


def _separation(q: np.ndarray, y: np.ndarray) -> dict:
    """AUC, recall and false-positive rate at 0.5 of scores ``q`` for labels ``y``."""
    return {"auc": roc_auc(q, y), "recall": float((q[y] >= 0.5).mean()),
            "fpr": float((q[~y] >= 0.5).mean()), "positives": int(y.sum()),
            "negatives": int((~y).sum())}  # fmt: skip


def unseen_fold(
    parts: dict[str, list[esc50.Clip]], cache: dict, r: Recipe, seed: int, k: int, threads: int = 0
) -> dict:
    """Fold ``k`` (0-2) of :func:`unseen_eval`: train without ``esc50.INTERACTION[k::3]``, score.

    ``threads > 0`` sets torch's thread count first (for a worker process)."""
    if threads > 0:
        torch.set_num_threads(threads)
    inter = interaction_mask()
    held = set(esc50.INTERACTION[k::3])
    seen = set(esc50.INTERACTION) - held
    tr = load_set([c for c in parts["train"] if c.category not in held], cache, pad=r.pad_frames)
    va = load_set([c for c in parts["val"] if c.category not in held], cache)
    model, hist = train_model(tr, va, r, seed, desc=f"unseen fold {k + 1}/3")
    temperature, platt = calibrate(model, va)
    val_accuracy = metrics(score(model, va, inter), temperature, platt)["accuracy"]
    row = {"held_out": sorted(held), "best_epoch": hist["best_epoch"], "platt": list(platt),
           "val_accuracy": val_accuracy}  # fmt: skip
    neg_test = [c for c in parts["test"] if c.category not in esc50.INTERACTION]
    neg_val = [c for c in parts["val"] if c.category not in esc50.INTERACTION]
    sets = {
        "test": [c for c in parts["test"] if c.category in held] + neg_test,
        "select": [c for c in parts["train"] + parts["val"] if c.category in held] + neg_val,
        "seen": [c for c in parts["test"] if c.category in seen] + neg_test,
    }
    for name, clips in sets.items():
        if not any(c.category in esc50.INTERACTION for c in clips):
            continue  # (no test clips given: recipe exploration)
        q = score(model, load_set(clips, cache), inter).interaction(*platt)
        row[name] = _separation(q, np.array([c.category in esc50.INTERACTION for c in clips]))
    logger.info("unseen fold %d: %s", k + 1, row)
    return row


def unseen_summary(rows: list[dict]) -> dict:
    """The folds of :func:`unseen_fold` and their mean AUC, recall and FPR per scored set."""
    out: dict = {"folds": rows}
    for name in ("test", "select", "seen"):
        if name not in rows[0]:
            continue
        out[f"mean_{name}"] = {
            key: float(np.mean([f[name][key] for f in rows])) for key in ("auc", "recall", "fpr")
        }
    return out


def unseen_eval(parts: dict[str, list[esc50.Clip]], cache: dict, r: Recipe, seed: int) -> dict:
    """Interaction score on interaction classes never trained on, one model per third of them.

    For fold ``k`` the classes ``esc50.INTERACTION[k::3]`` are removed from train and val; the
    model (same recipe, calibrated on the reduced val) then scores the interaction probability:

    - ``test``: their test clips (positives) against the test clips of every non-interaction
      class (negatives): the reported estimate;
    - ``select``: their train and val clips (never seen by this model) against the val clips of
      the non-interaction classes: the number recipe choices were allowed to look at;
    - ``seen``: test clips of the interaction classes it did train on, against the same
      negatives as ``test``, for comparison.

    Each fold seeds itself, so running the folds in worker processes (``main --jobs``) gives
    the same numbers.
    """
    return unseen_summary([unseen_fold(parts, cache, r, seed, k) for k in range(3)])


# -------------------------------------------------------------------------------------- CLI


def benchmark(model: AudioCNN, *, batch: int = 8, repeats: int = 200) -> dict:
    """Inference speed on one thread: median ms per patch over ``repeats`` batches of ``batch``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x = torch.randn(batch, PATCH_FRAMES, N_MELS, generator=torch.Generator().manual_seed(0)) - 4
    times = []
    with torch.inference_mode():
        for i in range(repeats + 10):
            t = time.perf_counter()
            model.eval()(x)
            if i >= 10:
                times.append(time.perf_counter() - t)
    torch.set_num_threads(threads)
    macs = sum(m.weight.numel() * n for m, n in _conv_outputs(model)) + model.cls_weight.numel()
    ms = 1000 * np.array(times) / batch
    return {"batch": batch, "threads": 1, "ms_per_patch_median": float(np.median(ms)),
            "ms_per_patch_p90": float(np.percentile(ms, 90)), "macs_per_patch": int(macs),
            "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip


def _conv_outputs(model: AudioCNN) -> list[tuple[torch.nn.Module, int]]:
    """(layer, output positions) of every conv and linear layer for one 96x64 patch."""
    h, w, out = PATCH_FRAMES, N_MELS, []
    for block in model.blocks:
        out.append((block.conv, h * w))
        if block.pool:
            h, w = h // 2, w // 2
    out += [(model.embed, 1), (model.interaction, 1)]
    return out


def checkpoint(
    model: AudioCNN, temperature: float, platt: tuple[float, float], train_info: dict
) -> dict:
    """The checkpoint dict (tensors and primitive types only: ``weights_only=True`` loads it)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "classes": list(esc50.CLASSES),
        "interaction_classes": list(esc50.INTERACTION),
        "norm": {"mean": model.norm_mean.tolist(), "std": model.norm_std.tolist(),
                 "per": "mel band", "of": "log(mel power + 0.001)"},  # fmt: skip
        "temperature": float(temperature),
        "platt": [float(platt[0]), float(platt[1])],
        "arch": model.cfg.to_dict(),
        "train": train_info,
    }


def table(results: dict) -> str:
    """Plain-text summary of :func:`evaluate`'s results (and the unseen-class evaluation)."""
    cols = ("accuracy", "top5", "nll", "ece", "interaction_auc", "interaction_ece")
    lines = [f"{'split':<6} {'calib':<5} {'clips':>5} " + " ".join(f"{c:>15}" for c in cols)]
    for split, r in results["splits"].items():
        for kind in ("raw", "calibrated"):
            m = r[kind]
            vals = " ".join(f"{m[c]:>15.3f}" for c in cols)
            lines.append(f"{split:<6} {kind[:5]:<5} {m['clips']:>5} {vals}")
    u = results.get("unseen")
    if u:
        lines.append("unseen interaction classes (per fold: AUC, recall@0.5, FPR@0.5):")
        for f in u["folds"]:
            m = f["test"]
            held = ",".join(f["held_out"])
            lines.append(f"  {held}: {m['auc']:.3f} {m['recall']:.3f} {m['fpr']:.3f}")
        for name in ("test", "select", "seen"):
            m = u.get(f"mean_{name}")
            if m is None:
                continue
            lines.append(f"  mean {name}: {m['auc']:.3f} {m['recall']:.3f} {m['fpr']:.3f}")
    return "\n".join(lines)


def parse_overrides(items: list[str]) -> dict:
    """``["snr_db=-5,15", "p_background=0.6"]`` → Recipe keyword arguments of the right types."""
    fields = {f.name: f for f in dataclasses.fields(Recipe)}
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in fields or key == "epochs":
            raise SystemExit(f"--set {item!r}: need FIELD=VALUE with FIELD one of {sorted(fields)}")
        default = getattr(Recipe, key)
        try:
            if isinstance(default, tuple):
                out[key] = tuple(float(v) for v in value.split(","))
            else:
                out[key] = type(default)(value)
        except ValueError as e:
            raise SystemExit(f"--set {item!r}: {e}") from e
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m models.audio.train", description=__doc__.split("\n")[0]
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=WEIGHTS, help="checkpoint path (.json beside it)")
    p.add_argument("--epochs", type=int, default=Recipe.epochs)
    p.add_argument("--data", type=Path, default=None, help="ESC-50 folder (esc50.data_dir())")
    p.add_argument("--unseen-eval", action="store_true", help="also the unseen-class evaluation")
    p.add_argument("--threads", type=int, default=THREADS, help="torch threads (default 1)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="with --unseen-eval: train the 3 fold models in this many worker processes "
        "(forked, --threads each) alongside the main model; same results",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a Recipe field (exploration), e.g. --set p_background=0.6",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Train, calibrate, evaluate and save; return the metrics written to ``<out>.json``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    t0 = time.perf_counter()
    r = Recipe(epochs=args.epochs, **parse_overrides(args.set))
    parts = esc50.split(esc50.read_meta(args.data))
    cache: dict[Path, np.ndarray] = {}
    sets = {name: load_set(parts[name], cache, pad=r.pad_frames if name == "train" else 0)
            for name in esc50.SPLITS}  # fmt: skip
    pool = None
    if args.unseen_eval and args.jobs > 1:  # folds start now, in forked workers (cache filled)
        ctx = multiprocessing.get_context("fork")
        pool = ProcessPoolExecutor(max_workers=min(args.jobs, 3), mp_context=ctx)
        folds = [pool.submit(unseen_fold, parts, cache, r, args.seed, k, args.threads)
                 for k in range(3)]  # fmt: skip
    model, hist = train_model(sets["train"], sets["val"], r, args.seed)
    temperature, platt = calibrate(model, sets["val"])
    results = {"splits": evaluate(model, sets, temperature, platt)}
    train_seconds = time.perf_counter() - t0
    command = f"python -m models.audio.train --seed {args.seed} --epochs {args.epochs}"
    if args.threads != THREADS:
        command += f" --threads {args.threads}"
    command += "".join(f" --set {kv}" for kv in args.set)
    if args.out.resolve() != WEIGHTS:
        command += f" --out {args.out}"
    info = {
        "seed": args.seed, "command": command, "threads": args.threads, "torch": str(torch.__version__),
        "clips": {k: len(v) for k, v in sets.items()},
        "classes_in_train": len(set(sets["train"].target.tolist())),
        "recipe": asdict(r), "best_epoch": hist["best_epoch"], "seconds": round(train_seconds, 1),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint(model, temperature, platt, info), args.out)
    results["inference"] = benchmark(model)
    if args.unseen_eval:
        if pool is not None:
            results["unseen"] = unseen_summary([f.result() for f in folds])
            pool.shutdown()
        else:
            results["unseen"] = unseen_eval(parts, cache, r, args.seed)
        info["command"] += " --unseen-eval"
    results.update(
        train=info, temperature=temperature, platt=list(platt), history=hist["history"],
        weights_bytes=args.out.stat().st_size, total_seconds=round(time.perf_counter() - t0, 1),
    )  # fmt: skip
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    print(f"wrote {args.out} and its .json in {results['total_seconds']:.0f} s")
    return results


if __name__ == "__main__":
    main()
