"""A small log-mel CNN: 50 ESC-50 classes, a "domestic interaction" score and a 128-d embedding.

The network reads YAMNet-framed log-mel patches (``float32[B, 96, 64]``, see
:mod:`models.audio.features`), normalises them per mel band with constants stored in the
checkpoint, and runs four conv blocks (3x3 conv, batch norm, ReLU, 2x2 average pooling) of
16/32/64/128 channels, global mean + max pooling, a linear 128-d embedding, a cosine 50-way head
and a 1-logit interaction head on the L2-normalised embedding. About 22 M multiply-adds and
0.1 M parameters per patch; the model card (``models/audio/MODEL_CARD.md``) has the measured
speed, the data (ESC-50, CC BY-NC 3.0: non-commercial use only) and the accuracy.
``python -m models.audio.train`` reproduces the shipped weights.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.audio import esc50
from models.audio.features import LOG_OFFSET, N_MELS, PATCH_FRAMES, PATCH_HOP, log_mel
from models.errors import CheckpointError, ModelError, ParameterError

__all__ = [
    "WEIGHTS", "EMBEDDING_DIM", "FORMAT", "VERSION", "ModelError", "CheckpointError",
    "CNNConfig", "AudioCNN", "FusedCNN", "Prediction", "AudioClassifier", "clip_patches",
    "active_patches", "load_checkpoint",
]  # fmt: skip

logger = logging.getLogger(__name__)

WEIGHTS = Path(__file__).resolve().parent / "weights" / "esc50_cnn.pt"
EMBEDDING_DIM = 128
FORMAT = "eidetic-audio-cnn"
VERSION = 1
ACTIVE_WITHIN_DB = 20.0  # dB: "active" patches have mean mel power this close to the loudest
SILENCE_LOGMEL = math.log(LOG_OFFSET)  # log-mel value of digital silence (pads short clips)
BATCH = 64  # patches per forward pass in AudioClassifier.predict
CKPT_KEYS = (
    "format", "version", "state_dict", "classes", "interaction_classes", "norm", "temperature",
    "platt", "arch", "train",
)  # fmt: skip


@dataclass(frozen=True)
class CNNConfig:
    """Dimensions of :class:`AudioCNN`; saved in the checkpoint as ``arch``."""

    channels: tuple[int, ...] = (16, 32, 64, 128)  # output channels of the conv blocks
    embedding_dim: int = EMBEDDING_DIM  # size of the L2-normalised embedding
    n_classes: int = len(esc50.CLASSES)  # 50-way ESC-50 head
    dropout: float = 0.2  # before the embedding layer (training only)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CNNConfig:
        """Build from a checkpoint's ``arch`` dict (lists become tuples)."""
        try:
            return cls(
                channels=tuple(int(c) for c in d["channels"]),
                embedding_dim=int(d["embedding_dim"]),
                n_classes=int(d["n_classes"]),
                dropout=float(d["dropout"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint 'arch' is malformed: {d!r} ({e})") from e

    def to_dict(self) -> dict[str, Any]:
        """Primitive types only (``torch.load(weights_only=True)`` can read them back)."""
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


class ConvBlock(nn.Module):
    """3x3 conv (no bias), batch norm, ReLU, then 2x2 average pooling if ``pool``."""

    def __init__(self, c_in: int, c_out: int, *, pool: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.conv(x)))
        return F.avg_pool2d(x, 2) if self.pool else x


class AudioCNN(nn.Module):
    """Log-mel patches in; class logits, an interaction logit and an embedding out.

    Parameters
    ----------
    cfg : CNNConfig
        Dimensions; the default is the shipped architecture.

    Notes
    -----
    ``norm_mean`` and ``norm_std`` (``float32[64]``, per mel band) are buffers, saved in the
    state dict; :meth:`normalise` applies them. The class head is a cosine classifier
    (``scale * <e, w_c> / |w_c|`` on the unit embedding ``e``), so the embedding's cosine
    geometry is the one the classes were learned in (useful for few-shot enrollment).
    """

    def __init__(self, cfg: CNNConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or CNNConfig()
        chans = (1, *cfg.channels)
        self.blocks = nn.ModuleList(
            ConvBlock(a, b, pool=i < len(cfg.channels) - 1)
            for i, (a, b) in enumerate(zip(chans[:-1], chans[1:]))
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.embed = nn.Linear(2 * chans[-1], cfg.embedding_dim)
        self.cls_weight = nn.Parameter(torch.randn(cfg.n_classes, cfg.embedding_dim) * 0.1)
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.interaction = nn.Linear(cfg.embedding_dim, 1)
        self.register_buffer("norm_mean", torch.zeros(N_MELS))
        self.register_buffer("norm_std", torch.ones(N_MELS))

    def normalise(self, x: Tensor) -> Tensor:
        """``float32[B, 96, 64]`` log-mel → normalised ``float32[B, 96, 64]`` (per mel band)."""
        return (x - self.norm_mean) / self.norm_std

    def forward_normalised(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`forward` on already normalised patches (training applies SpecAugment between)."""
        h = x.unsqueeze(1)  # [B, 1, T, F]
        for block in self.blocks:
            h = block(h)
        h = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)  # [B, 2C]
        e = F.normalize(self.embed(self.drop(h)), dim=1)  # [B, D], unit norm
        logits = self.log_scale.exp() * e @ F.normalize(self.cls_weight, dim=1).T
        return logits, self.interaction(e).squeeze(1), e

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Score log-mel patches.

        Parameters
        ----------
        x : Tensor
            ``float32[B, 96, 64]`` log-mel patches (:func:`models.audio.features.patches`).

        Returns
        -------
        tuple[Tensor, Tensor, Tensor]
            ``class_logits float32[B, 50]``, ``interaction_logit float32[B]`` (uncalibrated)
            and ``embedding float32[B, 128]`` (L2-normalised).
        """
        return self.forward_normalised(self.normalise(x))


@dataclass(frozen=True)
class Prediction:
    """Calibrated outputs for ``n`` patches (or one row per clip).

    probs: ``float32[n, 50]`` temperature-scaled softmax over ``AudioClassifier.classes``.
    interaction: ``float32[n]`` Platt-calibrated P(domestic interaction sound), in [0, 1].
    embedding: ``float32[n, 128]`` L2-normalised.
    """

    probs: np.ndarray
    interaction: np.ndarray
    embedding: np.ndarray


def clip_patches(logmel: np.ndarray) -> np.ndarray:
    """All patches of a clip: YAMNet's grid, plus a tail patch, or one padded patch if short.

    Parameters
    ----------
    logmel : np.ndarray
        ``float32[n_frames, 64]`` from :func:`models.audio.features.log_mel`, ``n_frames >= 1``.

    Returns
    -------
    np.ndarray
        ``float32[n, 96, 64]``: patches at a 48-frame hop; if frames at the end are not covered,
        one more patch ending at the last frame; a clip shorter than 96 frames is centred in one
        patch padded with digital-silence frames (``log(0.001)``).
    """
    n = logmel.shape[0]
    if n < PATCH_FRAMES:
        out = np.full((1, PATCH_FRAMES, N_MELS), SILENCE_LOGMEL, dtype=np.float32)
        start = (PATCH_FRAMES - n) // 2
        out[0, start : start + n] = logmel
        return out
    starts = list(range(0, n - PATCH_FRAMES + 1, PATCH_HOP))
    if starts[-1] + PATCH_FRAMES < n:
        starts.append(n - PATCH_FRAMES)
    return np.stack([logmel[s : s + PATCH_FRAMES] for s in starts]).astype(np.float32, copy=False)


def active_patches(patches: np.ndarray, *, within_db: float = ACTIVE_WITHIN_DB) -> np.ndarray:
    """Mask of the patches whose mean mel power is within ``within_db`` dB of the loudest.

    Parameters
    ----------
    patches : np.ndarray
        ``float32[n, 96, 64]`` log-mel patches, ``n >= 1``.

    Returns
    -------
    np.ndarray
        ``bool[n]``, at least one True.
    """
    power = np.maximum(np.exp(patches.astype(np.float64)) - LOG_OFFSET, 0.0).mean(axis=(1, 2))
    db = 10.0 * np.log10(power + 1e-12)
    return db >= db.max() - within_db


def aggregate(pred: Prediction) -> Prediction:
    """One row from many: mean probs, mean interaction, mean then re-normalised embedding."""
    e = pred.embedding.mean(axis=0, keepdims=True)
    e /= max(float(np.linalg.norm(e)), 1e-12)
    return Prediction(
        probs=pred.probs.mean(axis=0, keepdims=True).astype(np.float32),
        interaction=pred.interaction.mean(keepdims=True).reshape(1).astype(np.float32),
        embedding=e.astype(np.float32),
    )


def _load_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(
            f"audio CNN checkpoint not found: {path}; train one with `python -m models.audio.train`"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle/zip/runtime errors of many kinds on bad files
        raise CheckpointError(f"cannot read audio CNN checkpoint {path}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an {FORMAT!r} checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')!r}, need {VERSION}")
    missing = [k for k in CKPT_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks the entries {missing}")
    return ckpt


def load_checkpoint(path: str | Path | None = None) -> tuple[AudioCNN, dict[str, Any]]:
    """Load a checkpoint strictly into an :class:`AudioCNN` in eval mode.

    Parameters
    ----------
    path : str | Path | None
        Checkpoint written by ``python -m models.audio.train``; ``None`` means :data:`WEIGHTS`.

    Returns
    -------
    tuple[AudioCNN, dict]
        The model (CPU, eval mode) and the checkpoint dict (its ``state_dict`` included).

    Raises
    ------
    CheckpointError
        If the file is missing or unreadable, is not this format/version, its classes differ
        from ``esc50.CLASSES``, or its state dict has missing, unexpected or mis-shaped tensors
        (all named in the message).
    """
    path = Path(path) if path is not None else WEIGHTS
    ckpt = _load_file(path)
    if tuple(ckpt["classes"]) != esc50.CLASSES:
        raise CheckpointError(f"{path}: its class list differs from models.audio.esc50.CLASSES")
    model = AudioCNN(CNNConfig.from_dict(ckpt["arch"]))
    own = model.state_dict()
    state = ckpt["state_dict"]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match AudioCNN: missing keys {missing}, unexpected keys {unexpected}"
        )
    bad = [f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
           if tuple(state[k].shape) != tuple(v.shape)]  # fmt: skip
    if bad:
        raise CheckpointError(f"{path}: tensor shapes do not match AudioCNN: {bad}")
    model.load_state_dict(state, strict=True)
    return model.eval(), ckpt


def _fold_batch_norm(block: ConvBlock) -> nn.Conv2d:
    """``block``'s convolution with its (eval-mode) batch norm folded into weight and bias."""
    conv, bn = block.conv, block.bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding)
    fused.weight.copy_(conv.weight * scale[:, None, None, None])
    fused.bias.copy_(bn.bias - bn.running_mean * scale)
    return fused.eval()


class FusedCNN:
    """Inference-only view of an eval-mode :class:`AudioCNN`, for the streaming batches of 1-8.

    Each block's batch norm is folded into its convolution and, where torch has oneDNN
    (``torch.backends.mkldnn``), the convolution weights are reordered for it once and the
    conv/ReLU/pooling stack runs on oneDNN tensors (what ``torch.utils.mkldnn.to_mkldnn`` does,
    without its deprecated TorchScript modules). The outputs are :meth:`AudioCNN.forward`'s up to
    float rounding (a test checks 1e-5); on one core a 1-8 patch batch runs about 2x faster than
    the eager module, whose per-op overhead dominates at these sizes. The weights are copied:
    later changes to ``model`` are not seen. ``mkldnn``: None uses oneDNN when available, False
    never (plain ``conv2d`` with the folded weights).
    """

    def __init__(self, model: AudioCNN, *, mkldnn: bool | None = None) -> None:
        self.model = model.eval()
        available = bool(torch.backends.mkldnn.is_available())
        self.mkldnn = available if mkldnn is None else bool(mkldnn) and available
        self.pools = [b.pool for b in model.blocks]
        self.layers = []  # (weight, bias, padding) per conv block
        with torch.no_grad():
            for block in model.blocks:
                conv = _fold_batch_norm(block)
                w, b, pad = conv.weight.detach(), conv.bias.detach(), tuple(conv.padding)
                if self.mkldnn:
                    w = torch._C._nn.mkldnn_reorder_conv2d_weight(
                        w.to_mkldnn(), pad, (1, 1), (1, 1), 1
                    )
                    b = b.to_mkldnn()
                self.layers.append((w, b, pad))

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """As :meth:`AudioCNN.forward` (call under ``torch.inference_mode``)."""
        m = self.model
        h = m.normalise(x).unsqueeze(1)
        if self.mkldnn:
            h = h.to_mkldnn()
        for (w, b, pad), pool in zip(self.layers, self.pools):
            if self.mkldnn:
                h = torch.mkldnn_convolution(h, w, b, pad, (1, 1), (1, 1), 1)
            else:
                h = F.conv2d(h, w, b, padding=pad)
            h = F.relu(h)
            if pool:
                h = F.avg_pool2d(h, 2)
        if self.mkldnn:
            h = h.to_dense()
        h = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        e = F.normalize(m.embed(h), dim=1)
        logits = m.log_scale.exp() * e @ F.normalize(m.cls_weight, dim=1).T
        return logits, m.interaction(e).squeeze(1), e


class AudioClassifier:
    """Calibrated ESC-50 classification, interaction score and embedding of log-mel patches.

    Parameters
    ----------
    path : str | Path | None
        Checkpoint; ``None`` loads the shipped :data:`WEIGHTS`.
    threads : int | None
        Calls ``torch.set_num_threads(threads)``, which is process-wide (torch has no per-model
        setting); 1 keeps inference on one core, as the detector's budget assumes. ``None``
        leaves torch's thread count as it is.

    Raises
    ------
    CheckpointError
        On a missing, corrupt or mismatched checkpoint (see :func:`load_checkpoint`).
    ParameterError
        If ``threads`` is not a positive integer.
    """

    def __init__(self, path: str | Path | None = None, *, threads: int | None = 1) -> None:
        if threads is not None:
            if not isinstance(threads, int) or threads < 1:
                raise ParameterError(f"threads must be a positive int or None, got {threads!r}")
            torch.set_num_threads(threads)
        self.model, ckpt = load_checkpoint(path)
        self._net = FusedCNN(self.model)
        self.path = Path(path) if path is not None else WEIGHTS
        self.classes: tuple[str, ...] = tuple(ckpt["classes"])
        self.interaction_classes: tuple[str, ...] = tuple(ckpt["interaction_classes"])
        self.temperature = float(ckpt["temperature"])
        self.platt = (float(ckpt["platt"][0]), float(ckpt["platt"][1]))
        if not self.temperature > 0:
            raise CheckpointError(f"{self.path}: temperature must be > 0, got {self.temperature}")
        logger.info(
            "audio CNN loaded from %s (T=%.3f, platt=%s)", self.path, self.temperature, self.platt
        )

    def predict(self, patches: np.ndarray) -> Prediction:
        """Score each patch.

        Parameters
        ----------
        patches : np.ndarray
            ``float32[n, 96, 64]`` log-mel patches (:func:`models.audio.features.patches`);
            ``n`` may be 0.

        Returns
        -------
        Prediction
            ``probs float32[n, 50]``, ``interaction float32[n]``, ``embedding float32[n, 128]``.
        """
        if not isinstance(patches, np.ndarray) or patches.ndim != 3 or patches.shape[1:] != (
            PATCH_FRAMES, N_MELS
        ):
            shape = getattr(patches, "shape", type(patches).__name__)
            raise ParameterError(
                f"patches must be float32[n, {PATCH_FRAMES}, {N_MELS}] log-mel, got {shape}"
            )
        x = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))
        if x.numel() and not torch.isfinite(x).all():
            raise ParameterError("patches contain NaN or inf")
        a, b = self.platt
        probs, inter, emb = [], [], []
        with torch.inference_mode():
            for i in range(0, x.shape[0], BATCH):
                logits, z, e = self._net(x[i : i + BATCH])
                probs.append(torch.softmax(logits / self.temperature, dim=1))
                inter.append(torch.sigmoid(a * z + b))
                emb.append(e)
        if not probs:
            n_cls, dim = len(self.classes), self.model.cfg.embedding_dim
            return Prediction(
                np.zeros((0, n_cls), np.float32), np.zeros(0, np.float32),
                np.zeros((0, dim), np.float32),
            )  # fmt: skip
        return Prediction(
            torch.cat(probs).numpy(), torch.cat(inter).numpy(), torch.cat(emb).numpy()
        )

    def predict_clip(self, samples: np.ndarray) -> Prediction:
        """Score a whole clip as one row.

        Parameters
        ----------
        samples : np.ndarray
            ``float32[n]`` mono audio in [-1, 1] at 16 kHz, ``n >= 400`` (25 ms).

        Returns
        -------
        Prediction
            Arrays of shapes ``[1, 50]``, ``[1]``, ``[1, 128]``: the mean over the clip's active
            patches (:func:`clip_patches`, :func:`active_patches`) of the probabilities and of
            the interaction score, and their mean embedding re-normalised to unit length.

        Raises
        ------
        ParameterError
            If the clip is shorter than 25 ms or not mono float audio.
        """
        logmel = log_mel(samples)
        if logmel.shape[0] == 0:
            raise ParameterError(
                f"clip too short: {np.asarray(samples).size} samples, need >= 400 (25 ms at 16 kHz)"
            )
        p = clip_patches(logmel)
        return aggregate(self.predict(p[active_patches(p)]))

    def embed_clip(self, samples: np.ndarray) -> np.ndarray:
        """``float32[128]`` unit-norm embedding of a clip (``predict_clip(...).embedding[0]``)."""
        return self.predict_clip(samples).embedding[0]
