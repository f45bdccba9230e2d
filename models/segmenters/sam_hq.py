"""SAM-HQ segmenter (package ``segment-anything-hq``): hash-checked, strictly loaded, batched.

Loading follows sam2's ``_load_checkpoint`` rather than the package's own builders, which load
with ``strict=False`` and only print what did not match: the checkpoint's SHA-256 is checked
first (against the official file of the chosen architecture, or a hash given in config), then
the architecture is built without weights and the state dict loaded with ``strict=True`` after
our own key comparison, so a wrong or damaged file fails with a message that says what is wrong.
Nothing is ever downloaded. Prompts: boxes (all boxes of a frame in one batched decoder call),
foreground points, and coarse masks (given as the decoder's mask input plus their box). The
image encoder runs once per frame (``set_image``), however many prompts follow.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.errors import BackendUnavailable, CheckpointError, ParameterError
from models.registry import SAM_HQ_ARCHS, resolve
from models.segmenters.base import MaskProposal, bbox_of

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

__all__ = ["KEY", "OFFICIAL_SHA256", "SamHQSegmenter", "save_random_checkpoint", "sha256_of"]

KEY = "sam_hq"
# SHA-256 of the official checkpoints, from the Git LFS pointers of the SAM-HQ authors' model
# repository https://huggingface.co/lkeab/hq-sam (commits a3a77cd, 8a94b5e, 519b37f, 67ab824).
OFFICIAL_SHA256 = {
    "vit_tiny": "0f32c075ccdd870ae54db2f7630e7a0878ede5a2b06d05d6fe02c65a82fb7196",  # 42,526,881 B
    "vit_b": "14a9d662cd6f5a9c2dba6d40ab0058d88d287e4a18fd6fdc6ad5fb1a3fdeaa57",  # 379,335,069 B
    "vit_l": "e1a6c385d62bf005ded91a54d5ec55c985cfc4103ef89c08d90f39f04934c343",  # 1,254,865,805 B
    "vit_h": "a7ac14a085326d9fa6199c8c698c4f0e7280afdbb974d2c4660ec60877b45e35",  # 2,570,940,653 B
}
ENCODER_DIM = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}  # patch_embed width → architecture
MASK_LOGIT = 8.0  # a coarse mask prompt becomes logits of ±MASK_LOGIT
AUTO_PRED_IOU = 0.7  # automatic mode keeps masks above this predicted IoU...
AUTO_STABILITY = 0.8  # ... and this stability score
AUTO_NMS_IOU = 0.7
CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def build_architecture(model_type: str) -> Any:
    """The SAM-HQ ``Sam`` module of ``model_type`` with random weights (nothing is loaded)."""
    if model_type not in SAM_HQ_ARCHS:
        raise ParameterError(
            f"model_type must be one of {', '.join(SAM_HQ_ARCHS)}, got {model_type!r}"
        )
    try:
        return resolve(SAM_HQ_ARCHS, model_type)(checkpoint=None)
    except BackendUnavailable as e:
        raise BackendUnavailable(f"{e} (install segment-anything-hq==0.3)") from e


def save_random_checkpoint(model_type: str, path: Path, *, seed: int = 0) -> Path:
    """Save a randomly initialised ``model_type`` state dict to ``path`` (tests, benchmarks)."""
    import torch

    torch.manual_seed(seed)
    model = build_architecture(model_type)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def _guess_model_type(state: dict[str, Any]) -> str | None:
    """Which SAM-HQ architecture a state dict looks like (None when it is not SAM-like)."""
    if any(k.startswith("image_encoder.layers.") for k in state):
        return "vit_tiny"
    w = state.get("image_encoder.patch_embed.proj.weight")
    return ENCODER_DIM.get(int(w.shape[0])) if w is not None and w.ndim == 4 else None


class SamHQSegmenter:
    """SAM-HQ implementation of the :class:`~models.segmenters.base.Segmenter` seam.

    Parameters
    ----------
    model_type : {"vit_tiny", "vit_b", "vit_l", "vit_h"}, keyword-only
        Architecture; must match the checkpoint.
    checkpoint : str or Path, keyword-only
        Local ``.pth`` state dict (never downloaded).
    sha256 : str, optional, keyword-only
        Expected hash of ``checkpoint``. Without it the file must be the official checkpoint of
        ``model_type`` (:data:`OFFICIAL_SHA256`); a fine-tuned file needs its hash here.
    device : str, keyword-only
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    hq_token_only : bool, keyword-only
        Return only the HQ output token's mask (sharper) instead of HQ + SAM's.
    points_per_side : int, keyword-only
        Grid of the automatic mode (``segment(image)`` without prompts); 8 means 64 prompts.
    """

    def __init__(
        self,
        *,
        model_type: str = "vit_tiny",
        checkpoint: str | Path,
        sha256: str | None = None,
        device: str = "cpu",
        hq_token_only: bool = False,
        points_per_side: int = 8,
    ) -> None:
        if model_type not in SAM_HQ_ARCHS:
            raise ParameterError(
                f"model_type must be one of {', '.join(SAM_HQ_ARCHS)}, got {model_type!r}"
            )
        if sha256 is not None and (
            len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256.lower())
        ):
            raise ParameterError(f"sha256 must be 64 hex digits, got {sha256!r}")
        if not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
            raise ParameterError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        if points_per_side < 1:
            raise ParameterError(f"points_per_side must be >= 1, got {points_per_side!r}")
        self.model_type = model_type
        self.checkpoint = Path(checkpoint)
        self.sha256 = sha256.lower() if sha256 else None
        self.device = device
        self.hq_token_only = bool(hq_token_only)
        self.points_per_side = int(points_per_side)
        self._predictor: Any = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ loading

    def load(self) -> None:
        """Verify, build and load the model (idempotent, thread-safe)."""
        with self._lock:
            if self._predictor is None:
                self._predictor = self._load()

    def unload(self) -> None:
        """Drop the model (the next :meth:`segment` loads it again)."""
        with self._lock:
            self._predictor = None

    def _load(self) -> Any:
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ParameterError(f"device {self.device!r} requested but CUDA is not available")
        self._verify_hash()
        try:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
            raise CheckpointError(
                f"{self.checkpoint}: not a readable PyTorch state dict ({e})"
            ) from e
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        if not isinstance(state, dict) or not state:
            raise CheckpointError(
                f"{self.checkpoint}: expected a state dict, got {type(state).__name__}"
            )
        model = build_architecture(self.model_type)
        self._check_keys(model, state)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{self.checkpoint} does not fit {self.model_type}: {e}") from e
        model.to(self.device).eval()
        from segment_anything_hq import SamPredictor

        logger.info("loaded SAM-HQ %s from %s on %s", self.model_type, self.checkpoint, self.device)
        return SamPredictor(model)

    def _verify_hash(self) -> None:
        if not self.checkpoint.is_file():
            raise CheckpointError(f"checkpoint not found: {self.checkpoint} (nothing is downloaded; "
                                  "fetch the official file yourself and set its path)")  # fmt: skip
        digest = sha256_of(self.checkpoint)
        if self.sha256 is not None:
            if digest != self.sha256:
                raise CheckpointError(
                    f"{self.checkpoint}: SHA-256 {digest} != configured {self.sha256}"
                )
            return
        if digest == OFFICIAL_SHA256[self.model_type]:
            return
        other = next((k for k, v in OFFICIAL_SHA256.items() if v == digest), None)
        if other is not None:
            raise CheckpointError(
                f"{self.checkpoint} is the official {other} checkpoint, but model_type is "
                f"{self.model_type!r}: set model_type: {other}"
            )
        raise CheckpointError(
            f"{self.checkpoint} (SHA-256 {digest}) is not the official {self.model_type} "
            f"checkpoint; if you trust it (e.g. fine-tuned), set sha256: {digest}"
        )

    def _check_keys(self, model: Any, state: dict[str, Any]) -> None:
        expected = set(model.state_dict())
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if not missing and not unexpected:
            return
        guess = _guess_model_type(state)
        hint = f"; the file looks like {guess}" if guess and guess != self.model_type else ""
        if guess is None:
            hint = "; it does not look like a SAM-HQ checkpoint"
        elif not any(k.startswith("mask_decoder.hf_") for k in state):
            hint += " (plain SAM without the HQ decoder?)"
        raise CheckpointError(
            f"{self.checkpoint} does not match {self.model_type}: {len(missing)} missing keys "
            f"{missing[:3]}, {len(unexpected)} unexpected keys {unexpected[:3]}{hint}"
        )

    # ------------------------------------------------------------------ inference

    def segment(
        self,
        image: np.ndarray,
        *,
        boxes: np.ndarray | None = None,
        points: np.ndarray | None = None,
        masks: np.ndarray | None = None,
    ) -> list[MaskProposal]:
        """Segment ``image`` (``uint8[H, W, 3]`` RGB, never modified).

        boxes: ``float[N, 4]`` XYXY px; points: ``float[N, 2]`` XY px (one foreground click each);
        masks: ``bool[N, H, W]`` coarse masks. One proposal per prompt, in that order (boxes,
        masks, points); without prompts, automatic mode over a point grid.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ParameterError(f"image must be uint8[H, W, 3], got {image.dtype}{image.shape}")
        self.load()
        p = self._predictor
        p.set_image(np.ascontiguousarray(image))  # the encoder: once per frame
        h, w = image.shape[:2]
        if boxes is None and points is None and masks is None:
            return self._automatic(h, w)
        out: list[MaskProposal] = []
        if boxes is not None:
            b = _rows(boxes, 4, "boxes")
            out += self._decode(boxes=b) if len(b) else []
        if masks is not None:
            m = np.asarray(masks, dtype=bool)
            if m.ndim != 3 or m.shape[1:] != (h, w):
                raise ParameterError(f"masks must be bool[N, {h}, {w}], got shape {m.shape}")
            if len(m):
                b = np.array([bbox_of(x) for x in m], dtype=np.float32)
                out += self._decode(boxes=b, mask_input=self._mask_logits(m))
        if points is not None:
            pts = _rows(points, 2, "points")
            out += self._decode(points=pts, multimask=True) if len(pts) else []
        return out

    def _decode(
        self,
        *,
        boxes: np.ndarray | None = None,
        points: np.ndarray | None = None,
        mask_input: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> list[MaskProposal]:
        """One batched decoder call: N prompts → N proposals (the best of 3 when multimask)."""
        import torch
        from segment_anything_hq.utils.amg import calculate_stability_score

        p = self._predictor
        size = p.original_size
        tb = tp = tl = None
        if boxes is not None:
            tb = torch.as_tensor(
                p.transform.apply_boxes(boxes, size), dtype=torch.float, device=p.device
            )
        if points is not None:
            tp = torch.as_tensor(
                p.transform.apply_coords(points, size), dtype=torch.float, device=p.device
            )[:, None, :]
            tl = torch.ones(tp.shape[:2], dtype=torch.int, device=p.device)
        with torch.inference_mode():
            logits, iou, _ = p.predict_torch(tp, tl, boxes=tb, mask_input=mask_input, multimask_output=multimask,
                                             return_logits=True, hq_token_only=self.hq_token_only)  # fmt: skip
            best = iou.argmax(dim=1)
            rows = torch.arange(len(best), device=best.device)
            logits, iou = logits[rows, best], iou[rows, best]
            stability = calculate_stability_score(logits, p.model.mask_threshold, 1.0)
            binary = (logits > p.model.mask_threshold).cpu().numpy()
        return [
            _proposal(m, float(q), float(s))
            for m, q, s in zip(binary, iou.tolist(), stability.tolist(), strict=True)
        ]

    def _mask_logits(self, masks: np.ndarray) -> torch.Tensor:
        """Coarse masks → the decoder's ``[N, 1, 256, 256]`` low-resolution logits."""
        import torch
        import torch.nn.functional as F

        p = self._predictor
        x = torch.as_tensor(masks[:, None].astype(np.float32), device=p.device)
        ih, iw = p.input_size
        x = F.interpolate(x, size=(ih, iw), mode="bilinear", align_corners=False)
        side = p.model.image_encoder.img_size
        x = F.pad(x, (0, side - iw, 0, side - ih))
        x = F.interpolate(x, size=(side // 4, side // 4), mode="bilinear", align_corners=False)
        return (x * 2 - 1) * MASK_LOGIT

    def _automatic(self, h: int, w: int) -> list[MaskProposal]:
        """Point-grid prompts, kept by predicted IoU and stability, then mask NMS."""
        n = self.points_per_side
        g = (np.arange(n) + 0.5) / n
        pts = np.stack(np.meshgrid(g * w, g * h), -1).reshape(-1, 2).astype(np.float32)
        cands = [c for c in self._decode(points=pts, multimask=True)
                 if c.predicted_iou >= AUTO_PRED_IOU and c.stability_score >= AUTO_STABILITY
                 and 0 < c.area < 0.9 * h * w]  # fmt: skip
        cands.sort(key=lambda c: -c.predicted_iou * c.stability_score)
        kept: list[MaskProposal] = []
        for c in cands:
            if all(_iou(c.mask, k.mask) <= AUTO_NMS_IOU for k in kept):
                kept.append(c)
        return kept


def _proposal(mask: np.ndarray, predicted_iou: float, stability: float) -> MaskProposal:
    m = np.ascontiguousarray(mask, dtype=bool)
    clip = float(np.clip(predicted_iou, 0.0, 1.0))
    return MaskProposal(
        m, bbox_of(m), int(np.count_nonzero(m)), clip, float(np.clip(stability, 0.0, 1.0))
    )


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 0.0 if union == 0 else float(np.count_nonzero(a & b) / union)


def _rows(x: np.ndarray, width: int, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2 or a.shape[1] != width:
        raise ParameterError(f"{name} must be float[N, {width}], got shape {a.shape}")
    return a
